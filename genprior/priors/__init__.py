"""Generative priors: generators you decode through (see ``base.Prior``)."""
from .base import INIT_METHODS, Latents, Prior
from .pixel import PixelPrior

__all__ = ["INIT_METHODS", "Latents", "PixelPrior", "Prior"]
