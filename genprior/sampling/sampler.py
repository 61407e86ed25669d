"""One guided sampler for every diffusion prior (pixel UNet, latent DiT, text-conditioned).

``guided_sample`` runs DDIM (``eta`` 0) or DDPM-like ancestral steps (``eta`` 1) without an
autograd graph through the model, with the prior's classifier-free guidance, from pure noise
or, for img2img (D4M), from clean samples noised to a ``strength`` (the share of the
trajectory that runs). Guidance terms change the noise prediction inside a window of steps:
a term returns the gradient of its objective G with respect to the predicted clean sample
x̂₀, and the sampler sets ε̂ = ε − √(1 − ᾱ_t) · ∇G(x̂₀) (a closed-form term, such as MGD3's
mode guidance, returns its gradient directly); a term may instead (or also) move the next
sample after the step (``GuidanceTerm.shift``), as MGD3's reference code does. A new term is one small file with a
``GUIDANCE.register`` entry; the sampler does not change.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch

from ..distill.common import derive_seed, seeded_generator
from ..errors import GenpriorError
from ..images import resize_images
from ..registry import Registry

GUIDANCE = Registry("guidance term")


@dataclass
class StepContext:
    """What a term sees at one step: the step index ``i`` of ``n`` (0 = the noisiest), the
    timestep, alpha-bar, the current sample ``x_t``, the predicted clean sample ``x0_hat``
    (in the space the model denoises), the labels, each sample's index in the whole set and the
    sampler's ``eta`` (0: DDIM steps)."""

    i: int
    n: int
    t: int
    alpha: torch.Tensor
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    eta: float = 0.0


class GuidanceTerm(ABC):
    """A guidance term, active from ``start`` to ``stop`` (fractions of the trajectory:
    0 the first step, 1 after the last)."""

    def __init__(self, start: float = 0.0, stop: float = 1.0):
        check_window(start, stop)
        self.start, self.stop = float(start), float(stop)

    def active(self, i: int, n: int) -> bool:
        return self.start <= i / n < self.stop

    @abstractmethod
    def gradient(self, ctx: StepContext) -> Optional[torch.Tensor]:
        """∇G at ``ctx.x0_hat`` (same shape), or None for a term that only moves the sample."""

    def shift(self, ctx: StepContext, sigma: torch.Tensor) -> Optional[torch.Tensor]:
        """What to add to the next sample x_{t-1} after the step (``sigma``: the step's
        ancestral noise scale, 0 under DDIM); None (the default): nothing. For terms whose
        reference code moves the sample rather than the noise prediction."""
        return None


def check_window(start: Any, stop: Any) -> None:
    """A guidance window: fractions of the trajectory, 0 <= start < stop <= 1."""
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (start, stop)) \
            or not 0.0 <= start < stop <= 1.0:
        raise GenpriorError(f"a guidance window needs 0 <= start < stop <= 1 (fractions of the trajectory), got "
                            f"start={start!r}, stop={stop!r}")


def _check(prior: Any) -> None:
    from ..priors.diffusion import _DDIMPrior

    if not isinstance(prior, _DDIMPrior):
        raise GenpriorError(f"guided sampling needs a diffusion prior, not {type(prior).__name__}")
    if prior.card.get("skip_weight"):
        raise GenpriorError("skip_weight is LD3M's skip connection for distilling through the sampler; the guided "
                            "sampler draws without it: drop --prior-option skip_weight")


def start_step(steps: int, strength: float) -> int:
    """The index of the first step that runs at ``strength`` (img2img skips the noisiest steps)."""
    return steps - int(round(strength * steps))


