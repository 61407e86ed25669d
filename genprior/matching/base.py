"""The interface every matching loss implements, and the registry that names them.

A matcher compares synthetic images with real ones through a network and returns a
loss whose gradient reaches the synthetic images (and through them the latents of
whatever prior decoded them). Matchers never see a prior, so every loss runs on
every prior. The distillation loop drives a matcher like this, per iteration ``it``
(all randomness comes from ``generator``, which the loop seeds from (seed, it); the
loop also calls ``torch.manual_seed`` from (seed, it) before ``start_iteration``, so
network initialisations are reproducible and a run resumed between iterations is
bit-identical)::

    m.start_iteration(it, generator)
    for u in range(m.updates_per_iteration):
        if m.per_class:
            for c in classes:
                real_c = real.sample_class(c, m.batch_real, generator)
                m.class_loss(real_c, decode(latents of class c), c, generator).backward()
        else:
            m.set_loss(decode(all latents), all_labels, real, generator).backward()
        latent optimiser step (plus ``m.extra_parameters()`` at lr ``m.extra_lr``)
        m.after_update(syn_images.detach(), syn_labels, generator)

Each matcher's option defaults are its paper's; ``paper_loop`` records the settings
of the paper's outer loop (iterations, image learning rate, initialisation) that
belong to the loop rather than to the loss.
"""
from __future__ import annotations

import math
from abc import ABC
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..augment import DSA, strategy_for
from ..errors import GenpriorError
from ..nets import create_net
from ..registry import Registry

# named as the CLI's --loss flag and `genprior list` name them
MATCHERS = Registry("loss", plural="losses")

BASE_OPTIONS = ("net", "net_options", "dsa", "batch_real", "ipc")
#: the base options a user sets through the loop's own flags (--ipc, --batch-real), not --loss-option
LOOP_OPTIONS = ("batch_real", "ipc")


def check_positive_int(owner: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GenpriorError(f"{owner}: {option} must be a positive integer, got {value!r}")
    return value


def check_positive_float(owner: str, option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise GenpriorError(f"{owner}: {option} must be a positive number, got {value!r}")
    return float(value)


def check_number(owner: str, option: str, value: Any, minimum: float = 0.0) -> float:
    """A number of at least ``minimum`` (a weight, a probability, a momentum)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value < math.inf:
        raise GenpriorError(f"{owner}: {option} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def check_count(owner: str, option: str, value: Any) -> int:
    """An integer of at least 0 (a number of steps that may be none)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GenpriorError(f"{owner}: {option} must be an integer >= 0, got {value!r}")
    return value


class Matcher(ABC):
    """One objective; subclasses set ``name``, ``OPTIONS`` (option -> default) and
    implement ``class_loss`` (``per_class = True``) or ``set_loss``."""

    name: str = ""
    paper: str = ""
    per_class: bool = True
    OPTIONS: Dict[str, Any] = {}
    paper_loop: Dict[str, Any] = {}

    def __init__(self, channels: int, num_classes: int, resolution: int, dataset_name: str, *,
                 net: str = "convnet", net_options: Optional[Dict[str, Any]] = None, dsa: bool = True,
                 batch_real: int = 256, ipc: int = 1, **options: Any):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            accepted = ", ".join(sorted(set(BASE_OPTIONS + tuple(self.OPTIONS)) - set(LOOP_OPTIONS)))
            raise GenpriorError(f"loss {self.name!r} takes no option {', '.join(unknown)}; accepted: {accepted} "
                                "(and ipc, batch_real, which the loop sets from --ipc, --batch-real)")
        if not isinstance(dsa, bool):
            raise GenpriorError(f"loss {self.name!r}: dsa must be True or False, got {dsa!r}")
        self.channels = channels
        self.num_classes = num_classes
        self.resolution = resolution
        self.dataset_name = dataset_name
        self.net_name = net
        self.net_options = dict(net_options or {})
        self.batch_real = check_positive_int(self.name, "batch_real", batch_real)
        self.ipc = check_positive_int(self.name, "ipc", ipc)
        self.dsa = DSA(strategy_for(dataset_name)) if dsa else None
        self.device = torch.device("cpu")
        self.net: Optional[nn.Module] = None
        with torch.random.fork_rng(devices=[]):  # fail on bad net options now, without touching the loop's RNG
            create_net(net, channels, num_classes, resolution, **self.net_options)
        self.opts = self.resolve_options({**self.OPTIONS, **options})

    # ---- hooks for subclasses --------------------------------------------------------
    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        """Fill IPC-dependent defaults and check values; returns the options ``describe`` saves."""
        return opts

    @property
    def updates_per_iteration(self) -> int:
        return 1

    def start_iteration(self, it: int, generator: torch.Generator) -> None:
        """Called once per iteration, after the loop seeded the global RNG."""

    def class_loss(self, real: Tensor, syn: Tensor, label: int, generator: torch.Generator) -> Tensor:
        raise GenpriorError(f"matcher {self.name!r} compares whole sets; call set_loss (per_class is False)")

    def set_loss(self, syn_images: Tensor, syn_labels: Tensor, real: Any, generator: torch.Generator) -> Tensor:
        raise GenpriorError(f"matcher {self.name!r} compares one class at a time; call class_loss (per_class is True)")

    def after_update(self, syn_images: Tensor, syn_labels: Tensor, generator: torch.Generator) -> None:
        """Called after every latent optimiser step with the detached synthetic set."""

    def extra_parameters(self) -> List[Tensor]:
        """Tensors the loop optimises alongside the latents (MTT's student learning rate)."""
        return []

    @property
    def extra_lr(self) -> Optional[float]:
        """Learning rate for ``extra_parameters``; None when there are none."""
        return None

    def state_dict(self) -> Dict[str, Tensor]:
        """State that outlives an iteration and must go into the loop's checkpoint."""
        return {}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        if state:
            raise GenpriorError(f"matcher {self.name!r} keeps no state, got {', '.join(sorted(state))}")

    # ---- shared helpers --------------------------------------------------------------
    def to(self, device: Any) -> "Matcher":
        """Run on ``device``; call before building optimisers over ``extra_parameters``."""
        self.device = torch.device(device)
        if self.net is not None:
            self.net.to(self.device)
        return self

    def new_net(self) -> nn.Module:
        """A freshly initialised network from the global RNG, on this matcher's device."""
        net = create_net(self.net_name, self.channels, self.num_classes, self.resolution, **self.net_options)
        return net.to(self.device)

    def require_net(self) -> nn.Module:
        if self.net is None:
            raise GenpriorError(f"matcher {self.name!r} has no network yet; call start_iteration first")
        return self.net

    def augment_pair(self, real: Tensor, syn: Tensor, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Siamese DSA: one draw shared by the real and the synthetic batch."""
        real = real.to(syn.device)
        if self.dsa is None:
            return real, syn
        return self.dsa.siamese(real, syn, generator=generator)

    def describe(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "paper": self.paper,
            "net": self.net_name,
            "net_options": dict(self.net_options),
            "dsa": self.dsa is not None,
            "dsa_strategy": self.dsa.strategy if self.dsa is not None else None,
            "batch_real": self.batch_real,
            "ipc": self.ipc,
            **self.opts,
        }


def create_matcher(name: str, channels: int, num_classes: int, resolution: int, dataset_name: str,
                   **options: Any) -> Matcher:
    """A matcher by registered name; ``options`` are the base ones plus the matcher's own."""
    return MATCHERS.get(name)(channels, num_classes, resolution, dataset_name, **options)


def list_matchers(pattern: Optional[str] = None) -> List[str]:
    return MATCHERS.names(pattern)
