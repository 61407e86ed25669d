"""GLaD: Generalizing Dataset Distillation via Deep Generative Prior (Cazenavette et al., CVPR 2023).

    python recipes/glad.py                                  # GLaD-DM, w+ space, shipped StyleGAN, mnist5k, IPC 10
    python recipes/glad.py --variant dc --ipc 1             # gradient matching
    python recipes/glad.py --variant mtt --loss-option buffer=runs/experts-mnist5k-convnet   # after `genprior experts`
    python recipes/glad.py --space F                        # the intermediate feature space

Latents of a frozen StyleGAN (w+, or an intermediate feature map F plus the w+ after it)
are optimised with SGD (momentum 0.5) against DM, DC or MTT; decoding goes through
the generator in chunks of 10 (GLaD's sg_batch). Learning rates are the reference
code's: w+ 0.01 / F 10 (DM), w+ 0.001 / F 1 with one outer and one inner loop (DC),
w+ 10 / F 10000 with 20 student steps over 3 expert epochs (MTT). GLaD's published
runs always optimise F with w+ (``--space F`` here); the w+ rates above are those its
code gives w+ beside F (``lr_w``), which genprior keeps for w+ alone: the F rate its
code would use for w+ alone (10 for DM) breaks the digits of the shipped StyleGAN
(`benchmarks/results/glad_wplus_lr.md`: ConvNet 37.5% against 89.0% after 30 iterations).
Two departures, both stated: GLaD's MTT script takes each student step's image
gradient with the earlier steps held fixed (a constant-memory approximation), while
genprior backpropagates through the whole unrolled student trajectory, as MTT does;
and GLaD evaluates with its own per-network learning rates and the best epoch, while
genprior's evaluation follows the shared protocol (README, "Evaluation protocol").
GLaD runs 1000+ iterations on a GPU; the default here is 100 so that it finishes in
minutes on a CPU (pass --iterations 1000 for the paper's length).
GLaD starts from random latents (the StyleGAN's own samples), as its code does;
``--init invert`` starts from inverted real images instead (IT-GAN's start), which on
mnist5k at IPC 10 lifts GLaD-DM from 94.6 % to 95.9 % on ConvNet and from 82.8 % to
85.7 % across architectures (README, "Results so far").
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "mnist5k-stylegan", "space": "w+", "ipc": 10, "init": "random",
            "optimizer": "sgd", "momentum": 0.5, "chunk_size": 10, "iterations": 100}
VARIANTS = {  # learning rates of w+ (lr) and, in the F space, of F (by_space)
    "dm": {"loss": "dm", "method": "glad-dm", "lr": 0.01, "by_space": {"F": {"latent_lrs": {"F": 10.0}}}},
    "dc": {"loss": "dc", "method": "glad-dc", "lr": 0.001, "by_space": {"F": {"latent_lrs": {"F": 1.0}}},
           "loss_options": {"outer_loop": 1, "inner_loop": 1}},
    "mtt": {"loss": "mtt", "method": "glad-mtt", "lr": 10.0, "by_space": {"F": {"latent_lrs": {"F": 10000.0}}},
            "loss_options": {"syn_steps": 20, "expert_epochs": 3, "max_start_epoch": 5, "lr_lr": 1e-6}},
}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS, VARIANTS)
