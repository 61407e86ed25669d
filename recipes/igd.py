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

The guidance is applied as the public code applies it (``form=sample``): after each ancestral
step the sample moves by a rescaled influence gradient (RMS 0.0015 · RMS(ε) · √(1 − ᾱ_t) · k)
and by −γ ∇ cos(x_t, m) away from the nearest earlier sample of its class. The code's γ 120
acts on DiT's 4×32×32 latents (4,096 values); the cosine's gradient shrinks as 1/D per value,
so on the shipped pixel prior's 784 values the same γ pushes each value 5.2× harder and turns
every class's second image (the first with a memory) into a white blot. The recipe takes
the code's push per value, γ = 120 · D / 4096 for a prior of D values per sample (23 on the
pixel prior, 5.7 on the DiT prior's 4×7×7 latents; ``--option diversity=120`` for the code's
number). Measured on the pixel prior at IPC 10, 3 ConvNet models
(``benchmarks/results/igd_forms_mnist5k_ipc10_convnet/``): 92.80 ± 0.57 against 90.70 ± 0.51
with γ 120, 91.47 ± 0.65 with no diversity term, 91.23 ± 0.31 for the issue's form
(``--option form=eps --option diversity=120``), and 91.20 ± 0.37 for ancestral steps with no
guidance; the prior's plain DDIM samples 93.27 ± 0.05. Sampling takes ancestral steps
(``eta`` 1), as the authors' code takes DiT's (with a learned variance, which genprior's priors
lack: the fixed posterior variance here); on this prior ancestral steps alone cost 2 points
against DDIM, and the guidance wins back 1.6 of them. README, "Faithfulness", lists what else
differs from that code.
"""
from genprior.cli import recipe_teacher, run_sampling_recipe

SNAPSHOTS = (0, 5, 16, 40)
DEFAULTS = {"method": "igd", "prior": "mnist5k-diffusion", "dataset": "mnist5k", "ipc": 10,
            "option": {"scale": 5.0, "start": 0.08, "stop": 0.4, "memory_size": 64,
                       "grad_images": 200, "eta": 1.0, "form": "sample"},
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
