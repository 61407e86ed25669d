"""Baselines every table carries: real images chosen per class, written as synthetic sets.

``random`` picks uniformly. ``herding`` (Welling, ICML 2009) and ``kcenter``
(Sener & Savarese, ICLR 2018) select in the embedding of a ConvNet-3 trained
briefly on the real train split, as DC-BENCH does with a trained network; the
embedding network and its training are recorded in the set's config.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch

from .data import RealData
from .errors import GenpriorError
from .registry import Registry
from .synset import SyntheticSet

BASELINES = Registry("baseline")

EMBED_NET = "convnet"
EMBED_EPOCHS = 5
EMBED_BATCH = 256


def _check_ipc(train: RealData, ipc: int) -> None:
    if ipc < 1:
        raise GenpriorError(f"IPC must be at least 1, got {ipc}")
    smallest = min(train.class_counts())
    if ipc > smallest:
        raise GenpriorError(f"IPC {ipc} exceeds the smallest class of {train.name} train ({smallest} images); use --ipc {smallest} or less")


def _make_set(train: RealData, picks: List[torch.Tensor], method: str, config: Dict[str, Any]) -> SyntheticSet:
    index = torch.cat(picks)
    return SyntheticSet(
        images=train.images[index].clone(),
        labels=train.labels[index].clone(),
        mean=train.mean,
        std=train.std,
        dataset=train.name,
        class_names=train.class_names,
        method=method,
        config={**config, "train_indices": index.tolist()},
    )


@BASELINES.register("random", summary="random real images per class")
def random_real(train: RealData, ipc: int, seed: int = 0) -> SyntheticSet:
    _check_ipc(train, ipc)
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(train.num_classes):
        idx = train.indices_of_class(c)
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:ipc]])
    return _make_set(train, picks, "random", {"ipc": ipc, "seed": seed})


@BASELINES.register("whole", summary="the whole train split (its largest class-balanced part; the IPC is ignored)")
def whole_split(train: RealData, ipc: int = 0, seed: int = 0) -> SyntheticSet:
    """The reference every set is measured against (DD-Ranking's full-data accuracy): every
    train image, or, where the classes differ in size, the first ``min(class size)`` images of
    each class, so that it is a valid set."""
    counts = train.class_counts()
    picks = [train.indices_of_class(c)[:min(counts)] for c in range(train.num_classes)]
    return _make_set(train, picks, "whole", {"per_class": min(counts), "train_images": len(train)})


def train_embedding_net(train: RealData, seed: int, epochs: int = EMBED_EPOCHS, device: str = "cpu") -> torch.nn.Module:
    """A ConvNet-3 trained for a few epochs on the real train split (no augmentation)."""
    from .matching.dc import train_epochs
    from .nets import create_net

    torch.manual_seed(seed)
    net = create_net(EMBED_NET, train.channels, train.num_classes, train.resolution).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    train_epochs(net, opt, train.images.to(device), train.labels, epochs, EMBED_BATCH, None,
                 torch.Generator().manual_seed(seed))
    return net.eval()


@torch.no_grad()
def embed_all(net: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    device = next(net.parameters()).device
    return torch.cat([net.embed(images[i:i + batch].to(device)).cpu() for i in range(0, len(images), batch)])


def herding_select(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Greedily pick points whose running mean stays closest to the mean of ``feats``."""
    mu = feats.mean(0)
    chosen: List[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(len(feats), dtype=torch.bool)
    for step in range(k):
        dist = ((mu - (total + feats) / (step + 1)) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        total += feats[i]
        available[i] = False
    return torch.tensor(chosen, dtype=torch.long)


def kcenter_select(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center: start at the point nearest the mean, then repeatedly take the farthest point."""
    first = int(((feats - feats.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    min_dist = ((feats - feats[first]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(min_dist.argmax())
        chosen.append(i)
        min_dist = torch.minimum(min_dist, ((feats - feats[i]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)


def _embedding_baseline(name: str, select: Callable[[torch.Tensor, int], torch.Tensor]):
    def method(train: RealData, ipc: int, seed: int = 0, embed_epochs: int = EMBED_EPOCHS) -> SyntheticSet:
        _check_ipc(train, ipc)
        net = train_embedding_net(train, seed, epochs=embed_epochs)
        feats = embed_all(net, train.images)
        picks = []
        for c in range(train.num_classes):
            idx = train.indices_of_class(c)
            picks.append(idx[select(feats[idx], ipc)])
        config = {"ipc": ipc, "seed": seed, "embedding": f"{EMBED_NET} trained {embed_epochs} epochs on the real train split, penultimate features"}
        return _make_set(train, picks, name, config)

    method.__name__ = name
    method.__doc__ = f"{name} selection per class in a trained ConvNet-3 embedding."
    return method


herding = BASELINES.register("herding", summary="herding selection in a trained ConvNet-3 embedding")(
    _embedding_baseline("herding", herding_select)
)
kcenter = BASELINES.register("kcenter", summary="k-center selection in a trained ConvNet-3 embedding")(
    _embedding_baseline("kcenter", kcenter_select)
)


def make_baseline(name: str, train: RealData, ipc: int, seed: int = 0, **kwargs: Any) -> SyntheticSet:
    return BASELINES.get(name)(train, ipc, seed=seed, **kwargs)


@torch.no_grad()
def prior_samples(prior, train: RealData, ipc: int, seed: int = 0, space: str | None = None,
                  chunk_size: int = 100, prior_ref: str | None = None) -> SyntheticSet:
    """The "prior only" baseline: ``ipc`` random samples per class, no distillation, normalised
    like ``train`` so it is evaluated like any set (``generate.generate_set``: nested in the IPC,
    decoded in chunks)."""
    from .generate import generate_set

    return generate_set(prior, train, ipc, seed=seed, space=space, chunk_size=chunk_size, method="prior-samples",
                        prior_ref=prior_ref)
