"""Faithfulness: genprior's losses side by side with their papers' public code.

    git clone https://github.com/VICO-UoE/DatasetCondensation /somewhere/DatasetCondensation
    export GENPRIOR_REFERENCE_DC=/somewhere/DatasetCondensation
    git clone https://github.com/GeorgeCazenavette/mtt-distillation /somewhere/mtt-distillation
    export GENPRIOR_REFERENCE_MTT=/somewhere/mtt-distillation
    python benchmarks/faithfulness.py                  # runs or resumes every unit, then writes the table
    python benchmarks/faithfulness.py --only 'dsa|1'   # only the units of one row
    python benchmarks/faithfulness.py --table          # only rewrites the table from saved results
    python benchmarks/faithfulness.py check            # exact checks: the same draws through both codes
    python benchmarks/faithfulness.py & python benchmarks/faithfulness.py   # two 1-thread lanes

Each row distils the same set twice, with genprior's recipe and with the paper's own
script, on the same data (genprior's ``mnist5k`` split), the same IPC, augmentation and
number of image updates, once per distillation seed, and **from the same images**: genprior
starts (``--init invert --init-from``) from the very images the reference's run of that
seed started from (recorded by the child, or re-made from its draws: ``reference_start_images``).
At IPC 1 the start alone moves ConvNet accuracy by about 3 points (measured: one genprior
DSA run, 85.2 % from its own draw of real images, 88.4 % from the reference's seed-0
draw), so unpaired starts would compare starts, not codes. Every set is then evaluated by
genprior's ``quick`` protocol (ConvNet-3, 3 models). The table gives
accuracy (mean ± std over seeds × models) and seconds per iteration on both sides, and
says whether the difference of the means is within the larger of the two standard
deviations (the bar of the faithfulness issue).

The reference code is never committed and never imported by genprior: it is found
through an environment variable, and run in a child process of this script that
applies the shims it needs on today's torch (each one is commented in
``reference_child``). Units are resumable and shared between lanes
(``genprior/lanes.py``): ``build|<row>|<ipc>|<side>|<seed>`` distils one set
(genprior's run resumes from its checkpoints; a reference run has none and restarts),
``eval|<row>|<ipc>|<side>|<seed>|<i>`` trains ConvNet model i on it, and ``experts|mtt``
trains the expert trajectories both sides of the MTT row match (one buffer: genprior reads
it as it is, the reference reads it converted to its ``replay_buffer_0.pt`` layout). Sets, logs and
runs are written under ``runs/faithfulness/``; results to
``benchmarks/results/faithfulness_mnist5k.*``.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from genprior.data import load_dataset
from genprior.evaluate import PROTOCOLS, mean_std
from genprior.lanes import eval_unit, lane_main, run_process, run_recipe_unit
from genprior.synset import load_synset
from reference_shims import stand_in_modules

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "faithfulness_mnist5k.json"
TABLE = RESULTS.with_suffix(".md")
RUNS = ROOT / "runs" / "faithfulness"
DATASET = "mnist5k"
PROTOCOL = PROTOCOLS["quick"]
SIDES = ("reference", "genprior")  # the reference first: genprior starts from its start
SEEDS = (0, 1, 2)
#: genprior's DSA strategy for digits (no flip: a mirrored digit is another digit), given to both sides
DIGITS_DSA = "color_crop_cutout_scale_rotate"

#: row -> what each side runs. ``iterations`` per run, the same on both sides (an iteration is one image
#: update, except DC/DSA at IPC 10: 10 updates with 50 network epochs between them, on both sides).
ROWS: Dict[str, dict] = {
    "dsa": {
        "paper": "DSA (Zhao & Bilen, ICML 2021)",
        "genprior": ["recipes/dc.py", "--variant", "dsa"],
        "reference": ("GENPRIOR_REFERENCE_DC", "main.py",
                      ["--method", "DSA", "--init", "real", "--dsa_strategy", DIGITS_DSA]),
        "iterations": {1: 100, 10: 10},
    },
    "dc": {
        "paper": "DC (Zhao, Mopuri & Bilen, ICLR 2021)",
        "genprior": ["recipes/dc.py"],
        "reference": ("GENPRIOR_REFERENCE_DC", "main.py",
                      ["--method", "DC", "--init", "noise", "--dsa_strategy", "None"]),
        "iterations": {1: 100, 10: 10},
    },
    "dm": {
        "paper": "DM (Zhao & Bilen, WACV 2023)",
        "genprior": ["recipes/dm.py"],
        "reference": ("GENPRIOR_REFERENCE_DC", "main_DM.py",
                      ["--init", "real", "--dsa_strategy", DIGITS_DSA]),  # main_DM.py takes no --method
        "iterations": {1: 200, 10: 200},
    },
    # MTT with the paper's IPC 1 schedule (its CIFAR-10 row: 50 student steps, 2 expert epochs, start
    # epochs 0-1, image lr 1000, lr lr 1e-7, syn_lr from 0.01), the same on both sides, against the
    # same experts (``experts|mtt``: 5 experts x 3 epochs, what the schedule reaches, cut from the
    # paper's 100 x 50 for a CPU).
    "mtt": {
        "paper": "MTT (Cazenavette et al., CVPR 2022)",
        "genprior": ["recipes/mtt.py", "--loss-option", "buffer=runs/faithfulness/experts-mtt",
                     "--loss-option", "syn_steps=50", "--loss-option", "expert_epochs=2",
                     "--loss-option", "max_start_epoch=2", "--loss-option", "lr_lr=1e-7", "--lr", "1000"],
        "reference": ("GENPRIOR_REFERENCE_MTT", "distill.py",
                      ["--pix_init", "real", "--dsa", "True", "--dsa_strategy", DIGITS_DSA, "--syn_steps", "50",
                       "--expert_epochs", "2", "--max_start_epoch", "2", "--lr_img", "1000", "--lr_lr", "1e-07",
                       "--lr_teacher", "0.01"]),
        "iterations": {1: 200},
    },
}
# GLaD-DM in w+ (GLaD's code with --layer -1) on genprior's shipped StyleGAN, w+ lr 0.01, momentum
# 0.5, 10 images decoded at a time, 100 iterations (the recipe's CPU default). Here the pairing runs
# the other way: the reference starts from the latents genprior's run of the seed starts from (the
# StyleGAN's own samples), as GLaD's code draws its own start from the StyleGAN-XL it would load.
ROWS["glad-dm"] = {
    "paper": "GLaD-DM (Cazenavette et al., CVPR 2023)",
    "genprior": ["recipes/glad.py", "--variant", "dm"],
    "reference": ("GENPRIOR_REFERENCE_GLAD", "distill_dm.py",
                  ["--dataset", "CIFAR10", "--model", "ConvNet", "--depth", "3", "--width", "128", "--space", "wp",
                   "--layer", "-1", "--lr_img", "0.01", "--mom_img", "0.5", "--sg_batch", "10", "--batch_real", "256",
                   "--dsa_strategy", DIGITS_DSA, "--num_eval", "0", "--method", "DM", "--subset", "none"]),
    "prior": "mnist5k-stylegan",
    "start": "genprior",
    "iterations": {1: 100, 10: 100},
    # two seeds more at IPC 1: with three, genprior's seeds all sat below the reference's (the closest call)
    "seeds": {1: (0, 1, 2, 3, 4)},
}
#: the expert buffer of the MTT row, and how it is trained (``genprior experts``)
MTT_EXPERTS = {"dir": "runs/faithfulness/experts-mtt", "num_experts": 5, "epochs": 3}
#: (row, IPC) in the order they run: the IPC 1 rows, then DM at IPC 10, MTT and GLaD-DM (cheap), then
#: DC's two variants at IPC 10 (about 2 min per iteration on 1 thread with the paper's 10 x 50 loops),
#: then GLaD-DM at IPC 10
CELLS = [("dsa", 1), ("dc", 1), ("dm", 1), ("dm", 10), ("mtt", 1), ("glad-dm", 1), ("dsa", 10), ("dc", 10),
         ("glad-dm", 10)]
#: rows of the issue that are not run, with the reason the table prints (none today)
NOT_RUN: Dict[str, str] = {}


def seeds_of(row: str, ipc: int) -> tuple:
    """The distillation seeds of a row at an IPC (``SEEDS`` unless the row names more)."""
    return tuple(ROWS[row].get("seeds", {}).get(ipc, SEEDS))


def unit_dir(row: str, ipc: int, side: str, seed: int) -> Path:
    return RUNS / f"{row}-ipc{ipc}-{side}-s{seed}"


def synset_path(row: str, ipc: int, side: str, seed: int) -> Path:
    return unit_dir(row, ipc, side, seed) / "synset"


def order() -> List[str]:
    """Cell by cell (``CELLS``): both sides of seed 0 with their models, then seed 1, and so on."""
    keys = []
    for row, ipc in CELLS:
        if row == "mtt":
            keys.append("experts|mtt")
        for seed in seeds_of(row, ipc):
            for side in SIDES:
                keys.append(f"build|{row}|{ipc}|{side}|{seed}")
                keys += [f"eval|{row}|{ipc}|{side}|{seed}|{i}" for i in range(PROTOCOL.num_models)]
    return keys


def deps(key: str) -> List[str]:
    """An evaluation waits on its set; genprior's build waits on the reference's of the same seed,
    whose start it starts from (except where the reference starts from genprior's: GLaD)."""
    parts = key.split("|")
    if parts[0] == "experts":
        return []
    if parts[0] == "eval":
        return [f"build|{'|'.join(parts[1:5])}"]
    if parts[3] == "reference" and parts[1] == "mtt":
        return ["experts|mtt"]
    if parts[3] == "genprior" and ROWS[parts[1]].get("start") != "genprior":
        return [f"build|{parts[1]}|{parts[2]}|reference|{parts[4]}"]
    return []


# -- the two sides ----------------------------------------------------------------------

def reference_start_images(row: str, ipc: int, seed: int) -> torch.Tensor:
    """The images the reference's run of ``seed`` starts from, as its scripts draw them after the
    child's seeding: random real images (``--init real``: ``np.random.permutation`` of each
    class's indices, class by class) or Gaussian noise (``torch.randn``, the first draw of the
    global generator). ``check`` compares this with a start the child recorded."""
    import numpy as np

    train = load_dataset(DATASET, "train")
    args = ROWS[row]["reference"][2]
    flag = "--pix_init" if "--pix_init" in args else "--init"  # MTT's name for it
    if args[args.index(flag) + 1] == "noise":
        torch.manual_seed(seed)
        return torch.randn(train.num_classes * ipc, *train.images.shape[1:])
    indices = [[] for _ in range(train.num_classes)]
    for i, label in enumerate(train.labels.tolist()):
        indices[label].append(i)
    np.random.seed(seed)
    return torch.cat([train.images[np.random.permutation(indices[c])[:ipc]] for c in range(train.num_classes)])


def start_set(row: str, ipc: int, seed: int) -> Path:
    """The reference run's start as a set directory: the one its child recorded when there is
    one, else the same draw re-made (``reference_start_images``)."""
    from safetensors.torch import load_file

    from genprior.synset import SyntheticSet, save_synset

    recorded = unit_dir(row, ipc, "reference", seed) / "start.safetensors"
    images = load_file(str(recorded))["images"] if recorded.exists() else reference_start_images(row, ipc, seed)
    train = load_dataset(DATASET, "train")
    out = RUNS / f"{row}-ipc{ipc}-start-s{seed}"
    save_synset(SyntheticSet(images=images.float(), labels=torch.arange(train.num_classes).repeat_interleave(ipc),
                             mean=train.mean, std=train.std, dataset=DATASET, class_names=list(train.class_names),
                             method=f"reference-start-{row}", config={"recorded": recorded.exists(), "seed": seed}),
                out, overwrite=True)
    return out


def genprior_args(row: str, ipc: int, seed: int) -> List[str]:
    """genprior's recipe and its flags for one run (without where it writes); rows paired on the
    reference's start add that start (``--init invert --init-from``)."""
    spec = ROWS[row]
    args = [*spec["genprior"], "--ipc", str(ipc), "--iterations", str(spec["iterations"][ipc]), "--seed", str(seed)]
    if spec.get("start") != "genprior":
        args += ["--init", "invert", "--init-from", str(start_set(row, ipc, seed).relative_to(ROOT))]
    return args


def genprior_distiller(row: str, ipc: int, seed: int, run_dir: Path):
    """genprior's run of ``genprior_args`` as its recipe resolves it, its latents initialised as
    the run initialises them (``LatentDistiller.init_latents``), not yet stepped."""
    import importlib.util

    from genprior.cli import distill_config_from_args, recipe_defaults, recipe_parser
    from genprior.distill import LatentDistiller

    script, *flags = genprior_args(row, ipc, seed)
    spec = importlib.util.spec_from_file_location("genprior_recipe", ROOT / script)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    variants = getattr(recipe, "VARIANTS", None)
    args = recipe_parser(recipe.__doc__, variants).parse_args(flags)
    run = LatentDistiller(distill_config_from_args(args, recipe_defaults(recipe.DEFAULTS, variants, args)), run_dir,
                          progress=False)
    run.init_latents()
    return run


def genprior_start(row: str, ipc: int, seed: int) -> Dict[str, torch.Tensor]:
    """The latents genprior's run of ``genprior_args`` starts from."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = genprior_distiller(row, ipc, seed, Path(tmp) / "run")
        return {k: v.detach().clone() for k, v in run.latents.items()}


def build_genprior(row: str, ipc: int, seed: int, threads: int) -> dict:
    out = unit_dir(row, ipc, "genprior", seed)
    cmd = [*genprior_args(row, ipc, seed), "--no-evaluate", "--output-dir", str(out.relative_to(ROOT))]
    # ten checkpoints a run: DC's IPC-10 iterations take minutes each, and a kill should lose one, not all
    result = run_recipe_unit(cmd, out, threads, checkpoint_every=max(1, ROWS[row]["iterations"][ipc] // 10))
    result["s_per_iteration"] = result["loop_time_s"] / ROWS[row]["iterations"][ipc]
    return result


def reference_repo(row: str) -> Path:
    var = ROWS[row]["reference"][0]
    value = os.environ.get(var)
    if not value:
        raise RuntimeError(f"set {var} to a checkout of the reference code to run the reference side of {row!r}")
    repo = Path(value).expanduser().resolve()
    script = ROWS[row]["reference"][1]
    if not (repo / script).is_file():
        raise RuntimeError(f"{var}={repo} has no {script}; point it at a checkout of the reference repository")
    return repo


def reference_args(row: str, ipc: int, out: Path) -> List[str]:
    """The paper script's command line: one experiment, no evaluation of its own (genprior's
    ``quick`` evaluates both sides), as many image updates as genprior makes."""
    spec = ROWS[row]
    its = spec["iterations"][ipc]
    if row == "mtt":
        # distill.py evaluates at the top of iterations 0, eval_it, ... (before that iteration's
        # update), so its evaluation at ``--Iteration`` its sees the set after ``its`` updates: the
        # child reads the set there and stops (``reference_child``)
        return ["--dataset", "MNIST", "--model", "ConvNet", "--ipc", str(ipc), "--num_eval", "1",
                "--eval_it", str(its), "--Iteration", str(its), "--data_path", str(out / "data"),
                "--buffer_path", str(out / "buffers"), *spec["reference"][2]]
    if row == "glad-dm":
        # distill_dm.py saves at its last iteration (``--Iteration``) the images it decoded before that
        # iteration's update, that is after ``its`` updates; its own evaluation is off (``eval_loop``
        # stubbed in the child, only iteration 0 in its pool)
        return ["--ipc", str(ipc), "--Iteration", str(its), "--eval_it", str(its + 1), "--data_path",
                str(out / "data"), "--save_path", str(out / "result"), "--logdir", str(out / "logged_files"),
                *spec["reference"][2]]
    # the reference's loop runs ``Iteration + 1`` updates (range(Iteration + 1))
    return ["--dataset", "MNIST", "--model", "ConvNet", "--ipc", str(ipc), "--num_exp", "1", "--num_eval", "0",
            "--Iteration", str(its - 1), "--data_path", str(out / "data"),
            "--save_path", str(out / "result"), *spec["reference"][2]]


def train_mtt_experts(threads: int) -> dict:
    """The experts both sides of the MTT row match, trained by genprior (``genprior experts``:
    plain SGD lr 0.01, batch 256, per-image DSA, as the reference's ``buffer.py``)."""
    out = ROOT / MTT_EXPERTS["dir"]
    cmd = [sys.executable, "-m", "genprior", "experts", "--dataset", DATASET, "--net", "convnet",
           "--num-experts", str(MTT_EXPERTS["num_experts"]), "--epochs", str(MTT_EXPERTS["epochs"]),
           "--out-dir", str(out)]
    result = run_process(cmd, threads, log=out.parent / "experts-mtt.log")
    result["command"] = " ".join(["genprior", *cmd[3:]]).replace(str(ROOT) + os.sep, "")
    return result


def write_reference_buffer(out: Path) -> None:
    """genprior's expert buffer in the layout the reference's ``distill.py`` reads:
    ``<buffer_path>/MNIST/ConvNet/replay_buffer_0.pt``, a list of experts, each a list of epochs,
    each the list of ``net.parameters()`` tensors. genprior's ConvNet holds the same parameters in
    the same order (conv, norm per block, then the classifier), so the flat vectors split back
    exactly."""
    from genprior.matching.experts import load_experts
    from genprior.nets import create_net

    train = load_dataset(DATASET, "train")
    experts = load_experts(ROOT / MTT_EXPERTS["dir"], DATASET, "convnet", train.channels, train.num_classes,
                           train.resolution)
    shapes = [q.shape for q in create_net("convnet", train.channels, train.num_classes, train.resolution).parameters()]
    sizes = [torch.Size(x).numel() for x in shapes]
    buffer = [[[piece.reshape(shape).clone() for piece, shape in zip(experts.params(e, k).split(sizes), shapes)]
               for k in range(experts.epochs + 1)] for e in range(experts.num_experts)]
    target = out / "buffers" / "MNIST" / "ConvNet"
    target.mkdir(parents=True, exist_ok=True)
    torch.save(buffer, target / "replay_buffer_0.pt")


def build_reference(row: str, ipc: int, seed: int, threads: int) -> dict:
    repo = reference_repo(row)
    out = unit_dir(row, ipc, "reference", seed)
    (out / "result").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    if row == "mtt":
        write_reference_buffer(out)
    script = ROWS[row]["reference"][1]
    args = reference_args(row, ipc, out)
    cmd = [sys.executable, str(Path(__file__).resolve()), "reference-child", str(repo), script, str(seed), row,
           str(out), *args]
    result = run_process(cmd, threads, log=out / "reference.log")
    timing = json.loads((out / "timing.json").read_text())
    result.update(timing)
    result["command"] = f"python {script} " + " ".join(a.replace(str(ROOT) + os.sep, "") for a in args)
    result["s_per_iteration"] = timing["loop_time_s"] / ROWS[row]["iterations"][ipc]
    return result


def stand_in_wandb() -> None:
    """MTT's and GLaD's scripts log to Weights & Biases, which they import and initialise
    unconditionally (MTT reads its arguments back from ``wandb.config``): a stand-in that keeps
    the config and the run's name and drops the logs."""
    import types

    wandb = types.ModuleType("wandb")

    def init(config=None, **_):
        wandb.config = types.SimpleNamespace(_items=dict(vars(config)))
        wandb.run = types.SimpleNamespace(name="faithfulness")
        return wandb.run

    wandb.init = init
    wandb.log = wandb.finish = lambda *a, **k: None
    wandb.Histogram = wandb.Image = lambda *a, **k: None
    sys.modules["wandb"] = wandb


def reference_child(repo: str, script: str, seed: int, row: str, out_dir: str, args: List[str]) -> None:
    """Run the paper's script in this process, on genprior's data, with the shims it needs."""
    import random
    import time as real_time

    import numpy as np

    from genprior.synset import SyntheticSet, save_synset

    style = {"mtt": "mtt", "glad-dm": "glad"}.get(row, "dc")
    if style != "dc":
        # genprior's own modules first: accelerate and diffusers look for optional packages
        # (wandb among them) when imported, and must see this environment, not the stand-ins
        for name in ("genprior.distill", "genprior.priors.stylegan"):
            importlib.import_module(name)

        # Shim 0: Weights & Biases, and packages imported for paths the row does not take
        stand_in_wandb()
        stand_in_modules("kornia", "ema_pytorch", "einops", "einops.layers", "einops.layers.torch")
        # Shim 0b: hard-coded ``.cuda()`` calls (MTT's image saving at iteration 0; GLaD's
        # normalisation constants at import and its F latents): on a CPU tensors stay where they are.
        torch.Tensor.cuda = lambda self, *a, **k: self

    sys.path.insert(0, repo)
    utils = importlib.import_module("utils")
    networks = importlib.import_module("networks")
    train = load_dataset(DATASET, "train")

    # Shim 1, data: genprior's mnist5k split (4,000 train / 1,000 test, normalised with
    # MNIST's mean and std, as the reference normalises MNIST) in place of torchvision's
    # download; the reference's get_dataset returns this tuple (MTT's and GLaD's add a
    # per-class loader they do not use for this data and the identity class maps).
    def get_dataset(*_, **__):
        test = load_dataset(DATASET, "test")
        dst_train = torch.utils.data.TensorDataset(train.images, train.labels)
        dst_test = torch.utils.data.TensorDataset(test.images, test.labels)
        testloader = torch.utils.data.DataLoader(dst_test, batch_size=256, shuffle=False, num_workers=0)
        out = (train.channels, (train.resolution, train.resolution), train.num_classes, list(train.class_names),
               list(train.mean), list(train.std), dst_train, dst_test, testloader)
        if style != "dc":
            identity = {c: c for c in range(train.num_classes)}
            out = (*out, None, identity, dict(identity))
        return out

    # Shim 2, today's torch: ConvNet (the network every row distils with) flattens its
    # features with ``.view``, which refuses the non-contiguous maps left by DSA's crop;
    # ``reshape`` gives the same numbers.
    def flat_forward(self, x):
        return self.classifier(self.features(x).reshape(x.shape[0], -1))

    def flat_embed(self, x):
        return self.features(x).reshape(x.shape[0], -1)

    networks.ConvNet.forward = flat_forward
    networks.ConvNet.embed = flat_embed

    # Shim 3, today's torch: a siamese op of DatasetCondensation ties its draws with
    # ``values[:] = values[0]``, which today's torch refuses when the batch holds one image
    # (source and target overlap). For one image the tie copies nothing, and every op draws
    # its numbers before the tie, so running the op untied at batch size 1 gives the same
    # output. (GLaD's ops tie with a clone and need no shim; MTT's augmentation is not siamese.)
    def untied_at_one(op):
        def run(x, param):
            if x.shape[0] != 1 or not getattr(param, "Siamese", False):
                return op(x, param)
            param.Siamese = False
            try:
                return op(x, param)
            finally:
                param.Siamese = True
        return run

    if hasattr(utils, "AUGMENT_FNS"):
        for ops in utils.AUGMENT_FNS.values():
            ops[:] = [untied_at_one(op) for op in ops]

    # Shim 4, repeatability: the reference seeds every network initialisation and every
    # siamese augmentation from the wall clock (int(time.time() * 1000) % 100000). A clock
    # whose readings are drawn from the run's seed keeps that draw (a new seed per call)
    # and makes a run repeatable; everything else it is asked for is the real clock's.
    class SeededClock:
        def __init__(self, s: int):
            self._rng = random.Random(s)

        def time(self) -> float:
            return self._rng.uniform(0.0, 1e5)

        def __getattr__(self, name):
            return getattr(real_time, name)

    clock = SeededClock(seed)
    utils.get_dataset = get_dataset
    utils.time = clock
    random.seed(seed)  # MTT shuffles its expert files and experts with ``random``
    np.random.seed(seed)
    torch.manual_seed(seed)

    # Recording (no change to the run): the images the script's first optimiser starts from
    # (``optimizer_img``, built once the synthetic set is initialised), so that genprior can
    # start from exactly the same images. GLaD's start is genprior's (below): nothing to record.
    out = Path(out_dir)
    sgd = torch.optim.SGD

    def recording_sgd(params, *a, **kw):
        params = list(params)
        start = out / "start.safetensors"
        if style != "glad" and not start.exists():
            from safetensors.torch import save_file

            save_file({"images": params[0].detach().clone().contiguous()}, str(start))
        return sgd(params, *a, **kw)

    torch.optim.SGD = recording_sgd
    sys.argv = [script, *args]
    final: Dict[str, torch.Tensor] = {}
    t0 = real_time.perf_counter()
    try:
        if style == "mtt":
            run_mtt(Path(repo), script, utils, out, final)
        elif style == "glad":
            run_glad(script, row, seed, utils, clock)
        else:
            module = importlib.import_module(Path(script).stem)
            module.get_dataset, module.time = get_dataset, clock
            module.main()
    finally:
        torch.optim.SGD = sgd
    loop_time = real_time.perf_counter() - t0

    if style == "mtt":
        images, labels = final["images"], final["labels"]
    else:
        saved = sorted((out / "result").rglob("res_*.pt"))  # GLaD's sit in a folder per run
        if len(saved) != 1:
            raise SystemExit(f"expected one res_*.pt under {out / 'result'}, found {len(saved)}")
        images, labels = torch.load(saved[0], map_location="cpu", weights_only=True)["data"][-1]
    synset = SyntheticSet(images=images.float(), labels=labels.long(), mean=train.mean, std=train.std,
                          dataset=DATASET, class_names=list(train.class_names), method=f"reference-{row}",
                          config={"reference": script, "args": args, "seed": seed})
    save_synset(synset, out / "synset", overwrite=True)
    (out / "timing.json").write_text(json.dumps({"loop_time_s": loop_time}))


def run_mtt(repo: Path, script: str, utils, out: Path, final: Dict[str, torch.Tensor]) -> None:
    """MTT's ``distill.py`` as its ``__main__``. It saves its images only when its own evaluation
    improves; its evaluation at ``--Iteration`` (the second call with ``--eval_it`` =
    ``--Iteration``) sees the set after that many updates: the set is read there and the run
    stops, training no network."""
    import runpy

    class Finished(Exception):
        pass

    calls = []

    def read_set(it_eval, net, images, labels, *_, **__):
        calls.append(it_eval)
        if len(calls) == 2:
            final["images"], final["labels"] = images.detach().clone(), labels.detach().clone()
            raise Finished
        return net, 0.0, 0.0

    utils.evaluate_synset = read_set
    os.chdir(out)  # it writes ./logged_files
    try:
        runpy.run_path(str(repo / script), run_name="__main__")
    except Finished:
        pass
    if not final:
        raise SystemExit(f"{script} ended before its evaluation at --Iteration")


class GenpriorStyleGAN(torch.nn.Module):
    """GLaD's generator interface (``G(ws, mode="wp")``: images in [-1, 1] from w+) around the
    synthesis network of a genprior StyleGAN prior, in place of the StyleGAN-XL pickles its
    ``load_sgxl`` downloads to CUDA. Only w+ (``--layer -1``) is served."""

    def __init__(self, prior):
        super().__init__()
        self.synthesis, self.noise_mode = prior.generator.synthesis, prior.noise_mode

    def forward(self, ws, f_latents=None, layer=None, mode="wp"):
        if mode != "wp":
            raise RuntimeError(f"the genprior StyleGAN stand-in serves GLaD's w+ space only, not mode {mode!r}")
        return self.synthesis(ws, noise_mode=self.noise_mode)


def run_glad(script: str, row: str, seed: int, utils, clock) -> None:
    """GLaD's ``distill_dm.py``, its ``main`` called with the parser its ``__main__`` builds."""
    import random

    import numpy as np

    from genprior.priors.load import load_prior

    glad_utils = importlib.import_module("glad_utils")
    shared_args = importlib.import_module("shared_args")
    module = importlib.import_module(Path(script).stem)
    prior = load_prior(ROWS[row]["prior"])
    g = prior.generator
    train = load_dataset(DATASET, "train")
    ipc = int(sys.argv[sys.argv.index("--ipc") + 1])
    start = genprior_start(row, ipc, seed)["w+"]  # before any of the shims below: genprior's own draw

    # Shim 5 (GLaD), the generator: genprior's StyleGAN behind GLaD's interface (above), in
    # place of ``load_sgxl``, and its normalisation of decoded images ((im + 1) / 2, then the
    # data's mean and std) with MNIST's one-channel constants instead of CIFAR-10's.
    def load_sgxl(res, args=None):
        return GenpriorStyleGAN(prior), g.z_dim, g.w_dim, g.num_ws

    module.load_sgxl = glad_utils.load_sgxl = load_sgxl
    utils.config.mean = torch.tensor(train.mean).reshape(1, -1, 1, 1)
    utils.config.std = torch.tensor(train.std).reshape(1, -1, 1, 1)

    # Shim 6 (GLaD), the start: the w+ latents genprior's run of this seed starts from (the
    # StyleGAN's samples, drawn as genprior draws them) in place of its own draw from the
    # StyleGAN-XL mapping, so that both runs start from the same latents. F latents are a
    # placeholder: with --layer -1 GLaD decodes and steps w+ alone.
    def prepare_latents(channel=3, num_classes=10, im_size=(32, 32), zdim=512, G=None, class_map_inv=None,
                        get_images=None, args=None):
        latents = start.clone().requires_grad_(True)
        label_syn = torch.arange(num_classes).repeat_interleave(args.ipc)
        return latents, torch.zeros(len(latents), 1, 1, 1), label_syn

    module.prepare_latents = glad_utils.prepare_latents = prepare_latents
    # Shim 7 (GLaD): its own evaluation (``eval_loop``, at iteration 0 here) is genprior's job
    module.eval_loop = glad_utils.eval_loop = lambda **kw: False

    # Shim 8 (GLaD), arguments: ``main`` parses the global parser its ``__main__`` block builds:
    # the shared arguments plus its three learning rates (their defaults here), and the two
    # its final save names (``args.method``, ``args.subset``) that no parser defines.
    parser = shared_args.add_shared_args()
    parser.add_argument("--lr_img", type=float, default=10)
    parser.add_argument("--lr_w", type=float, default=0.01)
    parser.add_argument("--lr_g", type=float, default=0.0001)
    parser.add_argument("--method", default="DM")
    parser.add_argument("--subset", default="none")
    module.parser = parser
    module.time = clock

    # Shim 9 (GLaD), seeds: its main seeds torch, numpy and random with 0 whatever the run;
    # each seed it sets is offset by this run's seed, so that seeds 0-2 are three runs.
    originals = (torch.random.manual_seed, np.random.seed, random.seed)
    torch.random.manual_seed = lambda s: originals[0](s + seed)
    np.random.seed = lambda s=None: originals[1](None if s is None else s + seed)
    random.seed = lambda s=None, *a: originals[2](None if s is None else s + seed, *a)
    try:
        module.main(None)
    finally:
        torch.random.manual_seed, np.random.seed, random.seed = originals


# -- exact checks: the same draws through both codes ---------------------------------------

def _reference_modules(repo: Path):
    """The reference's utils and networks, with the ConvNet flatten shim (see reference_child)."""
    sys.path.insert(0, str(repo))
    utils = importlib.import_module("utils")
    networks = importlib.import_module("networks")
    networks.ConvNet.forward = lambda self, x: self.classifier(self.features(x).reshape(x.shape[0], -1))
    return utils, networks


def check_dsa_ops(repo: Path) -> Dict[str, float]:
    """Each DSA op of genprior against the reference's ``DiffAugment`` in siamese mode: the
    reference's draws for a seed are re-drawn as it draws them and given to genprior's op;
    the largest absolute difference of the outputs over several seeds (0 = the same op)."""
    from genprior import augment as A

    utils, _ = _reference_modules(repo)
    x = load_dataset(DATASET, "train").images[:4]
    n, param, worst = x.shape[0], utils.ParamDiffAug(), {}

    def first(seed, draw):
        torch.manual_seed(seed)
        return draw()[0]

    for seed in (11, 777, 12345, 54321):
        ref = {op: utils.DiffAugment(x, op, seed=seed, param=param) for op in ("color", "crop", "cutout", "scale", "rotate")}
        ours = {
            "color": A.adjust_color(x, (first(seed + 1, lambda: torch.rand(n)) - 0.5).expand(n),
                                    (first(seed + 2, lambda: torch.rand(n)) * param.saturation).expand(n),
                                    (first(seed + 3, lambda: torch.rand(n)) + param.contrast).expand(n)),
            # the reference's x shift moves rows (its grid_x indexes height), its y shift columns
            "crop": A.translate(x, -first(seed + 1, lambda: torch.randint(-4, 5, (n,))).expand(n),
                                -first(seed + 2, lambda: torch.randint(-4, 5, (n,))).expand(n)),
            "cutout": A.cutout(x, first(seed + 1, lambda: torch.randint(0, 29, (n,))).expand(n),
                               first(seed + 2, lambda: torch.randint(0, 29, (n,))).expand(n), 14, 14),
            "scale": A.scale(x, (first(seed + 2, lambda: torch.rand(n)) * (1.2 - 1 / 1.2) + 1 / 1.2).expand(n),
                             (first(seed + 1, lambda: torch.rand(n)) * (1.2 - 1 / 1.2) + 1 / 1.2).expand(n)),
            # genprior rotates the other way for the same angle: the reference's angle, negated
            "rotate": A.rotate(x, -((first(seed + 1, lambda: torch.rand(n)) - 0.5) * 2 * param.ratio_rotate).expand(n)),
        }
        for op in ours:
            worst[op] = max(worst.get(op, 0.0), float((ours[op] - ref[op]).abs().max()))
    return worst


def iteration_with_draws(d) -> Dict[str, Any]:
    """Run iteration 0 of genprior's distiller ``d``, recording the draws a reference needs to
    repeat it: each class's real batch (``real``), each siamese augmentation's generator state
    (``gen``) and the matching network's weights (``net``)."""
    from genprior.augment import DSA

    record: Dict[str, Any] = {"real": [], "gen": []}
    m = d.matcher
    sample, siamese, start = d.real.sample_class, DSA.siamese, m.start_iteration

    def recorded_sample(c, n, generator=None):
        out = sample(c, n, generator)
        record["real"].append(out.clone())
        return out

    def recorded_siamese(self, *batches, generator=None):
        record["gen"].append(generator.get_state())
        return siamese(self, *batches, generator=generator)

    def recorded_start(it, gen):
        start(it, gen)
        record["net"] = {k: v.clone() for k, v in m.net.state_dict().items()}

    d.real.sample_class, m.start_iteration = recorded_sample, recorded_start
    DSA.siamese = recorded_siamese
    try:
        d.iteration(0)
    finally:
        DSA.siamese = siamese
    return record


def check_dc_step(repo: Path, dsa: bool, seed: int = 0) -> float:
    """One iteration of genprior's DC loop (pixel prior, IPC 1) against the reference's update
    (``match_loss``, the per-class sum, SGD with momentum on the images) on the same draws:
    the same network weights, real batches and augmentation. Returns the largest absolute
    difference of the updated images (0.0: bit-identical)."""
    import types

    from genprior.augment import DSA, strategy_for
    from genprior.distill import DistillConfig, LatentDistiller

    utils, networks = _reference_modules(repo)
    cfg = DistillConfig(dataset=DATASET, prior="pixel", loss="dc", ipc=1, iterations=1,
                        init="invert" if dsa else "random", optimizer="sgd", momentum=0.5, lr=0.1,
                        loss_options={"dsa": dsa}, seed=seed)
    import tempfile

    d = LatentDistiller(cfg, Path(tempfile.mkdtemp()) / "run", progress=False)
    d.init_latents()
    x0 = d.latents["x"].detach().clone()
    record = iteration_with_draws(d)
    ours = d.latents["x"].detach()

    net = networks.ConvNet(channel=1, num_classes=10, net_width=128, net_depth=3, net_act="relu",
                           net_norm="instancenorm", net_pooling="avgpooling", im_size=(28, 28))
    net.load_state_dict({k: record["net"][v] for k, v in CONVNET_NAMES.items()})
    net.train()
    image_syn = x0.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([image_syn], lr=0.1, momentum=0.5)
    params, args = list(net.parameters()), types.SimpleNamespace(dis_metric="ours", device="cpu")
    criterion, augment = torch.nn.CrossEntropyLoss(), DSA(strategy_for(DATASET))
    loss = torch.tensor(0.0)
    for c in range(10):
        img_real, img_syn = record["real"][c], image_syn[c:c + 1]
        if dsa:
            g = torch.Generator()
            g.set_state(record["gen"][c])
            img_real, img_syn = augment.siamese(img_real, img_syn, generator=g)
        gw_real = [t.detach().clone() for t in torch.autograd.grad(criterion(net(img_real), torch.full((256,), c)), params)]
        gw_syn = torch.autograd.grad(criterion(net(img_syn), torch.full((1,), c)), params, create_graph=True)
        loss = loss + utils.match_loss(gw_syn, gw_real, args)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float((ours - image_syn.detach()).abs().max())


def check_mtt_step(repo: Path, buffer: Path, seed: int = 0) -> Dict[str, float]:
    """One iteration of genprior's MTT loop (pixel prior, IPC 1, the row's schedule) against the
    reference's (``distill.py``: its ``ReparamModule`` student on its ConvNet, the unrolled
    steps, the normalised parameter distance, SGD with momentum on the images and on
    ``syn_lr``) on the same draws: the same expert and start epoch, the same mini-batch
    orders and augmentation draws. Returns the largest absolute difference of the updated
    images and of the updated ``syn_lr``, and how far the step moved each."""
    import tempfile

    from genprior.distill import DistillConfig, LatentDistiller

    import importlib.util

    import numpy as np

    def by_path(name: str):  # by file: the DC reference's modules of the same names may be loaded already
        spec = importlib.util.spec_from_file_location(f"mtt_reference_{name}", repo / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    networks, ReparamModule = by_path("networks"), by_path("reparam_module").ReparamModule
    opts = {"buffer": str(buffer), "syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_lr": 1e-7}
    cfg = DistillConfig(dataset=DATASET, prior="pixel", loss="mtt", ipc=1, iterations=1, init="invert",
                        optimizer="sgd", momentum=0.5, lr=1000.0, loss_options=opts, seed=seed)
    d = LatentDistiller(cfg, Path(tempfile.mkdtemp()) / "run", progress=False)
    d.init_latents()
    m = d.matcher
    x0, lr0 = d.latents["x"].detach().clone(), m.syn_lr.detach().clone()
    record = {}
    set_loss = m.set_loss

    def recorded_set_loss(syn, labels, real, generator):
        record.update(state=generator.get_state(), expert=m.expert, start=m.start_epoch, labels=labels.clone())
        return set_loss(syn, labels, real, generator)

    m.set_loss = recorded_set_loss
    d.iteration(0)
    ours, our_lr = d.latents["x"].detach(), m.syn_lr.detach()

    net = networks.ConvNet(channel=1, num_classes=10, net_width=128, net_depth=3, net_act="relu",
                           net_norm="instancenorm", net_pooling="avgpooling", im_size=(28, 28))
    net.forward = lambda x: net.classifier(net.features(x).reshape(x.shape[0], -1))  # the reshape shim
    student = ReparamModule(net)
    student.train()
    num_params = sum(int(np.prod(q.size())) for q in student.parameters())
    starting = m.buffer.params(record["expert"], record["start"])
    target = m.buffer.params(record["expert"], record["start"] + opts["expert_epochs"])
    image_syn = x0.clone().requires_grad_(True)
    syn_lr = lr0.clone().requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=1000.0, momentum=0.5)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=opts["lr_lr"], momentum=0.5)
    g = torch.Generator()
    g.set_state(record["state"])
    student_params, chunks = [starting.clone().requires_grad_(True)], []
    for _ in range(opts["syn_steps"]):
        if not chunks:
            chunks = list(torch.split(torch.randperm(len(image_syn), generator=g), len(image_syn)))
        idx = chunks.pop()
        x = m.dsa(image_syn[idx], generator=g)
        ce = torch.nn.functional.cross_entropy(student(x, flat_param=student_params[-1]), record["labels"][idx])
        grad = torch.autograd.grad(ce, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    param_loss = torch.nn.functional.mse_loss(student_params[-1], target, reduction="sum") / num_params
    param_dist = torch.nn.functional.mse_loss(starting, target, reduction="sum") / num_params
    loss = param_loss / param_dist
    optimizer_img.zero_grad()
    optimizer_lr.zero_grad()
    loss.backward()
    optimizer_img.step()
    optimizer_lr.step()
    return {"images": float((ours - image_syn.detach()).abs().max()), "syn_lr": float((our_lr - syn_lr.detach()).abs()),
            # how far the step moved them, so that 0 above is a match, not a step that did nothing
            "images_moved": float((ours - x0).abs().max()), "syn_lr_moved": float((our_lr - lr0).abs())}


CONVNET_NAMES = {**{f"features.{4 * i + j}.{k}": f"blocks.{i}.{part}.{k}" for i in range(3)
                    for j, part in ((0, "conv"), (1, "norm")) for k in ("weight", "bias")},
                 "classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}


def check_glad_step(repo: Path, seed: int = 0) -> Dict[str, float]:
    """One iteration of genprior's GLaD-DM (the row's settings, IPC 1) against the reference's
    loop body (``distill_dm.py``: decode every latent without a graph, the per-class DM loss on
    its ConvNet's ``embed``, one backward, its ``gan_backward`` through the generator in
    chunks of ``sg_batch``, SGD with momentum on w+) on the same draws: the same start,
    network weights, real batches and augmentation. Returns the largest absolute difference of
    the updated w+, and how far the step moved it. Run last: it loads GLaD's ``utils`` and
    ``networks`` in place of DatasetCondensation's, and its stand-ins."""
    import tempfile
    import types

    for name in ("genprior.distill", "genprior.priors.stylegan"):  # before the stand-ins (see reference_child)
        importlib.import_module(name)
    stand_in_wandb()
    stand_in_modules("kornia", "ema_pytorch", "einops", "einops.layers", "einops.layers.torch")
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # its constants at import
    for name in [k for k in sys.modules if k in ("utils", "glad_utils", "networks") or k.startswith("networks.")]:
        del sys.modules[name]  # DatasetCondensation's modules of the same names
    sys.path.insert(0, str(repo))
    try:
        glad_utils = importlib.import_module("glad_utils")
        networks = importlib.import_module("networks")
    finally:
        sys.path.remove(str(repo))
        torch.Tensor.cuda = cuda

    d = genprior_distiller("glad-dm", 1, seed, Path(tempfile.mkdtemp()) / "run")
    m = d.matcher
    w0 = d.latents["w+"].detach().clone()
    record = iteration_with_draws(d)
    ours = d.latents["w+"].detach()

    train = load_dataset(DATASET, "train")
    glad_utils.config.mean = torch.tensor(train.mean).reshape(1, -1, 1, 1)
    glad_utils.config.std = torch.tensor(train.std).reshape(1, -1, 1, 1)
    G = GenpriorStyleGAN(d.prior)
    args = types.SimpleNamespace(space="wp", dataset="CIFAR10", layer=-1, sg_batch=10, distributed=False)
    net = networks.ConvNet(1, 10, net_width=128, net_depth=3, net_act="relu", net_norm="instancenorm",
                           im_size=(28, 28))
    net.load_state_dict({k: record["net"][v] for k, v in CONVNET_NAMES.items()})
    net.train()
    for q in net.parameters():
        q.requires_grad = False

    def embed(x):  # the reshape shim of ``reference_child``
        return net.features(x).reshape(x.shape[0], -1)

    latents, f_latents = w0.clone().requires_grad_(True), torch.zeros(len(w0), 1, 1, 1)
    optimizer_img = torch.optim.SGD([latents], lr=0.01, momentum=0.5)
    with torch.no_grad():
        image_syn = torch.cat([glad_utils.latent_to_im(G, (w, f), args) for w, f in
                               zip(torch.split(latents, args.sg_batch), torch.split(f_latents, args.sg_batch))])
    image_syn = image_syn.detach().requires_grad_(True)
    augment = m.dsa
    loss = torch.tensor(0.0)
    for c in range(10):
        g = torch.Generator()
        g.set_state(record["gen"][c])
        img_real, img_syn = augment.siamese(record["real"][c], image_syn[c:c + 1], generator=g)
        loss = loss + torch.sum((torch.mean(embed(img_real).detach(), dim=0) - torch.mean(embed(img_syn), dim=0)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    glad_utils.gan_backward(latents=latents, f_latents=f_latents, image_syn=image_syn, G=G, args=args)
    optimizer_img.step()
    return {"w+": float((ours - latents.detach()).abs().max()), "w+_moved": float((ours - w0).abs().max())}


def check_starts() -> Dict[str, float]:
    """For every reference run that recorded its start: the largest difference from the start
    re-made by ``reference_start_images`` (0 = the re-made starts of older runs are exact)."""
    from safetensors.torch import load_file

    out = {}
    for row, ipc in CELLS:
        for seed in seeds_of(row, ipc):
            recorded = unit_dir(row, ipc, "reference", seed) / "start.safetensors"
            if recorded.exists():
                diff = (load_file(str(recorded))["images"] - reference_start_images(row, ipc, seed)).abs().max()
                out[f"{row}|{ipc}|{seed}"] = float(diff)
    return out


def run_checks() -> dict:
    repo = reference_repo("dsa")
    checks = {"dsa_ops_max_abs_diff": check_dsa_ops(repo),
              "dc_step_max_abs_diff": check_dc_step(repo, dsa=False),
              "dsa_step_max_abs_diff": check_dc_step(repo, dsa=True),
              "start_max_abs_diff": check_starts()}
    if (ROOT / MTT_EXPERTS["dir"] / "buffer.json").is_file():  # after the experts|mtt unit
        checks["mtt_step_max_abs_diff"] = check_mtt_step(reference_repo("mtt"), ROOT / MTT_EXPERTS["dir"])
    checks["glad_step_max_abs_diff"] = check_glad_step(reference_repo("glad-dm"))  # last: it swaps modules
    return checks


# -- lanes --------------------------------------------------------------------------------

def work(key: str, threads: int, test_cache: dict) -> dict:
    parts = key.split("|")
    if parts[0] == "experts":
        return train_mtt_experts(threads)
    row, ipc, side, seed = parts[1], int(parts[2]), parts[3], int(parts[4])
    if parts[0] == "build":
        builder = build_genprior if side == "genprior" else build_reference
        return builder(row, ipc, seed, threads)
    if "test" not in test_cache:
        test_cache["test"] = load_dataset(DATASET, "test")
    model = int(parts[5])
    return eval_unit(load_synset(synset_path(row, ipc, side, seed)), test_cache["test"], "convnet", model, PROTOCOL,
                     threads, state_dir=RUNS / "state" / key.replace("|", "-"))


def initial() -> dict:
    return {"dataset": DATASET, "protocol": PROTOCOL.name, "units": {}, "claims": {},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}


def side_summary(units: dict, row: str, ipc: int, side: str) -> Optional[dict]:
    accs, per_seed, speeds = [], [], []
    for seed in seeds_of(row, ipc):
        b = units.get(f"build|{row}|{ipc}|{side}|{seed}")
        a = [units[k]["acc"] for k in (f"eval|{row}|{ipc}|{side}|{seed}|{i}" for i in range(PROTOCOL.num_models))
             if k in units]
        if b is None or not a:
            continue
        accs += a
        per_seed.append(100 * mean_std(a)[0])
        speeds.append(b["s_per_iteration"])
    if not accs:
        return None
    mean, std = mean_std(accs)
    return {"mean": 100 * mean, "std": 100 * std, "n": len(accs), "seeds": len(per_seed), "per_seed": per_seed,
            "s_per_it": sum(speeds) / len(speeds)}


def write_table(results: dict) -> None:
    units = results["units"]
    lines = [
        f"# Faithfulness on {DATASET}: genprior against each paper's public code",
        "",
        f"Both sides distil on genprior's `{DATASET}` split with the same IPC, augmentation and number of image "
        "updates, from the same start (genprior starts from the images the reference's run of the same seed started "
        "from; for GLaD-DM the reference starts from the latents genprior's run starts from); every set is then "
        "evaluated by genprior's "
        f"`{PROTOCOL.name}` protocol (ConvNet-3, {PROTOCOL.epochs} epochs, {PROTOCOL.num_models} models per set).",
        "Accuracy: mean ± std over distillation seeds × models (population std); per seed: each seed's mean.",
        "Within the bar: |difference of the means| ≤ the larger of the two stds.",
        f"Machine: {results['machine']}; every unit ran on 1 CPU thread, often beside another 1-thread unit, "
        "so seconds per iteration compare the two sides, not absolute speed. Reference seconds include its "
        "set-up (data organisation, one image grid); genprior's are its loop's.",
        "Written by `python benchmarks/faithfulness.py` (reference code from the environment variables named "
        "in its docstring).",
        "",
        "| row | IPC | iterations | genprior % | reference % | difference | within the bar | "
        "genprior s/it | reference s/it | per seed: genprior / reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, ipc in sorted(CELLS, key=lambda cell: (cell[1], list(ROWS).index(cell[0]))):
        spec = ROWS[row]
        g, r = side_summary(units, row, ipc, "genprior"), side_summary(units, row, ipc, "reference")
        if g is None and r is None:
            continue

        def fmt(s):
            return f"{s['mean']:.2f} ± {s['std']:.2f} ({s['seeds']} seeds, n={s['n']})" if s else "–"

        if g and r:
            diff = g["mean"] - r["mean"]
            bar = max(g["std"], r["std"])
            verdict = "yes" if abs(diff) <= bar else f"no (bar {bar:.2f})"
            diff_s = f"{diff:+.2f}"
        else:
            diff_s, verdict = "–", "–"
        seeds = " / ".join(", ".join(f"{v:.1f}" for v in s["per_seed"]) if s else "–" for s in (g, r))
        speed = [f"{s['s_per_it']:.2f}" if s else "–" for s in (g, r)]
        lines.append(f"| {row} | {ipc} | {spec['iterations'][ipc]} | {fmt(g)} | {fmt(r)} | {diff_s} | {verdict} | "
                     f"{speed[0]} | {speed[1]} | {seeds} |")
    checks = results.get("checks")
    if checks:
        ops = ", ".join(f"{op} {v:.1e}" for op, v in checks["dsa_ops_max_abs_diff"].items())
        lines += ["", "Exact checks (`python benchmarks/faithfulness.py check`: the same draws through both codes, "
                  "largest absolute difference of the outputs, 0 = bit-identical):",
                  f"- each DSA op given the reference's draws for a seed: {ops};",
                  f"- one DC iteration (network weights, real batches shared): {checks['dc_step_max_abs_diff']:.1e}; "
                  f"one DSA iteration (augmentation draws shared too): {checks['dsa_step_max_abs_diff']:.1e};",
                  *([f"- one MTT iteration (expert, start epoch, mini-batch orders and augmentation draws shared; "
                     f"the reference's ReparamModule student): images {checks['mtt_step_max_abs_diff']['images']:.1e} "
                     f"(the step moved them by up to {checks['mtt_step_max_abs_diff']['images_moved']:.2f}), "
                     f"syn_lr {checks['mtt_step_max_abs_diff']['syn_lr']:.1e} (moved "
                     f"{checks['mtt_step_max_abs_diff']['syn_lr_moved']:.1e});"]
                    if "mtt_step_max_abs_diff" in checks else []),
                  *([f"- one GLaD-DM iteration (start, network weights, real batches and augmentation shared; the "
                     f"reference's loop body with its latent_to_im and gan_backward around genprior's StyleGAN): "
                     f"w+ {checks['glad_step_max_abs_diff']['w+']:.1e} (the step moved it by up to "
                     f"{checks['glad_step_max_abs_diff']['w+_moved']:.2f}; float rounding of decoding 10 images at "
                     "once against one class at a time);"]
                    if "glad_step_max_abs_diff" in checks else []),
                  "- the start genprior is given, re-made from the reference's draws, against the start its runs "
                  "recorded: " + (", ".join(f"{k} {v:.1e}" for k, v in checks.get("start_max_abs_diff", {}).items())
                                  or "no recorded start yet") + "."]
    if NOT_RUN:
        lines += ["", "Not run:", *[f"- {text}" for text in NOT_RUN.values()]]
    cmds = sorted({f"- {k.split('|')[1]} IPC {k.split('|')[2]} {k.split('|')[3]}: `{u['command']}`"
                   for k, u in units.items() if k.startswith("build|") and "command" in u
                   and k.endswith("|0")})
    if cmds:
        lines += ["", "Commands (seed 0; the other seeds add `--seed N` to genprior's, and give the reference's "
                  "child seed N: its clock, and its own fixed seeds offset by N):", *cmds]
    TABLE.write_text("\n".join(lines) + "\n")


def artifacts(key: str) -> list:
    parts = key.split("|")
    if parts[0] == "experts":
        return [ROOT / MTT_EXPERTS["dir"]]
    if parts[0] == "build":
        return [unit_dir(parts[1], int(parts[2]), parts[3], int(parts[4]))]
    return [RUNS / "state" / key.replace("|", "-")]


def main() -> None:
    os.chdir(ROOT)  # recipes and run folders are named from the project root
    if sys.argv[1:2] == ["reference-child"]:
        repo, script, seed, row, out_dir, *args = sys.argv[2:]
        return reference_child(repo, script, int(seed), row, out_dir, args)
    if sys.argv[1:2] == ["check"]:  # the exact checks; their result goes into the results file and the table
        from genprior.lanes import locked

        torch.set_num_threads(1)
        checks = run_checks()
        print(json.dumps(checks, indent=2))
        with locked(RESULTS, initial) as results:
            results["checks"] = checks
            write_table(results)
        return None

    def make_work(threads: int):
        cache: dict = {}
        return lambda key: work(key, threads, cache)
    lane_main(RESULTS, initial, order(), deps, make_work, write_table, TABLE, "'dsa|1'", artifacts)


if __name__ == "__main__":
    sys.exit(main())
