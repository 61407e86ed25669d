"""VGG-11 for small images, as in the Dataset Condensation codebase.

Five stages of 3x3 conv -> norm -> ReLU ending in a 2x2 max pool. Instance norm
is the default for the same reason as in ConvNet. At 28 px the first conv pads
by 3 so the net sees 32 px. The final map is 1x1 at 32 px; at 64 and 128 px it
is averaged to 1x1 so the classifier keeps its 512 inputs and a net trained at
one resolution has the same head shape as at another.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..errors import GenpriorError
from ._registry import NETS

VGG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))
NORMS = ("instancenorm", "batchnorm")

PAPER = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition, ICLR 2015; small-image variant of Zhao, Mopuri & Bilen, ICLR 2021"
)


def make_norm(norm: str, width: int) -> nn.Module:
    if norm not in NORMS:
        raise GenpriorError(f"unknown VGG norm {norm!r}; valid: {', '.join(NORMS)}")
    if norm == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    return nn.BatchNorm2d(width)


class ConvNormAct(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, padding: int, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=padding)
        self.norm = make_norm(norm, out_ch)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class VGG(nn.Module):
    def __init__(self, channels: int, num_classes: int, resolution: int, cfg=VGG11, norm: str = "instancenorm"):
        super().__init__()
        stages = []
        in_ch = channels
        for s, widths in enumerate(cfg):
            layers = []
            for i, width in enumerate(widths):
                padding = 3 if s == 0 and i == 0 and resolution == 28 else 1
                layers.append(ConvNormAct(in_ch, width, padding, norm))
                in_ch = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_ch
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@NETS.register(
    "vgg11",
    summary="VGG-11 for small images with instance norm",
    paper=PAPER,
    default_norm="instancenorm",
)
def vgg11(channels, num_classes, resolution, *, norm="instancenorm"):
    return VGG(channels, num_classes, resolution, VGG11, norm)


@NETS.register(
    "vgg11_bn",
    summary="VGG-11 for small images with batch norm",
    paper=PAPER,
    default_norm="batchnorm",
)
def vgg11_bn(channels, num_classes, resolution):
    return VGG(channels, num_classes, resolution, VGG11, "batchnorm")
