"""DCGM: Dataset Condensation via Generative Model (Zhang et al., 2023, arXiv 2309.07698).

A class-conditional GAN keeps its adversarial game (``gan.GANMethod``) and learns three
more terms through a network of a pool that learns from real data as the run goes:

- feature matching to real class statistics: Σ_c ‖mean φ(real_c) − mean φ(generated_c)‖²
  of the network's embeddings φ, under one augmentation for both batches;
- intra-class diversity: the mean cosine similarity between the embeddings of two
  different generated images of the same class, minimised ("pushing each sample away from
  the others of the same class");
- inter-class discrimination: the mean cosine similarity between the generated class
  centres (mean embeddings) of two different classes, minimised ("widening the gap between
  the centres of different classes").

No public code of DCGM exists and only its abstract could be read, so the statistics,
the embedding (the pool network's penultimate features) and the weights (feature 0.01,
intra 0.1, inter 0.1) are genprior's choices from that description, each an option; the
GAN and pool settings are DiM's (``dim.py``).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import GENERATOR_METHODS
from .dim import class_mean_distance
from ..matching.base import check_number
from .gan import GANMethod

PAPER = "Zhang et al., Dataset Condensation via Generative Model, arXiv 2309.07698, 2023"


def intra_class_similarity(emb: Tensor, labels: Tensor) -> Tensor:
    """Mean cosine similarity over pairs of different images of one class (classes with one image skip)."""
    total, count = emb.new_zeros(()), 0
    for c in labels.unique().tolist():
        e = F.normalize(emb[(labels == c).to(emb.device)], dim=1)
        n = e.shape[0]
        if n < 2:
            continue
        sim = e @ e.T
        total = total + (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
        count += 1
    return total / max(count, 1)


def inter_class_similarity(emb: Tensor, labels: Tensor) -> Tensor:
    """Mean cosine similarity over pairs of different classes' mean embeddings."""
    classes = labels.unique().tolist()
    if len(classes) < 2:
        return emb.new_zeros(())
    centres = F.normalize(torch.stack([emb[(labels == c).to(emb.device)].mean(0) for c in classes]), dim=1)
    sim = centres @ centres.T
    k = len(classes)
    return (sim.sum() - sim.diagonal().sum()) / (k * (k - 1))


@GENERATOR_METHODS.register("dcgm", summary="DCGM: a GAN trained with class-statistics matching, intra-class "
                            "diversity and inter-class discrimination", paper=PAPER)
class DCGM(GANMethod):
    name = "dcgm"
    paper = PAPER
    OPTIONS = {**GANMethod.BASE_OPTIONS, "feature_weight": 0.01, "intra_weight": 0.1, "inter_weight": 0.1}

    def resolve_matching_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        for key in ("feature_weight", "intra_weight", "inter_weight"):
            check_number(self.name, key, opts[key])
        return opts

    def matching(self, real: Tensor, fake: Tensor, labels: Tensor,
                 generator: torch.Generator) -> Tuple[Tensor, Dict[str, Tensor]]:
        if self.dsa is not None:
            real_a, fake_a = self.dsa.siamese(real, fake, generator=generator)
        else:
            real_a, fake_a = real, fake
        net = self.pool_net
        feature = class_mean_distance(net.embed(real_a), net.embed(fake_a), labels)
        emb = net.embed(fake)  # diversity and separation of the images themselves, unaugmented
        intra, inter = intra_class_similarity(emb, labels), inter_class_similarity(emb, labels)
        o = self.opts
        terms = o["feature_weight"] * feature + o["intra_weight"] * intra + o["inter_weight"] * inter
        return terms, {"feature": feature, "intra_similarity": intra, "inter_similarity": inter}
