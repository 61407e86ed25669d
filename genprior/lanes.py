"""Resumable benchmark units shared by several processes ("lanes"): the machinery of
``genprior bench`` and of the scripts in ``benchmarks/``.

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
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

from .synset import write_json_atomic


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


def _start_time(pid: int) -> Optional[str]:
    """When process ``pid`` started (clock ticks since boot), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie counts as dead


def _claim_id() -> str:
    """This process, as ``pid:start-time``: a pid reused after a restart is not mistaken for us."""
    return f"{os.getpid()}:{_start_time(os.getpid())}"


def _alive(claim) -> bool:
    pid, _, started = str(claim).partition(":")
    return _start_time(int(pid)) == started if started else _start_time(int(pid)) is not None


def run_lane(results_path: Path, initial: Callable[[], dict], order: Sequence[str],
             deps: Callable[[str], List[str]], work: Callable[[str], dict],
             on_change: Optional[Callable[[dict], None]] = None, max_units: Optional[int] = None,
             only: Optional[Callable[[str], bool]] = None, poll_s: float = 20.0,
             failures: Optional[List[str]] = None) -> int:
    """Claim and run units in ``order`` until none is left for this process; return how many ran.

    A unit is ready when every unit ``deps(key)`` names is done. When the only units
    left wait on work another live lane has claimed, this lane polls every ``poll_s``
    seconds; when they wait on work nobody is doing (e.g. excluded by ``only``), it
    says which and stops. A unit that raises is reported and skipped by this lane (and its
    key appended to ``failures``).
    """
    me, done, failed = _claim_id(), 0, set()
    while max_units is None or done < max_units:
        key, waiting, missing = None, False, set()
        with locked(results_path, initial) as results:
            claims = results["claims"]
            for k, owner in list(claims.items()):
                if not _alive(owner):
                    del claims[k]
            for k in order:
                if k in results["units"] or k in claims or k in failed or (only is not None and not only(k)):
                    continue
                todo = [d for d in deps(k) if d not in results["units"]]
                if not todo:
                    key = k
                    claims[k] = me
                    break
                if any(d in claims for d in todo):
                    waiting = True
                else:
                    missing.update(todo)
        if key is None:
            if waiting:
                time.sleep(poll_s)
                continue
            if missing:
                print(f"stopping: units wait on {', '.join(sorted(missing))}, which no lane is running "
                      "(start a lane that includes them)", flush=True)
            return done
        try:
            value = work(key)
        except BaseException as e:
            with locked(results_path, initial) as results:
                results["claims"].pop(key, None)
            if not isinstance(e, Exception):
                raise
            failed.add(key)  # this lane moves on; a lane started later tries the unit again
            if failures is not None:
                failures.append(key)
            print(f"{key} failed: {e!r}", flush=True)
            continue
        with locked(results_path, initial) as results:  # recorded and released in one step: no lane runs it twice
            results["units"][key] = value
            results["claims"].pop(key, None)
        if on_change is not None:
            try:
                with locked(results_path, initial) as results:
                    on_change(results)
            except Exception as e:  # a table bug must not cost a finished unit
                print(f"could not rewrite the table: {e!r}", flush=True)
        done += 1
        print(f"{key}: {json.dumps(value)[:200]}", flush=True)
    return done


def redo(results_path: Path, initial: Callable[[], dict], keys: Sequence[str],
         artifacts: Optional[Callable[[str], List[Path]]] = None) -> List[str]:
    """Forget ``keys`` so that the next lane runs them again (e.g. after a recipe changed):
    their results, dead claims, and the files ``artifacts(key)`` names (a run directory, a
    training state), which would otherwise be resumed. A unit a live lane holds is refused."""
    import shutil

    with locked(results_path, initial) as results:
        busy = [k for k in keys if k in results["claims"] and _alive(results["claims"][k])]
        if busy:
            raise SystemExit(f"cannot redo {', '.join(busy)}: a running lane holds it; stop that lane first")
        gone = [k for k in keys if k in results["units"]]
        for k in keys:
            results["units"].pop(k, None)
            results["claims"].pop(k, None)
            for path in map(Path, artifacts(k) if artifacts else []):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    return gone


