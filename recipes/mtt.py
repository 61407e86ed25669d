"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022) — pixel space.

    genprior experts --dataset mnist5k --num-experts 5 --epochs 25      # once: expert trajectories
    python recipes/mtt.py --loss-option buffer=runs/experts-mnist5k-convnet

The experts above are cut for a CPU (MTT trains 100 experts x 50 epochs, the default of
`genprior experts` is 10 x 50); at IPC 10 the schedule needs 21 expert epochs.

Synthetic pixels (from real images) are trained so that a student network taking a few
SGD steps on them lands where an expert trained on real data did a few epochs later;
the student's learning rate is learned too. Image lr 1000 and the IPC-dependent
syn_steps / expert_epochs / max_start_epoch are the paper's CIFAR-10 settings. MTT
evaluates its sets with the learned step size; genprior's evaluation follows the shared
protocol (lr 0.01), and the learned value is kept in the set's meta.json
(``config.matcher.learned_syn_lr``).
"""
from genprior.cli import run_recipe

DEFAULTS = {"dataset": "mnist5k", "prior": "pixel", "loss": "mtt", "method": "mtt", "ipc": 10, "init": "invert",
            "optimizer": "sgd", "momentum": 0.5, "lr": 1000.0, "iterations": 100,
            "loss_options": {"buffer": "runs/experts-mnist5k-convnet"}}

if __name__ == "__main__":
    run_recipe(__doc__, DEFAULTS)
