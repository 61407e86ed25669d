"""DCGM: Dataset Condensation via Generative Model (Zhang et al., 2023) — the generator becomes the dataset.

    python recipes/dcgm.py                       # fine-tune the shipped StyleGAN on mnist5k, then generate + evaluate IPC 10
    genprior generate runs/dcgm-mnist5k-stylegan-mnist5k/generator OUT --ipc N

The class-conditional GAN keeps its adversarial loss and learns three terms through a
ConvNet that is itself trained on real data during the run: class-mean feature matching to
the real class (weight 0.01), intra-class diversity (the mean cosine similarity between two
generated images of one class, weight 0.1) and inter-class discrimination (the mean cosine
similarity between two classes' generated centres, weight 0.1). No public code of DCGM
exists and only its abstract could be read: the statistics, the embedding and the weights are
genprior's reading of it (see genprior/generators/dcgm.py). GAN and pool settings as
recipes/dim.py, with the same CPU cuts (600 iterations at lr 1e-4, a fresh discriminator
warmed up for 200 steps, a ConvNet-3 pool).
"""
from genprior.cli import run_generator_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "mnist5k-stylegan", "method": "dcgm", "iterations": 600, "batch_size": 64,
            "ema": 0.99, "checkpoint_every": 50, "method_options": {"pool": ["convnet"]}}

if __name__ == "__main__":
    run_generator_recipe(__doc__, DEFAULTS)
