"""Baseline accuracies on mnist5k under the quick protocol (the foundation issue's figures).

    python benchmarks/foundation.py            # runs or resumes every unit, then writes the table
    python benchmarks/foundation.py --table    # only rewrites the table from saved results

One unit = one fresh network trained on one set (model i uses seed i, exactly as
model i of ``genprior evaluate --protocol quick`` does). Each finished unit is saved
at once to ``benchmarks/results/foundation_mnist5k.json``, so a killed run resumes
where it stopped. Two processes may run side by side on the same results (units are
claimed under a lock, ``genprior/lanes.py``); ``--only whole`` picks a subset.
Sets are written under ``runs/bench/`` (not committed).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from genprior.baselines import make_baseline
from genprior.data import load_dataset
from genprior.evaluate import PROTOCOLS, mean_std
from genprior.lanes import eval_unit, lane_main, locked
from genprior.nets import CROSS_ARCH_POOL
from genprior.synset import SyntheticSet, load_synset, save_synset

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "foundation_mnist5k.json"
TABLE = HERE / "results" / "foundation_mnist5k.md"
SETS_DIR = HERE.parent / "runs" / "bench"
DATASET = "mnist5k"
PROTOCOL = PROTOCOLS["quick"]

SETS = {  # name: (method, ipc); "whole" is the entire train split
    "random-ipc1": ("random", 1),
    "random-ipc10": ("random", 10),
    "random-ipc50": ("random", 50),
    "herding-ipc10": ("herding", 10),
    "kcenter-ipc10": ("kcenter", 10),
    "whole": ("whole", None),
}


#: The cross-architecture row of random IPC 10 is trained by ``distill_table.py`` (the same set:
#: random real, seed 0; the same seeds), whose units this table reads instead of training them twice.
TABLE_RESULTS = HERE / "results" / "distill_table_mnist5k.json"


def units():
    """Cheap, table-critical units first; the heaviest (the whole split) last."""
    order = []
    for name in ("random-ipc1", "random-ipc10", "herding-ipc10", "kcenter-ipc10", "random-ipc50"):
        order += [(name, "convnet", i) for i in range(PROTOCOL.num_models)]
    order += [("whole", "convnet", i) for i in range(PROTOCOL.num_models)]
    return order


def pool_units(results: dict) -> dict:
    """random-ipc10 units of the pool networks: this benchmark's own, else those of distill_table.py."""
    shared = {}
    if TABLE_RESULTS.exists():
        for key, u in json.loads(TABLE_RESULTS.read_text()).get("units", {}).items():
            parts = key.split("|")
            if parts[:3] == ["eval", "random", "10"] and parts[3] != "convnet":
                shared[f"random-ipc10|{parts[3]}|{parts[4]}"] = dict(u, source="distill_table")
    return {**shared, **results["units"]}


def get_set(name: str, train) -> SyntheticSet:
    """The set ``name``, built once and saved under runs/bench (its build time goes to the results).

    Built under a per-set lock, so two lanes starting on the same set build it once."""
    import fcntl

    path = SETS_DIR / name
    SETS_DIR.mkdir(parents=True, exist_ok=True)
    with open(SETS_DIR / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return load_synset(path)
        method, ipc = SETS[name]
        t0 = time.time()
        if method == "whole":
            synset = SyntheticSet(images=train.images, labels=train.labels, mean=train.mean, std=train.std,
                                  dataset=train.name, class_names=train.class_names, method="whole")
        else:
            synset = make_baseline(method, train, ipc, seed=0)
        save_synset(synset, path, overwrite=True)
    with locked(RESULTS, load_results) as results:
        results["sets"][name] = {"method": method, "ipc": synset.ipc, "build_time_s": time.time() - t0}
    return synset


def load_results() -> dict:
    """A fresh results dict (``lanes.locked`` reads the saved one when it exists)."""
    return {"dataset": DATASET, "protocol": PROTOCOL.name, "sets": {}, "units": {},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}


def write_table(results: dict) -> None:
    rows = {}
    for key, u in pool_units(results).items():
        name, arch = key.split("|")[:2]
        rows.setdefault((name, arch), []).append(u)
    lines = [
        f"# Baselines on {DATASET}, `{PROTOCOL.name}` protocol ({PROTOCOL.epochs} epochs, lr drop at "
        f"{PROTOCOL.lr_drop_epoch}, up to {PROTOCOL.num_models} models, DSA without flip)",
        "",
        f"Machine: {results['machine']}. Accuracy after the last epoch, mean ± std (population) over models.",
        "Written by `python benchmarks/foundation.py`.",
        "",
        "Train times are wall seconds with the thread count of the unit, often with another job on the other core;",
        "they are indications of cost, not clean timings. The random-ipc10 rows of networks other than ConvNet",
        "are the units of `benchmarks/distill_table.py` (the same set and seeds).",
        "",
        "| set | network | models | accuracy % | train time per model (s) |",
        "|---|---|---|---|---|",
    ]
    for (name, arch), us in sorted(rows.items(), key=lambda kv: (list(SETS).index(kv[0][0]), kv[0][1])):
        mean, std = mean_std([u["acc"] for u in us])
        t = sum(u["time_s"] for u in us) / len(us)
        mark = " *" if any("time_note" in u for u in us) else ""
        lines.append(f"| {name} | {arch} | {len(us)} | {100 * mean:.2f} ± {100 * std:.2f} | {t:.0f}{mark} |")
    pool = [rows.get(("random-ipc10", a)) for a in CROSS_ARCH_POOL]
    if all(pool):
        means = [sum(u["acc"] for u in us) / len(us) for us in pool]
        lines += ["", f"Cross-architecture mean of random-ipc10 over {', '.join(CROSS_ARCH_POOL)}: "
                  f"{100 * sum(means) / len(means):.2f} %"]
    notes = sorted({f"{k}: {u['time_note']}" for k, u in results["units"].items() if "time_note" in u})
    if notes:
        lines += ["", "\\* the time of a model includes only part of its training: " + "; ".join(notes) + "."]
    builds = [f"{n}: {s['build_time_s']:.1f} s" for n, s in results["sets"].items()]
    lines += ["", "Time to build each set: " + "; ".join(builds) + "."]
    TABLE.write_text("\n".join(lines) + "\n")


def make_work(threads: int):
    data = {}

    def work(key: str) -> dict:
        if not data:
            data["train"], data["test"] = load_dataset(DATASET, "train"), load_dataset(DATASET, "test")
        name, arch, i = key.split("|")
        return eval_unit(get_set(name, data["train"]), data["test"], arch, int(i), PROTOCOL, threads,
                         state_dir=SETS_DIR / "state" / key.replace("|", "-"))
    return work


def main() -> None:
    os.chdir(HERE.parent)  # the project root, as the other benchmarks
    keys = [f"{name}|{arch}|{i}" for name, arch, i in units()]
    lane_main(RESULTS, load_results, keys, lambda key: [], make_work, write_table, TABLE, "'whole' or 'resnet'",
              lambda key: [SETS_DIR / "state" / key.replace("|", "-")])


if __name__ == "__main__":
    sys.exit(main())
