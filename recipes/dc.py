"""DC: Dataset Condensation with Gradient Matching (Zhao, Mopuri & Bilen, ICLR 2021) — pixel space,
and its augmented successor DSA (Zhao & Bilen, ICML 2021) as ``--variant dsa``.

    python recipes/dc.py                         # DC: mnist5k, IPC 1, from noise, no augmentation
    python recipes/dc.py --ipc 10                # outer/inner loops 10/50, as the paper sets for IPC 10
    python recipes/dc.py --variant dsa           # DSA: from real images, siamese augmentation

Synthetic pixels move by SGD (lr 0.1, momentum 0.5) so that the gradients they induce
in a ConvNet match those of real images, layer by layer; the network is re-initialised
every iteration and trained on the synthetic set between updates (the IPC-dependent
outer/inner loops of the paper). DC starts from Gaussian noise and matches without
augmentation (the reference code's defaults); DSA starts from real images and applies
the same differentiable augmentation to both batches. The papers run 1,000 iterations;
the default here is cut for a CPU.

Faithfulness (benchmarks/faithfulness.py): on the same draws one DC and one DSA iteration
give the reference code's (VICO-UoE/DatasetCondensation ``main.py``) updated images bit for
bit, and every DSA op matches the reference's; genprior departs from it nowhere in the
update. At IPC 1 the ten starting images alone move ConvNet accuracy by about 3 points (85.2
against 88.4 % for two starts of the same seed-0 DSA run), so compare runs from one start:
``--init invert --init-from SET_DIR`` starts from a given set's images.
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "pixel", "loss": "dc", "ipc": 1,
            "optimizer": "sgd", "momentum": 0.5, "lr": 0.1, "iterations": 50}
VARIANTS = {
    "dc": {"method": "dc", "init": "random", "loss_options": {"dsa": False}},
    "dsa": {"method": "dsa", "init": "invert", "loss_options": {"dsa": True}},
}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS, VARIANTS)
