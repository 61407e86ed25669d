"""Train the shipped class-conditional GAN prior on the mnist5k train split.

    python pretrained/train_gan.py --output_dir pretrained/stylegan-mnist5k --max_steps 20000
    python pretrained/train_gan.py --arch dcgan --output_dir pretrained/dcgan-mnist5k --max_steps 20000

StyleGAN2-ADA's CIFAR recipe at small size: non-saturating logistic loss, lazy R1 on
D (gamma 1 rather than CIFAR's 0.01, which collapsed to one digit shape here), an
EMA copy of G (the one that ships), Adam(0.0025, betas (0, 0.99)), no style mixing
or path-length regularisation. ``--arch dcgan`` trains the DCGAN prior with
the same losses and the DCGAN paper's Adam(0.0002, betas (0.5, 0.999)).
4,000 digits are few for a GAN, so both D inputs (real and fake) go through
DiffAugment (Zhao et al., 2020) translation and cutout; G is trained through the
same augmentation, so the augmentations do not leak into its images.
Only the train split is used: the test split stays unseen by the prior.

Checkpoints (``accelerator.save_state``: models in safetensors, optimisers, RNG
states) go to ``--checkpoint_dir``; ``--resume_from_checkpoint latest`` continues at
the same step with the same optimiser, EMA and random stream. The end writes the
prior directory (``StyleGANPrior`` / ``DCGANPrior``) with ``samples.png`` (a row
of 10 per class) and ``training.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torchvision.utils import save_image
from tqdm.auto import tqdm

from genprior.data import load_dataset
from genprior.generators.gan import diff_augment
from genprior.priors.dcgan import DCGANDiscriminator, DCGANGenerator, DCGANPrior
from genprior.priors.stylegan import StyleGAN2Discriminator, StyleGAN2Generator, StyleGANPrior

DATASET = "mnist5k"
SAMPLES_PER_CLASS = 10
# ADA's Adam for StyleGAN; the DCGAN paper's for the batch-norm DCGAN.
ARCH_OPTIMISER = {"stylegan": {"lr": 0.0025, "betas": (0.0, 0.99)}, "dcgan": {"lr": 0.0002, "betas": (0.5, 0.999)}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("stylegan", "dcgan"), default="stylegan")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="prior directory to write (default: pretrained/<arch>-mnist5k)")
    parser.add_argument("--checkpoint_dir", type=Path, default=None,
                        help="where checkpoints go (default: runs/train_gan/<arch>)")
    parser.add_argument("--channel_base", type=int, default=512,
                        help="StyleGAN width: min(channel_base // res, 128) channels per resolution; 1024 gives 128/128/64/32")
    parser.add_argument("--max_steps", type=int, default=20000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--g_lr", type=float, default=None, help="default: 0.0025 (stylegan), 0.0002 (dcgan)")
    parser.add_argument("--d_lr", type=float, default=None, help="default: as --g_lr")
    parser.add_argument("--beta1", type=float, default=None, help="Adam beta1; default: 0 (stylegan), 0.5 (dcgan)")
    parser.add_argument("--beta2", type=float, default=None, help="Adam beta2; default: 0.99 (stylegan), 0.999 (dcgan)")
    parser.add_argument("--r1_gamma", type=float, default=1.0,
                        help="R1 weight; in 1,200-step trials ADA's CIFAR 0.01 collapsed to one digit shape, "
                             "0.1 to a few, 1.0 gave class-conditional digits")
    parser.add_argument("--r1_interval", type=int, default=16, help="lazy regularisation: R1 every N steps")
    parser.add_argument("--ema_kimg", type=float, default=10.0, help="EMA half-life in thousands of images")
    parser.add_argument("--ema_rampup", type=float, default=0.05,
                        help="half-life at most this fraction of the images seen so far")
    parser.add_argument("--no_augment", action="store_true", help="turn DiffAugment off")
    parser.add_argument("--feature_block", type=int, default=8, help="GLaD's F space of the written StyleGAN prior")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint directory or 'latest'")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 avoids thrashing on a busy machine)")
    args = parser.parse_args(argv)
    defaults = ARCH_OPTIMISER[args.arch]
    args.g_lr = defaults["lr"] if args.g_lr is None else args.g_lr
    args.d_lr = args.g_lr if args.d_lr is None else args.d_lr
    args.beta1 = defaults["betas"][0] if args.beta1 is None else args.beta1
    args.beta2 = defaults["betas"][1] if args.beta2 is None else args.beta2
    args.output_dir = args.output_dir or Path("pretrained") / f"{args.arch}-{DATASET}"
    args.checkpoint_dir = args.checkpoint_dir or Path("runs") / "train_gan" / args.arch
    return args


def build_models(arch: str, num_classes: int, channels: int, resolution: int, channel_base: int):
    if arch == "stylegan":
        generator = StyleGAN2Generator(c_dim=num_classes, img_channels=channels, output_resolution=resolution,
                                       channel_base=channel_base)
        discriminator = StyleGAN2Discriminator(c_dim=num_classes, img_channels=channels, channel_base=channel_base)
        return generator, discriminator
    generator = DCGANGenerator(num_classes=num_classes, img_channels=channels, output_resolution=resolution)
    return generator, DCGANDiscriminator(num_classes=num_classes, img_channels=channels)


def generate(arch: str, generator, z: torch.Tensor, labels: torch.Tensor, update_w_avg: bool = False) -> torch.Tensor:
    """Training-time images in [-1, 1] (StyleGAN draws fresh noise; w_avg tracks G)."""
    if arch == "stylegan":
        return generator(z, labels, noise_mode="random", update_w_avg=update_w_avg)
    return generator(z, labels)


def latest_checkpoint(checkpoint_dir: Path):
    found = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def prune_checkpoints(checkpoint_dir: Path, keep: int) -> None:
    found = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


@torch.no_grad()
def update_ema(ema, model, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def main(args: argparse.Namespace) -> Path:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    data = load_dataset(DATASET, "train")
    reals = (data.denormalize(data.images) * 2 - 1).to(accelerator.device)
    labels_all = data.labels.to(accelerator.device)

    generator, discriminator = build_models(args.arch, data.num_classes, data.channels, data.resolution,
                                            args.channel_base)
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    betas = (args.beta1, args.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.g_lr, betas=betas, eps=1e-8)
    # Lazy R1 (ADA): D's hyper-parameters shrink so that its steps between penalties match.
    ratio = args.r1_interval / (args.r1_interval + 1)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.d_lr * ratio,
                             betas=(args.beta1 ** ratio, args.beta2 ** ratio), eps=1e-8)
    generator, discriminator, generator_ema, opt_g, opt_d = accelerator.prepare(
        generator, discriminator, generator_ema, opt_g, opt_d
    )

    step = 0
    resumed_from = None
    if args.resume_from_checkpoint:
        path = (latest_checkpoint(args.checkpoint_dir) if args.resume_from_checkpoint == "latest"
                else Path(args.resume_from_checkpoint))
        if path is None:
            accelerator.print(f"no checkpoint in {args.checkpoint_dir}; starting from step 0")
        else:
            accelerator.load_state(str(path))
            step = resumed_from = int(path.name.split("-")[1])
            accelerator.print(f"resumed from {path} at step {step}")

    augment = (lambda x: x) if args.no_augment else diff_augment
    n, device, batch = reals.shape[0], accelerator.device, args.batch_size
    z_dim = accelerator.unwrap_model(generator).config.z_dim
    bar = tqdm(initial=step, total=args.max_steps, disable=not accelerator.is_local_main_process, desc="train_gan")
    start_time = time.time()
    for step in range(step + 1, args.max_steps + 1):
        # G: non-saturating logistic loss through D.
        discriminator.requires_grad_(False)
        z = torch.randn(batch, z_dim, device=device)
        c = torch.randint(0, data.num_classes, (batch,), device=device)
        fake = generate(args.arch, generator, z, c, update_w_avg=True)
        loss_g = F.softplus(-discriminator(augment(fake), c)).mean()
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(loss_g)
        opt_g.step()
        discriminator.requires_grad_(True)

        # D: logistic loss, plus lazy R1 on the real images every r1_interval steps.
        idx = torch.randint(0, n, (batch,), device=device)
        real, real_c = reals[idx], labels_all[idx]
        with torch.no_grad():
            z = torch.randn(batch, z_dim, device=device)
            c = torch.randint(0, data.num_classes, (batch,), device=device)
            fake = generate(args.arch, generator, z, c)
        regularise = args.r1_gamma > 0 and step % args.r1_interval == 0
        real = real.detach().requires_grad_(regularise)
        real_logits = discriminator(augment(real), real_c)
        loss_d = F.softplus(discriminator(augment(fake), c)).mean() + F.softplus(-real_logits).mean()
        r1 = torch.zeros((), device=device)
        if regularise:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + r1 * (args.r1_gamma / 2) * args.r1_interval
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(loss_d)
        opt_d.step()

        # EMA of G with ADA's half-life in images and its ramp-up.
        ema_images = min(args.ema_kimg * 1000, step * batch * args.ema_rampup)
        update_ema(generator_ema, generator, 0.5 ** (batch / max(ema_images, 1e-8)))

        bar.update(1)
        bar.set_postfix(loss_g=f"{loss_g.item():.3f}", loss_d=f"{loss_d.item():.3f}", r1=f"{r1.item():.3f}")
        if step % args.checkpointing_steps == 0 and accelerator.is_main_process:
            accelerator.save_state(str(args.checkpoint_dir / f"checkpoint-{step}"))
            prune_checkpoints(args.checkpoint_dir, args.checkpoints_total_limit)
    bar.close()
    seconds = time.time() - start_time

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return args.output_dir
    ema = accelerator.unwrap_model(generator_ema).float().cpu()
    if args.arch == "stylegan":
        prior = StyleGANPrior(ema, data.mean, data.std, feature_block=args.feature_block)
    else:
        prior = DCGANPrior(ema, data.mean, data.std)
    prior.card.update(dataset=DATASET, data="mnist5k train split (4,000 images)")  # `genprior sample` needs no --dataset
    prior.save_pretrained(args.output_dir)
    save_samples(prior, data, args.output_dir / "samples.png", args.seed)
    steps_run = step - (resumed_from or 0)
    record = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "arch": args.arch,
        "steps": args.max_steps,
        "batch_size": batch,
        "resumed_from_step": resumed_from,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / steps_run, 4) if steps_run else None,
        "generator_parameters": sum(p.numel() for p in ema.parameters()),
        "data": "mnist5k train split (4,000 images)",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    (args.output_dir / "training.json").write_text(json.dumps(record, indent=2))
    accelerator.print(f"wrote {args.output_dir} ({record['seconds_per_step']} s/step)")
    return args.output_dir


@torch.no_grad()
def save_samples(prior, data, path: Path, seed: int) -> None:
    """One row per class, ``SAMPLES_PER_CLASS`` random latents each."""
    labels = torch.arange(data.num_classes).repeat_interleave(SAMPLES_PER_CLASS)
    latents = prior.init_latents(labels, generator=torch.Generator().manual_seed(seed))
    images = data.denormalize(prior.decode(latents, labels)).clamp(0, 1)
    save_image(images, path, nrow=SAMPLES_PER_CLASS, padding=1)


if __name__ == "__main__":
    main(parse_args())
