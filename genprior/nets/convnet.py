"""ConvNet: the evaluation network of the Dataset Condensation protocol.

Blocks of Conv3x3 -> norm -> act -> pool 2x2, then one linear layer on the
flattened map. Instance norm (GroupNorm with one group per channel) is the
default because batch statistics of a few synthetic images per class are noise.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..errors import GenpriorError
from ._registry import NETS

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS = ("relu", "leakyrelu", "sigmoid", "gelu")
POOLS = ("avgpool", "maxpool", "none")
GROUPNORM_GROUPS = 4

PAPER = (
    "Gidaris & Komodakis, Dynamic Few-Shot Visual Learning without Forgetting, CVPR 2018; "
    "as evaluator: Zhao, Mopuri & Bilen, Dataset Condensation with Gradient Matching, ICLR 2021"
)


def _check_choice(option: str, value: str, valid: tuple) -> None:
    if value not in valid:
        raise GenpriorError(f"unknown ConvNet {option} {value!r}; valid: {', '.join(valid)}")


def make_norm(norm: str, width: int) -> nn.Module:
    if norm == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(width)
    if norm == "layernorm":
        return nn.GroupNorm(1, width, affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(GROUPNORM_GROUPS, width, affine=True)
    return nn.Identity()


def make_act(act: str) -> nn.Module:
    if act == "relu":
        return nn.ReLU()
    if act == "leakyrelu":
        return nn.LeakyReLU(0.01)
    if act == "sigmoid":
        return nn.Sigmoid()
    return nn.GELU()


def make_pool(pool: str) -> nn.Module:
    if pool == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pool == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return nn.Identity()


class ConvBlock(nn.Module):
    def __init__(self, in_ch: int, width: int, padding: int, norm: str, act: str, pool: str):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, width, kernel_size=3, padding=padding)
        self.norm = make_norm(norm, width)
        self.act = make_act(act)
        self.pool = make_pool(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class ConvNet(nn.Module):
    """ConvNet-`depth`; 28-px input is padded by the first conv so the net sees 32 px, as in DC."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: int,
        depth: int = 3,
        width: int = 128,
        norm: str = "instancenorm",
        act: str = "relu",
        pool: str = "avgpool",
    ):
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("act", act, ACTS)
        _check_choice("pool", pool, POOLS)
        if not isinstance(depth, int) or depth < 1:
            raise GenpriorError(f"ConvNet depth must be an integer >= 1, got {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise GenpriorError(f"ConvNet width must be an integer >= 1, got {width!r}")
        if norm == "groupnorm" and width % GROUPNORM_GROUPS:
            raise GenpriorError(
                f"ConvNet groupnorm uses {GROUPNORM_GROUPS} groups; width {width} is not divisible by it"
            )
        size = 32 if resolution == 28 else resolution
        if pool != "none" and size >> depth < 1:
            raise GenpriorError(
                f"ConvNet depth {depth} pools a {size}-px map below 1 px; "
                f"use depth <= {size.bit_length() - 1} or pool='none'"
            )
        blocks = []
        for d in range(depth):
            padding = 3 if d == 0 and resolution == 28 else 1
            blocks.append(ConvBlock(channels if d == 0 else width, width, padding, norm, act, pool))
            if pool != "none":
                size //= 2
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor, pre_pool: bool = False) -> List[torch.Tensor]:
        """Each block's output; with ``pre_pool``, each block's map before its pooling and
        then the last pooled map (the maps CAFE matches)."""
        feats = []
        for block in self.blocks:
            if pre_pool:
                x = block.act(block.norm(block.conv(x)))
                feats.append(x)
                x = block.pool(x)
            else:
                x = block(x)
                feats.append(x)
        if pre_pool:
            feats.append(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@NETS.register(
    "convnet",
    summary="ConvNet-3, width 128, instance norm, avg pool: the DC-protocol default",
    paper=PAPER,
    default_norm="instancenorm",
)
def convnet(channels, num_classes, resolution, *, depth=3, width=128, norm="instancenorm", act="relu", pool="avgpool"):
    return ConvNet(channels, num_classes, resolution, depth, width, norm, act, pool)


@NETS.register(
    "convnetd4",
    summary="ConvNet-4 (for 64 px): four conv blocks",
    paper=PAPER,
    default_norm="instancenorm",
)
def convnetd4(channels, num_classes, resolution, *, width=128, norm="instancenorm", act="relu", pool="avgpool"):
    return ConvNet(channels, num_classes, resolution, 4, width, norm, act, pool)


@NETS.register(
    "convnetd5",
    summary="ConvNet-5 (for 128 px): five conv blocks, the GLaD evaluator",
    paper=PAPER,
    default_norm="instancenorm",
)
def convnetd5(channels, num_classes, resolution, *, width=128, norm="instancenorm", act="relu", pool="avgpool"):
    return ConvNet(channels, num_classes, resolution, 5, width, norm, act, pool)


@NETS.register(
    "convnetd6",
    summary="ConvNet-6 (for 256 px): six conv blocks, the Minimax Diffusion evaluator on ImageNet subsets",
    paper=PAPER,
    default_norm="instancenorm",
)
def convnetd6(channels, num_classes, resolution, *, width=128, norm="instancenorm", act="relu", pool="avgpool"):
    return ConvNet(channels, num_classes, resolution, 6, width, norm, act, pool)


@NETS.register(
    "convnet_bn",
    summary="ConvNet-3 with batch norm",
    paper=PAPER,
    default_norm="batchnorm",
)
def convnet_bn(channels, num_classes, resolution, *, depth=3, width=128, act="relu", pool="avgpool"):
    return ConvNet(channels, num_classes, resolution, depth, width, "batchnorm", act, pool)


@NETS.register(
    "convnet_nn",
    summary="ConvNet-3 without normalisation",
    paper=PAPER,
    default_norm="none",
)
def convnet_nn(channels, num_classes, resolution, *, depth=3, width=128, act="relu", pool="avgpool"):
    return ConvNet(channels, num_classes, resolution, depth, width, "none", act, pool)
