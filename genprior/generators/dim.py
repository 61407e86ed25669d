"""DiM: Distilling Dataset into Generative Model (Wang et al., 2023; reference: vimar-gu/DiM,
``pool_match.py``).

A class-conditional GAN keeps its adversarial game and also learns to make images that a
pool of classifiers reads as it reads real ones: for a random network of the pool, the
log-softmax outputs of a real batch and of a generated batch with the same labels (paired
image by image, under one shared augmentation) are matched by mean squared error. The
pool network is itself trained on real data as the run goes: before every generator step
it takes ``pool_steps`` SGD steps on augmented real batches, and a fresh network of a
random pool architecture replaces it every ``pool_reset_every`` iterations (the reference:
once per epoch of the real data). Generator loss = adversarial + ``match_weight`` x match.

Departures, each an option: the reference continues a WGAN-GP AC-GAN it trained itself
(G and D at lr 5e-6 for 100 epochs); genprior fine-tunes a shipped prior with the prior's
own adversarial loss (non-saturating logistic + lazy R1, ``gan.GANMethod``) and a fresh
discriminator of its family, warmed up for ``d_warmup`` steps against the frozen
generator (the shipped priors carry no discriminator), at a generator lr of 1e-4 since a
CPU run is about a hundredth of the reference's steps. ``match="dm"`` matches per-class
mean embeddings instead of logits (the issue's alternative term).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import GenpriorError
from ..matching.base import check_number
from .base import GENERATOR_METHODS
from .gan import GANMethod

PAPER = "Wang et al., DiM: Distilling Dataset into Generative Model, 2023"
#: the reference's pool (convnet, resnet10, resnet18, resnet10_ap, resnet18_ap) as far as genprior has it
PAPER_POOL = ("convnet", "resnet_ap10", "resnet18", "resnet18_ap")
MATCHES = ("logit", "dm")


def class_mean_distance(e_real: Tensor, e_fake: Tensor, labels: Tensor) -> Tensor:
    """Σ over the batch's classes of the squared distance between mean embeddings."""
    loss = e_fake.new_zeros(())
    for c in labels.unique().tolist():
        where = (labels == c).to(e_fake.device)
        loss = loss + (e_real[where].mean(0) - e_fake[where].mean(0)).square().sum()
    return loss


@GENERATOR_METHODS.register("dim", summary="DiM: a GAN trained with logit matching against a pool of classifiers "
                            "that learn from real data", paper=PAPER)
class DiM(GANMethod):
    name = "dim"
    paper = PAPER
    OPTIONS = {**GANMethod.BASE_OPTIONS, "pool": PAPER_POOL, "match": "logit", "match_weight": 0.01}

    def resolve_matching_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        if opts["match"] not in MATCHES:
            raise GenpriorError(f"dim: match must be one of {', '.join(MATCHES)}, got {opts['match']!r}")
        if check_number(self.name, "match_weight", opts["match_weight"]) == 0:
            raise GenpriorError("dim: match_weight must be positive (it is the method)")
        return opts

    def match_loss(self, real: Tensor, fake: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        if self.dsa is not None:  # one augmentation for the real and the generated batch
            real, fake = self.dsa.siamese(real, fake, generator=generator)
        net = self.pool_net
        if self.opts["match"] == "logit":
            # the reference: MSE between log-softmax outputs, image by image
            return (F.log_softmax(net(real), dim=1) - F.log_softmax(net(fake), dim=1)).square().mean()
        return class_mean_distance(net.embed(real), net.embed(fake), labels)

    def matching(self, real: Tensor, fake: Tensor, labels: Tensor,
                 generator: torch.Generator) -> Tuple[Tensor, Dict[str, Tensor]]:
        match = self.match_loss(real, fake, labels, generator)
        return self.opts["match_weight"] * match, {"match": match}
