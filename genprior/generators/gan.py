"""What the GAN-based generator methods (DiM, DCGM) share, and what ``pretrained/train_gan.py``
trains the shipped GAN priors with: the discriminator of a prior's family, DiffAugment, and
the non-saturating logistic loss with lazy R1 (StyleGAN2-ADA's recipe).

The shipped GAN priors carry only their generator, so a method that fine-tunes one builds
a fresh discriminator of the same family here and warms it up against the frozen
generator before the first generator step (``Adversary.warm_up``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment import cutout, translate
from ..errors import GenpriorError
from ..priors.base import Prior

#: StyleGAN2-ADA's Adam for G and D, and its lazy-R1 setting as trained for the shipped prior
ADAM = {"lr": 0.0025, "betas": (0.0, 0.99), "eps": 1e-8}
R1_GAMMA, R1_INTERVAL = 1.0, 16


def diff_augment(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """DiffAugment translation (up to 1/8 of the side) and cutout (half the side), on images
    in [-1, 1] shifted so that the black background fills the gaps; per image."""
    n, _, h, w = x.shape
    shift = max(1, h // 8)
    x = translate(x + 1, torch.randint(-shift, shift + 1, (n,), generator=generator),
                  torch.randint(-shift, shift + 1, (n,), generator=generator))
    size = h // 2
    x = cutout(x, torch.randint(0, h + 1 - size % 2, (n,), generator=generator),
               torch.randint(0, w + 1 - size % 2, (n,), generator=generator), size, size)
    return x - 1


def make_discriminator(prior: Prior) -> nn.Module:
    """A fresh class-conditional discriminator of the prior's family, sized to its generator."""
    from ..priors.dcgan import DCGANDiscriminator
    from ..priors.stylegan import StyleGAN2Discriminator

    if prior.num_classes is None:
        raise GenpriorError("the GAN methods train class-conditional generators; this prior has no classes")
    g = getattr(prior, "generator", None)
    if prior.family == "stylegan":
        cfg = g.config
        return StyleGAN2Discriminator(c_dim=prior.num_classes, img_resolution=cfg.img_resolution,
                                      img_channels=cfg.img_channels, channel_base=cfg.channel_base,
                                      channel_max=cfg.channel_max)
    if prior.family == "dcgan":
        return DCGANDiscriminator(num_classes=prior.num_classes, img_channels=prior.channels)
    raise GenpriorError(f"no discriminator for a {prior.family!r} prior; the GAN methods train stylegan or dcgan priors")


def generator_loss(d_fake: Tensor) -> Tensor:
    """Non-saturating logistic loss of the generator."""
    return F.softplus(-d_fake).mean()


class Adversary:
    """A discriminator, its optimiser (lazy-R1 adjusted, as ADA) and its update."""

    def __init__(self, prior: Prior, device: torch.device, lr: float = ADAM["lr"], r1_gamma: float = R1_GAMMA,
                 r1_interval: int = R1_INTERVAL):
        self.net = make_discriminator(prior).to(device)
        self.r1_gamma, self.r1_interval = float(r1_gamma), int(r1_interval)
        ratio = self.r1_interval / (self.r1_interval + 1)
        beta1, beta2 = ADAM["betas"]
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr * ratio,
                                          betas=(beta1 ** ratio, beta2 ** ratio), eps=ADAM["eps"])

    def judge(self, images_m11: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """D's logits for images in [-1, 1], through DiffAugment."""
        return self.net(diff_augment(images_m11, generator), labels)

    def loss(self, real_m11: Tensor, real_labels: Tensor, fake_m11: Tensor, fake_labels: Tensor, step: int,
             generator: torch.Generator) -> Tensor:
        """Logistic loss on real and fake, plus lazy R1 on the real images every ``r1_interval`` steps."""
        regularise = self.r1_gamma > 0 and step % self.r1_interval == 0
        real = real_m11.detach().requires_grad_(regularise)
        real_logits = self.judge(real, real_labels, generator)
        loss = F.softplus(self.judge(fake_m11.detach(), fake_labels, generator)).mean() + F.softplus(-real_logits).mean()
        if regularise:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss = loss + grad.square().sum(dim=(1, 2, 3)).mean() * (self.r1_gamma / 2) * self.r1_interval
        return loss
