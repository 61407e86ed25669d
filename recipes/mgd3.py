"""MGD3: Mode-Guided Dataset Distillation using Diffusion Models (Chan-Santiago et al., ICML 2025) — training-free sampling.

    python recipes/mgd3.py                       # mnist5k, IPC 10, the shipped diffusion prior, then `quick` evaluation

The class's modes are the k-means centres (k = IPC) of its encoded real images; while the
trajectory is in its first half, sample i is steered towards mode m_i:
ε̂ = ε − √(1 − ᾱ_t) · λ · (m_i − x̂₀). The paper's settings: λ = 0.1, guidance stopped at step
25 of 50 (its code guides while the respaced index t > 25: the first 24 steps, ``stop`` 0.48),
classifier-free guidance 4.

Sampling is DDIM (eta 0); the authors' code takes DiT's ancestral steps with a learned variance,
which genprior's priors lack: ``--option eta=1`` runs ancestral steps (README, "Faithfulness",
lists what else differs from that code). ``--option form=sample`` applies the guidance as
that code does: the next sample moves by λ · σ_t · (m_i − x̂₀) after an ancestral step, or by
λ · √ᾱ_t · (m_i − x̂₀) under DDIM (its Stable Diffusion variant).
"""
from genprior.cli import run_sampling_recipe

DEFAULTS = {"method": "mgd3", "prior": "mnist5k-diffusion", "dataset": "mnist5k", "ipc": 10,
            "option": {"scale": 0.1, "stop": 0.48},
            "prior_option": {"num_inference_steps": 50, "guidance_scale": 4.0}}

if __name__ == "__main__":
    run_sampling_recipe(__doc__, DEFAULTS)
