"""IGD: Influence-Guided Diffusion for Dataset Distillation (Chen et al., ICLR 2025) — training-free sampling.

    python recipes/igd.py                        # mnist5k, IPC 10, the shipped diffusion prior, then `quick` evaluation
    python recipes/igd.py --option surrogate=DIR --option snapshots=[0,5,16,40]

A surrogate ConvNet trained on the real data, at a few points of its training, guides each
sample so that the gradient it would give the surrogate points where the class's real
gradient points (k · Σ_e cos), and away from the class's earlier samples (γ · −max cos to a
memory of 64 per class). The public code's settings: k = 5, γ = 120, guidance while the
respaced timestep lies in [30, 45] of 49 … 0 (steps 4 to 19 of 50: the window 0.08–0.4 of the
trajectory here), CFG 4, 200 real images per class for
the mean gradients, a ConvNet-6 surrogate trained 50 epochs and taken at epochs 0, 5, 16 and
40. Here the surrogate is the dataset's ConvNet-3 (trained once by this recipe into
runs/teachers/ when no ``surrogate`` is given, 50 epochs, the same snapshots).

Sampling takes ancestral steps (``eta`` 1), as the authors' code takes DiT's (with a learned
variance, which genprior's priors lack: the fixed posterior variance here); measured on the
pixel prior at IPC 10, 91.73 ± 0.34 on ConvNet against 88.47 ± 0.70 with DDIM
(``--option eta=0``). README, "Faithfulness", lists what else differs from that code.
"""
from genprior.cli import recipe_teacher, run_sampling_recipe

SNAPSHOTS = (0, 5, 16, 40)
DEFAULTS = {"method": "igd", "prior": "mnist5k-diffusion", "dataset": "mnist5k", "ipc": 10,
            "option": {"scale": 5.0, "diversity": 120.0, "start": 0.08, "stop": 0.4, "memory_size": 64,
                       "grad_images": 200, "eta": 1.0},
            "prior_option": {"num_inference_steps": 50, "guidance_scale": 4.0}}


def setup(args, options):
    """A surrogate given with ``--option surrogate=DIR`` is used with the snapshots it saved (or
    ``--option snapshots=[...]``); otherwise one is trained once with the snapshots asked for."""
    if "surrogate" in options:
        return {}
    snapshots = options.get("snapshots", list(SNAPSHOTS))
    if snapshots == "final":  # the trained network alone
        return {"surrogate": recipe_teacher(args)}
    snapshots = [snapshots] if isinstance(snapshots, int) else snapshots
    return {"surrogate": recipe_teacher(args, snapshots=snapshots), "snapshots": snapshots}


if __name__ == "__main__":
    run_sampling_recipe(__doc__, DEFAULTS, setup=setup)
