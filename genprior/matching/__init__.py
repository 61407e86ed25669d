"""Matching losses: how synthetic images are compared with real ones.

One file per family: ``dm.py`` (distribution matching: DM, M3D's MMD, sliced
Wasserstein), ``dc.py`` (gradient matching), ``mtt.py`` with ``experts.py``
(trajectory matching and its expert buffers), ``feature.py`` (CAFE). Each registers
itself by name in ``MATCHERS``; ``create_matcher`` builds one with its paper's defaults.
"""
from . import dc, dm, feature, mtt  # noqa: F401  (imported to register)
from .base import MATCHERS, Matcher, create_matcher, list_matchers
from .experts import ExpertBuffer, load_experts, train_experts

__all__ = ["MATCHERS", "ExpertBuffer", "Matcher", "create_matcher", "list_matchers", "load_experts", "train_experts"]
