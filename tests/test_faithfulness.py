"""benchmarks/faithfulness.py runs a paper's script on genprior's data: its shims, checked on a
stand-in repository shaped like the reference one (the real code is never in the tests)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import faithfulness  # noqa: E402

UTILS = '''
import time
import torch

def get_dataset(dataset, data_path):
    raise RuntimeError("would download " + dataset)

def get_time():
    return str(time.strftime("[%Y-%m-%d %H:%M:%S]", time.localtime()))

def rand_shift(x, param):
    v = torch.rand(x.shape[0])
    if param.Siamese:
        v[:] = v[0]  # today's torch refuses this at batch size 1
    return x + v.view(-1, 1, 1, 1)

AUGMENT_FNS = {"shift": [rand_shift]}

class Param:
    Siamese = True
'''

NETWORKS = '''
import torch
from torch import nn

class Transposed(nn.Module):
    def forward(self, x):
        return x.transpose(2, 3)  # a non-contiguous map, as DSA's crop leaves

class ConvNet(nn.Module):
    def __init__(self, channel, num_classes, side):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channel, 2, 3, padding=1), Transposed())
        self.classifier = nn.Linear(2 * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).view(x.size(0), -1))

    def embed(self, x):
        return self.features(x).view(x.size(0), -1)
'''

MAIN = '''
import argparse, os, time
import torch
from utils import get_dataset, AUGMENT_FNS, Param, get_time
from networks import ConvNet

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--save_path")
    args = p.parse_args()
    channel, im_size, num_classes, names, mean, std, dst_train, dst_test, loader = get_dataset("MNIST", "data")
    labels = torch.tensor([dst_train[i][1] for i in range(len(dst_train))])
    first = [int(torch.nonzero(labels == c)[0]) for c in range(num_classes)]
    image_syn = torch.stack([dst_train[int(i)][0] for i in first])
    net = ConvNet(channel, num_classes, im_size[0])
    out = net(AUGMENT_FNS["shift"][0](image_syn[:1], Param()))
    seeds = [int(time.time() * 1000) % 100000 for _ in range(3)]
    print(get_time(), out.shape)
    torch.save({"data": [[image_syn, torch.arange(num_classes)]], "seeds": torch.tensor(seeds)},
               os.path.join(args.save_path, "res_X.pt"))
'''


def _repo(root: Path, files: dict) -> Path:
    """A stand-in reference repository: file path -> text."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _child(repo: Path, script: str, seed: int, row: str, out: Path, *args: str) -> None:
    """The benchmark's reference child on ``repo``, which must succeed; on one thread, as the
    benchmark's lanes and this test process run (float results depend on the thread count)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH / "faithfulness.py"), "reference-child", str(repo), script, str(seed), row,
           str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def stand_in(tmp_path):
    return _repo(tmp_path / "reference", {"utils.py": UTILS, "networks.py": NETWORKS, "main.py": MAIN})


def _run(repo: Path, out: Path, seed: int) -> dict:
    (out / "result").mkdir(parents=True)
    _child(repo, "main.py", seed, "dsa", out, "--save_path", str(out / "result"))
    return torch.load(out / "result" / "res_X.pt", weights_only=True)


def test_reference_runs_on_genprior_data_with_its_shims_and_is_repeatable(stand_in, tmp_path):
    from genprior.data import load_dataset
    from genprior.synset import load_synset

    started = time.perf_counter()
    a = _run(stand_in, tmp_path / "a", seed=0)
    wall = time.perf_counter() - started
    b = _run(stand_in, tmp_path / "b", seed=0)
    c = _run(stand_in, tmp_path / "c", seed=1)
    # the seeded clock: same seed, same draws; another seed, others; a new seed per call
    assert torch.equal(a["seeds"], b["seeds"]) and not torch.equal(a["seeds"], c["seeds"])
    assert len(set(a["seeds"].tolist())) == 3
    # the data shim: the script saw genprior's mnist5k train split
    train = load_dataset("mnist5k", "train")
    firsts = torch.stack([train.images[int(torch.nonzero(train.labels == c)[0])] for c in range(10)])
    synset = load_synset(tmp_path / "a" / "synset")
    assert torch.equal(synset.images, firsts) and synset.labels.tolist() == list(range(10))
    assert synset.method == "reference-dsa" and synset.config["seed"] == 0
    assert 0 < json.loads((tmp_path / "a" / "timing.json").read_text())["loop_time_s"] < wall  # the loop, not the run


def test_the_table_judges_the_difference_against_the_larger_std(tmp_path, monkeypatch):
    monkeypatch.setattr(faithfulness, "TABLE", tmp_path / "t.md")
    units = {}
    for side, accs in (("genprior", [0.80, 0.82, 0.84]), ("reference", [0.83, 0.83, 0.83])):
        units[f"build|dsa|1|{side}|0"] = {"s_per_iteration": 2.0, "command": f"python {side}"}
        for i, acc in enumerate(accs):
            units[f"eval|dsa|1|{side}|0|{i}"] = {"acc": acc}
    faithfulness.write_table({"units": units, "machine": "test"})
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| dsa | 1 |"))
    # genprior 82.00 ± 1.63, reference 83.00 ± 0.00: |−1.00| ≤ 1.63
    assert "82.00 ± 1.63" in row and "83.00 ± 0.00" in row and "| -1.00 | yes |" in row
    units["eval|dsa|1|genprior|0|2"] = {"acc": 0.78}  # 80.00 ± 1.63: |−3.00| > 1.63
    faithfulness.write_table({"units": units, "machine": "test"})
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| dsa | 1 |"))
    assert "| -3.00 | no (bar 1.63) |" in row


MTT_UTILS = '''
import time
import kornia  # only for ZCA in the real code
import numpy as np
import torch

def get_dataset(dataset, data_path, batch_size=1, subset=None, args=None):
    raise RuntimeError("would download " + dataset)

def get_network(model="ConvNet"):
    torch.random.manual_seed(int(time.time() * 1000) % 100000)
    return torch.nn.Linear(1, 1)

def evaluate_synset(it_eval, net, images_train, labels_train, testloader, args, texture=False):
    raise RuntimeError("would train a network")
'''

MTT_DISTILL = '''
import argparse
import numpy as np
import torch
from utils import get_dataset, get_network, evaluate_synset
import wandb

def main(args):
    args.device = "cpu"
    (channel, im_size, num_classes, names, mean, std, dst_train, dst_test, testloader, loader_train_dict,
     class_map, class_map_inv) = get_dataset(args.dataset, args.data_path, 256, None, args=args)
    wandb.init(sync_tensorboard=False, project="p", config=args)
    args = type("", (), {})()
    for key in wandb.config._items:
        setattr(args, key, wandb.config._items[key])
    labels = torch.tensor([class_map[int(dst_train[i][1])] for i in range(len(dst_train))])
    indices = [torch.nonzero(labels == c).flatten().tolist() for c in range(num_classes)]
    image_syn = torch.randn(num_classes * args.ipc, channel, *im_size)
    for c in range(num_classes):
        image_syn.data[c * args.ipc:(c + 1) * args.ipc] = torch.stack(
            [dst_train[int(i)][0] for i in np.random.permutation(indices[c])[:args.ipc]])
    image_syn = image_syn.detach().requires_grad_(True)
    label_syn = torch.arange(num_classes).repeat_interleave(args.ipc)
    optimizer_img = torch.optim.SGD([image_syn], lr=1.0, momentum=0.0)
    for it in range(args.Iteration + 1):
        if it % args.eval_it == 0:
            evaluate_synset(0, get_network(), image_syn.detach().clone(), label_syn, testloader, args)
            if it == 0:
                image_syn.cuda()
        get_network()  # reseeds torch from the clock, as the real one does
        optimizer_img.zero_grad()
        image_syn.sum().backward()  # every update takes exactly 1 from every pixel
        optimizer_img.step()
    wandb.finish()

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name in ("--dataset", "--data_path"):
        p.add_argument(name)
    for name in ("--ipc", "--Iteration", "--eval_it"):
        p.add_argument(name, type=int)
    main(p.parse_args())
'''


def test_the_mtt_child_reads_the_set_after_exactly_the_asked_updates(tmp_path):
    from genprior.synset import load_synset
    from safetensors.torch import load_file

    repo = _repo(tmp_path / "mtt", {"utils.py": MTT_UTILS, "networks.py": NETWORKS, "distill.py": MTT_DISTILL})
    out = tmp_path / "run"
    _child(repo, "distill.py", 0, "mtt", out, "--dataset", "MNIST", "--data_path", "data", "--ipc", "2",
           "--Iteration", "3", "--eval_it", "3")
    start = load_file(str(out / "start.safetensors"))["images"]
    # the recorded start is the reference's draw of real images, which genprior re-makes exactly
    assert torch.equal(start, faithfulness.reference_start_images("mtt", 2, 0))
    synset = load_synset(out / "synset")
    # three updates of -1 each: the set read at the evaluation of --Iteration 3, not after the fourth
    assert torch.equal(synset.images, start - 1 - 1 - 1) and synset.labels.tolist() == [c for c in range(10) for _ in (0, 1)]


def test_the_reference_buffer_holds_genprior_experts_tensor_for_tensor(tmp_path, monkeypatch):
    from genprior.matching.experts import BUFFER_FILE, BUFFER_FORMAT, expert_file
    from genprior.nets import create_net
    from genprior.synset import save_tensors_atomic, write_json_atomic

    shapes = [p.shape for p in create_net("convnet", 1, 10, 28).parameters()]
    n = sum(torch.Size(s).numel() for s in shapes)
    buffer = tmp_path / "experts"
    buffer.mkdir()
    flats = {f"epoch_{k}": torch.randn(n) for k in range(3)}
    save_tensors_atomic(flats, buffer / expert_file(0))
    write_json_atomic({"format": BUFFER_FORMAT, "dataset": "mnist5k", "net": "convnet", "net_options": {},
                       "channels": 1, "num_classes": 10, "resolution": 28, "epochs": 2, "num_params": n,
                       "experts": [expert_file(0)]}, buffer / BUFFER_FILE)
    monkeypatch.setitem(faithfulness.MTT_EXPERTS, "dir", str(buffer))
    faithfulness.write_reference_buffer(tmp_path / "ref")
    ref = torch.load(tmp_path / "ref" / "buffers" / "MNIST" / "ConvNet" / "replay_buffer_0.pt", weights_only=True)
    assert len(ref) == 1 and len(ref[0]) == 3
    for k in range(3):
        assert [t.shape for t in ref[0][k]] == shapes
        assert torch.equal(torch.cat([t.reshape(-1) for t in ref[0][k]]), flats[f"epoch_{k}"])


GLAD_UTILS = '''
import time
import torch
import kornia  # only for ZCA in the real code
from ema_pytorch import EMA  # only for its EMA evaluation
from networks import *

class Config:
    mean = torch.tensor([0.4377, 0.4438, 0.4728]).reshape(1, 3, 1, 1).cuda()
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1).cuda()

config = Config()

def get_dataset(dataset, data_path, batch_size=1, res=128, args=None):
    raise RuntimeError("would download " + dataset)

def get_network(*a, **k):
    torch.random.manual_seed(int(time.time() * 1000) % 100000)
    return ConvNet(1, 10, 28)

def evaluate_synset(*a, **k):
    raise RuntimeError("would train a network")
'''

GLAD_GLAD_UTILS = '''
import torch
from utils import get_network, config, evaluate_synset

def load_sgxl(res, args=None):
    raise RuntimeError("would download StyleGAN-XL to CUDA")

def prepare_latents(**kw):
    raise RuntimeError("would draw from StyleGAN-XL")

def eval_loop(**kw):
    raise RuntimeError("would train networks")

def latent_to_im(G, latents, args=None):
    im = G(latents[0], mode="wp")
    im = (im + 1) / 2
    return (im - config.mean) / config.std
'''

GLAD_SHARED_ARGS = '''
import argparse

def add_shared_args():
    p = argparse.ArgumentParser()
    for name in ("--dataset", "--save_path"):
        p.add_argument(name)
    for name in ("--ipc", "--Iteration"):
        p.add_argument(name, type=int)
    return p
'''

GLAD_DISTILL = '''
import os, random, time
import numpy as np
import torch
from utils import get_dataset, get_network
import wandb
from glad_utils import *

def main(args):
    args = parser.parse_args()
    torch.random.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    run = wandb.init(project="GLaD", job_type="DM", config=args)
    args.save_path = os.path.join(args.save_path, "dm", "{}-{}".format(time.strftime("%Y%m%d"), run.name))
    os.makedirs(args.save_path, exist_ok=True)
    channel, im_size, num_classes, *_ = get_dataset(args.dataset, "data", 256, 128, args=args)
    G, zdim, w_dim, num_ws = load_sgxl(128, args)
    latents, f_latents, label_syn = prepare_latents(channel=channel, num_classes=num_classes, im_size=im_size,
                                                    zdim=zdim, G=G, class_map_inv={}, get_images=None, args=args)
    start = latents.detach().clone()
    optimizer_img = torch.optim.SGD([latents], lr=args.lr_img, momentum=0.5)
    for it in range(args.Iteration + 1):
        if it == 0:
            eval_loop(latents=latents, it=it, args=args)
        get_network()
        image_syn = latent_to_im(G, (latents, f_latents), args)
        if it == args.Iteration:
            torch.save({"data": [[image_syn.detach().cpu(), label_syn.cpu()]], "start": start,
                        "draw": torch.tensor(np.random.randint(1 << 30))},
                       os.path.join(args.save_path, "res_%s_%s_%s.pt" % (args.method, args.dataset, args.subset)))
        optimizer_img.zero_grad()
        image_syn.sum().backward()
        optimizer_img.step()
'''


def test_the_glad_child_starts_from_genprior_latents_and_decodes_as_genprior(tmp_path):
    from genprior.synset import load_synset

    repo = _repo(tmp_path / "glad", {"networks/__init__.py": "from .conv import ConvNet\n", "networks/conv.py": NETWORKS,
                                     "utils.py": GLAD_UTILS, "glad_utils.py": GLAD_GLAD_UTILS,
                                     "shared_args.py": GLAD_SHARED_ARGS, "distill_dm.py": GLAD_DISTILL})

    def run(seed: int) -> dict:
        out = tmp_path / f"run{seed}"
        (out / "result").mkdir(parents=True)
        _child(repo, "distill_dm.py", seed, "glad-dm", out, "--dataset", "CIFAR10", "--ipc", "1", "--Iteration", "0",
               "--save_path", str(out / "result"), "--lr_img", "0.01")
        saved = torch.load(next((out / "result").rglob("res_DM_CIFAR10_none.pt")), weights_only=True)
        return {"saved": saved, "synset": load_synset(out / "synset")}

    a, b = run(0), run(1)
    # the reference starts from the latents genprior's run of the same seed starts from
    for seed, r in ((0, a), (1, b)):
        assert torch.equal(r["saved"]["start"], faithfulness.genprior_start("glad-dm", 1, seed)["w+"])
    # the seed shim: the script's fixed seed 0 becomes the run's seed
    assert int(a["saved"]["draw"]) != int(b["saved"]["draw"])
    # GLaD's decoding of that start (its normalisation, MNIST's constants) gives genprior's images
    ours = faithfulness.genprior_distiller("glad-dm", 1, 0, tmp_path / "g").decode_all()
    assert a["synset"].images.shape == ours.shape
    assert torch.allclose(a["synset"].images, ours, atol=1e-5)
    assert not torch.allclose(b["synset"].images, ours, atol=1e-2)
