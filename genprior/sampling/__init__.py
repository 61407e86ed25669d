"""Sampling diffusion priors well: one guided sampler, pluggable guidance terms, and the
training-free methods built on them (D4M, MGD3, IGD, D3HR, CaO2)."""
from . import cao2, d3hr, influence  # noqa: F401  (their methods and terms register themselves)
from .methods import SAMPLING_METHODS, synthesize
from .sampler import GUIDANCE, GuidanceTerm, StepContext, guided_sample

__all__ = ["GUIDANCE", "SAMPLING_METHODS", "GuidanceTerm", "StepContext", "cao2", "d3hr", "guided_sample", "influence",
           "synthesize"]
