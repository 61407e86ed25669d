"""The generator as the dataset on mnist5k: one trained generator per method, sets of IPC 1, 10
and 50 drawn from it, against the base prior's samples, random real images and pixel DM.

    python benchmarks/generator_table.py                 # runs or resumes every unit, then writes the table
    python benchmarks/generator_table.py --table         # only rewrites the table from saved results
    python benchmarks/generator_table.py & python benchmarks/generator_table.py   # two 1-thread lanes

Units (resumable, shared between lanes: ``genprior/lanes.py``):
- ``train|<method>``: the method's recipe with its defaults (``recipes/<method>.py``), in its
  own process; a killed training continues from its last checkpoint. Wall time, loop time
  and peak resident memory are recorded.
- ``set|<row>|<ipc>``: one set. For a method, ``genprior generate RUN/generator`` in its own
  process (seed 0, so the IPC 10 set is the first 10 images per class of the IPC 50 set),
  with its time per 100 images and peak memory; ``prior`` draws the base prior's samples the
  same way; ``random`` picks real images; ``dm`` is ``recipes/dm.py`` at that IPC.
- ``eval|<row>|<ipc>|<arch>|<i>``: model i of one architecture on that set (``quick``).
- ``memory|<ipc>``: the peak resident memory of ``genprior generate`` from the DiM generator at
  IPC 10 and 1,000 (the issue's flat-memory target: at most 1.2x apart).
The best latent method at IPC 1 and 10 is read from ``distill_table_mnist5k.json``.
Results: ``benchmarks/results/generator_table_mnist5k.*``; runs and sets under ``runs/generators/``.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from genprior.data import load_dataset
from genprior.evaluate import PROTOCOLS, mean_std
from genprior.lanes import eval_unit, lane_main, run_process, run_recipe_unit
from genprior.nets import CROSS_ARCH_POOL
from genprior.synset import load_synset, save_synset

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "generator_table_mnist5k.json"
TABLE = RESULTS.with_suffix(".md")
DISTILL_TABLE = ROOT / "benchmarks" / "results" / "distill_table_mnist5k.json"
RUNS = ROOT / "runs" / "generators"
DATASET = "mnist5k"
PROTOCOL = PROTOCOLS["quick"]
IPCS = (1, 10, 50)
#: method -> its recipe and base prior
METHODS = {"dim": ("recipes/dim.py", "mnist5k-stylegan"), "dcgm": ("recipes/dcgm.py", "mnist5k-stylegan"),
           "minimax": ("recipes/minimax.py", "mnist5k-diffusion")}
#: rows beside the methods: the base priors' samples, random real images, pixel DM
BASELINES = ("prior-mnist5k-stylegan", "prior-mnist5k-diffusion", "random", "dm")
MEMORY_IPCS = (10, 1000)
WHOLE_SPLIT_CONVNET = 99.27  # foundation_mnist5k.md: ConvNet trained on the whole train split


def rows():
    return list(METHODS) + list(BASELINES)


def run_dir(method: str) -> Path:
    return RUNS / method


def set_dir(row: str, ipc: int) -> Path:
    return RUNS / "sets" / f"{row}-ipc{ipc}"


def synset_path(row: str, ipc: int) -> Path:
    return set_dir(row, ipc) / "synset" if row == "dm" else set_dir(row, ipc)


def order() -> list:
    """Training first, then per IPC every row's set and ConvNet models, then the pool (one
    model of each network per row and IPC), then the memory check."""
    keys = [f"train|{m}" for m in METHODS]
    for ipc in IPCS:
        for row in rows():
            keys.append(f"set|{row}|{ipc}")
            keys += [f"eval|{row}|{ipc}|convnet|{i}" for i in range(PROTOCOL.num_models)]
    for ipc in (10, 50, 1):
        keys += [f"eval|{row}|{ipc}|{a}|0" for row in rows() for a in CROSS_ARCH_POOL if a != "convnet"]
    keys += [f"memory|{ipc}" for ipc in MEMORY_IPCS]
    return keys


def deps(key: str) -> list:
    parts = key.split("|")
    if parts[0] == "eval":
        return [f"set|{parts[1]}|{parts[2]}"]
    if parts[0] == "set" and parts[1] in METHODS:
        return [f"train|{parts[1]}"]
    if parts[0] == "memory":
        return ["train|dim"]
    return []


def generate(prior: str, out: Path, ipc: int, threads: int) -> dict:
    """``genprior generate`` in its own process: wall time per 100 images and peak memory."""
    cmd = [sys.executable, "-m", "genprior", "generate", prior, str(out), "--ipc", str(ipc), "--overwrite"]
    result = run_process(cmd, threads)
    result["seconds_per_100_images"] = 100 * result["time_s"] / (10 * ipc)
    result["command"] = "genprior generate " + " ".join(str(c) for c in cmd[4:])
    return result


def work(key: str, threads: int, cache: dict) -> dict:
    parts = key.split("|")
    if parts[0] == "train":
        recipe, _ = METHODS[parts[1]]
        out = run_dir(parts[1])
        return run_recipe_unit([recipe, "--no-evaluate", "--output-dir", str(out.relative_to(ROOT))], out, threads)
    if parts[0] == "memory":
        return generate(str(run_dir("dim") / "generator"), RUNS / "memory" / f"ipc{parts[1]}", int(parts[1]), threads)
    if parts[0] == "set":
        row, ipc = parts[1], int(parts[2])
        if row in METHODS:
            return generate(str(run_dir(row) / "generator"), set_dir(row, ipc), ipc, threads)
        if row.startswith("prior-"):
            return generate(row[len("prior-"):], set_dir(row, ipc), ipc, threads)
        if row == "dm":
            out = set_dir(row, ipc)
            return run_recipe_unit(["recipes/dm.py", "--ipc", str(ipc), "--no-evaluate", "--output-dir",
                                    str(out.relative_to(ROOT))], out, threads)
        from genprior.baselines import make_baseline

        t0 = time.time()
        save_synset(make_baseline("random", load_dataset(DATASET, "train"), ipc, seed=0), set_dir(row, ipc), overwrite=True)
        return {"time_s": time.time() - t0}
    row, ipc, arch, i = parts[1], int(parts[2]), parts[3], int(parts[4])
    if "test" not in cache:
        cache["test"] = load_dataset(DATASET, "test")
    return eval_unit(load_synset(synset_path(row, ipc)), cache["test"], arch, i, PROTOCOL, threads,
                     state_dir=RUNS / "state" / key.replace("|", "-"))


def initial() -> dict:
    return {"dataset": DATASET, "protocol": PROTOCOL.name, "units": {}, "claims": {},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}


def best_latent(ipc: int):
    """The latent method with the best cross-architecture mean at ``ipc`` in the distillation table."""
    if not DISTILL_TABLE.exists():
        return None
    units = json.loads(DISTILL_TABLE.read_text())["units"]
    best = None
    for method in ("glad-dm", "glad-dc", "glad-mtt", "itgan", "ld3m", "glad-dm-invert"):
        per = {}
        for arch in CROSS_ARCH_POOL:
            accs = [u["acc"] for k, u in units.items() if k.startswith(f"eval|{method}|{ipc}|{arch}|")]
            if accs:
                per[arch] = mean_std(accs)[0]
        if len(per) == len(CROSS_ARCH_POOL):
            cross = sum(per.values()) / len(per)
            if best is None or cross > best[1]:
                best = (method, cross, per["convnet"])
    return best


def write_table(results: dict) -> None:
    units = results["units"]
    lines = [f"# The generator as the dataset on {DATASET}", "",
             f"`{PROTOCOL.name}` protocol; ConvNet: mean ± std of {PROTOCOL.num_models} models; cross-arch: mean over "
             f"{', '.join(CROSS_ARCH_POOL)} (one model each), `k/7` while incomplete. Every method's sets of IPC 1, 10 and "
             "50 come from one trained generator (seed 0: nested). Machine: " + results["machine"] + "; 1 thread per unit.",
             f"Whole train split, ConvNet: {WHOLE_SPLIT_CONVNET} %.", "",
             "| row | IPC | ConvNet % | cross-arch % | set: s / 100 images | set: peak MiB |", "|---|---|---|---|---|---|"]
    for ipc in IPCS:
        for row in rows():
            per = {}
            for arch in CROSS_ARCH_POOL:
                accs = [units[k]["acc"] for k in units if k.startswith(f"eval|{row}|{ipc}|{arch}|")]
                if accs:
                    per[arch] = mean_std(accs)
            if not per:
                continue
            conv = per.get("convnet")
            conv_s = f"{100 * conv[0]:.2f} ± {100 * conv[1]:.2f}" if conv else "–"
            cross = (f"{100 * sum(v[0] for v in per.values()) / len(per):.2f}"
                     + ("" if len(per) == len(CROSS_ARCH_POOL) else f" ({len(per)}/7)")) if len(per) > 1 else "–"
            s = units.get(f"set|{row}|{ipc}", {})
            speed = f"{s['seconds_per_100_images']:.1f}" if "seconds_per_100_images" in s else "–"
            mem = f"{s['peak_rss_mib']:.0f}" if "peak_rss_mib" in s and row in METHODS else "–"
            lines.append(f"| {row} | {ipc} | {conv_s} | {cross} | {speed} | {mem} |")
        best = best_latent(ipc)
        if best:
            lines.append(f"| best latent method ({best[0]}, distill_table) | {ipc} | {best[2] * 100:.2f} | "
                         f"{best[1] * 100:.2f} | – | – |")
    trains = [(m, units[f"train|{m}"]) for m in METHODS if f"train|{m}" in units]
    if trains:
        lines += ["", "| method | training s (loop) | peak MiB | command |", "|---|---|---|---|"]
        lines += [f"| {m} | {u['time_s']:.0f} ({u['loop_time_s']:.0f}) | {u['peak_rss_mib']:.0f} | `{u['command']}` |"
                  for m, u in trains]
    mems = [units.get(f"memory|{ipc}") for ipc in MEMORY_IPCS]
    if all(mems):
        lines += ["", f"Peak memory of `genprior generate` from the DiM generator: IPC {MEMORY_IPCS[0]} "
                  f"{mems[0]['peak_rss_mib']:.0f} MiB, IPC {MEMORY_IPCS[1]} {mems[1]['peak_rss_mib']:.0f} MiB "
                  f"({mems[1]['peak_rss_mib'] / mems[0]['peak_rss_mib']:.2f}x)."]
    TABLE.write_text("\n".join(lines) + "\n")


def artifacts(key: str) -> list:
    parts = key.split("|")
    if parts[0] == "train":
        return [run_dir(parts[1])]
    if parts[0] == "set":
        return [set_dir(parts[1], int(parts[2]))]
    if parts[0] == "memory":
        return [RUNS / "memory" / f"ipc{parts[1]}"]
    return [RUNS / "state" / key.replace("|", "-")]


def main() -> None:
    os.chdir(ROOT)  # recipes and run folders are named from the project root
    def make_work(threads: int):
        cache: dict = {}
        return lambda key: work(key, threads, cache)
    lane_main(RESULTS, initial, order(), deps, make_work, write_table, TABLE, "'dim' or 'ipc10'", artifacts)


if __name__ == "__main__":
    sys.exit(main())
