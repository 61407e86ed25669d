"""IT-GAN: Synthesizing Informative Training Samples with GAN (Zhao & Bilen, NeurIPS 2022 workshop).

    python recipes/itgan.py                      # DM on z of a GAN, latents inverted from real images, mnist5k IPC 10

Each synthetic image starts as the GAN latent z that reconstructs a real image
(inversion), then z is optimised with distribution matching (DM, with siamese DSA) so
the decoded set carries the real data's statistics. IT-GAN optimises z only, so the
default space is the shipped StyleGAN's z (a DCGAN prior works the same way:
--prior PATH_TO_DCGAN). The default iterations are cut for a CPU; pass --iterations
for longer runs.
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "mnist5k-stylegan", "space": "z", "loss": "dm", "method": "itgan",
            "ipc": 10, "init": "invert", "invert_steps": 200, "optimizer": "adam", "lr": 0.01, "chunk_size": 10,
            "iterations": 100}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS)
