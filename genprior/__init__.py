"""genprior: dataset condensation with generative priors.

The public names below load lazily, so ``import genprior`` stays cheap for the CLI.
Importing it sets the process's allocator to keep freed step buffers (``runtime.py``;
``GENPRIOR_KEEP_MEMORY=0`` turns that off).
"""
import importlib

from . import runtime as _runtime
from .errors import GenpriorError as _GenpriorError

__version__ = "0.1.0"

try:  # freed step buffers stay in the heap: every loop runs about twice as fast (runtime.py)
    _runtime.keep_freed_memory()
except _GenpriorError:
    pass  # a bad GENPRIOR_KEEP_MEMORY: the CLI and memory_setting() report it

_EXPORTS = {
    "load_dataset": "data",
    "list_datasets": "data",
    "RealData": "data",
    "create_net": "nets",
    "list_nets": "nets",
    "DSA": "augment",
    "SyntheticSet": "synset",
    "save_synset": "synset",
    "load_synset": "synset",
    "evaluate_synset": "evaluate",
    "make_baseline": "baselines",
    "GenpriorError": "errors",
    "memory_setting": "runtime",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'genprior' has no attribute {name!r}")
