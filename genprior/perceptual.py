"""Perceptual distance (LPIPS) and the diversity of a synthetic set.

Zhang, Isola, Efros, Shechtman & Wang, The Unreasonable Effectiveness of Deep Features as
a Perceptual Metric, CVPR 2018 (the ``lpips`` package). LPIPS compares images through the
features of an ImageNet-trained backbone (AlexNet by default) weighted by learned linear
layers, which the package ships. The backbone's ImageNet weights are torchvision's: genprior
never downloads them, so the real metric runs where they are in the torch cache
(``$TORCH_HOME/hub/checkpoints``, e.g. ``alexnet-owt-7be5be79.pth``); elsewhere, when a
fallback is allowed, the backbone is randomly initialised (``pnet_rand=True``) from a fixed
seed: one random-feature distance everywhere, not the published metric, and every output
that uses it says so (``weights``).

``class_diversity`` is the mean pairwise LPIPS distance within each class of a set, the
diversity figure generative condensation papers report beside accuracy. Images smaller
than 64 px are resized up to 64 px first (LPIPS's AlexNet needs that much to keep its
deepest features), and one-channel images are repeated to three.
"""
from __future__ import annotations

import os
import sys
from itertools import combinations
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .errors import GenpriorError

#: LPIPS backbones and the torchvision weights file each needs in the torch cache
BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
MIN_SIZE = 64
#: the seed the random-backbone fallback is drawn from: the same distance in every process
RANDOM_BACKBONE_SEED = 0
_ANNOUNCED: set = set()  # backbones whose fallback this process has announced


def backbone_weights_file(backbone: str) -> Path:
    """Where torchvision keeps (and LPIPS would download) the backbone's ImageNet weights."""
    import torchvision.models as tvm

    if backbone not in BACKBONES:
        raise GenpriorError(f"unknown LPIPS backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    url = getattr(tvm, BACKBONES[backbone]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def lpips_metric(backbone: str = "alex", allow_fallback: bool = True,
                 device: str = "cpu") -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """An LPIPS module (frozen, eval mode) and what it is: ``{"metric": "lpips", "backbone",
    "weights": "imagenet" | "random (...)"}``. Without the backbone's weights in the cache,
    the random-backbone fallback, announced in one line on stderr (once per process), or a
    one-line error naming the file when it is not allowed."""
    import warnings

    import lpips

    weights = backbone_weights_file(backbone)
    real = weights.is_file()
    if not real and not allow_fallback:
        raise GenpriorError(f"LPIPS ({backbone}) needs its ImageNet backbone weights at {weights}; copy that file "
                            "there (genprior never downloads), or allow the random-backbone fallback (drop "
                            "--no-lpips-fallback)")
    if not real and backbone not in _ANNOUNCED:
        _ANNOUNCED.add(backbone)
        print(f"genprior: LPIPS ({backbone}) runs on a random backbone (seed {RANDOM_BACKBONE_SEED}), not the "
              f"published metric: {weights.name} is not in the torch cache ({weights.parent})", file=sys.stderr)
    # torchvision's deprecation notes about LPIPS's loading are silenced; a random backbone is drawn
    # from a fixed seed, so every process and every row of a table measures with the same one, and
    # its draws leave the caller's random-number stream where it was
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(RANDOM_BACKBONE_SEED)
        model = lpips.LPIPS(net=backbone, pretrained=True, pnet_rand=not real, verbose=False)
    model = model.eval().requires_grad_(False).to(device)
    info = {"metric": "lpips", "backbone": backbone,
            "weights": "imagenet" if real else (f"random, seed {RANDOM_BACKBONE_SEED} (pnet_rand=True: {weights.name} "
                                                "is not in the torch cache)")}
    return model, info


def to_lpips_input(images01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (N, C, H, W) -> LPIPS's input: three channels in [-1, 1], at least 64 px."""
    x = images01.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != 3:
        raise GenpriorError(f"LPIPS compares 1- or 3-channel images, got {x.shape[1]} channels")
    if min(x.shape[-2:]) < MIN_SIZE:
        scale = MIN_SIZE / min(x.shape[-2:])
        x = F.interpolate(x, size=(round(x.shape[-2] * scale), round(x.shape[-1] * scale)), mode="bilinear",
                          align_corners=False)
    return x * 2 - 1


@torch.no_grad()
def class_diversity(synset, metric: Optional[torch.nn.Module] = None, info: Optional[Dict[str, Any]] = None,
                    backbone: str = "alex", batch_size: int = 256, device: str = "cpu",
                    max_pairs: int = 1000, seed: int = 0, allow_fallback: bool = True) -> Dict[str, Any]:
    """Mean pairwise LPIPS distance within each class of ``synset`` (every pair i < j, or
    ``max_pairs`` of them drawn from ``seed`` where a class has more: IPC 46 and up), and its
    mean over classes; ``None`` at IPC 1, where a class has no pair. Without ``metric``, the
    ``backbone``'s LPIPS (``allow_fallback``: see ``lpips_metric``)."""
    if metric is None:
        metric, info = lpips_metric(backbone, allow_fallback=allow_fallback, device=device)
    x = to_lpips_input(synset.pixels()).to(device)
    gen = torch.Generator().manual_seed(seed)
    per_class = []
    for c in range(synset.num_classes):
        idx = torch.nonzero(synset.labels == c).flatten().tolist()
        pairs = list(combinations(idx, 2))
        if len(pairs) > max_pairs:
            pairs = [pairs[k] for k in torch.randperm(len(pairs), generator=gen)[:max_pairs].tolist()]
        if not pairs:
            per_class.append(None)
            continue
        total = 0.0
        for b in range(0, len(pairs), batch_size):
            i, j = zip(*pairs[b:b + batch_size])
            total += float(metric(x[list(i)], x[list(j)]).sum())
        per_class.append(total / len(pairs))
    done = [d for d in per_class if d is not None]
    return {**(info or {}), "input_size": list(x.shape[-2:]), "max_pairs_per_class": max_pairs,
            "mean": sum(done) / len(done) if done else None, "per_class": per_class}
