"""Sampling diffusion priors well: one guided sampler and pluggable guidance terms."""
from .methods import SAMPLING_METHODS, synthesize
from .sampler import GUIDANCE, GuidanceTerm, StepContext, guided_sample

__all__ = ["GUIDANCE", "SAMPLING_METHODS", "GuidanceTerm", "StepContext", "guided_sample", "synthesize"]
