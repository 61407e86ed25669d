"""Sampling diffusion priors well: one guided sampler and pluggable guidance terms."""
from . import mode  # noqa: F401  (registers its term)
from .sampler import GUIDANCE, GuidanceTerm, StepContext, guided_sample

__all__ = ["GUIDANCE", "GuidanceTerm", "StepContext", "guided_sample"]
