"""Peak memory of one distillation iteration as IPC grows, at a fixed chunk size.

    python benchmarks/distill_memory.py                      # GLaD-DM (w+) on mnist5k, IPC 1 / 10 / 50, chunk 10
    python benchmarks/distill_memory.py --prior pixel        # the same for pixel-space DM
    python benchmarks/distill_memory.py --loss mtt --lr 10 --loss-option buffer=runs/table/experts-mnist5k-convnet \
        --loss-option syn_steps=20 --loss-option expert_epochs=3 --loss-option max_start_epoch=5 \
        --loss-option batch_syn=10                           # GLaD-MTT with a fixed student batch

Each IPC runs in a fresh process: set-up (data, prior, latents), then two iterations
(the second one timed) while a thread samples the resident-set size every millisecond.
The figure is the peak above the level after set-up, so it holds everything an
iteration allocates (activations, real batches, decoded images, gradients). With
chunked decoding the generator's activations are bounded by the chunk, so the peak
should not grow with IPC (GLaD's decoder-bound memory is what kept it from IPC 50).
A loss can still hold memory of its own: MTT unrolls ``syn_steps`` student steps on
``batch_syn`` images each (the whole set by default), so its step grows with IPC unless
``batch_syn`` is fixed; run it both ways to see which part is whose.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from prior_cost import rss_bytes

from genprior import runtime
from genprior.cli import _key_values

HERE = Path(__file__).resolve().parent
#: the resident size must follow live memory, so freed blocks leave the process: glibc's defaults rather
#: than genprior's kept buffers (runtime.py), as every row was measured before that setting existed
LIVE_MEMORY_ENV = dict(os.environ, **{runtime.ENV: "0"})


def one(prior: str, ipc: int, chunk: int, threads: int, loss: str = "dm", loss_options: Optional[dict] = None,
        lr: float = 0.01) -> dict:
    import torch

    from genprior.distill import DistillConfig, LatentDistiller
    from genprior.runtime import memory_setting

    torch.set_num_threads(threads)
    cfg = DistillConfig(dataset="mnist5k", prior=prior, loss=loss, loss_options=dict(loss_options or {}), ipc=ipc,
                        iterations=2, chunk_size=chunk, lr=lr, init="random", checkpoint_every=1000)
    with tempfile.TemporaryDirectory() as tmp:
        d = LatentDistiller(cfg, tmp, progress=False)
        d.init_latents()
        peak, stop = [rss_bytes()], threading.Event()
        base = peak[0]  # after set-up: data, prior and latents in memory, no iteration yet

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes())
                time.sleep(0.001)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        d.iteration(0)
        t0 = time.perf_counter()
        d.iteration(1)
        seconds = time.perf_counter() - t0
        stop.set()
        watcher.join()
    return {"prior": prior, "loss": loss, "loss_options": dict(loss_options or {}), "ipc": ipc, "chunk": chunk,
            "threads": threads, "seconds": seconds,
            "peak_mib_above_base": (peak[0] - base) / 2**20, "rss_mib_base": base / 2**20, "memory": memory_setting()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prior", default="mnist5k-stylegan")
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loss", default="dm")
    parser.add_argument("--loss-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--lr", type=float, default=0.01, help="the latents' learning rate (GLaD: 0.01 DM, 10 MTT)")
    parser.add_argument("--ipcs", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--name", help="the results file's suffix (default: prior, plus the loss when not dm)")
    parser.add_argument("--ipc", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    loss_options = _key_values(args.loss_option, "--loss-option")
    if args.ipc is not None:
        print(json.dumps(one(args.prior, args.ipc, args.chunk, args.threads, args.loss, loss_options, args.lr)))
        return
    rows = []
    passed = [a for opt in args.loss_option for a in ("--loss-option", opt)]
    for ipc in args.ipcs:
        out = subprocess.run([sys.executable, __file__, "--prior", args.prior, "--chunk", str(args.chunk),
                              "--threads", str(args.threads), "--loss", args.loss, "--lr", str(args.lr), *passed,
                              "--ipc", str(ipc)], capture_output=True, text=True, env=LIVE_MEMORY_ENV)
        if out.returncode:
            raise SystemExit(f"IPC {ipc} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    name = args.name or args.prior.replace("/", "_") + ("" if args.loss == "dm" else f"_{args.loss}")
    (HERE / "results" / f"distill_memory_{name}.json").write_text(json.dumps(rows, indent=2))
    ratio = rows[-1]["peak_mib_above_base"] / max(rows[0]["peak_mib_above_base"], 1e-9)
    options = ", ".join(f"{k}={v}" for k, v in loss_options.items())
    lines = [f"# Peak memory of one {args.loss.upper()} iteration, prior {args.prior}, chunk {args.chunk}, mnist5k", "",
             *([f"Loss options: {options}.", ""] if options else []),
             "| IPC | seconds / iteration | peak MiB above the level after set-up | RSS after set-up (MiB) |",
             "|---|---|---|---|"]
    lines += [f"| {r['ipc']} | {r['seconds']:.1f} | {r['peak_mib_above_base']:.1f} | {r['rss_mib_base']:.0f} |" for r in rows]
    command = " ".join(["python benchmarks/distill_memory.py", *sys.argv[1:]])
    lines += ["", f"IPC {rows[-1]['ipc']} / IPC {rows[0]['ipc']} peak: {ratio:.2f}. Written by `{command}`.",
              "Allocator: glibc's defaults (`GENPRIOR_KEEP_MEMORY=0`), so that the resident size follows live memory."]
    (HERE / "results" / f"distill_memory_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