@torch.no_grad()
def guided_sample(prior: Any, labels: torch.Tensor, x_T: Optional[torch.Tensor] = None,
                  terms: Sequence[GuidanceTerm] = (), eta: float = 0.0, x0: Optional[torch.Tensor] = None,
                  strength: float = 1.0, generator: Optional[torch.Generator] = None,
                  index: Optional[torch.Tensor] = None, return_x0: bool = False,
                  noise_seeds: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Images (normalised like the prior's data) for ``labels``. From ``x_T`` (drawn from
    ``generator`` when None) or, with ``x0`` (clean samples in the model's space, e.g. D4M's
    prototypes), from ``x0`` noised to ``strength`` (1: pure noise, the whole trajectory; 0:
    nothing runs). With ``strength`` below 1 and ``x_T``, ``x_T`` is the noisy sample at the
    first step that runs (``start_step``), e.g. D3HR's draws from DDIM-inverted statistics.
    ``eta`` 0 is DDIM, 1 ancestral (DDPM-like) sampling; with ``noise_seeds`` (one per sample)
    sample j's step noise, and its img2img noise, come from its own seed, so they do not depend
    on the samples drawn beside it (nested sets), else from ``generator``. ``index`` is each
    sample's place in the whole set, for terms that hold one target per sample (default
    0..N-1). ``return_x0`` returns the final sample in the model's space instead of images."""
    _check(prior)
    check_eta(eta)
    check_strength(strength)
    if x0 is not None and x_T is not None:
        raise GenpriorError("guided_sample starts from x_T (noise) or from x0 (img2img), not both: pass one")
    device = prior.out_mean.device
    labels = prior.check_labels(labels).to(device)
    n = labels.shape[0]
    if noise_seeds is not None and len(noise_seeds) != n:
        raise GenpriorError(f"noise_seeds holds {len(noise_seeds)} seeds for {n} samples: give one per sample")
    index = torch.arange(n, device=device) if index is None else index.to(device)
    timesteps, alphas, final = prior._schedule()
    alphas = alphas.to(device=device, dtype=torch.float32)
    steps = len(timesteps)
    first = start_step(steps, strength)
    idle = [term for term in terms if not any(term.active(i, steps) for i in range(first, steps))]
    if idle:
        raise GenpriorError(f"{type(idle[0]).__name__}'s window (start {idle[0].start:g}, stop {idle[0].stop:g} of "
                            "the trajectory) "
                            f"holds none of the {steps - first} steps that run, so it would guide nothing; widen it or "
                            "sample with more steps (--prior-option num_inference_steps=N)")
    config = prior.scheduler.config
    if x0 is not None:
        if first == steps:
            x = x0.to(device).float()
        else:
            noise = _step_noise(x0.shape, -1, generator, noise_seeds).to(device)
            a = alphas[timesteps[first]]
            x = a.sqrt() * x0.to(device).float() + (1 - a).sqrt() * noise
    else:
        if strength != 1.0 and x_T is None:
            raise GenpriorError("strength below 1 starts from clean samples: pass x0 (img2img), or x_T, the noisy "
                                "sample at the first step that runs")
        x = (x_T if x_T is not None else torch.randn((n,) + prior.latent_shape, generator=generator)).to(device).float()
    model = guided_denoiser(prior, labels)
    from ..priors.diffusion import _split_prediction

    for i in range(first, steps):
        t = int(timesteps[i])
        out = model(x, torch.full((n,), t, dtype=torch.long, device=device), None)
        alpha = alphas[t]
        x0_hat, eps = _split_prediction(out, x, alpha, config.prediction_type)
        live = [term for term in terms if term.active(i, steps)]
        ctx = StepContext(i, steps, t, alpha, x, x0_hat, labels, index, eta) if live else None
        grads = [g for g in (term.gradient(ctx) for term in live) if g is not None]
        if grads:
            eps = eps - (1 - alpha).sqrt() * sum(grads)
            x0_hat = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        if config.clip_sample:
            x0_hat = x0_hat.clamp(-config.clip_sample_range, config.clip_sample_range)
        last = i + 1 == steps
        alpha_prev = torch.tensor(final, device=device) if last else alphas[int(timesteps[i + 1])]
        # the last step adds no noise (as DDPM's), so it takes no ancestral share of the direction either
        sigma = (0.0 if last else eta) * ((1 - alpha_prev) / (1 - alpha)).sqrt() * (1 - alpha / alpha_prev).sqrt()
        x = (alpha_prev.sqrt() * x0_hat + (1 - alpha_prev - sigma ** 2).clamp_min(0).sqrt() * eps).float()
        if eta > 0 and not last:
            x = x + sigma * _step_noise(x.shape, i, generator, noise_seeds).to(device)
        for term in live:
            moved = term.shift(ctx, sigma)
            if moved is not None:
                x = x + moved
    if terms:
        _check_bounded(x, terms)
    if return_x0:
        return x
    return prior.from_m11(resize_images(prior._from_x0(x).float(), prior.card["output_resolution"]))


