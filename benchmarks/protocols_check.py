"""Evaluation protocols side by side with their public code, on one set of random real images.

    git clone https://github.com/snu-mllab/Efficient-Dataset-Condensation /somewhere/Efficient-Dataset-Condensation
    export GENPRIOR_REFERENCE_IDC=/somewhere/Efficient-Dataset-Condensation
    git clone https://github.com/LINs-lab/RDED /somewhere/RDED
    export GENPRIOR_REFERENCE_RDED=/somewhere/RDED
    python benchmarks/protocols_check.py                       # runs or resumes every unit, then writes the table
    python benchmarks/protocols_check.py & python benchmarks/protocols_check.py   # two 1-thread lanes
    python benchmarks/protocols_check.py --only 'soft|'        # only the units of one protocol
    python benchmarks/protocols_check.py --teacher DIR         # the soft protocol with an existing teacher
    python benchmarks/protocols_check.py --table               # only rewrites the table from saved results
    python benchmarks/protocols_check.py --epochs 2 --teacher-epochs 1   # a smoke test (labelled, kept out of the table)

Each evaluation protocol genprior added from a paper's code is run twice on the **same**
images (one random real set of ``mnist5k`` at IPC 10, seed 0: ``genprior.baselines``'
``random``, saved under ``runs/protocols_check/random-ipc10``): by genprior's
``evaluate_synset`` (ConvNet-3 ``convnet``, models 0-2), and by the training loop of the
protocol's public code in a child process, handed the same normalised tensors and tested
on genprior's ``mnist5k`` test split:

- ``minimax`` (Minimax Diffusion's hard-label evaluation = IDC's ``train.py``): the child
  builds IDC's arguments with IDC's own ``argument.py`` (``-d mnist --ipc 10``: 1,000
  epochs, SGD 0.01 / 0.9 / 5e-4, batch 64, MultiStepLR x0.2 at 2/3 and 5/6, DSA
  ``color_crop_scale_rotate`` once flip (digits) and cutout (CutMix) are removed, CutMix
  with probability 0.5), loads the set as IDC's ``test.py`` loads a set saved normalised
  (its ``TensorDataset``, ``MultiEpochsDataLoader``), and calls IDC's ``define_model``
  (its ConvNet-3, instance norm, width 128) and ``train`` (its ``train_epoch``: its
  ``DiffAug(batch=False)``, its CutMix; its ``validate``, 4 tests as ``test.py``'s
  ``test_data``).
- ``soft`` (SRe2L/RDED's soft labels): the child builds RDED's arguments with RDED's own
  ``argument.py`` (its CIFAR-10 ConvNet-3 row, ``--factor 2`` for the 50-100 % crop) and
  calls RDED's ``validation/main.py`` ``main`` (its AdamW over ``get_parameters``, its
  LambdaLR cosine, its transforms, its ``train``: ``mix_aug`` CutMix on every batch, the
  teacher labelling the mixed batch, KL at T=20; its test rule), with genprior's teacher
  (the very ``nn.Module`` ``genprior.teacher.load_teacher`` gives, the one genprior's side
  uses) and RDED's own ConvNet class as the student (instance norm, width 128, 1 channel).

What the reference needs on today's torch and this data is shimmed in the child, each shim
commented in ``idc_child`` / ``rded_child``; where genprior's protocol departs from the
code on purpose, the reference is configured as genprior (RDED's cosine ends at half the
lr, genprior's at 0 as SRe2L's; RDED's batch rule gives 50 at IPC 10, genprior uses 100),
and the table says so. The reference code is never committed or imported by genprior.

Units (resumable and shared between lanes, ``genprior/lanes.py``): ``set`` makes the
random real set; ``teacher`` trains the soft protocol's teacher with ``genprior teacher``
into ``runs/protocols_check/teacher`` (or adopts ``--teacher DIR``);
``eval|<protocol>|<side>|<model>`` trains one network (genprior's side resumes from its
training state; a reference run has no checkpoints and restarts). ``--epochs N`` (and
``--teacher-epochs N``) run the same units with fewer epochs under keys ending
``|epochs=N`` (``t-epochs=N``): labelled smoke results, never in the table. The table:
``benchmarks/results/protocols_check_mnist5k.md`` (+ ``.json``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import types
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import torch

from genprior.data import load_dataset
from genprior.evaluate import PROTOCOLS, mean_std, with_counts
from genprior.lanes import lane_main, run_process
from genprior.synset import load_synset
from reference_shims import stand_in_modules

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "protocols_check_mnist5k.json"
TABLE = RESULTS.with_suffix(".md")
RUNS = ROOT / "runs" / "protocols_check"
DATASET = "mnist5k"
IPC = 10
SET_SEED = 0
SET_DIR = RUNS / f"random-ipc{IPC}"
ARCH = "convnet"
MODELS = (0, 1, 2)
SIDES = ("genprior", "reference")
#: the teacher genprior trains by default (``genprior teacher``'s own default epochs)
TEACHER_EPOCHS = 50

#: protocol -> its public code: the environment variable naming a checkout, the files the child needs
REFERENCES: Dict[str, dict] = {
    "minimax": {
        "paper": "Minimax Diffusion (Gu et al., CVPR 2024), evaluated by IDC's train.py (Kim et al., ICML 2022)",
        "env": "GENPRIOR_REFERENCE_IDC",
        "url": "https://github.com/snu-mllab/Efficient-Dataset-Condensation",
        "files": ("train.py", "argument.py", "data.py", "misc/augment.py", "models/convnet.py"),
        "student": "IDC's models/convnet.py ConvNet (depth 3, width 128, instance norm), built by its define_model",
    },
    "soft": {
        "paper": "SRe2L (Yin et al., NeurIPS 2023) / RDED (Sun et al., CVPR 2024) soft-label evaluation",
        "env": "GENPRIOR_REFERENCE_RDED",
        "url": "https://github.com/LINs-lab/RDED",
        "files": ("validation/main.py", "validation/utils.py", "argument.py", "synthesize/models.py"),
        "student": "RDED's synthesize/models.py ConvNet (depth 3, width 128, instance norm, 1 channel, 28 px); "
                   "RDED's own load_model builds it with batch norm and 3 channels",
    },
}
PROTOCOL_NAMES = tuple(REFERENCES)


# -- what this run is: the full comparison, or a labelled smoke test ------------------------

class Run:
    """The options that change what the units compute (``--epochs``, ``--teacher-epochs``,
    ``--teacher``), parsed before ``lane_main`` sees the command line."""

    epochs: Optional[int] = None
    teacher_epochs: Optional[int] = None
    teacher: Optional[Path] = None

    @classmethod
    def variant(cls) -> str:
        """'' for the full comparison; else what was overridden (the keys' suffix)."""
        parts = []
        if cls.epochs is not None:
            parts.append(f"epochs={cls.epochs}")
        if cls.teacher_epochs is not None:
            parts.append(f"t-epochs={cls.teacher_epochs}")
        return ",".join(parts)


def suffix(variant: str) -> str:
    return f"|{variant}" if variant else ""


def teacher_key() -> str:
    return "teacher" + (f"|t-epochs={Run.teacher_epochs}" if Run.teacher_epochs is not None else "")


def teacher_dir() -> Path:
    if Run.teacher is not None:
        return Run.teacher
    return RUNS / ("teacher" if Run.teacher_epochs is None else f"teacher-e{Run.teacher_epochs}")


def protocol_for(name: str):
    """genprior's protocol as this run runs it (``with_counts`` renames it when the epochs are overridden)."""
    return PROTOCOLS[name] if Run.epochs is None else with_counts(name, epochs=Run.epochs)


def eval_key(protocol: str, side: str, model: int) -> str:
    return f"eval|{protocol}|{side}|{model}{suffix(Run.variant())}"


def order() -> List[str]:
    """The set, the teacher, then model by model both sides of both protocols, so that a
    partial run already compares like with like."""
    keys = ["set", teacher_key()]
    for model in MODELS:
        for protocol in PROTOCOL_NAMES:
            keys += [eval_key(protocol, side, model) for side in SIDES]
    return keys


def deps(key: str) -> List[str]:
    parts = key.split("|")
    if parts[0] != "eval":
        return []
    return ["set", teacher_key()] if parts[1] == "soft" else ["set"]


def state_name(key: str) -> str:
    return key.replace("|", "-").replace("=", "").replace(",", "-")


# -- units ----------------------------------------------------------------------------------

def make_set() -> dict:
    """genprior's random real baseline (IPC 10, seed 0), in genprior's set format."""
    from genprior.baselines import make_baseline
    from genprior.synset import save_synset

    train = load_dataset(DATASET, "train")
    synset = make_baseline("random", train, IPC, seed=SET_SEED)
    save_synset(synset, SET_DIR, overwrite=True)
    return {"path": str(SET_DIR.relative_to(ROOT)), "images": len(synset.images),
            "images_sum": float(synset.images.double().sum()), "train_indices": synset.config["train_indices"]}


def teacher_fingerprint(net: torch.nn.Module) -> str:
    """As ``evaluate_synset`` records it (``weights_fingerprint``)."""
    return f"{sum(float(p.double().sum()) for p in net.parameters()):.12e}"


def make_teacher(threads: int) -> dict:
    """The soft protocol's teacher: ``--teacher DIR`` as given, a teacher already in the folder
    (trained before a kill), or ``genprior teacher`` on the whole train split."""
    from genprior.teacher import load_teacher

    out = teacher_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if Run.teacher is None and not (out / "teacher.json").is_file():
        epochs = TEACHER_EPOCHS if Run.teacher_epochs is None else Run.teacher_epochs
        cmd = [sys.executable, "-m", "genprior", "teacher", "--dataset", DATASET, "--arch", ARCH, "--epochs",
               str(epochs), "--seed", "0", "--device", "cpu", "--out", str(out)]
        result = run_process(cmd, threads, cwd=ROOT, log=out.parent / f"{out.name}.log")
        result["command"] = " ".join(["genprior", *cmd[3:]]).replace(str(ROOT) + os.sep, "")
    net, card = load_teacher(out, load_dataset(DATASET, "train"))
    result.update(path=str(out), given=Run.teacher is not None, epochs=card["epochs"], arch=card["arch"],
                  test_accuracy=card["test_accuracy"], weights_fingerprint=teacher_fingerprint(net))
    return result


def recorded_teacher() -> dict:
    """The teacher unit of this run, as recorded (the soft units use that folder)."""
    from genprior.lanes import locked

    with locked(RESULTS, initial) as results:
        unit = results["units"][teacher_key()]
    if Run.teacher is not None and Path(unit["path"]).resolve() != Run.teacher.resolve():
        raise RuntimeError(f"--teacher {Run.teacher} differs from the teacher this comparison already used "
                           f"({unit['path']}); run `--redo teacher` first to change it")
    return unit


def eval_genprior(protocol: str, model: int, threads: int, key: str, test) -> dict:
    """Model ``model`` of genprior's ``evaluate_synset`` (seed = model, as ``lanes.eval_unit``),
    resumable from its training state; the best of the protocol's tests beside the last."""
    from genprior.evaluate import evaluate_synset

    proto = protocol_for(protocol)
    teacher = recorded_teacher()["path"] if proto.temperature > 0 else None
    report = evaluate_synset(load_synset(SET_DIR), archs=[ARCH], protocol=replace(proto, num_models=1), test=test,
                             seed=model, device="cpu", progress=False, state_dir=RUNS / "state" / state_name(key),
                             teacher=teacher)
    r = report["results"][ARCH]
    unit = {"acc": r["accs"][0], "time_s": r["time_s"], "epochs": report["protocol"]["epochs"], "seed": model,
            "threads": threads, "protocol": report["protocol"], "augment": report["dsa_strategy"]}
    if "best_accs" in r:
        unit["best_acc"] = r["best_accs"][0]
        unit["tests"] = f"every {proto.test_every} epochs and after the last"
    if "time_note" in r:
        unit["time_note"] = r["time_note"]
    if "teacher" in report:
        unit["teacher"] = report["teacher"]["weights_fingerprint"]
    unit["s_per_epoch"] = unit["time_s"] / unit["epochs"] if unit["time_s"] else None
    return unit


def reference_repo(protocol: str) -> Path:
    spec = REFERENCES[protocol]
    value = os.environ.get(spec["env"])
    if not value:
        raise RuntimeError(f"set {spec['env']} to a checkout of {spec['url']} to run the reference side of "
                           f"{protocol!r}")
    repo = Path(value).expanduser().resolve()
    missing = [f for f in spec["files"] if not (repo / f).is_file()]
    if missing:
        raise RuntimeError(f"{spec['env']}={repo} has no {', '.join(missing)}; point it at a checkout of {spec['url']}")
    return repo


def repo_commit(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def eval_reference(protocol: str, model: int, threads: int, key: str) -> dict:
    """The reference's own training loop in a child process (``reference-child``)."""
    repo = reference_repo(protocol)
    out = RUNS / "reference" / state_name(key)
    out.mkdir(parents=True, exist_ok=True)
    teacher = recorded_teacher()["path"] if protocol == "soft" else "-"
    epochs = "-" if Run.epochs is None else str(Run.epochs)
    cmd = [sys.executable, str(Path(__file__).resolve()), "reference-child", protocol, str(repo), str(model), epochs,
           str(teacher), str(out)]
    result = run_process(cmd, threads, cwd=ROOT, log=out / "child.log")
    result.update(json.loads((out / "result.json").read_text()))
    result.update(seed=model, threads=threads, commit=repo_commit(repo))
    result["s_per_epoch"] = result["loop_time_s"] / result["epochs"]
    return result


def work(key: str, threads: int, cache: dict) -> dict:
    parts = key.split("|")
    if parts[0] == "set":
        return make_set()
    if parts[0] == "teacher":
        return make_teacher(threads)
    protocol, side, model = parts[1], parts[2], int(parts[3])
    if side == "reference":
        return eval_reference(protocol, model, threads, key)
    if "test" not in cache:
        cache["test"] = load_dataset(DATASET, "test")
    return eval_genprior(protocol, model, threads, key, cache["test"])


def artifacts(key: str) -> list:
    parts = key.split("|")
    if parts[0] == "set":
        return [SET_DIR]
    if parts[0] == "teacher":
        return [] if Run.teacher is not None else [teacher_dir()]
    return [RUNS / "state" / state_name(key), RUNS / "reference" / state_name(key)]


# -- the reference children -----------------------------------------------------------------

def cpu_only() -> None:
    """Shim (both references), CUDA: their loops move every batch, model and loss with
    ``.cuda()``; on a CPU tensors and modules stay where they are."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self


def idc_child(repo: Path, model: int, epochs: Optional[int], out: Path) -> dict:
    """IDC's ``train.py`` on the set, as its ``test.py`` evaluates a set saved normalised."""
    import functools

    import numpy as np

    cpu_only()
    # Shim 1: train.py imports efficientnet_pytorch for its EfficientNet model, not used here.
    stand_in_modules("efficientnet_pytorch")
    # Shim 2, numpy >= 1.24 removed ``np.int``, which IDC's rand_bbox (its CutMix box) calls:
    # the builtin int it aliased.
    np.int = int
    sys.path.insert(0, str(repo))
    os.chdir(out)  # argument.py names ./results/... folders (none is written here)
    # IDC's own argument rules for MNIST at IPC 10: 1000 epochs, mix_p 0.5, dsa on, flip and cutout
    # removed from the DSA strategy, ConvNet depth 3 (its default 10, capped to 3 for convnet).
    sys.argv = ["test.py", "-d", "mnist", "-n", "convnet", "--ipc", str(IPC), "-s", "dsa", "--seed", str(model),
                "--workers", "0"]
    args = importlib.import_module("argument").args
    if epochs is not None:
        args.epochs = epochs
    # Shim 3, CUDA at import: train.py builds per-dataset mean/std tensors on 'cuda' (unused by
    # train()); they are built on the CPU.
    tensor = torch.tensor
    torch.tensor = lambda *a, device=None, **k: tensor(*a, **k)
    try:
        idc_train = importlib.import_module("train")
    finally:
        torch.tensor = tensor
    # Shim 4, CUDA: random_indices (CutMix's partner permutation) moves it to 'cuda' by default.
    idc_train.random_indices = functools.partial(idc_train.random_indices, device="cpu")
    idc_data = importlib.import_module("data")
    convnet = importlib.import_module("models.convnet")

    # Shim 5, today's torch: IDC's ConvNet flattens its last map with ``.view``, which refuses the
    # channels-last strides its DiffAug crop leaves on 1-channel images (and conv keeps them);
    # ``reshape`` gives the same numbers. The rest of its forward as it is.
    def flat_forward(self, x, return_features=False):
        for d in range(self.depth):
            x = self.layers["conv"][d](x)
            if len(self.layers["norm"]) > 0:
                x = self.layers["norm"][d](x)
            x = self.layers["act"][d](x)
            if len(self.layers["pool"]) > 0:
                x = self.layers["pool"][d](x)
        out = x.reshape(x.shape[0], -1)
        logit = self.classifier(out)
        return (logit, out) if return_features else logit

    convnet.ConvNet.forward = flat_forward

    synset = load_synset(SET_DIR)
    test = load_dataset(DATASET, "test")
    # test.py for a set saved as normalised tensors (its 'dsa'/'kip' branch): its TensorDataset with
    # transform_mnist(from_tensor=True, normalize=False), which is empty with args.augment False (DSA on)
    train_transform, _ = idc_data.transform_mnist(augment=args.augment, from_tensor=True, normalize=False)
    train_dataset = idc_data.TensorDataset(synset.images, synset.labels, train_transform)
    val_dataset = idc_data.TensorDataset(test.images, test.labels)
    # train.main's seeding (test.py seeds nothing): numpy and torch with the run's seed
    np.random.seed(model)
    torch.manual_seed(model)
    # test.py's loaders, without worker processes (one thread per unit here): its train loader
    # has none for DSA runs anyway; its test loader's 4 workers change no number
    train_loader = idc_data.MultiEpochsDataLoader(train_dataset, batch_size=args.batch_size, shuffle=True,
                                                  num_workers=0, persistent_workers=False)
    val_loader = idc_data.MultiEpochsDataLoader(val_dataset, batch_size=args.batch_size // 2, shuffle=False,
                                                num_workers=0, persistent_workers=False)
    # test_data(num_val=4): 4 tests over the run, the last after the last epoch (at least 1 epoch apart
    # when a smoke test has fewer than 4 epochs)
    args.epoch_print_freq = max(1, args.epochs // 4)
    net = idc_train.define_model(args, args.nclass, print)
    t0 = time.perf_counter()
    best, last = idc_train.train(args, net, train_loader, val_loader, logger=print)
    loop_time = time.perf_counter() - t0
    return {"acc": last / 100, "best_acc": best / 100, "epochs": args.epochs, "loop_time_s": loop_time,
            "tests": f"every {args.epoch_print_freq} epochs (test.py's test_data: 4 per run)",
            "student": REFERENCES["minimax"]["student"],
            "settings": {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                                      "mixup", "mix_p", "beta", "dsa", "dsa_strategy", "net_type",
                                                      "depth", "width", "norm_type", "nch", "size")},
            "params": sum(p.numel() for p in net.parameters())}


class TensorImages(torch.utils.data.Dataset):
    """Stand-in for RDED's ImageFolder (which reads PNG folders): the set's or the test split's
    normalised tensors, the set's with RDED's training transform applied per image as its
    dataset does."""

    def __init__(self, images, labels, transform=None):
        self.images, self.targets, self.transform = images, labels.tolist(), transform

    def __getitem__(self, index):
        x = self.images[index]
        return (self.transform(x) if self.transform is not None else x), self.targets[index]

    def __len__(self):
        return len(self.targets)


def rded_child(repo: Path, model: int, epochs: Optional[int], teacher_path: str, out: Path) -> dict:
    """RDED's ``validation/main.py`` ``main`` on the set, with genprior's teacher."""
    import numpy as np
    import torchvision.transforms as tv

    from genprior.teacher import load_teacher

    cpu_only()
    soft = PROTOCOLS["soft"]
    sys.path.insert(0, str(repo))
    os.chdir(out)  # argument.py makes ./exp/<name>
    # RDED's own argument rules for its CIFAR-10 ConvNet-3 row (scripts/cifar10_10ipc_conv3_to_conv3_cr5.sh):
    # AdamW lr 1e-3 (conv3), weight decay 0.01, T=20 with CutMix (Beta 1), cosine, 300 epochs. --factor 2
    # gives its crop of 50-100 % (scale=(1/factor, 1); its CIFAR script's --factor 1 crops nothing).
    # Batch: RDED's rule gives 50 at IPC 10 for 10 classes; genprior's protocol uses 100, given here.
    sys.argv = ["main.py", "--subset", "cifar10", "--arch-name", "conv3", "--stud-name", "conv3", "--ipc", str(IPC),
                "--factor", "2", "--re-epochs", str(epochs or soft.epochs), "--re-batch-size", str(soft.batch_size),
                "--workers", "0", "--seed", str(model)]
    args = importlib.import_module("argument").args
    args.input_size = load_dataset(DATASET, "train").resolution  # 28, in place of CIFAR's 32
    vm = importlib.import_module("validation.main")
    models = importlib.import_module("synthesize.models")

    train = load_dataset(DATASET, "train")
    test = load_dataset(DATASET, "test")
    synset = load_synset(SET_DIR)
    teacher, _ = load_teacher(teacher_path, train)

    # Shim 1, networks: load_model hands the teacher genprior's (the same weights genprior's side
    # distils from) and the student RDED's ConvNet class as a ConvNet-3 with instance norm on
    # 1-channel 28-px digits (its load_model builds conv3 with batch norm, 3 channels, 32 px).
    def load_model(model_name, dataset, pretrained, classes):
        if pretrained:
            return teacher
        return models.ConvNet(num_classes=len(classes), net_norm="instance", net_depth=3, net_width=128,
                              channel=train.channels, net_act="relu", net_pooling="avgpooling",
                              im_size=(train.resolution, train.resolution))

    # Shim 2, data: the set's and the test split's tensors in place of PNG folders (TensorImages);
    # the test images as genprior tests them, without RDED's Resize(input_size // 7 * 8) +
    # CenterCrop, an identity at CIFAR's 32 px for which it is written but an 8/7 zoom at 28 px.
    def image_folder(classes, ipc, mem=False, shuffle=False, root=None, transform=None):
        if root == args.syn_data_path:
            return TensorImages(synset.images, synset.labels, transform)
        return TensorImages(test.images, test.labels)

    # Shim 3, transforms: the tensors are normalised already, so ToTensor and Normalize are
    # identities; the random-resized crop (bilinear) and the flip commute with the per-channel
    # normalisation and are torchvision's, as RDED's.
    transforms = types.SimpleNamespace(**{k: getattr(tv, k) for k in dir(tv) if not k.startswith("_")})
    transforms.ToTensor = lambda: (lambda x: x)
    transforms.Normalize = lambda mean, std: (lambda x: x)

    # Shim 4, patch shuffling: RDED shuffles the 2x2 patches of its mosaics (ShufflePatches(factor));
    # genprior's protocol keeps whole images (these are whole real digits): the identity.
    class NoShuffle(torch.nn.Module):
        def __init__(self, factor):
            super().__init__()

        def forward(self, img):
            return img

    # Shim 5, schedule: RDED's cosine, 0.5 * (1 + cos(pi * step / epochs / 2)), ends at half the lr;
    # genprior's follows SRe2L's to 0, 0.5 * (1 + cos(pi * step / epochs)): given here, through RDED's
    # own LambdaLR stepped once per epoch.
    def lambda_lr(optimizer, lr_lambda, last_epoch=-1):
        E = args.re_epochs
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / E)) if step <= E else 0,
            last_epoch=last_epoch)

    # Recording (no change to the run): each test's accuracy, and the student, to test it after
    # the last epoch when RDED's rule (every 10 epochs past 80 % of the run) does not
    tests: List[tuple] = []
    seen: dict = {}
    validate, train_epoch = vm.validate, vm.train

    def recorded_validate(model_, args_, epoch=None):
        top1 = validate(model_, args_, epoch)
        tests.append((epoch, float(top1)))
        return top1

    def recorded_train(epoch, loader, teacher_model, student_model, args_):
        seen["student"] = student_model
        return train_epoch(epoch, loader, teacher_model, student_model, args_)

    vm.load_model, vm.ImageFolder, vm.transforms, vm.ShufflePatches, vm.LambdaLR = (
        load_model, image_folder, transforms, NoShuffle, lambda_lr)
    vm.validate, vm.train = recorded_validate, recorded_train
    args.workers = 0  # no loader processes: one thread per unit
    # Shim 6, repeatability: RDED's main seeds random and torch but not numpy, from which its CutMix
    # draws lam and the box; numpy is seeded with the run's seed too.
    np.random.seed(model)
    t0 = time.perf_counter()
    vm.main(args)
    loop_time = time.perf_counter() - t0
    rded_tests = list(tests)
    if not tests or tests[-1][0] != args.re_epochs - 1:
        recorded_validate(seen["student"], args, args.re_epochs - 1)
    student = seen["student"]
    return {"acc": tests[-1][1] / 100, "best_acc": max(t[1] for t in rded_tests) / 100 if rded_tests else None,
            "epochs": args.re_epochs, "loop_time_s": loop_time,
            "tests": "RDED's rule: every 10 epochs once past 80 % of the run, and after the last",
            "test_epochs": [t[0] + 1 for t in rded_tests], "student": REFERENCES["soft"]["student"],
            "settings": {"re_epochs": args.re_epochs, "re_batch_size": args.re_batch_size, "adamw_lr": args.adamw_lr,
                         "adamw_weight_decay": args.adamw_weight_decay, "temperature": args.temperature,
                         "mix_type": args.mix_type, "cutmix": args.cutmix, "factor": args.factor,
                         "max_scale_crops": args.max_scale_crops, "input_size": args.input_size,
                         "cosine": "SRe2L's, to 0 (shim 5)"},
            "teacher": teacher_fingerprint(teacher),
            "params": sum(p.numel() for p in student.parameters())}


