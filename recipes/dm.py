"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023) — pixel space.

    python recipes/dm.py                         # mnist5k, IPC 10, images initialised from real ones

The reference setting: synthetic pixels start as real images and move by SGD (lr 1,
momentum 0.5) so that the mean embedding of randomly initialised ConvNets matches the
real class's, with siamese DSA. The paper runs 20,000 iterations; the default here is
cut for a CPU (pass --iterations 20000 for the paper's length).
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "pixel", "loss": "dm", "method": "dm", "ipc": 10, "init": "invert",
            "optimizer": "sgd", "momentum": 0.5, "lr": 1.0, "iterations": 200}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS)
