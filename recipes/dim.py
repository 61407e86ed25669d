"""DiM: Distilling Dataset into Generative Model (Wang et al., 2023) — the generator becomes the dataset.

    python recipes/dim.py                        # fine-tune the shipped StyleGAN on mnist5k, then generate + evaluate IPC 10
    python recipes/dim.py --ipc 50               # evaluate the same kind of run at IPC 50
    genprior generate runs/dim-mnist5k-stylegan-mnist5k/generator OUT --ipc N   # any IPC from the trained generator

The class-conditional GAN keeps its adversarial loss and learns to make images whose
log-softmax outputs, through a network of a classifier pool that is itself trained on
real data during the run (16 SGD steps before every generator step, a fresh network of
a random pool architecture every epoch of the real data), match those of real images of
the same classes (MSE, image by image, weight 0.01 as in the reference code).

Stated cuts for a CPU: the reference trains its own WGAN-GP AC-GAN and condenses for 100
epochs at lr 5e-6; here the shipped StyleGAN is fine-tuned for 600 iterations at lr 1e-4
(Adam, betas 0, 0.99), with a fresh discriminator of its family warmed up for 200 steps
(the shipped prior carries none), and the pool is ConvNet-3 only (the reference's pool
also holds ResNet-10/18 and their average-pooling variants: pass
--method-option pool=convnet,resnet_ap10,resnet18,resnet18_ap for it, several times slower).
"""
from genprior.cli import run_generator_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "mnist5k-stylegan", "method": "dim", "iterations": 600, "batch_size": 64,
            "ema": 0.99, "checkpoint_every": 50, "method_options": {"pool": ["convnet"]}}

if __name__ == "__main__":
    run_generator_recipe(__doc__, DEFAULTS)
