"""Speed of genprior's loops against their floor: the networks' own forward and backward.

    python benchmarks/speed.py                      # every loss x {pixel, mnist5k-stylegan} x IPC {1, 10}; every pool network's epoch
    python benchmarks/speed.py --only dm-pixel      # cases whose name contains the text
    GENPRIOR_KEEP_MEMORY=0 python benchmarks/speed.py --only dm-pixel-ipc1   # the same case with glibc's defaults
    python benchmarks/speed.py --table              # only rewrite benchmarks/results/speed.md
    python benchmarks/speed.py --only step-dc-pixel-ipc1 --profile   # where a step's time goes (torch.profiler)
    python benchmarks/speed.py --gpu-check --device cuda   # step vs bare decode + backward, bf16 vs fp32: 64 px priors, IPC 50
    python benchmarks/speed.py --gpu-check --tiny   # that path on a CPU at tiny sizes (what the tests run)

**Step** (``step-<loss>-<prior>-ipc<N>``): one distillation iteration of the real loop
(``LatentDistiller.iteration``) on ``mnist5k``, median of the timed iterations after a
warm-up one. While the last one runs, every call of the matching network (a hook on
its first layer, so ``net(x)``, ``net.embed(x)`` and ``functional_call`` all count) and
every ``decode`` / ``backward_chunked`` of the prior is recorded with its inputs, grad
mode and autocast state, in one more iteration after the timed ones. The **floor**
replays those calls alone: the bare forward, and a first-order backward where the step
had gradients, of the same networks on the same batches (a network call replays as the
whole forward, where the step may have called ``embed``: one linear layer more). ``step / floor`` is
what the loop adds on top (real-data sampling, DSA, the loss itself, the optimiser,
bookkeeping); 1.0 would be nothing. DC's and MTT's second-order terms (gradients of
gradients) belong to the loss, not to the floor, so their ratio is higher by nature.

**Epoch** (``epoch-<net>``): one evaluation epoch (``evaluate.train_net``, the
protocol's SGD and DSA) on a 100-image set (IPC 10 of random real images), mean of the
timed epochs after a warm-up one; the floor is the bare forward + backward of the
same network on the same batch.

**Embedding** (``embed-real-batched``): DM's real side, one no-grad ConvNet forward
per class (what the loop does) against all ten classes in one forward.

**GPU check** (``--gpu-check``): DM on a randomly initialised 64-px StyleGAN (``w+``) and
a randomly initialised 64-px class-conditional DDPM UNet decoded by 5 DDIM steps
(``x_T+class``, LD3M's space; the cost does not depend on the weights) at IPC 50, their
images resized to ``mnist5k``'s 28 px: the step's throughput against the prior's bare
decode + backward of the same set (target >= 0.8), the bf16 step against the fp32 one
(target >= 1.5x), and the peak GPU memory of each run.

Every row records the threads, the device and the allocator setting
(``genprior/runtime.py``) it ran under; rows are keyed by case and setting, so runs
with ``GENPRIOR_KEEP_MEMORY=0`` sit beside the default ones.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from genprior.nets import CROSS_ARCH_POOL
from genprior.runtime import memory_setting

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "speed.json"
TABLE = RESULTS.with_suffix(".md")
RUNS = ROOT / "runs" / "speed"
EXPERTS = RUNS / "experts-mnist5k-convnet"
#: a small expert buffer is enough for timing: MTT's step costs the same whatever the experts learnt
EXPERT_ARGS = ["--num-experts", "1", "--epochs", "2"]
PRIORS = ("pixel", "mnist5k-stylegan")
IPCS = (1, 10)
#: per loss: the loss options that set a step's cost. DC and CAFE run 2 outer updates with 5
#: inner epochs between them at every IPC (the paper: 1/1 at IPC 1, 10/50 at IPC 10), so that a
#: case stays short and still holds both parts; their cost per update is the paper's
LOSSES: Dict[str, Dict[str, Any]] = {
    "dm": {}, "mmd": {}, "wasserstein": {},
    "dc": {"loss_options": {"outer_loop": 2, "inner_loop": 5}},
    "cafe": {"loss_options": {"outer_loop": 2, "inner_loop": 5}},
    "mtt": {"loss_options": {"buffer": str(EXPERTS), "syn_steps": 20, "expert_epochs": 1, "max_start_epoch": 1}},
}
EPOCH_NETS = CROSS_ARCH_POOL


# ---- recording the networks' calls during a step ------------------------------------------------

class Recorder:
    """Records the calls a floor replays: the matching network's (input, grad mode) at its first
    layer, and the prior's decode / backward_chunked with their arguments."""

    def __init__(self):
        self.on = False
        self.net_calls: List[Tuple[torch.nn.Module, torch.Tensor, bool, bool, tuple]] = []
        self.prior_calls: List[Tuple[Callable, tuple, dict, bool, tuple]] = []

    def hook_net(self, net: torch.nn.Module) -> None:
        if getattr(net, "_speed_recorder", None) is self:  # a marker, not id(): a freed net's id is reused
            return
        first = next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))

        def pre_hook(_module, args):
            if self.on:
                x = args[0]
                self.net_calls.append((net, x.detach().clone(), torch.is_grad_enabled(), x.requires_grad,
                                       autocast_state(x.device.type)))

        first.register_forward_pre_hook(pre_hook)
        net._speed_recorder = self

    def wrap_prior(self, prior) -> None:
        for name in ("decode", "backward_chunked"):
            original = getattr(prior, name)

            def wrapped(*args, _original=original, **kwargs):
                if self.on:
                    self.prior_calls.append((_original, args, kwargs, torch.is_grad_enabled(),
                                             autocast_state(prior_device(args))))
                return _original(*args, **kwargs)

            setattr(prior, name, wrapped)

    def replay(self) -> float:
        """Seconds to run the recorded calls alone, each in its recorded grad and autocast state.
        A network call replays as the full forward (the step may have called ``embed``, i.e. one
        linear layer less) and, where it had gradients, a first-order backward to the same leaves."""
        sync()
        t0 = time.perf_counter()
        for net, x, grad, x_grad, (device, enabled, dtype) in self.net_calls:
            with torch.set_grad_enabled(grad), torch.autocast(device, dtype=dtype, enabled=enabled):
                out = net(x.requires_grad_(grad and x_grad))
            if out.requires_grad:
                out.float().sum().backward()
                net.zero_grad(set_to_none=True)
        for fn, args, kwargs, grad, (device, enabled, dtype) in self.prior_calls:
            with torch.set_grad_enabled(grad), torch.autocast(device, dtype=dtype, enabled=enabled):
                fn(*args, **kwargs)
        sync()
        return time.perf_counter() - t0