def reference_child(protocol: str, repo: str, model: str, epochs: str, teacher: str, out: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")  # the references' own deprecation noise (affine_grid, meshgrid, ...)
    n_epochs = None if epochs == "-" else int(epochs)
    out_dir = Path(out).resolve()
    if protocol == "minimax":
        result = idc_child(Path(repo), int(model), n_epochs, out_dir)
    else:
        result = rded_child(Path(repo), int(model), n_epochs, teacher, out_dir)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("acc", "best_acc", "epochs", "loop_time_s")}))


# -- the table ------------------------------------------------------------------------------

def initial() -> dict:
    return {"dataset": DATASET, "ipc": IPC, "set_seed": SET_SEED, "units": {}, "claims": {},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}


def summary(units: dict, protocol: str, side: str, field: str = "acc") -> Optional[dict]:
    """Over the full-run units only (keys without a variant suffix)."""
    found = [units[k] for k in (f"eval|{protocol}|{side}|{m}" for m in MODELS) if k in units]
    vals = [100 * u[field] for u in found if u.get(field) is not None]
    if not vals:
        return None
    mean, std = mean_std(vals)
    speeds = [u["s_per_epoch"] for u in found if u.get("s_per_epoch")]
    return {"mean": mean, "std": std, "n": len(vals), "each": vals,
            "s_per_epoch": sum(speeds) / len(speeds) if speeds else None}


