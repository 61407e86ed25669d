"""benchmarks/faithfulness.py runs a paper's script on genprior's data: its shims, checked on a
stand-in repository shaped like the reference one (the real code is never in the tests)."""
import json
import subprocess
import sys
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


@pytest.fixture
def stand_in(tmp_path):
    repo = tmp_path / "reference"
    repo.mkdir()
    (repo / "utils.py").write_text(UTILS)
    (repo / "networks.py").write_text(NETWORKS)
    (repo / "main.py").write_text(MAIN)
    return repo


def _run(repo: Path, out: Path, seed: int) -> dict:
    (out / "result").mkdir(parents=True)
    cmd = [sys.executable, str(BENCH / "faithfulness.py"), "reference-child", str(repo), "main.py", str(seed), "dsa",
           str(out), "--save_path", str(out / "result")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(out / "result" / "res_X.pt", weights_only=True)


def test_reference_runs_on_genprior_data_with_its_shims_and_is_repeatable(stand_in, tmp_path):
    from genprior.data import load_dataset
    from genprior.synset import load_synset

    a = _run(stand_in, tmp_path / "a", seed=0)
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
    assert json.loads((tmp_path / "a" / "timing.json").read_text())["loop_time_s"] > 0


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
