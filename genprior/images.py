"""What genprior's image collections share: the one image resize used wherever sizes meet (a
prior's output and a dataset's resolution, real images into a prior's space; antialiased
bilinear, so that a set decoded at one size and read at another is the same everywhere), and
the shape a labelled image collection (real data, a synthetic set) reports."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def resize_images(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Square images (..., H, W) to ``size`` px, antialiased bilinear; a no-op for ``None`` or
    at that size already (the same tensor comes back)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class LabelledImages:
    """The shape of a labelled collection of ``images`` (N, C, H, W) over ``class_names``."""

    images: torch.Tensor
    class_names: Sequence[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]
