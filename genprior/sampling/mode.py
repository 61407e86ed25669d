"""MGD3's mode guidance (Chan-Santiago et al., ICML 2025, "Mode-Guided Dataset Distillation
using Diffusion Models"): sample i is steered towards the mode m_i of its class while the
trajectory is in its first part: ε̂ = ε − √(1 − ᾱ_t) · λ · (m_i − x̂₀), i.e. the gradient of
G = −λ/2 ‖m_i − x̂₀‖² (paper: λ = 0.1, guidance stopped at step 25 of 50, CFG 4). The modes
are k-means centres of the class's encoded real images (``genprior.sampling.modes``), one per
sample."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import GenpriorError
from .sampler import GUIDANCE, GuidanceTerm, StepContext, check_window


@GUIDANCE.register("mode", summary="MGD3: steer each sample towards its class mode (closed form)",
                   paper="Chan-Santiago et al., Mode-Guided Dataset Distillation using Diffusion Models, ICML 2025")
class ModeGuidance(GuidanceTerm):
    """``form`` ``eps`` (default): the guidance above, on the noise prediction. ``sample``: as
    MGD3's code applies it, the next sample moves by λ · s_t · (m_i − x̂₀), with s_t the step's
    ancestral noise scale σ_t (its DiT sampler, ``eta`` > 0; no move on the last step, which adds
    no noise) or √ᾱ_t under DDIM (its Stable Diffusion scheduler)."""

    FORMS = ("eps", "sample")

    def __init__(self, modes: torch.Tensor, scale: float = 0.1, start: float = 0.0, stop: float = 0.5,
                 form: str = "eps"):
        self.check_options(scale, start, stop, form)
        super().__init__(start, stop)
        if not isinstance(modes, torch.Tensor) or modes.dim() < 2:
            raise GenpriorError("mode guidance needs one mode per sample: a tensor (N, ...) in the model's space")
        self.modes, self.scale, self.form = modes, float(scale), form

    @classmethod
    def check_options(cls, scale: Any, start: Any, stop: Any, form: Any) -> None:
        """The term's options, checked before any work (one line naming the fix)."""
        if form not in cls.FORMS:
            raise GenpriorError(f"mode guidance form must be one of {', '.join(cls.FORMS)}, got {form!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise GenpriorError(f"the mode guidance scale λ must be a positive number (paper: 0.1), got {scale!r}")
        check_window(start, stop)

    def _pull(self, ctx: StepContext) -> torch.Tensor:
        modes = self.modes.to(ctx.x0_hat.device)[ctx.index]
        if modes.shape != ctx.x0_hat.shape:
            raise GenpriorError(f"mode guidance: modes of shape {tuple(modes.shape[1:])} for samples of shape "
                                f"{tuple(ctx.x0_hat.shape[1:])}; give modes in the model's space")
        return self.scale * (modes - ctx.x0_hat)

    def gradient(self, ctx: StepContext):
        return self._pull(ctx) if self.form == "eps" else None

    def shift(self, ctx: StepContext, sigma: torch.Tensor):
        if self.form != "sample":
            return None
        return (sigma if ctx.eta > 0 else ctx.alpha.sqrt()) * self._pull(ctx)
