"""Distillation loops: optimise latents of a frozen prior (``latent``); export them (``export``)."""
from .export import export_run, load_latents
from .latent import DistillConfig, LatentDistiller, distill

__all__ = ["DistillConfig", "LatentDistiller", "distill", "export_run", "load_latents"]
