"""Training-free condensation with a diffusion prior: sets drawn by the guided sampler.

Each method is a function registered in ``SAMPLING_METHODS`` that returns the images of a
set in the prior's denoising space order (class by class, ``ipc`` each); ``synthesize``
runs it in chunks, normalises like the data and wraps a ``SyntheticSet``
(``genprior synthesize METHOD PRIOR OUT_DIR --ipc N``).

- ``d4m`` (Su et al., CVPR 2024): k-means prototypes (k = IPC) of each class's encoded real
  images, each noised to ``strength`` and denoised with its class (img2img). ``strength``
  0.7 is what D4M's public code runs (its ImageNet script; ``recipes/d4m.py``).
- ``mgd3`` (Chan-Santiago et al., ICML 2025): samples from noise steered towards the class's
  k-means modes during the first half of the trajectory (λ = 0.1; the paper also uses CFG 4,
  set with the prior's ``guidance_scale``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch

from ..data import RealData
from ..distill.common import check_fit
from ..errors import GenpriorError
from ..generate import class_index, class_labels
from ..images import resize_images
from ..progress import progress_bar
from ..registry import Registry
from ..synset import SyntheticSet
from .mode import ModeGuidance
from .modes import class_modes
from .sampler import _check, check_eta, check_strength, guided_sample, noise_seeds

SAMPLING_METHODS = Registry("training-free method")
D4M_PAPER = "Su, Hou, Lin & Wang, D4M: Dataset Distillation via Disentangled Diffusion Model, CVPR 2024"
MGD3_PAPER = "Chan-Santiago et al., Mode-Guided Dataset Distillation using Diffusion Models, ICML 2025"
IGD_PAPER = "Chen et al., Influence-Guided Diffusion for Dataset Distillation, ICLR 2025"
D3HR_PAPER = "Zhao et al., Taming Diffusion for Dataset Distillation with High Representativeness, ICML 2025"
CAO2_PAPER = "CaO2: Rectifying Inconsistencies in Diffusion-Based Dataset Distillation, ICCV 2025"


def _chunks(n: int, size: int):
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def check_number(name: str, value: Any) -> float:
    """A real-valued method option, or one line naming what it takes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GenpriorError(f"option {name} takes a finite number, e.g. --option {name}=0.1; got {value!r}")
    return float(value)


def decode_x0(prior: Any, x0: torch.Tensor, resolution: int) -> torch.Tensor:
    """Clean samples in the prior's denoising space -> images normalised like its data at
    ``resolution``, differentiably (what a classifier of the real data sees)."""
    images = prior.from_m11(resize_images(prior._from_x0(x0).float(), prior.card["output_resolution"]))
    return resize_images(images, resolution)


@SAMPLING_METHODS.register("d4m", summary="k-means prototypes of encoded real images, img2img with their class",
                           paper=D4M_PAPER)
def d4m(prior: Any, real: RealData, ipc: int, seed: int, chunk_size: int, strength: float = 0.7) -> torch.Tensor:
    check_strength(strength)  # before the k-means' work
    prototypes = class_modes(prior, real, ipc, seed)
    labels = class_labels(real.num_classes, ipc)
    index = class_index(real.num_classes, ipc)
    out = []
    for lo, hi in _chunks(len(labels), chunk_size):
        out.append(guided_sample(prior, labels[lo:hi], x0=prototypes[lo:hi], strength=strength,
                                 noise_seeds=noise_seeds(seed, labels[lo:hi], index[lo:hi])).cpu())
        advance(hi - lo)
    return torch.cat(out)


@SAMPLING_METHODS.register("mgd3", summary="samples steered towards the class's k-means modes (mode guidance)",
                           paper=MGD3_PAPER)
def mgd3(prior: Any, real: RealData, ipc: int, seed: int, chunk_size: int, scale: float = 0.1,
         stop: float = 0.5, start: float = 0.0, eta: float = 0.0, form: str = "eps") -> torch.Tensor:
    ModeGuidance.check_options(scale, start, stop, form)  # before the k-means' work
    check_eta(eta)
    term = ModeGuidance(class_modes(prior, real, ipc, seed), scale=scale, start=start, stop=stop, form=form)
    labels = class_labels(real.num_classes, ipc)
    index = class_index(real.num_classes, ipc)
    out = []
    for lo, hi in _chunks(len(labels), chunk_size):
        x_T = image_noise(prior, labels[lo:hi], index[lo:hi], seed)
        out.append(guided_sample(prior, labels[lo:hi], x_T=x_T, terms=[term], index=torch.arange(lo, hi), eta=eta,
                                 noise_seeds=noise_seeds(seed, labels[lo:hi], index[lo:hi])).cpu())
        advance(hi - lo)
    return torch.cat(out)


_BAR: list = []  # the progress bar of the running ``synthesize`` (methods report finished images to it)


def advance(n: int) -> None:
    """Report ``n`` finished images to the progress bar of the running ``synthesize``."""
    if _BAR:
        _BAR[-1].update(n)


def image_noise(prior: Any, classes: Sequence[int], indices: Sequence[int], seed: int) -> torch.Tensor:
    """x_T of image ``indices[j]`` of class ``classes[j]``: the very noise ``genprior generate``
    draws for that image (seeded by seed, class and index), so a method's image starts where
    the plain sample of the same place starts, whatever else is drawn beside it."""
    from ..generate import image_latents

    classes, indices = [int(c) for c in classes], [int(i) for i in indices]
    return image_latents(prior, torch.tensor(classes), classes, indices, seed, "x_T")["x_T"]


def synthesize(method: str, prior: Any, real: RealData, ipc: int, seed: int = 0, chunk_size: int = 64,
               options: Optional[Dict[str, Any]] = None, prior_ref: Optional[str] = None,
               progress: bool = True, resize: bool = False, mixed_precision: str = "no",
               device: Optional[str] = None) -> SyntheticSet:
    """A set of ``ipc`` images per class of ``real`` made by ``method`` with ``prior``.
    ``resize``: the prior's images are resized to the dataset's size; ``mixed_precision``
    ``bf16`` runs the model in bfloat16 (``fp16`` needs a GPU)."""
    import inspect

    from ..distill.common import compute_dtype
    from ..generate import check_generate_options

    fn = SAMPLING_METHODS.get(method)
    _check(prior)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_generate_options(ipc, chunk_size, mixed_precision, dev)
    check_fit(prior, real, resize=resize)
    accepted = list(inspect.signature(fn).parameters)[5:]  # after prior, real, ipc, seed, chunk_size
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise GenpriorError(f"{method} takes no option {', '.join(unknown)}; its options: {', '.join(accepted)}")
    dtype = compute_dtype(mixed_precision)
    prior.set_normalization(real.mean, real.std)
    prior.requires_grad_(False).eval().to(dev)
    bar = progress_bar(total=real.num_classes * ipc, desc=f"{method} ipc {ipc}", unit="img", disable=not progress)
    _BAR.append(bar)
    try:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            images = fn(prior, real, ipc, seed, chunk_size, **(options or {})).float().cpu()
    finally:
        _BAR.pop()
        bar.close()
    images = resize_images(images, real.resolution)
    return SyntheticSet(images=images, labels=class_labels(real.num_classes, ipc), mean=real.mean,
                        std=real.std, dataset=real.name, class_names=real.class_names, method=method,
                        prior=prior_ref, config={"method": method, "options": dict(options or {}), "seed": seed,
                                                 "resize": resize, "mixed_precision": mixed_precision,
                                                 "prior_card": prior.describe()})
