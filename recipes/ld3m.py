"""LD3M: Latent Dataset Distillation with Diffusion Models (Moser et al., 2024).

    python recipes/ld3m.py                       # DM on x_T + class embedding of the shipped diffusion prior, mnist5k IPC 10

The initial noise x_T and a per-image class embedding are decoded through a few
differentiable DDIM steps in which the initial state is added back into every step with
a linearly decaying weight (LD3M's skip, ``skip_weight=1``), so gradients reach x_T
despite the long chain. x_T starts from the DDIM inversion of real images, as LD3M
initialises from real data. Few DDIM steps keep it affordable on a CPU.
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "mnist5k-diffusion", "space": "x_T+class", "loss": "dm", "method": "ld3m",
            "ipc": 10, "init": "invert", "optimizer": "adam", "lr": 0.01, "chunk_size": 10, "iterations": 100,
            "prior_options": {"num_inference_steps": 5, "skip_weight": 1.0}}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS)
