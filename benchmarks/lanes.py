"""Resumable benchmark units shared by several processes ("lanes").

A benchmark is a list of units (build a set, train one evaluation network, ...).
Each finished unit is written at once to one JSON results file, so a killed run
loses at most the unit in progress. Several processes may work on the same
results file: a unit is claimed under an ``fcntl`` lock before it starts, and a
claim whose process has died is taken over. On a 2-core machine two 1-thread
lanes finish more work than one 2-thread process.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

from genprior.synset import write_json_atomic


@contextmanager
def locked(results_path: Path, initial: Callable[[], dict]) -> Iterator[dict]:
    """Read the results under an exclusive lock; whatever the block changes is written back."""
    lock = results_path.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            results = json.loads(results_path.read_text()) if results_path.exists() else initial()
            results.setdefault("units", {})
            results.setdefault("claims", {})
            yield results
            write_json_atomic(results, results_path)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_lane(results_path: Path, initial: Callable[[], dict], order: Sequence[str],
             deps: Callable[[str], List[str]], work: Callable[[str], dict],
             on_change: Optional[Callable[[dict], None]] = None, max_units: Optional[int] = None,
             only: Optional[Callable[[str], bool]] = None, poll_s: float = 20.0) -> int:
    """Claim and run units in ``order`` until none is left for this process; return how many ran.

    A unit is ready when every unit ``deps(key)`` names is done. When the only units
    left wait on another lane's work, this lane polls every ``poll_s`` seconds.
    """
    pid, done = os.getpid(), 0
    while max_units is None or done < max_units:
        key, waiting = None, False
        with locked(results_path, initial) as results:
            claims = results["claims"]
            for k, owner in list(claims.items()):
                if not _alive(owner):
                    del claims[k]
            for k in order:
                if k in results["units"] or k in claims or (only is not None and not only(k)):
                    continue
                if all(d in results["units"] for d in deps(k)):
                    key = k
                    claims[k] = pid
                    break
                waiting = True
        if key is None:
            if not waiting:
                return done
            time.sleep(poll_s)
            continue
        try:
            value = work(key)
        finally:
            with locked(results_path, initial) as results:
                results["claims"].pop(key, None)
        with locked(results_path, initial) as results:
            results["units"][key] = value
            if on_change is not None:
                on_change(results)
        done += 1
        print(f"{key}: {json.dumps(value)[:200]}", flush=True)
    return done


def eval_unit(synset, test, arch: str, model: int, protocol, threads: int, state_dir: Optional[Path] = None) -> dict:
    """One fresh network of ``arch`` trained on ``synset``; model ``i`` is model ``i`` of
    ``evaluate_synset(..., seed=0)``, so units add up to a normal evaluation. With
    ``state_dir`` (one folder per unit), a killed unit resumes mid-training."""
    from genprior.evaluate import evaluate_synset

    report = evaluate_synset(synset, archs=[arch], protocol=replace(protocol, num_models=1), test=test,
                             seed=model, device="cpu", progress=False, state_dir=state_dir)
    r = report["results"][arch]
    return {"acc": r["accs"][0], "time_s": r["time_s"], "seed": model, "threads": threads}


def mean_std(values: Sequence[float]) -> tuple:
    """Mean and population std (as the DC codebase reports)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def lane_main(results_path: Path, initial: Callable[[], dict], order: Sequence[str], deps: Callable[[str], List[str]],
              make_work: Callable[[int], Callable[[str], dict]], write_table: Callable[[dict], None],
              table_path: Path, only_example: str) -> None:
    """The command line every benchmark shares: run (or resume) this lane's units, then rewrite the table."""
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--table", action="store_true", help="only rewrite the table")
    parser.add_argument("--max-units", type=int, default=None, help="stop after this many new units")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per lane; on a 2-core machine run two 1-thread lanes side by side")
    parser.add_argument("--only", help=f"run only units whose key contains this text, e.g. {only_example}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.table:
        run_lane(results_path, initial, order, deps, make_work(args.threads), on_change=write_table,
                 max_units=args.max_units, only=(lambda k: args.only in k) if args.only else None)
    with locked(results_path, initial) as results:
        write_table(results)
    print(table_path.read_text())
