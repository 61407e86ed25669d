"""Evaluation networks: ConvNet of the DC protocol and the cross-architecture pool.

Every net has ``forward(x) -> logits``, ``embed(x) -> (N, feature_dim)``
penultimate features (distribution matching, coresets) and ``features(x)``, the
output of each block or stage (layer-wise feature matching).
"""
from __future__ import annotations

import inspect
from typing import List, Optional, Tuple

from torch import nn

from ..errors import GenpriorError
from . import alexnet, convnet, resnet, vgg, vit  # noqa: F401  (imported to register)
from ._registry import NETS

RESOLUTIONS: Tuple[int, ...] = (28, 32, 64, 128)
CHANNELS: Tuple[int, ...] = (1, 3)
CROSS_ARCH_POOL: Tuple[str, ...] = ("convnet", "alexnet", "vgg11", "resnet18", "resnet18_bn", "resnet18_ap", "vit")


def net_options(name: str) -> List[str]:
    """The overrides `create_net` accepts for `name`: the entry point's keyword-only arguments."""
    params = inspect.signature(NETS.get(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def create_net(name: str, channels: int, num_classes: int, resolution: int, **overrides) -> nn.Module:
    """A freshly initialised network; the input shapes are checked here so every family can trust them."""
    accepted = net_options(name)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise GenpriorError(
            f"network {name!r} takes no option {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    if channels not in CHANNELS or isinstance(channels, bool):
        raise GenpriorError(f"network {name!r}: channels must be one of {CHANNELS}, got {channels!r}")
    if resolution not in RESOLUTIONS or isinstance(resolution, bool):
        raise GenpriorError(f"network {name!r}: resolution must be one of {RESOLUTIONS} px, got {resolution!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise GenpriorError(f"network {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    return NETS.get(name)(channels, num_classes, resolution, **overrides)


def list_nets(pattern: Optional[str] = None) -> List[str]:
    return NETS.names(pattern)


__all__ = ["CROSS_ARCH_POOL", "NETS", "RESOLUTIONS", "create_net", "list_nets", "net_options"]
