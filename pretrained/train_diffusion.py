"""Train the class-conditional pixel diffusion prior shipped as ``mnist5k-diffusion``.

    python pretrained/train_diffusion.py --output_dir pretrained/mnist5k-diffusion

A small ``UNet2DModel`` (28 px, block_out_channels (16, 32, 64), one attention block at
7 px; 0.69 M parameters, 2.8 MB) learns DDPM noise prediction on the mnist5k **train split only** (4,000 images).
10% of the labels are dropped to the null class (index 10) so sampling can use
classifier-free guidance; the prior ships the EMA weights with a DDIM sampler.

Checkpoints (the accelerate state: model, optimiser, lr schedule, EMA, RNG states,
elapsed time) go to ``--checkpoint_dir`` every ``--checkpointing_steps``, outside the
prior folder so that they are never shipped; ``--resume_from_checkpoint latest``
continues exactly. Batches are a function of the step (one seeded permutation per
epoch), so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from genprior.data import load_dataset
from genprior.priors.diffusion import DiffusionPrior
from genprior.synset import save_grid, write_json_atomic

DATASET = "mnist5k"
DATA = "mnist5k train split (4,000 images)"
SAMPLES_PER_CLASS = 10


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("pretrained/mnist5k-diffusion"),
                        help="the prior folder written at the end: prior.json, unet/, scheduler/, samples.png, "
                             "training.json")
    parser.add_argument("--checkpoint_dir", type=Path, default=None,
                        help="where checkpoint-N folders go (default: runs/<output_dir name>-checkpoints)")
    parser.add_argument("--max_steps", type=int, default=20000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--lr_scheduler", default="cosine",
                        help="a diffusers.optimization schedule: constant, constant_with_warmup, linear, cosine, ...")
    parser.add_argument("--lr_warmup_steps", type=int, default=500)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=1e-4)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--ema_max_decay", type=float, default=0.9999)
    parser.add_argument("--ema_inv_gamma", type=float, default=1.0)
    parser.add_argument("--ema_power", type=float, default=0.75)
    parser.add_argument("--label_dropout", type=float, default=0.1, help="share of labels replaced by the null class")
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--beta_schedule", default="linear")
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-N folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_inference_steps", type=int, default=20, help="DDIM steps the shipped prior decodes with")
    parser.add_argument("--guidance_scale", type=float, default=2.0, help="CFG scale the shipped prior decodes with")
    args = parser.parse_args(argv)
    if args.checkpoint_dir is None:
        args.checkpoint_dir = Path("runs") / f"{args.output_dir.name}-checkpoints"
    return args


def build_unet(num_classes: int) -> UNet2DModel:
    """28 -> 14 -> 7 px, widening as it shrinks (the 28-px level costs most); attention
    only at 7 px, where it is cheap."""
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32, num_class_embeds=num_classes + 1,
    )


def batch_indices(step: int, n: int, batch_size: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """The images of one process's batch at ``step``: epochs are seeded permutations, so
    the batch depends on nothing but the step."""
    per_epoch = n // (batch_size * world)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    start = (k * world + rank) * batch_size
    return order[start:start + batch_size]


class Clock:
    """Training time that survives resumes (checkpointed with the accelerate state)."""

    def __init__(self) -> None:
        self.time_s = 0.0
        self._since = time.time()

    def lap(self) -> float:
        now = time.time()
        self.time_s += now - self._since
        self._since = now
        return self.time_s

    def state_dict(self) -> dict:
        return {"time_s": self.lap()}

    def load_state_dict(self, state: dict) -> None:
        self.time_s = float(state["time_s"])
        self._since = time.time()


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[1])


def find_checkpoint(checkpoint_dir: Path, which: str) -> Optional[Path]:
    if which != "latest":
        path = Path(which)
        if not path.is_dir():
            raise SystemExit(f"no checkpoint folder {path}")
        return path
    found = sorted(checkpoint_dir.glob("checkpoint-*"), key=checkpoint_step)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, step: int) -> None:
    """``accelerator.save_state`` into checkpoint-``step``, keeping at most the newest
    ``checkpoints_total_limit`` folders."""
    if accelerator.is_main_process and args.checkpoints_total_limit:
        old = sorted(args.checkpoint_dir.glob("checkpoint-*"), key=checkpoint_step)
        for path in old[:max(0, len(old) - args.checkpoints_total_limit + 1)]:
            shutil.rmtree(path)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(args.checkpoint_dir / f"checkpoint-{step}"))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"


def main(args: argparse.Namespace) -> None:
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              project_config=ProjectConfiguration(project_dir=str(args.checkpoint_dir)))
    set_seed(args.seed, device_specific=True)
    data = load_dataset(DATASET, "train")
    pixels = data.denormalize(data.images) * 2 - 1
    num_classes = data.num_classes

    unet = build_unet(num_classes)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.num_train_timesteps, beta_schedule=args.beta_schedule,
                                    prediction_type="epsilon")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_steps * accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema = EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
                   power=args.ema_power, model_cls=UNet2DModel, model_config=accelerator.unwrap_model(unet).config)
    ema.to(accelerator.device)
    clock = Clock()
    accelerator.register_for_checkpointing(ema, clock)

    global_step = 0
    if args.resume_from_checkpoint:
        path = find_checkpoint(args.checkpoint_dir, args.resume_from_checkpoint)
        if path is None:
            accelerator.print(f"no checkpoint in {args.checkpoint_dir}; starting a new run")
        else:
            accelerator.print(f"resuming from {path}")
            accelerator.load_state(str(path))
            global_step = checkpoint_step(path)

    n_params = sum(p.numel() for p in unet.parameters())
    accelerator.print(f"UNet2DModel: {n_params:,} parameters; {DATA}; "
                      f"{args.max_steps} steps of batch {args.batch_size}")
    progress = tqdm(total=args.max_steps, initial=global_step, desc="train", disable=not accelerator.is_main_process)
    unet.train()
    first_step, started = global_step, time.time()
    loss = torch.tensor(math.nan)
    while global_step < args.max_steps:
        idx = batch_indices(global_step, len(pixels), args.batch_size, args.seed, accelerator.process_index,
                            accelerator.num_processes)
        clean = pixels[idx].to(accelerator.device)
        labels = data.labels[idx].to(accelerator.device)
        labels = torch.where(torch.rand(labels.shape, device=labels.device) < args.label_dropout, num_classes, labels)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, args.num_train_timesteps, labels.shape, device=labels.device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps, class_labels=labels).sample.float(), noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        global_step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args, global_step)
    progress.close()
    steps_run = global_step - first_step
    seconds_per_step = (time.time() - started) / steps_run if steps_run else None
    train_time = clock.lap()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(unet).eval()
        ema.copy_to(final.parameters())
        sampler = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False, timestep_spacing="trailing")
        prior = DiffusionPrior.from_components(final, sampler, mean=data.mean, std=data.std,
                                               num_inference_steps=args.num_inference_steps,
                                               guidance_scale=args.guidance_scale)
        prior.card.update(dataset=DATASET, data=DATA)
        prior.save_pretrained(args.output_dir)
        labels = torch.arange(num_classes).repeat_interleave(SAMPLES_PER_CLASS)
        with torch.no_grad():
            latents = prior.init_latents(labels, space="x_T", generator=torch.Generator().manual_seed(args.seed))
            images = prior.decode(latents, labels.to(accelerator.device), chunk_size=100).cpu()
        save_grid(data.denormalize(images).clamp(0, 1), labels, num_classes, args.output_dir / "samples.png")
        write_json_atomic({
            "command": shlex.join(["python", *sys.argv]),
            "steps": global_step,
            "batch_size": args.batch_size,
            "time_s": train_time,
            "seconds_per_step": seconds_per_step,
            "final_loss": loss.item(),
            "device": device_name(accelerator.device),
            "mixed_precision": args.mixed_precision,
            "parameters": n_params,
            "data": DATA,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }, args.output_dir / "training.json")
        accelerator.print(f"wrote {args.output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
