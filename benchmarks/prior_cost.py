"""Decode + backward cost of the shipped priors: time per image and peak memory.

    python benchmarks/prior_cost.py                  # all cases, results in benchmarks/results/prior_cost.{json,md}
    python benchmarks/prior_cost.py --device cuda    # on a GPU (peak from torch.cuda.max_memory_allocated)

Each case (prior, number of images, chunk size) runs in a fresh process: load the
prior, make latents, then time one ``decode(latents, labels, chunk_size)`` followed by
``backward`` of a loss on all images. On a CPU the peak is the resident-set size above
the level after set-up, sampled every millisecond by a thread; it includes allocator
slack, so small differences are noise.

Set-up includes the set's own storage: the latents and their gradient buffers, which
a distillation run holds for its whole length (an optimiser adds its moments on top).
What is measured is what one step adds to that: the decoded images, the gradient of
the loss with respect to them, and the activations of the chunks.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from genprior import runtime

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "prior_cost.json"
TABLE = HERE / "results" / "prior_cost.md"
CASES = [  # (prior, space, images, chunk, mode)
    ("mnist5k-stylegan", "w+", 100, 10, "checkpoint"), ("mnist5k-stylegan", "w+", 100, 100, "checkpoint"),
    ("mnist5k-stylegan", "w+", 10, 10, "checkpoint"), ("mnist5k-stylegan", "w+", 500, 10, "checkpoint"),
    ("mnist5k-stylegan", "w+", 100, 10, "two-pass"), ("mnist5k-stylegan", "w+", 100, 100, "two-pass"),
    ("mnist5k-stylegan", "w+", 10, 10, "two-pass"), ("mnist5k-stylegan", "w+", 500, 10, "two-pass"),
    ("mnist5k-diffusion", "x_T+class", 100, 10, "checkpoint"), ("mnist5k-diffusion", "x_T+class", 100, 100, "checkpoint"),
    ("mnist5k-diffusion", "x_T+class", 10, 10, "checkpoint"), ("mnist5k-diffusion", "x_T+class", 500, 10, "checkpoint"),
    ("mnist5k-diffusion", "x_T+class", 10, 10, "two-pass"), ("mnist5k-diffusion", "x_T+class", 500, 10, "two-pass"),
    # does resident memory grow with the number of images, or level off? (allocator slack vs. live data)
    ("mnist5k-diffusion", "x_T+class", 100, 10, "two-pass"), ("mnist5k-diffusion", "x_T+class", 250, 10, "two-pass"),
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_case(prior_ref: str, space: str, n: int, chunk: int, mode: str, device: str, threads: int) -> dict:
    import torch

    from genprior.priors.load import load_prior
    from genprior.runtime import memory_setting

    torch.set_num_threads(threads)
    prior = load_prior(prior_ref).to(device).requires_grad_(False).eval()
    labels = (torch.arange(n) % prior.num_classes).to(device)
    latents = prior.init_latents(labels, space=space, generator=torch.Generator().manual_seed(0))
    latents = {k: v.to(device).requires_grad_(True) for k, v in latents.items()}
    for v in latents.values():  # the set's persistent gradient buffers belong to set-up, not to the step
        v.grad = torch.zeros_like(v)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
        peak[0] = base
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
    t0 = time.perf_counter()
    if mode == "checkpoint":  # checkpointed chunks inside one autograd graph
        images = prior.decode(latents, labels, chunk_size=chunk)
        (images.float() ** 2).mean().backward()
    else:  # GLaD's two passes, as the distillation loop does
        with torch.no_grad():
            images = prior.decode(latents, labels, chunk_size=chunk)
        images.requires_grad_(True)
        (images.float() ** 2).mean().backward()
        grad_images, images = images.grad, None  # only dL/d(images) is needed from here on
        prior.backward_chunked(latents, labels, grad_images, chunk)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device == "cuda":
        peak_bytes = torch.cuda.max_memory_allocated() - base
    else:
        stop.set()
        watcher.join()
        peak_bytes = peak[0] - base
    grads_ok = all(v.grad is not None and bool(torch.isfinite(v.grad).all()) for v in latents.values())
    return {"prior": prior_ref, "space": space, "images": n, "chunk": chunk, "mode": mode, "device": device, "threads": threads,
            "seconds": seconds, "ms_per_image": 1000 * seconds / n, "peak_mib": peak_bytes / 2**20, "grads_ok": grads_ok,
            "grad_buffers_in_setup": True, "memory": memory_setting()}


def write_table(rows: list) -> None:
    mmap = " (glibc mmap threshold fixed at 128 KiB)" if "fixed_mmap" in TABLE.name else ""
    lines = [f"# Decode + backward cost of the shipped priors{mmap}", "",
             "One decode of N images in chunks, then backward of a loss on all of them; fresh process per row.",
             f"Written by `python benchmarks/prior_cost.py{' --fixed-mmap' if mmap else ''}`.", "",
             "`checkpoint`: `decode(chunk_size=...)` under activation checkpointing, one graph for all chunks;",
             "`two-pass`: decode without a graph, backpropagate to the images, then `backward_chunked` (GLaD's",
             "scheme; what the distillation loop does).", "",
             "Set-up holds the set's own storage (latents and their gradient buffers); the peak is what one",
             "decode + backward adds to it.", "",
             "Allocator: genprior's kept buffers off (`GENPRIOR_KEEP_MEMORY=0`), so that freed blocks leave the",
             "process and the resident size follows live memory; rows measured before that setting existed ran",
             "the same way.", "",
             "| prior | space | mode | images | chunk | device | threads | ms / image | peak MiB above set-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["prior"], r["mode"], r["images"], r["chunk"])):
        lines.append(f"| {r['prior']} | {r['space']} | {r['mode']} | {r['images']} | {r['chunk']} | {r['device']} | "
                     f"{r['threads']} | {r['ms_per_image']:.1f} | {r['peak_mib']:.1f} |")
    for prior in sorted({r["prior"] for r in rows}):
        for mode in ("checkpoint", "two-pass"):
            pick = {r["images"]: r for r in rows if r["prior"] == prior and r["mode"] == mode and r["chunk"] == 10}
            if 10 in pick and 500 in pick and pick[10]["peak_mib"] > 0:
                by_n = ", ".join(f"{n}: {pick[n]['peak_mib']:.0f}" for n in sorted(pick))
                lines.append(f"\n{prior}, {mode}: peak with 500 images / peak with 10 images (chunk 10) = "
                             f"{pick[500]['peak_mib'] / pick[10]['peak_mib']:.2f} (MiB by number of images: {by_n})")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", type=int, nargs="+", help="indices into CASES (default: all)")
    parser.add_argument("--fixed-mmap", action="store_true",
                        help="fix glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_=131072) so freed large blocks go back "
                             "to the OS and RSS tracks live memory; results go to prior_cost_fixed_mmap.*")
    parser.add_argument("--table", action="store_true", help="only rewrite the table from saved results")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        prior, space, n, chunk, mode = CASES[args.case]
        print(json.dumps(one_case(prior, space, n, chunk, mode, args.device, args.threads)))
        return
    global RESULTS, TABLE
    # live memory: freed blocks must leave the process (genprior keeps them by default, runtime.py), so
    # these rows are measured with glibc's defaults, as before that setting existed
    env = dict(os.environ, **{runtime.ENV: "0"})
    if args.fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        RESULTS, TABLE = RESULTS.with_name("prior_cost_fixed_mmap.json"), TABLE.with_name("prior_cost_fixed_mmap.md")
    def key(r: dict) -> tuple:
        return (r["prior"], r["space"], r["images"], r["chunk"], r["mode"], r["device"], r["threads"])

    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows = [r for r in rows if r.get("grad_buffers_in_setup")]  # rows measured the older way are dropped
    todo = [] if args.table else (args.cases if args.cases is not None else range(len(CASES)))
    for i in todo:
        out = subprocess.run([sys.executable, __file__, "--case", str(i), "--device", args.device,
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True, env=env)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows = [r for r in rows if key(r) != key(row)] + [row]
        print(row, flush=True)
        RESULTS.write_text(json.dumps(rows, indent=2))  # after every case: a killed run keeps what it measured
        write_table(rows)
    write_table(rows)
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
