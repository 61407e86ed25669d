"""Pixel space as a prior: the latents are the images themselves.

Classic DC / DM / MTT are distillation with this identity prior, so pixel-space
baselines run through exactly the same loops and losses as the generative priors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .base import Latents, Prior, read_card


class PixelPrior(Prior):
    family = "pixel"
    latent_spaces = ("x",)
    default_space = "x"
    supports_mean_init = False
    inverts_by_optimisation = False

    def __init__(self, num_classes: Optional[int], channels: int, resolution: int,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)):
        mean = tuple(mean) * (channels if len(mean) == 1 else 1)
        std = tuple(std) * (channels if len(std) == 1 else 1)
        super().__init__(num_classes, channels, resolution, mean, std)

    def _init_space(self, labels: torch.Tensor, space: str, method: str,
                    generator: Optional[torch.Generator]) -> Latents:
        if method != "random":
            from ..errors import GenpriorError

            raise GenpriorError("the pixel prior has no class means; initialise with 'random' noise or 'invert' real images")
        shape = (labels.shape[0], self.channels, self.resolution, self.resolution)
        return {"x": torch.randn(shape, generator=generator).to(self.out_mean.device)}

    def invert(self, images: torch.Tensor, labels: torch.Tensor, space: Optional[str] = None,
               generator: Optional[torch.Generator] = None, **kwargs: Any) -> Latents:
        """Exact: real images are their own pixel latents."""
        return {"x": images.detach().clone().float()}

    def _decode(self, latents: Latents, labels: torch.Tensor) -> torch.Tensor:
        return latents["x"]

    def _save_components(self, directory: Path) -> None:
        """Nothing to save beyond the card: the pixel prior has no weights."""

    @classmethod
    def from_pretrained(cls, directory, **kwargs: Any) -> "PixelPrior":
        card = read_card(directory)
        return cls(card["num_classes"], card["channels"], card["resolution"], card["mean"], card["std"])
