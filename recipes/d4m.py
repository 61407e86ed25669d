"""D4M: Dataset Distillation via Disentangled Diffusion Model (Su, Hou, Lin & Wang, CVPR 2024) — training-free sampling.

    python recipes/d4m.py                        # mnist5k, IPC 10, the shipped diffusion prior, then `quick` evaluation
    python recipes/d4m.py --ipc 50 --option strength=0.5

Per class, k-means (k = IPC) on the real images encoded into the space the prior denoises
(VAE latents for a latent prior, pixels for a pixel prior); each prototype is noised to
``strength`` and denoised with its class (img2img). D4M runs Stable Diffusion's img2img
pipeline with the class name as its prompt; on a text-conditioned prior (a Stable-Diffusion
folder) genprior does the same, on a class-conditional one the class label is the condition.

Settings, as D4M's public code (suduo94/D4M) runs: ``strength`` 0.7 (its
``gen_syn_image_imgnt.sh``; the script's own default is 0.75) and 50 steps, of which 35 run
at that strength (its pipeline keeps Stable Diffusion v1.5's default scheduler, PNDM;
genprior's sampler runs DDIM, eta 0, on every prior), prototypes the cluster centres of the clean encoded
images (its ``gen_prototype.py`` fits MiniBatchKMeans with k = IPC on the scaled VAE latents;
genprior fits full k-means on up to 500 of the class's latents). Two departures, stated: D4M guides at 8
with the negative prompt "cartoon, anime, painting", values set for Stable Diffusion; genprior
uses the prior's own guidance (1.25 for ``mnist5k-diffusion``, where its class fidelity was
measured) and its negative prompt (empty unless the prior's card names one).
"""
from genprior.cli import run_sampling_recipe

DEFAULTS = {"method": "d4m", "prior": "mnist5k-diffusion", "dataset": "mnist5k", "ipc": 10,
            "option": {"strength": 0.7}, "prior_option": {"num_inference_steps": 50}}

if __name__ == "__main__":
    run_sampling_recipe(__doc__, DEFAULTS)
