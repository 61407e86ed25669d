"""AlexNet for small images, the variant of the Dataset Condensation codebase.

Five convolutions (128-192-256-192-192, the first 5x5), ReLU, three 2x2 max
pools and one linear layer on the 4x4 map. The first conv's padding and stride
are set so that it always outputs 32x32: padding 4 at 28 px (as DC does for
MNIST), stride 2 at 64 px and stride 4 at 128 px, so the classifier keeps
192*4*4 inputs and the cost stays that of a 32-px net. No normalisation, as in DC.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ._registry import NETS


class AlexNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, resolution: int):
        super().__init__()
        stride = max(1, resolution // 32)
        padding = 4 if resolution == 28 else 2
        self.conv1 = nn.Conv2d(channels, 128, kernel_size=5, stride=stride, padding=padding)
        self.conv2 = nn.Conv2d(128, 192, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(192, 256, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(256, 192, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(192, 192, kernel_size=3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        size = (resolution + 2 * padding - 5) // stride + 1
        size = size // 2 // 2 // 2
        self.feature_dim = 192 * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        f1 = self.pool(self.act(self.conv1(x)))
        f2 = self.pool(self.act(self.conv2(f1)))
        f3 = self.act(self.conv3(f2))
        f4 = self.act(self.conv4(f3))
        f5 = self.pool(self.act(self.conv5(f4)))
        return [f1, f2, f3, f4, f5]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@NETS.register(
    "alexnet",
    summary="AlexNet for small images (convs 128-192-256-192-192), no normalisation",
    paper=(
        "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional "
        "Neural Networks, NeurIPS 2012; small-image variant of Zhao, Mopuri & Bilen, ICLR 2021"
    ),
    default_norm="none",
)
def alexnet(channels, num_classes, resolution):
    return AlexNet(channels, num_classes, resolution)
