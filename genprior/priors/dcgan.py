"""A small class-conditional DCGAN, and the z-space prior IT-GAN and DiM use.

IT-GAN (Zhao & Bilen, 2022) optimises the z of a frozen conditional GAN; DiM (Wang
et al., 2023) fine-tunes the generator itself. Both only need z plus a label, so
this prior has the one space ``z``.

Conditioning is by concatenation: a learned class embedding is appended to z
before the first layer. It is simpler than conditional batch norm and keeps the
class in one place a fine-tuning method can reach.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..errors import GenpriorError
from .base import Latents, Prior, keep_card_extras, load_model, read_card
from .stylegan import GENERATOR_FOLDER


class DCGANGenerator(ModelMixin, ConfigMixin):
    """z ++ class embedding -> FC to a (channels[0], r0, r0) map -> per stage
    nearest 2x upsampling + 3x3 conv + BN + ReLU -> 3x3 conv -> tanh.

    ``r0 = output_resolution / 2**(len(channels) - 1)``: 7 px for 28 px output,
    8 px for 32 px. Nearest upsampling + conv avoids transposed-conv checkerboards."""

    @register_to_config
    def __init__(self, z_dim: int = 100, num_classes: int = 10, embed_dim: int = 32,
                 channels: Sequence[int] = (128, 64, 32), img_channels: int = 1, output_resolution: int = 28):
        super().__init__()
        stages = len(channels) - 1
        self.init_resolution = output_resolution >> stages
        if stages < 1 or self.init_resolution < 2 or self.init_resolution << stages != output_resolution:
            raise GenpriorError(
                f"output_resolution {output_resolution} must be a multiple of 2**{stages} "
                f"(one doubling per stage after the first of channels={list(channels)}), at least 2 px to start"
            )
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.img_channels = img_channels
        self.output_resolution = output_resolution
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Linear(z_dim + embed_dim, channels[0] * self.init_resolution ** 2)
        self.bn0 = nn.BatchNorm2d(channels[0])
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.to_rgb = nn.Conv2d(channels[-1], img_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (N, img_channels, output_resolution, output_resolution)."""
        x = self.fc(torch.cat([z, self.embed(labels)], dim=1))
        x = x.view(z.shape[0], -1, self.init_resolution, self.init_resolution)
        x = F.relu(self.bn0(x))
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_rgb(x))


class DCGANDiscriminator(ModelMixin, ConfigMixin):
    """Stride-2 4x4 convs with lrelu, global sum pooling, and a projection head
    (Miyato & Koyama, 2018): logit = fc(h) + <embed(label), h>. Any input size works."""

    @register_to_config
    def __init__(self, num_classes: int = 10, img_channels: int = 1, channels: Sequence[int] = (64, 128, 256)):
        super().__init__()
        layers = []
        for c_in, c_out in zip((img_channels,) + tuple(channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels[-1], 1)
        self.embed = nn.Embedding(num_classes, channels[-1])

    def forward(self, img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits (N,): positive = real."""
        h = self.features(img).sum(dim=(2, 3))
        return self.fc(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


class DCGANPrior(Prior):
    """A frozen conditional DCGAN as a prior over ``{"z": (N, z_dim)}``.

    ``mean`` initialisation is z = 0, the mode of the N(0, I) prior, decoded with
    each latent's own label. The generator stays in eval mode (batch norm uses its
    running statistics), so an image never depends on the others in its batch and
    chunked decoding equals full decoding; a method that fine-tunes the generator
    switches ``prior.generator`` itself."""

    family = "dcgan"
    latent_spaces = ("z",)
    default_space = "z"

    def __init__(self, generator: DCGANGenerator, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)):
        channels = generator.img_channels
        mean = tuple(mean) * (channels if len(mean) == 1 else 1)
        std = tuple(std) * (channels if len(std) == 1 else 1)
        super().__init__(generator.num_classes, channels, generator.output_resolution, mean, std)
        self.generator = generator.eval().requires_grad_(False)
        self.card = {"z_dim": generator.z_dim, "components": {"generator": GENERATOR_FOLDER}}

    def train(self, mode: bool = True) -> "DCGANPrior":
        """Switch the prior, never the generator's batch norm (see the class docstring)."""
        super().train(mode)
        self.generator.eval()
        return self

    def _init_space(self, labels: torch.Tensor, space: str, method: str,
                    generator: Optional[torch.Generator]) -> Latents:
        shape = (labels.shape[0], self.generator.z_dim)
        z = torch.randn(shape, generator=generator) if method == "random" else torch.zeros(shape)
        return {"z": z.to(self.out_mean.device)}

    def _decode(self, latents: Latents, labels: torch.Tensor) -> torch.Tensor:
        if set(latents) != {"z"}:
            raise GenpriorError(f"latent keys {sorted(latents)} name no space of this prior; its one space z takes ['z']")
        z = latents["z"]
        if z.dim() != 2 or z.shape[1] != self.generator.z_dim:
            raise GenpriorError(f"latent 'z' must be (N, {self.generator.z_dim}), got {tuple(z.shape)}")
        return self.from_m11(self.generator(z, labels.to(z.device)))

    def _save_components(self, directory: Path) -> None:
        self.generator.save_pretrained(directory / GENERATOR_FOLDER, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory, **kwargs: Any) -> "DCGANPrior":
        """Load a prior directory (the DCGAN prior has no options to override)."""
        if kwargs:
            raise GenpriorError(f"the DCGAN prior takes no options, got {', '.join(sorted(kwargs))}")
        card = read_card(directory, cls.family)
        generator = load_model(DCGANGenerator, Path(directory) / GENERATOR_FOLDER)
        return keep_card_extras(cls(generator, card["mean"], card["std"]), card)
