"""CaO2: Rectifying Inconsistencies in Diffusion-Based Dataset Distillation (ICCV 2025) — training-free sampling.

    python recipes/cao2.py                       # mnist5k, IPC 10, the shipped diffusion prior, then `quick` evaluation
    python recipes/cao2.py --option classifier=DIR

Over-generate ``ratio`` × IPC samples per class, keep the IPC that a classifier of the real
data labels with their own class at the highest confidence, then refine each kept sample by
100 Adam steps (lr 6e-4) on the denoising loss at low noise (MSE + 10 · max |ε̂ − ε|), the
model conditioned on the null class. The public code's ImageNet settings: ratio 4, CFG 2.7,
50 steps, a pretrained ResNet-18 as the classifier; here the classifier is the dataset's
ConvNet-3 (trained once by this recipe into runs/teachers/ when no ``classifier`` is given,
50 epochs).

Sampling is DDIM (eta 0); the authors' code takes DiT's ancestral steps with a learned variance,
which genprior's priors lack: ``--option eta=1`` runs ancestral steps with the fixed posterior
variance, measured on the pixel prior at IPC 10 below DDIM (89.30 ± 0.08 against 91.00 ± 0.22 on
ConvNet). README, "Faithfulness", lists what else differs from that code.
"""
from genprior.cli import recipe_teacher, run_sampling_recipe

DEFAULTS = {"method": "cao2", "prior": "mnist5k-diffusion", "dataset": "mnist5k", "ipc": 10,
            "option": {"ratio": 4, "refine_steps": 100, "refine_lr": 6e-4, "condition": "null"},
            "prior_option": {"num_inference_steps": 50, "guidance_scale": 2.7}}


def setup(args, options):
    return {} if "classifier" in options else {"classifier": recipe_teacher(args)}


if __name__ == "__main__":
    run_sampling_recipe(__doc__, DEFAULTS, setup=setup)