def autocast_state(device_type: str) -> tuple:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def prior_device(args: tuple) -> str:
    """The device of a prior call's latents (its first argument, a dict of tensors)."""
    latents = args[0] if args else {}
    return next(iter(latents.values())).device.type if isinstance(latents, dict) and latents else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matcher_nets(m) -> List[torch.nn.Module]:
    return [getattr(m, a) for a in ("net", "student") if isinstance(getattr(m, a, None), torch.nn.Module)]


def time_step(cfg, timed: int = 2, profile: bool = False) -> Dict[str, Any]:
    """Median seconds of ``timed`` iterations after a warm-up one, and the floor of the last;
    ``profile`` prints torch.profiler's table of the last one instead (its time is then not kept)."""
    from genprior.distill import LatentDistiller

    with tempfile.TemporaryDirectory() as tmp:
        d = LatentDistiller(cfg, tmp, progress=False)
        d.init_latents()
        rec = Recorder()
        rec.wrap_prior(d.prior)
        start = d.matcher.start_iteration

        def start_and_hook(it, generator):
            start(it, generator)
            for net in matcher_nets(d.matcher):
                rec.hook_net(net)

        d.matcher.start_iteration = start_and_hook
        times = []
        for it in range(timed + 2):  # a warm-up, the timed ones, then one recorded (its copies are not timed)
            rec.on = it == timed + 1
            sync()
            t0 = time.perf_counter()
            if profile and it == timed + 1:
                from torch.profiler import profile as profiler

                with profiler() as prof:
                    d.iteration(it)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
            else:
                d.iteration(it)
            sync()
            if 0 < it <= timed:
                times.append(time.perf_counter() - t0)
        rec.on = False
        if not rec.net_calls or not rec.prior_calls:
            raise RuntimeError(f"the recorded iteration saw {len(rec.net_calls)} network and {len(rec.prior_calls)} "
                               "prior calls; the floor would be wrong")
        floors = [rec.replay() for _ in range(2)]
        prior_only = Recorder()
        prior_only.prior_calls = rec.prior_calls
        prior_floor = min(prior_only.replay() for _ in range(2))
        device = str(d.device)
    step = statistics.median(times)
    floor = min(floors)
    return {"step_s": step, "floor_s": floor, "ratio": step / floor, "prior_floor_s": prior_floor,
            "net_calls": len(rec.net_calls), "prior_calls": len(rec.prior_calls), "timed_iterations": timed,
            "device": device}


