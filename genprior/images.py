"""The one image resize genprior uses wherever sizes meet (a prior's output and a dataset's
resolution, real images into a prior's space): antialiased bilinear, so that a set decoded at
one size and read at another is the same everywhere."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def resize_images(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Square images (..., H, W) to ``size`` px, antialiased bilinear; a no-op for ``None`` or
    at that size already (the same tensor comes back)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
