"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

Matching losses compare real and synthetic batches through a network; DSA
augments both with the *same* random transform so the comparison still means
something, while gradients flow back to the synthetic images. Evaluation
networks use the same ops without the siamese tie, one parameter draw per image.

Every op is split into a draw (random parameters, on CPU, from the caller's
generator, so a seeded run is bit-identical on CPU and CUDA) and a
deterministic transform of normalised images shaped (batch, channels, H, W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import GenpriorError, UnknownNameError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"
DIGIT_DATASETS = frozenset({"mnist", "mnist5k", "digits", "svhn"})


@dataclass(frozen=True)
class DSAParams:
    """Ranges of the random draws; the defaults are the evaluation protocol's."""

    flip_p: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 0.5
    saturation: float = 2.0
    contrast: float = 0.5


def strategy_for(dataset_name: str) -> str:
    """Digits change meaning when mirrored, so their strategy has no flip."""
    return DIGITS_STRATEGY if dataset_name.lower() in DIGIT_DATASETS else DEFAULT_STRATEGY


def _per_image(values: Tensor, x: Tensor) -> Tensor:
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def adjust_color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    """Add ``brightness``, then scale the spread around the per-pixel channel
    mean by ``saturation`` and around the image mean by ``contrast``."""
    x = x + _per_image(brightness, x)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * _per_image(saturation, x) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _per_image(contrast, x) + image_mean


def translate(x: Tensor, shift_y: Tensor, shift_x: Tensor) -> Tensor:
    """Move each image by whole pixels (down, right for positive shifts),
    filling with zeros; gathering keeps it differentiable w.r.t. ``x``."""
    n, _, height, width = x.shape
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    rows = (rows - shift_y.to(x.device).view(-1, 1, 1) + 1).clamp(0, height + 1)
    cols = (cols - shift_x.to(x.device).view(-1, 1, 1) + 1).clamp(0, width + 1)
    batch = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, centre_y: Tensor, centre_x: Tensor, size_y: int, size_x: int) -> Tensor:
    """Zero a ``size_y`` x ``size_x`` box per image, clipped at the border."""
    height, width = x.shape[-2:]
    top = (centre_y.to(x.device) - size_y // 2).view(-1, 1, 1)
    left = (centre_x.to(x.device) - size_x // 2).view(-1, 1, 1)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def flip(x: Tensor, flipped: Tensor) -> Tensor:
    """Mirror horizontally the images where ``flipped`` is true."""
    return torch.where(flipped.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def scale(x: Tensor, scale_y: Tensor, scale_x: Tensor) -> Tensor:
    """Resample each image on a grid stretched by (scale_x, scale_y); >1 zooms out."""
    zero = torch.zeros_like(scale_x)
    theta = torch.stack(
        [torch.stack([scale_x, zero, zero], dim=1), torch.stack([zero, scale_y, zero], dim=1)], dim=1
    )
    return _warp(x, theta)


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image about its centre by its angle in degrees."""
    radians = degrees * (math.pi / 180.0)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    theta = torch.stack(
        [torch.stack([cos, sin, zero], dim=1), torch.stack([-sin, cos, zero], dim=1)], dim=1
    )
    return _warp(x, theta)


def _uniform(n: int, low: float, high: float, generator: Optional[torch.Generator]) -> Tensor:
    return torch.rand(n, generator=generator, device="cpu") * (high - low) + low


def _randint(n: int, low: int, high: int, generator: Optional[torch.Generator]) -> Tensor:
    return torch.randint(low, high, (n,), generator=generator, device="cpu")


Draw = Dict[str, object]


def _draw_color(n: int, height: int, width: int, p: DSAParams, g: Optional[torch.Generator]) -> Draw:
    return {
        "brightness": _uniform(n, -p.brightness, p.brightness, g),
        "saturation": _uniform(n, 0.0, p.saturation, g),
        "contrast": _uniform(n, 1.0 - p.contrast, 1.0 + p.contrast, g),
    }


def _draw_crop(n: int, height: int, width: int, p: DSAParams, g: Optional[torch.Generator]) -> Draw:
    max_y, max_x = int(height * p.crop + 0.5), int(width * p.crop + 0.5)
    return {"shift_y": _randint(n, -max_y, max_y + 1, g), "shift_x": _randint(n, -max_x, max_x + 1, g)}


def _draw_cutout(n: int, height: int, width: int, p: DSAParams, g: Optional[torch.Generator]) -> Draw:
    """An even-sized box gets one extra centre position so that it reaches
    beyond each border by the same amount."""
    size_y, size_x = int(height * p.cutout + 0.5), int(width * p.cutout + 0.5)
    return {
        "centre_y": _randint(n, 0, height + 1 - size_y % 2, g),
        "centre_x": _randint(n, 0, width + 1 - size_x % 2, g),
        "size_y": size_y,
        "size_x": size_x,
    }


def _draw_flip(n: int, height: int, width: int, p: DSAParams, g: Optional[torch.Generator]) -> Draw:
    return {"flipped": torch.rand(n, generator=g, device="cpu") < p.flip_p}


def _draw_scale(n: int, height: int, width: int, p: DSAParams, g: Optional[torch.Generator]) -> Draw:
    return {
        "scale_x": _uniform(n, 1.0 / p.scale, p.scale, g),
        "scale_y": _uniform(n, 1.0 / p.scale, p.scale, g),
    }


def _draw_rotate(n: int, height: int, width: int, p: DSAParams, g: Optional[torch.Generator]) -> Draw:
    return {"degrees": _uniform(n, -p.rotate, p.rotate, g)}


OPS: Dict[str, Tuple[Callable[..., Draw], Callable[..., Tensor]]] = {
    "color": (_draw_color, adjust_color),
    "crop": (_draw_crop, translate),
    "cutout": (_draw_cutout, cutout),
    "flip": (_draw_flip, flip),
    "scale": (_draw_scale, scale),
    "rotate": (_draw_rotate, rotate),
}


def _broadcast(draw: Draw, n: int) -> Draw:
    """Repeat a one-image draw for ``n`` images without copying it."""
    return {k: v.expand(n) if isinstance(v, Tensor) else v for k, v in draw.items()}


def _check_images(x: Tensor) -> None:
    if x.dim() != 4:
        raise GenpriorError(
            f"DSA expects images shaped (batch, channels, height, width), got {tuple(x.shape)}"
        )


class DSA:
    """One op family per call, chosen at random among the strategy's ops
    (DSA's single mode): it keeps an augmented batch close to the data.

    ``compose=True`` is IDC's evaluation augmentation (``DiffAug(single=False)``, which Minimax
    Diffusion's evaluation inherits): flip and colour (when in the strategy) on every call, then
    one of the other geometric ops, then cutout (when in the strategy); every draw per image."""

    ALWAYS = ("flip", "color")

    def __init__(self, strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams(), compose: bool = False):
        ops = tuple(strategy.split("_"))
        for op in ops:
            if op not in OPS:
                raise UnknownNameError(
                    f"unknown DSA op {op!r} in strategy {strategy!r}; valid ops: {', '.join(OPS)}"
                )
        self.ops = ops
        self.params = params
        self.compose = compose
        self.single_ops = tuple(op for op in ops if op not in self.ALWAYS + ("cutout",)) if compose else ops
        if compose:  # the order the ops run in, named from the ops present
            steps = [op for op in self.ALWAYS if op in ops] + (["one of " + "/".join(self.single_ops)]
                                                               if self.single_ops else [])
            steps += ["cutout"] if "cutout" in ops else []
            strategy += f" (composed: {', '.join(steps)})"
        self.strategy = strategy

    def _pick(self, generator: Optional[torch.Generator]) -> str:
        return self.single_ops[int(_randint(1, 0, len(self.single_ops), generator))]

    def _apply(self, op: str, x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        draw, apply = OPS[op]
        return apply(x, **draw(x.shape[0], x.shape[-2], x.shape[-1], self.params, generator))

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Augment with parameters drawn independently for every image."""
        _check_images(x)
        if not self.compose:
            return self._apply(self._pick(generator), x, generator)
        for op in self.ALWAYS:
            if op in self.ops:
                x = self._apply(op, x, generator)
        if self.single_ops:
            x = self._apply(self._pick(generator), x, generator)
        return self._apply("cutout", x, generator) if "cutout" in self.ops else x

    def siamese(self, *batches: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, ...]:
        """Augment every image of every batch with one shared draw, so real and
        synthetic batches of any sizes see the same transform."""
        if not batches:
            raise GenpriorError("DSA.siamese needs at least one batch of images")
        for x in batches:
            _check_images(x)
        sizes = {tuple(x.shape[-2:]) for x in batches}
        if len(sizes) > 1:
            raise GenpriorError(f"DSA.siamese needs batches of one image size, got {sorted(sizes)}")
        if self.compose:
            raise GenpriorError("DSA.siamese draws one op family; build the DSA without compose=True")
        draw, apply = OPS[self._pick(generator)]
        shared = draw(1, batches[0].shape[-2], batches[0].shape[-1], self.params, generator)
        return tuple(apply(x, **_broadcast(shared, x.shape[0])) for x in batches)


#: the PCA of ImageNet's RGB pixels that AlexNet's lighting noise uses (eigenvalues, eigenvectors as columns)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class ImageNetAugment:
    """The training augmentation of the hard-label protocol on ImageNet subsets (Minimax
    Diffusion's and IDC's ``transform_imagenet``), per image on a normalised batch:

    - random-resized crop of 50-100 % of the area, aspect ratio 3/4 to 4/3, back to the image
      size (bilinear); as torchvision, up to 10 draws until the crop fits in the image, else the
      whole image;
    - horizontal flip with probability 1/2;
    - colour jitter 0.4 (brightness, contrast, saturation factors in [0.6, 1.4], in a random
      order per image, unclamped as the reference's own jitter);
    - PCA lighting noise of standard deviation 0.1 along ImageNet's RGB eigenvectors.

    Saturation and lighting act on 3-channel images only. Pixels are jittered in [0, 1] units
    (``mean``/``std`` undo and redo the normalisation), as the reference's transforms run
    before normalising."""

    def __init__(self, mean, std, scale: Tuple[float, float] = (0.5, 1.0), jitter: float = 0.4,
                 lighting: float = 0.1):
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.jitter, self.lighting = scale, float(jitter), float(lighting)
        # the lighting basis: eigenvector columns scaled by their eigenvalues (alpha @ basis is the RGB shift)
        self.basis = torch.tensor(IMAGENET_EIGVAL).view(3, 1) * torch.tensor(IMAGENET_EIGVEC).T
        self.strategy = (f"{'imagenet' if jitter or lighting else 'crop'}: rrc {scale[0]:g}-{scale[1]:g}, flip"
                         + (f", jitter {jitter:g}" if jitter else "") + (f", lighting {lighting:g}" if lighting else ""))

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        _check_images(x)
        n, c = x.shape[:2]
        tries = torch.rand(n, 10, 2, generator=generator)
        u = torch.rand(n, 8, generator=generator)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * tries[..., 0]
        ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * tries[..., 1])
        ws, hs = (area * ratio).sqrt(), (area / ratio).sqrt()
        fits = (ws <= 1) & (hs <= 1)
        first = fits.float().argmax(dim=1, keepdim=True)  # the first draw that fits (torchvision's loop)
        found = fits.any(dim=1)
        w = torch.where(found, ws.gather(1, first).squeeze(1), torch.ones(n))
        h = torch.where(found, hs.gather(1, first).squeeze(1), torch.ones(n))
        cx = (1 - w) * (2 * u[:, 2] - 1)
        cy = (1 - h) * (2 * u[:, 3] - 1)
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        if not self.jitter and not self.lighting:
            return x
        img = x * std + mean
        factors = 1 + self.jitter * (2 * u[:, 5:8] - 1)  # brightness, contrast, saturation
        order = torch.rand(n, 3, generator=generator).argsort(dim=1)  # a random order per image
        for k in range(3):
            op = order[:, k].to(img.device).view(n, 1, 1, 1)
            f = _per_image(factors.gather(1, order[:, k:k + 1]).squeeze(1), img)
            luma = _grey(img)
            bright = img * f
            grey = luma.mean(dim=(1, 2, 3), keepdim=True)
            contrast = grey + f * (img - grey)
            saturated = luma + f * (img - luma) if c == 3 else img
            img = torch.where(op == 0, bright, torch.where(op == 1, contrast, saturated))
        if c == 3 and self.lighting > 0:
            alpha = torch.randn(n, 3, generator=generator) * self.lighting
            rgb = alpha @ self.basis
            img = img + rgb.to(img.device, img.dtype).view(n, 3, 1, 1)
        return (img - mean) / std


def _grey(img: Tensor) -> Tensor:
    """ITU-R 601 luma of RGB images (the image itself for one channel), shaped (N, 1, H, W)."""
    if img.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
        return (img * weights).sum(dim=1, keepdim=True)
    return img.mean(dim=1, keepdim=True)
