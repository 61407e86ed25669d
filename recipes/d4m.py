"""D4M: Dataset Distillation via Disentangled Diffusion Model (Su, Hou, Lin & Wang, CVPR 2024) — training-free sampling.

    python recipes/d4m.py                        # mnist5k, IPC 10, the shipped diffusion prior, then `quick` evaluation
    python recipes/d4m.py --ipc 50 --option strength=0.5

Per class, k-means (k = IPC) on the real images encoded into the space the prior denoises
(VAE latents for a latent prior, pixels for a pixel prior); each prototype is noised to
``strength`` and denoised with its class (img2img). D4M runs Stable Diffusion's img2img
pipeline with the class name as its prompt; on a text-conditioned prior (a Stable-Diffusion
folder) genprior does the same, on a class-conditional one the class label is the condition. ``strength`` 0.7 and 50 DDIM steps are genprior's defaults, not values read
from D4M's code.
"""
from genprior.cli import run_sampling_recipe

DEFAULTS = {"method": "d4m", "prior": "mnist5k-diffusion", "dataset": "mnist5k", "ipc": 10,
            "option": {"strength": 0.7}, "prior_option": {"num_inference_steps": 50}}

if __name__ == "__main__":
    run_sampling_recipe(__doc__, DEFAULTS)
