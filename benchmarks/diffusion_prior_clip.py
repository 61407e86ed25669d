"""Why the shipped diffusion prior draws noise: the x̂₀ clamp of its sampler, measured.

    python benchmarks/diffusion_prior_clip.py

The shipped ``mnist5k-diffusion`` decodes with DDIM and ``clip_sample=False``. At the first,
noisiest steps its noise prediction implies clean-sample estimates far outside [-1, 1]; a
pixel DDPM's sampler usually clamps them (diffusers' ``DDPMPipeline`` does). This measures
the class fidelity of ``pretrained/check_prior.py`` (the cached ConvNet classifier, 100
samples per class, seed 1) with the shipped setting and with the clamp, and saves both
grids to ``benchmarks/results/``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from genprior.baselines import prior_samples
from genprior.data import load_dataset
from genprior.pretrained.check_prior import CLASSIFIER_EPOCHS, SAMPLES_PER_CLASS, classifier
from genprior.priors.load import load_prior
from genprior.synset import save_grid, write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"


def main() -> None:
    torch.set_num_threads(1)
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    net = classifier(train, test, ROOT / "runs" / f"classifier-mnist5k-convnet-{CLASSIFIER_EPOCHS}ep.safetensors")
    rows = {}
    for clip in (False, True):
        prior = load_prior("mnist5k-diffusion").eval()
        prior.scheduler = DDIMScheduler.from_config(prior.scheduler.config, clip_sample=clip)
        t0 = time.time()
        synset = prior_samples(prior, train, SAMPLES_PER_CLASS, seed=1)
        with torch.no_grad():
            preds = torch.cat([net(synset.images[i:i + 500]).argmax(1) for i in range(0, len(synset), 500)])
        name = "clip" if clip else "shipped"
        rows[name] = {"clip_sample": clip, "class_fidelity": (preds == synset.labels).float().mean().item(),
                      "per_class": [(preds[synset.labels == c] == c).float().mean().item() for c in range(10)],
                      "sampling_time_s": time.time() - t0, "num_inference_steps": prior.num_inference_steps,
                      "guidance_scale": prior.guidance_scale}
        keep = torch.cat([torch.nonzero(synset.labels == c).flatten()[:10] for c in range(10)])
        save_grid(synset.pixels()[keep], synset.labels[keep], 10, OUT / f"diffusion_prior_{name}.png")
        print(name, json.dumps(rows[name]))
    write_json_atomic(rows, OUT / "diffusion_prior_clip.json")
    lines = ["# The shipped diffusion prior with and without the x̂₀ clamp", "",
             "Class fidelity: the share of 1,000 samples (100 per class, seed 1) that the ConvNet of "
             "`pretrained/check_prior.py` classifies as their label; DDIM, the prior's "
             f"{rows['shipped']['num_inference_steps']} steps and CFG {rows['shipped']['guidance_scale']:g}.", "",
             "| sampler | class fidelity | grid |", "|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| clip_sample={r['clip_sample']} | {100 * r['class_fidelity']:.1f} % | "
                     f"`diffusion_prior_{name}.png` |")
    lines += ["", "Written by `python benchmarks/diffusion_prior_clip.py`."]
    write_text_atomic("\n".join(lines) + "\n", OUT / "diffusion_prior_clip.md")


if __name__ == "__main__":
    main()