# A clean sample lies within a few units of the model space (pixels in [-1, 1], scaled VAE
# latents of about unit variance); one a thousand times past that comes from a guided trajectory
# that ran away. Only the end is checked: under strong guidance the sample swings to thousands
# in the first, noisiest steps and may still settle (MGD3 at λ 0.2 on mnist5k's pixel prior).
DIVERGED = 1e3


def _check_bounded(x: torch.Tensor, terms: Sequence[Any]) -> None:
    """Refuse the result of a guided trajectory that diverged (a term steering so hard that each
    step overshoots the last) with one line naming the fix, rather than return images of
    unbounded values."""
    peak = float(x.detach().abs().max())
    if not math.isfinite(peak) or peak > DIVERGED:
        names = ", ".join(sorted({type(term).__name__ for term in terms}))
        raise GenpriorError(f"guided sampling diverged: its clean samples reached {peak:.3g}, where the prior's lie "
                            f"within a few units; lower the guidance scale of {names}, or narrow its window")


def check_eta(eta: Any) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise GenpriorError(f"eta must lie in [0, 1] (0: DDIM, 1: ancestral), got {eta!r}")


def check_strength(strength: Any) -> None:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise GenpriorError(f"strength must lie in [0, 1] (the share of the trajectory that runs), got {strength!r}")


def guided_denoiser(prior: Any, labels: torch.Tensor):
    """The prior's model for ``labels`` with its classifier-free guidance applied, as a denoiser
    ``fn(x, t, drop)`` (``drop`` ignored: the guidance decides), e.g. for ``ddim_invert``."""
    labels = prior.check_labels(labels).to(prior.out_mean.device)
    model, scale, n = prior._denoiser(labels, None), prior.guidance_scale, labels.shape[0]
    if scale == 1.0:
        keep = torch.zeros(n, dtype=torch.bool, device=labels.device)
        return lambda x, t, drop=None: model(x, t, keep)
    drop = torch.zeros(2 * n, dtype=torch.bool, device=labels.device)
    drop[n:] = True

    def fn(x, t, _drop=None):
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), drop).chunk(2)
        return uncond + scale * (cond - uncond)
    return fn


def _step_noise(shape, i: int, generator: Optional[torch.Generator], seeds: Optional[Sequence[int]]) -> torch.Tensor:
    """The ancestral noise of step ``i`` (-1: img2img's starting noise): from ``generator``, or
    sample j's from its own seed."""
    if seeds is None:
        return torch.randn(shape, generator=generator)
    return torch.cat([torch.randn((1,) + tuple(shape[1:]), generator=seeded_generator("step-noise", s, i))
                      for s in seeds])


def noise_seeds(seed: int, classes: Sequence[int], indices: Sequence[int]) -> list:
    """One step-noise seed per image, from (seed, class, index): as ``genprior generate``'s
    latents, so that image i of a class draws the same noise whatever is drawn beside it."""
    return [derive_seed("ancestral", seed, int(c), int(i)) for c, i in zip(classes, indices)]


def make_terms(specs: Sequence[Dict[str, Any]]) -> list:
    """Terms built by name from ``GUIDANCE``: ``[{"name": "test-brighter", ...options}]``, for a
    user's own sampling loop over registered terms (the recipes build theirs directly)."""
    terms = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        terms.append(GUIDANCE.get(str(name))(**spec))
    return terms
