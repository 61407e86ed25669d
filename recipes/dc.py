"""DC: Dataset Condensation with Gradient Matching (Zhao, Mopuri & Bilen, ICLR 2021) — pixel space.

    python recipes/dc.py                         # mnist5k, IPC 1
    python recipes/dc.py --ipc 10                # outer/inner loops 10/50, as the paper sets for IPC 10

Synthetic pixels (from noise) move by SGD (lr 0.1, momentum 0.5) so that the gradients
they induce in a ConvNet match those of real images, layer by layer; the network is
re-initialised every iteration and trained on the synthetic set between updates
(the IPC-dependent outer/inner loops of the paper). The paper runs 1,000 iterations;
the default here is cut for a CPU.
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "pixel", "loss": "dc", "method": "dc", "ipc": 1, "init": "random",
            "optimizer": "sgd", "momentum": 0.5, "lr": 0.1, "iterations": 50}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS)