def step_config(loss: str, prior: str, ipc: int, overrides: Optional[dict] = None):
    from genprior.distill import DistillConfig

    base = {"dataset": "mnist5k", "prior": prior, "loss": loss, "ipc": ipc, "iterations": 1000, "init": "random",
            "lr": 1.0 if prior == "pixel" else 0.01, "checkpoint_every": 1000}
    return DistillConfig.from_dict({**base, **{k: dict(v) for k, v in LOSSES[loss].items()}, **(overrides or {})})


def time_epoch(arch: str, epochs: int = 3, device: str = "cpu") -> Dict[str, Any]:
    from genprior.augment import DSA, strategy_for
    from genprior.baselines import make_baseline
    from genprior.data import load_dataset
    from genprior.evaluate import PROTOCOLS, train_net
    from genprior.nets import create_net

    synset = make_baseline("random", load_dataset("mnist5k", "train"), 10, seed=0)
    images, labels = synset.images.to(device), synset.labels.to(device)
    proto = PROTOCOLS["quick"]
    torch.manual_seed(0)
    net = create_net(arch, synset.channels, synset.num_classes, synset.resolution).to(device)
    gen = torch.Generator().manual_seed(0)
    dsa = DSA(strategy_for("mnist5k"))
    train_net(net, images, labels, replace(proto, epochs=1, lr_drop_epoch=1), dsa, gen)  # warm-up
    sync()
    t0 = time.perf_counter()
    train_net(net, images, labels, replace(proto, epochs=epochs, lr_drop_epoch=epochs), dsa, gen)
    sync()
    epoch = (time.perf_counter() - t0) / epochs
    floors = []
    for _ in range(epochs):
        sync()
        t0 = time.perf_counter()
        for b in range(0, len(images), proto.batch_size):
            F.cross_entropy(net(images[b:b + proto.batch_size]), labels[b:b + proto.batch_size]).backward()
        net.zero_grad(set_to_none=True)
        sync()
        floors.append(time.perf_counter() - t0)
    floor = min(floors)
    return {"epoch_s": epoch, "floor_s": floor, "ratio": epoch / floor, "images": len(images),
            "timed_epochs": epochs, "device": str(images.device)}


def time_batched_embedding(repeats: int = 3) -> Dict[str, Any]:
    """DM's real side: 10 classes x 256 images through a no-grad ConvNet, one forward per class
    (what the loop does) against all classes in one forward."""
    from genprior.nets import create_net

    torch.manual_seed(0)
    net = create_net("convnet", 1, 10, 28)
    real = torch.randn(10, 256, 1, 28, 28)

    def per_class():
        for c in range(10):
            net.embed(real[c])

    def batched():
        net.embed(real.flatten(0, 1))

    out = {}
    with torch.no_grad():
        for name, fn in (("per_class_s", per_class), ("batched_s", batched)):
            fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name] = min(times)
    out["first_activation_mib_per_class"] = 256 * 128 * 32 * 32 * 4 / 2**20
    out["first_activation_mib_batched"] = 10 * out["first_activation_mib_per_class"]
    return out


# ---- the GPU check --------------------------------------------------------------------------------

def make_prior(path: Path, family: str, resolution: int, tiny: bool) -> None:
    """A randomly initialised prior of ``family`` at ``resolution`` (the step's cost does not depend
    on the weights): a StyleGAN, or a class-conditional pixel DDPM UNet decoded by 5 DDIM steps
    (LD3M's latent space)."""
    from genprior.data import load_dataset

    real = load_dataset("mnist5k", "train")
    torch.manual_seed(0)
    if family == "stylegan":
        from genprior.priors.stylegan import StyleGAN2Generator, StyleGANPrior

        sizes = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8) if tiny else \
            dict(z_dim=128, w_dim=128, mapping_layers=4, channel_base=4096, channel_max=256)
        g = StyleGAN2Generator(c_dim=real.num_classes, img_resolution=resolution, img_channels=real.channels,
                               output_resolution=resolution, **sizes)
        StyleGANPrior(g, mean=real.mean, std=real.std, mean_samples=64).save_pretrained(path)
        return
    from diffusers import DDIMScheduler, UNet2DModel

    from genprior.priors.diffusion import DiffusionPrior

    widths = (8, 16) if tiny else (64, 128, 128)
    unet = UNet2DModel(sample_size=resolution, in_channels=real.channels, out_channels=real.channels,
                       block_out_channels=widths, norm_num_groups=4 if tiny else 32, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * len(widths), up_block_types=("UpBlock2D",) * len(widths),
                       num_class_embeds=real.num_classes + 1)  # the last row: the unconditional class
    DiffusionPrior(unet, DDIMScheduler(clip_sample=False), mean=real.mean, std=real.std,
                   num_inference_steps=5).save_pretrained(path)


