"""Distillation loops: optimise latents of a frozen prior (``latent``); export them (``export``);
what every loop shares (``common``)."""
from .export import export_run
from .latent import DistillConfig, LatentDistiller, distill, load_latents

__all__ = ["DistillConfig", "LatentDistiller", "distill", "export_run", "load_latents"]