def _die_with_parent() -> None:
    """In the child: be killed when the lane dies, so no orphan keeps writing a run another lane takes over."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_process(cmd: list, threads: int, cwd: Optional[Path] = None, log: Optional[Path] = None,
                env: Optional[dict] = None) -> dict:
    """Run ``cmd`` on ``threads`` torch threads in ``cwd`` (default: this process's folder; output to
    ``log``, else dropped); return its wall time, the peak resident memory of that one process and
    the allocator setting it ran under."""
    from .runtime import memory_setting

    env = dict(os.environ if env is None else env, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = open(log, "w") if log is not None else subprocess.DEVNULL
    t0 = time.time()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT if log is not None else None, preexec_fn=_die_with_parent)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    finally:
        if log is not None:
            out.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        where = f"; its output: {log}" if log is not None else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}{where}")
    # the child reads the same environment, so it runs under this process's allocator setting
    return {"time_s": time.time() - t0, "peak_rss_mib": usage.ru_maxrss / 1024,
            "keep_freed_memory": memory_setting()["keep_freed_memory"]}


def run_recipe_unit(cmd: list, out: Path, threads: int, checkpoint_every: int = 10, keep_checkpoints: int = 2) -> dict:
    """One distillation (``cmd``: a recipe script and its flags, writing to ``out``) in its own
    process, checkpointed every ``checkpoint_every`` iterations, the ``keep_checkpoints`` newest kept
    on disk; a killed one continues from its last checkpoint (checkpointing does not change the
    result). Adds the command, whether it resumed, and the iterations' time summed over all parts
    (``loop_time_s``)."""
    import sys

    from .distill.common import latest_checkpoint

    resumed = out.is_dir() and latest_checkpoint(out) is not None
    result = run_process([sys.executable, *cmd, "--checkpoint-every", str(checkpoint_every),
                          "--keep-checkpoints", str(keep_checkpoints),
                          *(["--resume", "latest"] if resumed else [])], threads)
    result["command"] = " ".join(["python", *cmd])
    result["resumed"] = resumed
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    result["loop_time_s"] = max(r["time_s"] for r in logged if "time_s" in r)
    return result


def eval_unit(synset, test, arch: str, model: int, protocol, threads: int, state_dir: Optional[Path] = None,
              attack=None, device: str = "cpu", teacher=None, on_the_fly: bool = False) -> dict:
    """One fresh network of ``arch`` trained on ``synset``; model ``i`` is model ``i`` of
    ``evaluate_synset(..., seed=0)``, so units add up to a normal evaluation. With
    ``state_dir`` (one folder per unit), a killed unit resumes mid-training; with ``attack``
    (a ``PGDAttack``) its robust accuracy is measured too; ``on_the_fly`` trains on a fresh draw
    from the set's generator every epoch after the first (``evaluate_synset``)."""
    from .evaluate import evaluate_synset

    report = evaluate_synset(synset, archs=[arch], protocol=replace(protocol, num_models=1), test=test,
                             seed=model, device=device, progress=False, state_dir=state_dir, attack=attack,
                             teacher=teacher, on_the_fly=on_the_fly)
    r = report["results"][arch]
    unit = {"acc": r["accs"][0], "time_s": r["time_s"], "seed": model, "threads": threads,
            "keep_freed_memory": report["memory"]["keep_freed_memory"]}
    if attack is not None:
        unit["robust_acc"] = r["robust_accs"][0]
    if on_the_fly:
        unit["on_the_fly"] = True
    if "best_accs" in r:  # a protocol that tests during training: the best test accuracy beside the last
        unit["best_acc"] = r["best_accs"][0]
    if "time_note" in r:  # resumed from a training state that did not record its time
        unit["time_note"] = r["time_note"]
    return unit


def lane_main(results_path: Path, initial: Callable[[], dict], order: Sequence[str], deps: Callable[[str], List[str]],
              make_work: Callable[[int], Callable[[str], dict]], write_table: Callable[[dict], None],
              table_path: Path, only_example: str, artifacts: Optional[Callable[[str], List[Path]]] = None) -> None:
    """The command line every benchmark shares: run (or resume) this lane's units, then rewrite the table."""
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--table", action="store_true", help="only rewrite the table")
    parser.add_argument("--max-units", type=int, default=None, help="stop after this many new units")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per lane; on a 2-core machine run two 1-thread lanes side by side")
    parser.add_argument("--only", help=f"run only units whose key contains this text, e.g. {only_example} "
                        "(units it needs must be done or run by another lane)")
    parser.add_argument("--redo", metavar="TEXT", help="forget the units whose key contains TEXT (results and "
                        "files) so that they run again, e.g. after a recipe changed; then stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.redo:
        keys = [k for k in order if args.redo in k]
        gone = redo(results_path, initial, keys, artifacts)
        print(f"forgot {len(gone)} finished unit(s) of {len(keys)} matching {args.redo!r}: {', '.join(gone) or 'none'}")
        return
    if not args.table:
        run_lane(results_path, initial, order, deps, make_work(args.threads), on_change=write_table,
                 max_units=args.max_units, only=(lambda k: args.only in k) if args.only else None)
    with locked(results_path, initial) as results:
        write_table(results)
    print(table_path.read_text())