#: what the GPU check runs: (prior family, latent space, chunk) at 64 px and IPC 50 (tiny: 16 px, IPC 2)
GPU_CASES = (("stylegan", "w+", 50), ("diffusion", "x_T+class", 10))


def gpu_check(device: str, tiny: bool) -> List[Dict[str, Any]]:
    """DM on a 64-px StyleGAN and a 64-px diffusion prior at IPC 50 (tiny: 16 px, IPC 2), fp32 and
    bf16: seconds per step, the prior's bare decode + backward of the same set (the limit), and the
    peak GPU memory of each run."""
    resolution, ipc = (16, 2) if tiny else (64, 50)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, space, chunk in GPU_CASES:
            prior = Path(tmp) / family
            make_prior(prior, family, resolution, tiny)
            pair = []
            for precision in ("no", "bf16"):
                small = {"loss_options": {"net_options": {"width": 8}}, "batch_real": 16} if tiny else {}
                cfg = step_config("dm", str(prior), ipc, {"resize": True, "chunk_size": 10 if tiny else chunk,
                                                           "space": space, "mixed_precision": precision, **small})
                if torch.cuda.is_available() and device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                r = time_step(cfg, timed=1 if tiny else 3)
                if torch.cuda.is_available() and device.startswith("cuda"):
                    r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
                r["throughput_vs_prior_floor"] = r["prior_floor_s"] / r["step_s"]
                pair.append({"case": f"gpu-check-dm-{family}{resolution}-ipc{ipc}-"
                                     f"{'fp32' if precision == 'no' else precision}",
                             "kind": "gpu-check", "family": family, "precision": precision, **r})
            pair[1]["bf16_speedup"] = pair[0]["step_s"] / pair[1]["step_s"]
            rows += pair
    return rows


# ---- cases, results, table ---------------------------------------------------------------------------

def cases() -> List[str]:
    out = [f"step-{loss}-{prior}-ipc{ipc}" for loss in LOSSES for prior in PRIORS for ipc in IPCS]
    return out + [f"epoch-{net}" for net in EPOCH_NETS] + ["embed-real-batched"]


def ensure_experts() -> None:
    """MTT's buffer under runs/speed (``genprior experts`` keeps finished experts, so this is quick once built)."""
    from genprior.cli import main as cli

    if cli(["experts", "--dataset", "mnist5k", "--out-dir", str(EXPERTS), *EXPERT_ARGS]):
        raise SystemExit("could not build the expert buffer MTT's cases need")


def run_case(case: str, device: str, profile: bool = False) -> Dict[str, Any]:
    gc.collect()  # the last case's networks and recordings go now, not inside this case's timed step
    kind, rest = case.split("-", 1)
    if kind == "embed":
        return {"kind": "embed", **time_batched_embedding()}
    if kind == "epoch":
        return {"kind": "epoch", "net": rest, **time_epoch(rest, device=device)}
    loss, rest = rest.split("-", 1)
    prior, ipc = rest.rsplit("-ipc", 1)
    if loss == "mtt":
        ensure_experts()
    r = time_step(step_config(loss, prior, int(ipc)), profile=profile)
    return {"kind": "step", "loss": loss, "prior": prior, "ipc": int(ipc), "options": LOSSES[loss], **r}


def environment(device: str) -> Dict[str, Any]:
    return {"device": device, "threads": torch.get_num_threads(), "memory": memory_setting()["keep_freed_memory"],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}


def key(row: Dict[str, Any]) -> str:
    return f"{row['case']}|{row['device']}|{row['threads']}|{row['memory']}"


def load_rows() -> List[Dict[str, Any]]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def save_rows(rows: List[Dict[str, Any]]) -> None:
    from genprior.synset import write_json_atomic

    write_json_atomic(rows, RESULTS)


