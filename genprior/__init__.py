"""genprior: dataset condensation with generative priors.

The public names below load lazily, so ``import genprior`` stays cheap for the CLI.
"""
import importlib

__version__ = "0.1.0"

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
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'genprior' has no attribute {name!r}")
