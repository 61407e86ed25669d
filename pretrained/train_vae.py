"""Train the small ``AutoencoderKL`` that genprior's latent diffusion priors on mnist5k denoise in.

    python pretrained/train_vae.py --output_dir pretrained/mnist5k-vae

Encoder and decoder of three levels (32, 64, 64 channels; 28 -> 14 -> 7 px), 4 latent
channels: a digit becomes a 4 x 7 x 7 latent. The loss is Stable Diffusion's autoencoder
objective without its perceptual and adversarial terms (which need ImageNet weights or a
discriminator): the L1 reconstruction error of the decoded posterior sample plus
``--kl_weight`` (1e-6, as SD) times the KL divergence to N(0, 1). Trained on the mnist5k
**train split only**. The EMA weights are written as a diffusers ``AutoencoderKL`` folder,
with ``scaling_factor`` set to 1 / the standard deviation of the train split's latents (as
SD's 0.18215 was chosen), and ``quality.json`` with the test split's reconstruction error.
The loop, checkpoints and resume are ``pretrained/training.py``'s.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL

from genprior.data import load_dataset
from genprior.synset import save_grid, write_json_atomic

try:  # run as a script (python pretrained/train_vae.py) or as a module of the package
    from .training import add_loop_args, finish_args, make_accelerator, train
except ImportError:
    from training import add_loop_args, finish_args, make_accelerator, train

DATASET = "mnist5k"
DATA = "mnist5k train split (4,000 images)"


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("pretrained/mnist5k-vae"),
                        help="the AutoencoderKL folder written at the end, with quality.json and reconstructions.png")
    add_loop_args(parser, max_steps=5000, learning_rate=1e-3)
    parser.add_argument("--kl_weight", type=float, default=1e-6)
    parser.add_argument("--measure_images", type=int, default=0,
                        help="measure the scaling factor and the test reconstruction on the first N images of "
                             "each split (default 0: all of them)")
    parser.set_defaults(lr_warmup_steps=200, ema_max_decay=0.999)
    args = finish_args(parser.parse_args(argv))
    if args.measure_images < 0:
        parser.error(f"--measure_images is a number of images, 0 for all of them; got {args.measure_images}")
    return args


def build_vae(channels: int = 1) -> AutoencoderKL:
    return AutoencoderKL(in_channels=channels, out_channels=channels, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16, sample_size=28)


@torch.no_grad()
def reconstruction(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 256):
    """Reconstructions (posterior means, decoded) of ``pixels`` in [-1, 1], and their latents."""
    latents, recons = [], []
    for i in range(0, len(pixels), batch_size):
        z = vae.encode(pixels[i:i + batch_size]).latent_dist.mean
        latents.append(z)
        recons.append(vae.decode(z).sample)
    return torch.cat(recons), torch.cat(latents)


class Autoencoding(torch.nn.Module):
    """The VAE's training pass as one ``forward`` (what accelerate wraps for mixed precision and
    several processes): the reconstruction of a posterior sample, and each image's KL term."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.config = vae.config  # what the EMA records

    def forward(self, x: torch.Tensor):
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl()


def main(args: argparse.Namespace) -> None:
    accelerator = make_accelerator(args)
    data = load_dataset(DATASET, "train")
    pixels = data.denormalize(data.images) * 2 - 1
    vae = build_vae(data.channels)

    def loss_of(net: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        x = pixels[idx].to(accelerator.device)
        recon, kl = net(x)
        return (recon.float() - x).abs().mean() + args.kl_weight * kl.float().mean() / x[0].numel()

    run = train(args, accelerator, Autoencoding(vae), AutoencoderKL, loss_of, len(pixels), DATA)
    if accelerator.is_main_process:
        final = run["model"].vae
        n = args.measure_images or None
        _, train_latents = reconstruction(final, pixels[:n].to(accelerator.device))
        final.register_to_config(scaling_factor=float(1.0 / train_latents.std()))
        test = load_dataset(DATASET, "test")
        test_pixels = (test.denormalize(test.images[:n]) * 2 - 1).to(accelerator.device)
        recon, _ = reconstruction(final, test_pixels)
        mse = float(((recon.clamp(-1, 1) - test_pixels) / 2).pow(2).mean())  # in [0, 1] pixel units
        final.save_pretrained(args.output_dir, safe_serialization=True)
        show = torch.cat([test_pixels[:50], recon[:50].clamp(-1, 1)]).cpu() / 2 + 0.5
        save_grid(show, torch.arange(2).repeat_interleave(50), 2, args.output_dir / "reconstructions.png")
        write_json_atomic({"test_mse": mse, "test_psnr_db": float(-10 * torch.log10(torch.tensor(mse))),
                           "latent_shape": list(train_latents.shape[1:]),
                           "scaling_factor": float(final.config.scaling_factor),
                           "test": f"{DATASET} test split ({len(test_pixels)} images)"}, args.output_dir / "quality.json")
        write_json_atomic({"command": shlex.join(["python", *sys.argv]), "steps": run["steps"],
                           "batch_size": args.batch_size, "time_s": run["time_s"],
                           "seconds_per_step": run["seconds_per_step"], "final_loss": run["final_loss"],
                           "device": run["device"], "parameters": run["parameters"], "data": DATA,
                           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
                          args.output_dir / "training.json")
        accelerator.print(f"wrote {args.output_dir}: test reconstruction MSE {mse:.5f}")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
