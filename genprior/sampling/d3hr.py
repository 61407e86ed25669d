"""D3HR (Zhao et al., ICML 2025, "Taming Diffusion for Dataset Distillation with High
Representativeness"): a class's real images, DDIM-inverted to a middle step of the
trajectory, are close to Gaussian there; fit one per dimension, draw many candidate groups of
IPC samples from it, keep the group whose statistics best match the class's, and denoise it.

The group score (lower is better) is

    ‖mean(group) − μ‖₂ + ‖std(group) − σ‖₂ + w · ‖skew(group)‖₂,

the group's per-dimension mean, (unbiased) standard deviation and sample skewness across its
members against the fitted Gaussian's μ, σ and zero skewness (``skew_over="members"``: the
public code's skewness term, one value per member over the dimensions). Settings of the public code
(DiT-XL/2 at 256 px, 50 DDIM steps, CFG 4): the statistics of the latents inverted to t ≈ 600,
denoising from step index 18 of 50 (t ≈ 620, 32 steps run), w = 0.1, and 10⁸
candidate groups per class (here ``candidates``, default 10,000: on this scale the best score
stops improving long before). genprior has one ``strength`` (0.64: 32 of 50 steps run) for
both, so the inverted level is exactly the level denoising starts from (the public code starts
one step above it), and inverts with the conditional model without guidance
(``guided_inversion=true``: with the prior's classifier-free guidance, as the public code).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ..data import RealData
from ..errors import GenpriorError
from .methods import D3HR_PAPER, SAMPLING_METHODS, _chunks, advance, check_number
from .modes import encode_class
from .sampler import guided_denoiser, guided_sample, start_step


def skewness(groups: torch.Tensor) -> torch.Tensor:
    """Sample skewness of each dimension across a group's members: (G, n, D) -> (G, D); 0 where
    the group has fewer than 3 members or the dimension does not vary."""
    n = groups.shape[1]
    if n < 3:
        return groups.new_zeros(groups.shape[0], groups.shape[2])
    centred = groups - groups.mean(dim=1, keepdim=True)
    m2 = centred.pow(2).mean(dim=1)
    m3 = centred.pow(3).mean(dim=1)
    g1 = torch.where(m2 > 0, m3 / m2.clamp_min(1e-12).pow(1.5), torch.zeros_like(m3))
    return g1 * (n * (n - 1)) ** 0.5 / (n - 2)  # the adjusted Fisher-Pearson coefficient


def member_skewness(groups: torch.Tensor) -> torch.Tensor:
    """The public code's skewness term: each member standardised by the group's per-dimension
    mean and (unbiased) standard deviation, cubed and summed over the D dimensions, times
    D / ((D − 1)(D − 2)): (G, n, D) -> (G, n), one value per member."""
    n, d = groups.shape[1], groups.shape[2]
    if n < 2 or d < 3:  # no spread across one member; the correction needs three dimensions
        return groups.new_zeros(groups.shape[:2])
    z = (groups - groups.mean(dim=1, keepdim=True)) / groups.std(dim=1, keepdim=True)
    return z.nan_to_num(0.0).pow(3).sum(dim=2) * (d / ((d - 1) * (d - 2)))


SKEW_OVER = ("dimensions", "members")


def _check_skew_over(skew_over: str) -> None:
    if skew_over not in SKEW_OVER:
        raise GenpriorError(f"skew_over must be one of {', '.join(SKEW_OVER)}, got {skew_over!r}")


def moment_score(groups: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, skew_weight: float = 0.1,
                 skew_over: str = "dimensions") -> torch.Tensor:
    """The score of each candidate group (G, n, D) against a Gaussian (μ, σ) of D dimensions: (G,).
    Standard deviations are unbiased, as the public code's; ``skew_over`` ``dimensions`` takes
    each dimension's skewness across the members, ``members`` the public code's term
    (``member_skewness``)."""
    _check_skew_over(skew_over)
    mean = groups.mean(dim=1)
    std = groups.std(dim=1, unbiased=groups.shape[1] > 1)  # one member (IPC 1): no spread, 0
    skew = skewness(groups) if skew_over == "dimensions" else member_skewness(groups)
    return (mean - mu).norm(dim=1) + (std - sigma).norm(dim=1) + skew_weight * skew.norm(dim=1)


def _check_candidates(candidates: Any) -> None:
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise GenpriorError(f"D3HR needs at least one candidate group (e.g. --option candidates=10000), got "
                            f"{candidates!r}")


def best_group(mu: torch.Tensor, sigma: torch.Tensor, size: int, candidates: int, generator: torch.Generator,
               skew_weight: float = 0.1, batch: Optional[int] = None, skew_over: str = "dimensions"
               ) -> Tuple[torch.Tensor, float]:
    """The best of ``candidates`` groups of ``size`` draws from N(μ, σ²) (per dimension): (size, D)
    and its score. Groups are drawn ``batch`` at a time (default: about 2²⁴ values a batch)."""
    _check_candidates(candidates)
    batch = batch or max(1, min(1000, 2 ** 24 // (size * mu.shape[0])))
    best, best_score = None, float("inf")
    for lo, hi in _chunks(candidates, batch):
        groups = mu + sigma * torch.randn((hi - lo, size, mu.shape[0]), generator=generator)
        scores = moment_score(groups, mu, sigma, skew_weight, skew_over)
        j = int(scores.argmin())
        if float(scores[j]) < best_score:
            best, best_score = groups[j], float(scores[j])
    return best, best_score


@SAMPLING_METHODS.register("d3hr", summary="the best-matching group of draws from the class's DDIM-inverted "
                           "Gaussian, denoised", paper=D3HR_PAPER)
def d3hr(prior: Any, real: RealData, ipc: int, seed: int, chunk_size: int, strength: float = 0.64,
         candidates: int = 10000, skew_weight: float = 0.1, max_images: Optional[int] = 500,
         guided_inversion: bool = False, skew_over: str = "dimensions") -> torch.Tensor:
    from ..priors.diffusion import ddim_invert

    _check_skew_over(skew_over)  # before the inversion's work
    _check_candidates(candidates)
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise GenpriorError(f"max_images is how many real images of a class are inverted (at least 1, or null for "
                            f"all), got {max_images!r}")
    if check_number("skew_weight", skew_weight) < 0:
        raise GenpriorError(f"skew_weight must be >= 0 (a negative weight rewards skewed groups), got {skew_weight}")
    if not isinstance(guided_inversion, bool):
        raise GenpriorError(f"guided_inversion is true or false, got {guided_inversion!r}")
    denoiser = guided_denoiser if guided_inversion else (lambda p, labels: p._denoiser(labels, None))

    timesteps, alphas, final = prior._schedule()
    first = start_step(len(timesteps), strength)
    if not 0.0 < strength <= 1.0 or first >= len(timesteps):
        raise GenpriorError(f"D3HR inverts to the step denoising starts from: strength must leave at least one of "
                            f"the {len(timesteps)} steps to run, got {strength}")
    device = prior.out_mean.device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c in range(real.num_classes):
        x0 = encode_class(prior, real, c, gen, max_images)
        labels = torch.full((x0.shape[0],), c, dtype=torch.long, device=device)
        with torch.no_grad():
            inverted = torch.cat([ddim_invert(denoiser(prior, labels[lo:hi]), x0[lo:hi], timesteps[first:],
                                              alphas, prior.scheduler.config.prediction_type,
                                              final_alpha_cumprod=final)
                                  for lo, hi in _chunks(x0.shape[0], chunk_size)]).flatten(1).float().cpu()
        mu, sigma = inverted.mean(dim=0), inverted.std(dim=0, unbiased=inverted.shape[0] > 1)
        group, _ = best_group(mu, sigma, ipc, candidates, gen, skew_weight, skew_over=skew_over)
        group = group.view(ipc, *x0.shape[1:])
        for lo, hi in _chunks(ipc, chunk_size):
            out.append(guided_sample(prior, torch.full((hi - lo,), c, dtype=torch.long), x_T=group[lo:hi],
                                     strength=strength).cpu())
            advance(hi - lo)
    return torch.cat(out)
