"""Gradient matching: synthetic images should move a network the way real images do.

Zhao, Mopuri & Bilen, Dataset Condensation with Gradient Matching, ICLR 2021, with the
siamese augmentation of Zhao & Bilen, Dataset Condensation with Differentiable Siamese
Augmentation, ICML 2021 (reference: VICO-UoE/DatasetCondensation ``main.py`` and
``utils.py``). Every iteration starts from a fresh network; the images are updated
``outer_loop`` times along its training, and between two updates the network trains
``inner_loop`` epochs on the synthetic set, so the images are matched along the
trajectory a network takes when it learns from them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment import DSA
from ..errors import GenpriorError
from .base import MATCHERS, Matcher, check_positive_float, check_positive_int

PAPER = "Zhao, Mopuri & Bilen, Dataset Condensation with Gradient Matching, ICLR 2021"

# (outer_loop, inner_loop) per IPC: ``get_loops`` of the reference.
DC_LOOPS: Dict[int, Tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}

# The reference's guard against a zero norm in the cosine.
COSINE_EPS = 1e-6


def layer_gradient_distance(g_real: Tensor, g_syn: Tensor) -> Tensor:
    """``distance_wb`` of the reference: per output neuron, 1 - cosine of the flattened
    weight gradients, summed. Vectors (biases, norm scales) count 0, as in the reference."""
    if g_real.dim() < 2:
        return g_real.new_zeros(())
    g_real = g_real.reshape(g_real.shape[0], -1)
    g_syn = g_syn.reshape(g_syn.shape[0], -1)
    cosine = (g_real * g_syn).sum(dim=-1) / (g_real.norm(dim=-1) * g_syn.norm(dim=-1) + COSINE_EPS)
    return (1.0 - cosine).sum()


def gradient_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    """The reference's ``match_loss`` with ``dis_metric='ours'``: layer distances summed."""
    return sum(layer_gradient_distance(r, s) for r, s in zip(g_real, g_syn))


def resolve_loops(owner: str, ipc: int, outer_loop: Optional[int], inner_loop: Optional[int]) -> Tuple[int, int]:
    """Fill unset loop counts from DC's per-IPC table; an IPC outside it must set both."""
    if outer_loop is None or inner_loop is None:
        if ipc not in DC_LOOPS:
            known = ", ".join(str(k) for k in DC_LOOPS)
            raise GenpriorError(
                f"{owner}: the paper sets outer/inner loops only for IPC {known}; pass outer_loop= and inner_loop= for IPC {ipc}"
            )
        outer_loop = DC_LOOPS[ipc][0] if outer_loop is None else outer_loop
        inner_loop = DC_LOOPS[ipc][1] if inner_loop is None else inner_loop
    return check_positive_int(owner, "outer_loop", outer_loop), check_positive_int(owner, "inner_loop", inner_loop)


def train_epochs(net: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor,
                 epochs: int, batch_size: int, dsa: Optional[DSA], generator: torch.Generator) -> None:
    """``epochs`` shuffled passes over (images, labels) with per-image DSA when enabled:
    DC's inner loop on the synthetic set, and how MTT trains its experts on real data."""
    net.train()
    labels = labels.to(images.device)
    n = images.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]
            if dsa is not None:
                x = dsa(x, generator=generator)
            loss = F.cross_entropy(net(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class TrainedOnTheSet(Matcher):
    """A matcher whose network is drawn afresh each iteration and trains on the synthetic set
    between its ``outer_loop`` updates (``inner_loop`` epochs, SGD ``lr_net``, batch
    ``batch_train``), as DC's loops: DC and CAFE. Not trained after an iteration's last update."""

    def resolve_loop_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        opts["outer_loop"], opts["inner_loop"] = resolve_loops(self.name, self.ipc, opts["outer_loop"], opts["inner_loop"])
        opts["lr_net"] = check_positive_float(self.name, "lr_net", opts["lr_net"])
        check_positive_int(self.name, "batch_train", opts["batch_train"])
        return opts

    @property
    def updates_per_iteration(self) -> int:
        return self.opts["outer_loop"]

    def start_iteration(self, it: int, generator: torch.Generator) -> None:
        self.net = self.new_net()
        self.net.train()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=self.opts["lr_net"])
        self.updates_done = 0

    def after_update(self, syn_images: Tensor, syn_labels: Tensor, generator: torch.Generator) -> None:
        self.updates_done += 1
        if self.updates_done >= self.opts["outer_loop"]:
            return
        train_epochs(self.require_net(), self.optimizer, syn_images.detach(), syn_labels,
                     self.opts["inner_loop"], self.opts["batch_train"], self.dsa, generator)


@MATCHERS.register("dc", summary="gradient matching along a network trained on the synthetic set", paper=PAPER)
class DC(TrainedOnTheSet):
    """Paper defaults: ConvNet, batch_real 256; ``outer_loop``/``inner_loop`` 1/1 at IPC 1,
    10/50 at IPC 10, 20/25, 30/20, 40/15 and 50/10 at IPC 20-50; the network trains with
    SGD lr 0.01 (``lr_net``), batch 256 (``batch_train``). Loop: 1,000 iterations, SGD on
    the images with lr 0.1 and momentum 0.5, noise initialisation (DSA: real images).
    As in the reference, the network is not trained after the last update of an
    iteration. With a batch-norm net the reference freezes statistics computed on
    real images; here every forward uses its own batch statistics."""

    name = "dc"
    paper = PAPER
    OPTIONS = {"outer_loop": None, "inner_loop": None, "lr_net": 0.01, "batch_train": 256}
    paper_loop = {"iterations": 1000, "optimizer": "sgd", "lr_images": 0.1, "momentum": 0.5, "init": "noise"}

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        return self.resolve_loop_options(opts)

    def start_iteration(self, it: int, generator: torch.Generator) -> None:
        super().start_iteration(it, generator)
        self.matched = [p for p in self.net.parameters() if p.dim() >= 2]

    def class_loss(self, real: Tensor, syn: Tensor, label: int, generator: torch.Generator) -> Tensor:
        net = self.require_net()
        real, syn = self.augment_pair(real, syn, generator)
        target_real = torch.full((real.shape[0],), label, dtype=torch.long, device=real.device)
        target_syn = torch.full((syn.shape[0],), label, dtype=torch.long, device=syn.device)
        g_real = torch.autograd.grad(F.cross_entropy(net(real), target_real), self.matched)
        g_real = [g.detach() for g in g_real]
        g_syn = torch.autograd.grad(F.cross_entropy(net(syn), target_syn), self.matched, create_graph=True)
        return gradient_distance(g_real, g_syn)
