"""Class modes: k-means centres of a class's real images in the space a diffusion prior
denoises (VAE latents for latent priors, pixels for pixel priors). D4M (Su et al., CVPR 2024)
noises them and denoises them with their class (img2img); MGD3 steers samples towards them."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..data import RealData
from ..errors import GenpriorError
from ..images import resize_images


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 50) -> torch.Tensor:
    """Lloyd's k-means on the rows of ``x`` (N, D) from a k-means++ start; (k, D) centres,
    ordered by cluster size (largest first)."""
    if not 1 <= k <= x.shape[0]:
        raise GenpriorError(f"k-means needs 1 <= k <= {x.shape[0]} points, got k={k}")
    centres = x[torch.randint(x.shape[0], (1,), generator=generator)]
    for _ in range(1, k):  # k-means++: the next centre far from the chosen ones, with probability d^2
        d2 = torch.cdist(x, centres).min(dim=1).values.square()
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=generator) if d2.sum() > 0 else \
            torch.randint(x.shape[0], (1,), generator=generator)
        centres = torch.cat([centres, x[pick]])
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)
        moved = torch.stack([x[assign == j].mean(dim=0) if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(moved, centres):
            break
        centres = moved
    sizes = torch.bincount(torch.cdist(x, centres).argmin(dim=1), minlength=k)
    return centres[torch.argsort(sizes, descending=True, stable=True)]


@torch.no_grad()
def encode_class(prior: Any, real: RealData, c: int, generator: torch.Generator, max_images: Optional[int] = 500,
                 batch_size: int = 64) -> torch.Tensor:
    """The real images of class ``c`` (a random ``max_images`` of them when there are more),
    encoded into the prior's denoising space (VAE latents, or pixels at its resolution)."""
    device = prior.out_mean.device
    idx = real.indices_of_class(c)
    if max_images is not None and len(idx) > max_images:
        idx = idx[torch.randperm(len(idx), generator=generator)[:max_images]]
    images = real.images[idx]
    images = resize_images(images, prior.resolution)
    return torch.cat([prior._to_x0(prior.to_m11(images[b:b + batch_size].to(device).float())).float()
                      for b in range(0, len(images), batch_size)])


@torch.no_grad()
def class_modes(prior: Any, real: RealData, per_class: int, seed: int = 0, max_images: Optional[int] = 500,
                batch_size: int = 64) -> torch.Tensor:
    """``per_class`` k-means centres of each class's real images, encoded into the prior's
    denoising space; (num_classes * per_class, ...) ordered class by class. At most
    ``max_images`` images of a class are encoded (a random subset), or ``per_class`` if more."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    cap = None if max_images is None else max(max_images, per_class)  # k-means needs k images at least
    for c in range(real.num_classes):
        available = len(real.indices_of_class(c))
        if per_class > available:
            raise GenpriorError(f"class {real.class_names[c]!r} has {available} real images to draw {per_class} "
                                f"modes from; lower the IPC to at most {available}")
        encoded = encode_class(prior, real, c, gen, cap, batch_size)
        centres = kmeans(encoded.flatten(1).cpu(), per_class, gen)
        out.append(centres.view(per_class, *encoded.shape[1:]))
    return torch.cat(out).to(prior.out_mean.device)
