"""CIFAR-style ResNets: ResNet-18 and the average-pooling ResNet-AP variants.

A 3x3 stride-1 stem and four stages of BasicBlocks (64-128-256-512), then global
average pooling. Instance norm is the default as in the DC codebase; ``_bn``
swaps in batch norm. The AP variants downsample by 2x2 average pooling instead
of strided convolutions (DC's ResNet18AP, IDC's ResNetAP), which smooths the
gradients that flow back to synthetic images.

At 64 and 128 px the stem brings the map down to 32 px so the four stages cost
what they cost on CIFAR: a stride-2 stem conv (plus a 3x3 max pool at 128 px)
for the strided nets, an average pool of the stem output for the AP nets.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import GenpriorError
from ._registry import NETS

NORMS = ("instancenorm", "batchnorm")
DOWNSAMPLES = ("stride", "avgpool")
WIDTHS = (64, 128, 256, 512)

RESNET_PAPER = "He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, CVPR 2016"


def make_norm(norm: str, width: int) -> nn.Module:
    if norm not in NORMS:
        raise GenpriorError(f"unknown ResNet norm {norm!r}; valid: {', '.join(NORMS)}")
    if norm == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    return nn.BatchNorm2d(width)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, downsample: str):
        super().__init__()
        by_pool = downsample == "avgpool" and stride > 1
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1 if by_pool else stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_ch)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2) if by_pool else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_ch)
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif by_pool:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False),
                nn.AvgPool2d(kernel_size=2, stride=2),
                make_norm(norm, out_ch),
            )
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                make_norm(norm, out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(F.relu(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


STEMS = ("cifar", "idc")


def _idc_stem(channels: int, resolution: int, downsample: str):
    """IDC's (and Minimax Diffusion's) stem by image size: up to 64 px a 3x3 conv alone; up to 128 px
    a 3x3 conv and a pool halving the map; larger, a 7x7 conv (stride 2 for the strided nets) and
    a pool (max 3x3 stride 2; average 4x4 for the AP nets), so 224 px leaves a 56-px map."""
    if resolution <= 64:
        return nn.Conv2d(channels, WIDTHS[0], 3, padding=1, bias=False), nn.Identity()
    if resolution <= 128:
        pool = nn.AvgPool2d(2, 2) if downsample == "avgpool" else nn.MaxPool2d(3, 2, padding=1)
        return nn.Conv2d(channels, WIDTHS[0], 3, padding=1, bias=False), pool
    if downsample == "avgpool":
        return nn.Conv2d(channels, WIDTHS[0], 7, padding=3, bias=False), nn.AvgPool2d(4, 4)
    return nn.Conv2d(channels, WIDTHS[0], 7, stride=2, padding=3, bias=False), nn.MaxPool2d(3, 2, padding=1)


class ResNet(nn.Module):
    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        norm: str = "instancenorm",
        downsample: str = "stride",
        stem: str = "cifar",
    ):
        super().__init__()
        if downsample not in DOWNSAMPLES:
            raise GenpriorError(f"unknown ResNet downsample {downsample!r}; valid: {', '.join(DOWNSAMPLES)}")
        if stem not in STEMS:
            raise GenpriorError(f"unknown ResNet stem {stem!r}; valid: {', '.join(STEMS)}")
        if stem == "idc":
            self.stem_conv, self.stem_pool = _idc_stem(channels, resolution, downsample)
        else:
            factor = max(1, resolution // 32)
            strided_stem = downsample == "stride" and factor > 1
            self.stem_conv = nn.Conv2d(channels, WIDTHS[0], kernel_size=3, stride=2 if strided_stem else 1, padding=1,
                                       bias=False)
            if downsample == "avgpool" and factor > 1:
                self.stem_pool = nn.AvgPool2d(kernel_size=factor, stride=factor)
            elif strided_stem and factor > 2:
                self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=factor // 2, padding=1)
            else:
                self.stem_pool = nn.Identity()
        self.stem_norm = make_norm(norm, WIDTHS[0])
        stages = []
        in_ch = WIDTHS[0]
        for i, (width, blocks) in enumerate(zip(WIDTHS, layers)):
            stage = []
            for b in range(blocks):
                stride = 2 if i > 0 and b == 0 else 1
                stage.append(BasicBlock(in_ch, width, stride, norm, downsample))
                in_ch = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_ch
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        if stem == "idc":  # IDC's initialisation: He-normal (fan-out) convolutions
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_pool(F.relu(self.stem_norm(self.stem_conv(x))))

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@NETS.register(
    "resnet18",
    summary="CIFAR-style ResNet-18 with instance norm",
    paper=RESNET_PAPER,
    default_norm="instancenorm",
)
def resnet18(channels, num_classes, resolution, *, norm="instancenorm"):
    return ResNet(channels, num_classes, resolution, (2, 2, 2, 2), norm, "stride")


@NETS.register(
    "resnet18_bn",
    summary="CIFAR-style ResNet-18 with batch norm",
    paper=RESNET_PAPER,
    default_norm="batchnorm",
)
def resnet18_bn(channels, num_classes, resolution):
    return ResNet(channels, num_classes, resolution, (2, 2, 2, 2), "batchnorm", "stride")


@NETS.register(
    "resnet18_ap",
    summary="ResNet-18 downsampling by average pooling, instance norm (DC's ResNet18AP)",
    paper=RESNET_PAPER + "; AP variant: Zhao, Mopuri & Bilen, Dataset Condensation with Gradient Matching, ICLR 2021",
    default_norm="instancenorm",
)
def resnet18_ap(channels, num_classes, resolution, *, norm="instancenorm"):
    return ResNet(channels, num_classes, resolution, (2, 2, 2, 2), norm, "avgpool")


@NETS.register(
    "resnet_ap10",
    summary="ResNet-AP-10 (one block per stage), instance norm: the IDC / Minimax Diffusion evaluator",
    paper=(
        "Kim et al., Dataset Condensation via Efficient Synthetic-Data Parameterization, ICML 2022; "
        "Gu et al., Efficient Dataset Distillation via Minimax Diffusion, CVPR 2024"
    ),
    default_norm="instancenorm",
)
def resnet_ap10(channels, num_classes, resolution, *, norm="instancenorm"):
    return ResNet(channels, num_classes, resolution, (1, 1, 1, 1), norm, "avgpool")


@NETS.register(
    "resnet_ap10_idc",
    summary="ResNet-AP-10 with IDC's size-dependent stem (a 64-px map at 128 px, 56 at 224) and He-normal init",
    paper=(
        "Kim et al., Dataset Condensation via Efficient Synthetic-Data Parameterization, ICML 2022; "
        "Gu et al., Efficient Dataset Distillation via Minimax Diffusion, CVPR 2024"
    ),
    default_norm="instancenorm",
)
def resnet_ap10_idc(channels, num_classes, resolution, *, norm="instancenorm"):
    return ResNet(channels, num_classes, resolution, (1, 1, 1, 1), norm, "avgpool", stem="idc")


@NETS.register(
    "resnet18_idc",
    summary="ResNet-18, instance norm, with IDC's size-dependent stem and He-normal init (Minimax Diffusion's)",
    paper=RESNET_PAPER + "; stem: Kim et al., ICML 2022",
    default_norm="instancenorm",
)
def resnet18_idc(channels, num_classes, resolution, *, norm="instancenorm"):
    return ResNet(channels, num_classes, resolution, (2, 2, 2, 2), norm, "stride", stem="idc")
