"""The network registry, apart from `__init__` so that family files can register into it."""
from ..registry import Registry

NETS = Registry("network")
