"""The interface of a method that trains the generator itself (DiM, DCGM, Minimax Diffusion),
and the registry that names them.

A method receives the prior to train (a GAN or diffusion prior, whose ``decode`` is
differentiable in its parameters), the real training split and the trainer; it says
which of the prior's parameters train, builds whatever else it needs (a discriminator,
a pool of classifiers, memories), and makes one training step per iteration through
``trainer.update(name, loss, it)``, which backpropagates with loss scaling, averages gradients
over processes and steps the optimiser registered under ``name``. All randomness comes
from the ``generator`` the trainer passes (seeded from ``(seed, it)``) and from the
global RNG the trainer seeds before each iteration, so a resumed run is bit-identical.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..data import RealData
from ..errors import GenpriorError
from ..priors.base import Prior
from ..registry import Registry

GENERATOR_METHODS = Registry("generator method")


class GeneratorMethod(ABC):
    """One way of training a generator into a dataset; subclasses set ``name``, ``paper``,
    ``OPTIONS`` (option -> paper default) and ``families`` (prior families it trains)."""

    name: str = ""
    paper: str = ""
    families: tuple = ()
    #: the shipped prior it trains when none is named (``genprior train --method NAME``)
    default_prior: str = "mnist5k-stylegan"
    OPTIONS: Dict[str, Any] = {}
    #: the generator optimiser's defaults (the paper's); the trainer's --lr overrides ``lr``
    generator_optimizer: Dict[str, Any] = {"lr": 1e-4, "betas": (0.5, 0.999)}

    def __init__(self, prior: Prior, real: RealData, device: torch.device, **options: Any):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise GenpriorError(f"method {self.name!r} takes no option {', '.join(unknown)}; "
                                f"accepted: {', '.join(sorted(self.OPTIONS)) or 'none'}")
        if self.families and prior.family not in self.families:
            raise GenpriorError(f"method {self.name!r} trains {' or '.join(self.families)} priors, not a "
                                f"{prior.family!r} one; pick a prior of that family")
        self.prior = prior
        self.real = real
        self.device = device
        self.opts = self.resolve_options({**self.OPTIONS, **options})

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        """Check option values; returns what ``describe`` records."""
        return opts

    # ---- what a method implements ------------------------------------------------------
    def trainable_parameters(self) -> List[nn.Parameter]:
        """The prior's parameters this method trains (all by default); the others stay frozen."""
        return list(self.prior.parameters())

    def extra_parameters(self) -> List[nn.Parameter]:
        """Parameters outside the prior trained with it by the generator optimiser (DiffFit's
        scale factors); ``before_export`` must fold them into the prior."""
        return []

    def before_export(self) -> None:
        """Make the prior alone compute what prior + method computes (e.g. fold scale factors)."""

    def modules(self) -> Dict[str, nn.Module]:
        """Modules besides the prior whose weights a checkpoint must hold (a discriminator,
        classifiers)."""
        return {}

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """The method's own optimisers, by name (the generator's is the trainer's)."""
        return {}

    def state_tensors(self) -> Dict[str, Tensor]:
        """Tensors besides modules and optimisers that the next iteration needs (memories)."""
        return {}

    def load_state_tensors(self, tensors: Dict[str, Tensor]) -> None:
        if tensors:
            raise GenpriorError(f"method {self.name!r} keeps no state tensors, got {', '.join(sorted(tensors))}")

    def initialize(self, trainer: Any) -> None:
        """Called once when a new run starts, before iteration 0 (e.g. a discriminator warm-up);
        draw randomness from ``seeded_generator(trainer.cfg.seed, ...)`` so it is repeatable."""

    @abstractmethod
    def step(self, trainer: Any, it: int, generator: torch.Generator) -> Dict[str, float]:
        """One training iteration; returns the logged losses, the generator's under ``loss``."""

    # ---- helpers -----------------------------------------------------------------------
    def sample_labels(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(self.real.num_classes, (n,), generator=generator)

    def real_batch(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """One real image of each label's class (with repeats across the batch)."""
        out = torch.empty(labels.shape[0], *self.real.images.shape[1:])
        for c in labels.unique().tolist():
            where = (labels == c).nonzero().flatten()
            out[where] = self.real.sample_class(c, where.numel(), generator)
        return out.to(self.device)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "paper": self.paper, **self.opts}


def create_method(name: str, prior: Prior, real: RealData, device: torch.device, **options: Any) -> GeneratorMethod:
    return GENERATOR_METHODS.get(name)(prior, real, device, **options)


def list_methods(pattern: Optional[str] = None) -> List[str]:
    return GENERATOR_METHODS.names(pattern)