def write_table(rows: List[Dict[str, Any]]) -> None:
    def setting(r):
        return f"{r['device']}, {r['threads']} thr, kept: {r['memory']}"

    lines = ["# Speed against the floor", "",
             "Written by `python benchmarks/speed.py` (see its docstring for what each figure is). "
             "Floor: the bare forward (+ backward) of the same networks on the same batches; "
             "ratio = measured / floor, 1.0 would be nothing on top.", "",
             "## Distillation steps (one iteration, mnist5k)", "",
             "| loss | prior | IPC | s / iteration | floor s | ratio | prior's own floor s | setting |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["kind"] == "step"), key=lambda r: (r["loss"], r["prior"], r["ipc"], r["memory"])):
        lines.append(f"| {r['loss']} | {r['prior']} | {r['ipc']} | {r['step_s']:.3f} | {r['floor_s']:.3f} | "
                     f"{r['ratio']:.2f} | {r['prior_floor_s']:.3f} | {setting(r)} |")
    lines += ["", "DC and CAFE: 2 outer updates with 5 inner epochs between them, at both IPCs (the paper: 1/1 at "
              "IPC 1, 10/50 at IPC 10); MTT: 20 student steps, 1 expert epoch, start epoch 0.", "",
              "## Evaluation epochs (100 images: IPC 10, one batch)", "",
              "| network | s / epoch | floor s | ratio | setting |", "|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["kind"] == "epoch"), key=lambda r: (EPOCH_NETS.index(r["net"]), r["memory"])):
        lines.append(f"| {r['net']} | {r['epoch_s']:.3f} | {r['floor_s']:.3f} | {r['ratio']:.2f} | {setting(r)} |")
    for r in (r for r in rows if r["kind"] == "embed"):
        lines += ["", "## DM's real side: one forward per class or one for all classes (ConvNet, no grad)", "",
                  f"10 classes x 256 images: per class {r['per_class_s']:.3f} s, all in one forward "
                  f"{r['batched_s']:.3f} s; first activation {r['first_activation_mib_per_class']:.0f} MiB against "
                  f"{r['first_activation_mib_batched']:.0f} MiB ({setting(r)})."]
    gpu = [r for r in rows if r["kind"] == "gpu-check"]
    if gpu:
        lines += ["", "## GPU check (DM on a StyleGAN and a diffusion prior, fp32 and bf16)", "",
                  "| case | s / iteration | prior's decode + backward s | throughput vs the prior's floor | bf16 speed-up | "
                  "peak GPU MiB | setting |",
                  "|---|---|---|---|---|---|---|"]
        for r in gpu:
            speedup = f"{r['bf16_speedup']:.2f}x" if "bf16_speedup" in r else "–"
            peak = f"{r['peak_gpu_mib']:.0f}" if "peak_gpu_mib" in r else "–"
            lines.append(f"| {r['case']} | {r['step_s']:.3f} | {r['prior_floor_s']:.3f} | "
                         f"{r['throughput_vs_prior_floor']:.2f} | {speedup} | {peak} | {setting(r)} |")
    from genprior.synset import write_text_atomic

    write_text_atomic("\n".join(lines) + "\n", TABLE)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the cases whose name contains this text (comma-separated: any of them)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--table", action="store_true", help="only rewrite the table from saved results")
    parser.add_argument("--gpu-check", action="store_true", help="step vs the prior's floor and bf16 vs fp32")
    parser.add_argument("--tiny", action="store_true", help="with --gpu-check: tiny sizes, for a CPU")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler's table of each step case's last iteration (nothing is saved)")
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)  # tests write elsewhere
    args = parser.parse_args(argv)
    global RESULTS, TABLE
    if args.results:
        RESULTS, TABLE = args.results, args.results.with_suffix(".md")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = load_rows()
    if not args.table:
        if args.gpu_check:
            todo = [(None, lambda: gpu_check(args.device, args.tiny))]
        else:
            wanted = [c for c in cases() if not args.only or any(t in c for t in args.only.split(","))]
            if not wanted:
                raise SystemExit(f"no case matches {args.only!r}; cases: {', '.join(cases())}")
            todo = [(c, lambda c=c: [run_case(c, args.device, args.profile)]) for c in wanted]
        for case, fn in todo:
            for row in fn():
                if args.profile:
                    continue  # the profiler's overhead is in the times
                row = {"case": case or row["case"], **environment(args.device), **row}  # the device a case ran on wins
                rows = [r for r in rows if key(r) != key(row)] + [row]
                save_rows(rows)  # after every case: a killed run keeps what it measured
                print(json.dumps({k: v for k, v in row.items() if k != "options"}), flush=True)
    write_table(rows)
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