SETTINGS = {
    "minimax": "1,000 epochs, SGD lr 0.01 / momentum 0.9 / wd 5e-4, batch 64, MultiStepLR x0.2 at epochs 666 and 833, "
               "DSA color + one of crop/scale/rotate per image (IDC's DiffAug(batch=False), no flip for digits, no "
               "cutout with CutMix), CutMix Beta 1 on half the batches, last-epoch accuracy",
    "soft": "300 epochs, AdamW lr 1e-3 / wd 0.01 (none on biases and norm parameters), cosine to 0, batch 100, "
            "random-resized crop 50-100 % + flip, CutMix Beta 1 on every batch, the teacher's softmax at T=20 of the "
            "mixed batch, KL (no T^2); last-epoch accuracy, best of the tests beside it",
}
DIFFERENCES = {
    "minimax": [
        "IDC's DiffAug resamples scale and rotation with `affine_grid`/`grid_sample` at torch's default "
        "`align_corners=False`; genprior's DSA ops use `align_corners=True` (as DC/DSA's code).",
        "Tests: IDC's `test_data` tests 4 times (every 250 epochs) and reports best and last; genprior's `minimax` "
        "reports the last epoch only (the best column is the reference's alone).",
        "Minimax Diffusion's own `train.py` (a copy of IDC's) has DSA removed; genprior follows IDC's `train.py`, "
        "as this check does.",
    ],
    "soft": [
        "Schedule: RDED's LambdaLR cosine ends at half the lr (`cos(pi * step / epochs / 2)`); genprior's follows "
        "SRe2L's to 0. The reference is run with SRe2L's (shim 5 of `rded_child`).",
        "Batch: RDED's rule gives 50 at IPC 10 for 10 classes (100 only at IPC 50); genprior's `soft` uses 100 at "
        "every IPC. The reference is run with 100 (`--re-batch-size`).",
        "Student: RDED's `load_model` builds its ConvNet-3 with batch norm; genprior's `convnet` has instance norm. "
        "The reference's ConvNet class is built with instance norm here.",
        "Crops: RDED's `--factor 2` crop comes with `ShufflePatches(2)` (its 2x2 mosaics); genprior keeps whole "
        "images (shim 4). Its CIFAR-10 script uses `--factor 1`, which does not crop at all. torchvision's crop "
        "takes whole-pixel boxes; genprior's `ImageNetAugment` samples continuous ones (same distribution of areas "
        "and ratios).",
        "Tests: RDED tests every 10 epochs once past 80 % of the run (6 tests in 300 epochs) and prints the best; "
        "genprior's `soft` tests 30 times evenly over the run; so the best columns differ in what they maximise.",
        "RDED's student also runs a no-grad forward on the un-mixed batch each step (for its train accuracy; no "
        "effect on training with instance norm).",
        "Both flip digits (RDED's transforms are dataset-agnostic); genprior's DSA strategy for digits drops the flip.",
    ],
}

