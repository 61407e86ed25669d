"""Shims the side-by-side benchmarks (``faithfulness.py``, ``protocols_check.py``) share when they
run a paper's public code in a child process."""
from __future__ import annotations

import sys


def stand_in_modules(*names: str) -> None:
    """Empty modules in place of packages a reference imports but never calls on the path run
    (MTT's and GLaD's kornia for ZCA whitening, GLaD's ema_pytorch and its ViT's einops, IDC's
    efficientnet_pytorch), unless installed; calling anything from one says which package it
    stands in for."""
    import importlib.util
    import types

    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                continue
        except ModuleNotFoundError:  # the parent package is absent (and stood in for already, or next)
            pass
        module = types.ModuleType(name)

        def missing(attr, _name=name):
            if attr.startswith("__"):  # what the import system asks of a module (e.g. __path__)
                raise AttributeError(attr)

            def call(*a, **k):
                raise RuntimeError(f"{_name}.{attr} was called, but {_name} is not installed (a stand-in)")
            return call

        module.__getattr__ = missing
        sys.modules[name] = module
