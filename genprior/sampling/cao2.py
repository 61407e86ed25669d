"""CaO2 (ICCV 2025, "CaO2: Rectifying Inconsistencies in Diffusion-Based Dataset Distillation"):
sample more than needed and keep what a classifier of the real data finds most typical, then
pull each kept sample towards where the model predicts its noise well.

1. Over-generate ``ratio`` × IPC samples of each class.
2. Keep the IPC samples the classifier labels with their own class at the highest confidence
   (its largest softmax probability); when fewer are right, the most confident of the rest fill
   the set.
3. Refine each kept clean sample z (the model's space) with Adam on the denoising loss at low
   noise levels: a fixed noise draw ε per sample, a level t drawn each step, and
   ‖ε̂(√ᾱ_t z + √(1 − ᾱ_t) ε, t) − ε‖² (mean) + 10 · max |ε̂ − ε|.

Settings of the public code (DiT-XL/2 at 256 px, ImageNet, 50 steps, CFG 2.7): ratio 4 (2 on
its smaller subsets), a torchvision ResNet-18 as the classifier, Adam lr 6e-4 for 100 steps,
levels 1 to 11 of the 50-step schedule, the model conditioned on the null class while refining.
genprior's classifier is a network trained on the dataset's real train split (``genprior
teacher``); its levels are the lowest quarter of the prior's schedule, above its last step.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..data import RealData
from ..distill.common import seeded_generator
from ..errors import GenpriorError
from .methods import CAO2_PAPER, SAMPLING_METHODS, _chunks, advance, check_number, decode_x0, image_noise
from .sampler import check_eta, guided_sample, noise_seeds


def select_confident(probs: torch.Tensor, labels: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` rows CaO2 keeps: those whose argmax is their label, by confidence
    (the largest probability), highest first; then, if too few are right, the others by the
    same confidence, as the public code ranks them (their confidence in the class the
    classifier took them for, not in their own)."""
    if not 1 <= keep <= probs.shape[0]:
        raise GenpriorError(f"cannot keep {keep} of {probs.shape[0]} candidates")
    confidence, guess = probs.max(dim=1)
    right = guess == labels
    order = torch.argsort(confidence, descending=True, stable=True)
    ranked = torch.cat([order[right[order]], order[~right[order]]])
    return ranked[:keep]


def check_condition(prior: Any, condition: str) -> None:
    if condition not in ("null", "class"):
        raise GenpriorError(f"CaO2 refines conditioned on 'null' or 'class', got {condition!r}")
    if condition == "null" and prior.null_class is None:
        raise GenpriorError("this prior has no null class to refine with; pass --option condition=class")


def refine(prior: Any, x0: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
           generators: Sequence[torch.Generator], condition: str = "null", linf_weight: float = 10.0) -> torch.Tensor:
    """CaO2's latent refinement of clean samples ``x0`` (the model's space); see the module.
    Sample j's noise and noise levels come from ``generators[j]``, so it refines the same way
    whatever is refined beside it (each sample's loss and Adam state are its own)."""
    from ..priors.diffusion import _split_prediction

    check_condition(prior, condition)
    if steps == 0:
        return x0
    timesteps, alphas, _ = prior._schedule()
    ascending = sorted(int(t) for t in timesteps)
    levels = torch.tensor(ascending[1:max(2, len(ascending) // 4)] or ascending[:1])
    alphas = alphas.to(device=x0.device, dtype=torch.float32)
    n = x0.shape[0]
    if len(generators) != n:
        raise GenpriorError(f"CaO2's refinement got {len(generators)} generators for {n} samples: give one per sample")
    noise = torch.cat([torch.randn((1,) + tuple(x0.shape[1:]), generator=g) for g in generators]).to(x0.device)
    drop = torch.full((n,), condition == "null", dtype=torch.bool, device=x0.device)
    model = prior._denoiser(labels.to(x0.device), None)
    z = x0.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            t = levels[torch.cat([torch.randint(len(levels), (1,), generator=g) for g in generators])].to(x0.device)
            a = alphas[t].view(-1, *([1] * (z.dim() - 1)))
            x_t = a.sqrt() * z + (1 - a).sqrt() * noise
            _, eps = _split_prediction(model(x_t, t, drop), x_t, a, prior.scheduler.config.prediction_type)
            diff = (eps - noise).flatten(1)
            loss = (diff.pow(2).mean(dim=1) + linf_weight * diff.abs().max(dim=1).values).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return z.detach()


def load_classifier(folder: Optional[str], real: RealData, device: torch.device) -> torch.nn.Module:
    from ..teacher import load_teacher

    if folder is None:
        raise GenpriorError("CaO2 selects with a classifier of the real data: make one with `genprior teacher "
                            f"--dataset {real.name} --out DIR` and pass --option classifier=DIR")
    return load_teacher(folder, real, device=str(device))[0]


def overgenerate(prior: Any, c: int, count: int, seed: int, chunk_size: int, eta: float = 0.0) -> torch.Tensor:
    """``count`` samples of class ``c`` from noise, in the model's space (step 1): candidate i
    starts from the noise ``genprior generate`` draws for image i of the class (with ``eta`` 0
    it is that plain sample)."""
    out = []
    for lo, hi in _chunks(count, chunk_size):
        x_T = image_noise(prior, [c] * (hi - lo), range(lo, hi), seed)
        out.append(guided_sample(prior, torch.full((hi - lo,), c, dtype=torch.long), x_T=x_T, return_x0=True,
                                 eta=eta, noise_seeds=noise_seeds(seed, [c] * (hi - lo), range(lo, hi))))
    return torch.cat(out)


@SAMPLING_METHODS.register("cao2", summary="over-generate, keep the classifier's most confident right samples, "
                           "refine them on the denoising loss", paper=CAO2_PAPER)
def cao2(prior: Any, real: RealData, ipc: int, seed: int, chunk_size: int, classifier: Optional[str] = None,
         ratio: int = 4, refine_steps: int = 100, refine_lr: float = 6e-4, condition: str = "null",
         eta: float = 0.0) -> torch.Tensor:
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise GenpriorError(f"CaO2's over-generation ratio must be a positive integer, got {ratio!r}")
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
        raise GenpriorError(f"refine_steps must be a non-negative integer, got {refine_steps!r}")
    if check_number("refine_lr", refine_lr) <= 0 and refine_steps > 0:
        raise GenpriorError(f"refine_lr must be positive (paper: 6e-4), got {refine_lr}")
    check_eta(eta)
    check_condition(prior, condition)
    device = prior.out_mean.device
    net = load_classifier(classifier, real, device)
    out = []
    for c in range(real.num_classes):
        x0 = overgenerate(prior, c, ratio * ipc, seed, chunk_size, eta)
        labels = torch.full((x0.shape[0],), c, dtype=torch.long, device=device)
        with torch.no_grad():
            probs = torch.cat([net(decode_x0(prior, x0[lo:hi], real.resolution)).softmax(dim=1)
                               for lo, hi in _chunks(x0.shape[0], chunk_size)])
        kept = x0[select_confident(probs, labels, ipc)]
        gens = [seeded_generator("cao2-refine", seed, c, j) for j in range(ipc)]
        kept = torch.cat([refine(prior, kept[lo:hi], labels[lo:hi], refine_steps, refine_lr, gens[lo:hi], condition)
                          for lo, hi in _chunks(ipc, chunk_size)])
        with torch.no_grad():
            out.append(decode_x0(prior, kept, real.resolution).float().cpu())
        advance(ipc)
    return torch.cat(out)