#: what each child changes for today's torch and numpy, a CPU and this data (commented where applied)
SHIMS = {
    "minimax": "`.cuda()` as the identity; `efficientnet_pytorch` stood in for (imported, unused); `np.int` = "
               "`int` (removed in numpy 1.24, used by its CutMix box); its import-time mean/std tensors built on "
               "the CPU; `random_indices` with device 'cpu'; its ConvNet's final `.view` as `.reshape` (the "
               "channels-last strides its crop leaves on 1-channel images); no loader worker processes",
    "soft": "`.cuda()` as the identity; `load_model` gives genprior's teacher and RDED's ConvNet class with instance "
            "norm on 1 channel; the set and test split as tensors in place of its PNG folders (test images "
            "without its Resize + CenterCrop); ToTensor/Normalize as identities on the normalised tensors; "
            "ShufflePatches as the identity; SRe2L's cosine to 0 through its LambdaLR; numpy seeded; no loader "
            "worker processes",
}


def write_table(results: dict) -> None:
    units = results["units"]
    lines = [
        f"# Evaluation protocols against their public code on {DATASET}",
        "",
        f"One set, both sides: random real images of `{DATASET}` at IPC {IPC} (genprior's `random` baseline, seed "
        f"{SET_SEED}; `{SET_DIR.relative_to(ROOT)}`), as the same normalised tensors; tested on genprior's "
        f"`{DATASET}` test split (1,000 images). genprior: `evaluate_synset` with `{ARCH}` (ConvNet-3, instance "
        "norm), models 0-2 (seed = model). Reference: the public code's own training loop in a child process, "
        "seeded with the model index.",
        "Accuracy: mean ± std (population) over 3 models, last epoch. Within the bar: |difference| ≤ the larger "
        "of the two stds.",
        f"Machine: {results['machine']}; every unit on 1 CPU thread, often beside another 1-thread job, so "
        "seconds per epoch compare the two sides, not absolute speed.",
        "Written by `python benchmarks/protocols_check.py` (reference code from the environment variables named in "
        "its docstring).",
        "",
        "| protocol | genprior % | reference % | difference | within the bar | best of tests: genprior / reference "
        "| s/epoch genprior / reference | per model: genprior / reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for protocol in PROTOCOL_NAMES:
        g, r = summary(units, protocol, "genprior"), summary(units, protocol, "reference")
        if g is None and r is None:
            continue

        def fmt(s):
            return f"{s['mean']:.2f} ± {s['std']:.2f} (n={s['n']})" if s else "–"

        if g and r:
            diff = g["mean"] - r["mean"]
            bar = max(g["std"], r["std"])
            diff_s, verdict = f"{diff:+.2f}", ("yes" if abs(diff) <= bar else "no") + f" (bar {bar:.2f})"
        else:
            diff_s, verdict = "–", "–"
        best = " / ".join(fmt(summary(units, protocol, side, "best_acc")) for side in SIDES)
        speed = " / ".join(f"{s['s_per_epoch']:.2f}" if s and s["s_per_epoch"] else "–" for s in (g, r))
        each = " / ".join(", ".join(f"{v:.1f}" for v in s["each"]) if s else "–" for s in (g, r))
        lines.append(f"| {protocol} | {fmt(g)} | {fmt(r)} | {diff_s} | {verdict} | {best} | {speed} | {each} |")
    lines += ["", "What each row runs:"]
    for protocol, spec in REFERENCES.items():
        done = [units[k] for k in (f"eval|{protocol}|reference|{m}" for m in MODELS) if k in units]
        commits = sorted({u.get("commit", "?") for u in done})
        lines.append(f"- **{protocol}** ({spec['paper']}): {SETTINGS[protocol]}. Reference: {spec['url']} at "
                     f"{', '.join(commits) or 'not run yet'}; student: {spec['student']}; genprior's student: "
                     f"`{ARCH}`.")
    teacher = units.get("teacher")
    if teacher:
        fingerprints = {u.get("teacher") for k, u in units.items()
                        if k.startswith("eval|soft|") and k.count("|") == 3 and u.get("teacher")}
        same = ("every soft unit used it" if fingerprints <= {teacher["weights_fingerprint"]}
                else f"WARNING: soft units used other teachers too ({', '.join(sorted(fingerprints))})")
        lines.append(f"- Teacher of `soft` (both sides): `{ARCH}` trained by `genprior teacher` for "
                     f"{teacher['epochs']} epoch(s) on the whole train split, test accuracy "
                     f"{100 * teacher['test_accuracy']:.2f} %, weights fingerprint {teacher['weights_fingerprint']}"
                     f"{' (given with --teacher)' if teacher.get('given') else ''}; {same}.")
    lines += ["", "Shims in the reference children (`idc_child`, `rded_child`):"]
    lines += [f"- {protocol}: {text}." for protocol, text in SHIMS.items()]
    lines += ["", "Where genprior's protocol and the public code differ (the reference is configured as genprior "
              "where it says so):"]
    for protocol in PROTOCOL_NAMES:
        lines += [f"- {protocol}: {d}" for d in DIFFERENCES[protocol]]
    smoke = sorted(k for k in units if k.startswith("eval|") and k.count("|") > 3)
    if smoke:
        lines += ["", f"{len(smoke)} smoke unit(s) with overridden epochs are kept in the JSON "
                  "(keys ending `|epochs=...`) and are not in this table."]
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    os.chdir(ROOT)
    if sys.argv[1:2] == ["reference-child"]:
        return reference_child(*sys.argv[2:8])
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--epochs", type=int, help="override every protocol's epochs (a smoke test: its units are "
                        "kept under keys ending |epochs=N and never enter the table)")
    parser.add_argument("--teacher-epochs", type=int, help="train the soft protocol's teacher for this many epochs "
                        f"(default {TEACHER_EPOCHS}, genprior's) into its own folder; labelled like --epochs")
    parser.add_argument("--teacher", help="an existing teacher folder (`genprior teacher --dataset mnist5k`) in "
                        "place of training one into runs/protocols_check/teacher")
    known, rest = parser.parse_known_args()
    for flag, value in (("--epochs", known.epochs), ("--teacher-epochs", known.teacher_epochs)):
        if value is not None and value < 1:
            raise SystemExit(f"{flag} must be at least 1, got {value}")
    if known.teacher and known.teacher_epochs:
        raise SystemExit("--teacher and --teacher-epochs exclude each other")
    Run.epochs, Run.teacher_epochs = known.epochs, known.teacher_epochs
    Run.teacher = Path(known.teacher).resolve() if known.teacher else None
    sys.argv = [sys.argv[0], *rest]

    def make_work(threads: int):
        cache: dict = {}
        return lambda key: work(key, threads, cache)
    lane_main(RESULTS, initial, order(), deps, make_work, write_table, TABLE, "'soft|'", artifacts)


if __name__ == "__main__":
    sys.exit(main())
