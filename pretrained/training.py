"""The training loop genprior's shipped diffusion priors and their VAE share.

One ``accelerate`` loop (mixed precision, several processes), AdamW with a diffusers lr
schedule, gradient clipping, an EMA of the weights, and checkpoints of the whole state
(model, optimiser, lr schedule, EMA, RNG states, elapsed time) every
``--checkpointing_steps`` into ``--checkpoint_dir``, so ``--resume_from_checkpoint latest``
continues exactly. Batches are a function of the step (one seeded permutation per epoch),
so a resumed run sees the same batches as an uninterrupted one. A script builds its model
after ``make_accelerator`` (which seeds), gives ``train`` a loss of (model, batch indices),
and exports what ``train`` returns.
"""
from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm


def add_loop_args(parser: argparse.ArgumentParser, max_steps: int = 20000, learning_rate: float = 5e-4) -> None:
    parser.add_argument("--checkpoint_dir", type=Path, default=None,
                        help="where checkpoint-N folders go (default: runs/<output_dir name>-checkpoints)")
    parser.add_argument("--max_steps", type=int, default=max_steps)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=learning_rate)
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
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-N folder")
    parser.add_argument("--seed", type=int, default=0)


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.checkpoint_dir is None:
        args.checkpoint_dir = Path("runs") / f"{args.output_dir.name}-checkpoints"
    return args


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


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """The run's accelerator, seeded (build the model after it, so its initialisation is seeded)."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              project_config=ProjectConfiguration(project_dir=str(args.checkpoint_dir)))
    set_seed(args.seed, device_specific=True)
    return accelerator


def train(args: argparse.Namespace, accelerator: Accelerator, model: torch.nn.Module, model_cls: Any,
          loss_of: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], n_items: int, desc: str
          ) -> Dict[str, Any]:
    """Train ``model`` for ``args.max_steps`` steps of ``loss_of(model, batch indices)`` over
    ``n_items`` items; returns the unwrapped model carrying the EMA weights (``model``) and
    the run's figures (steps, time, seconds per step, final loss, parameters)."""
    if n_items < args.batch_size * accelerator.num_processes:
        raise SystemExit(f"--batch_size {args.batch_size} x {accelerator.num_processes} processes is more than the "
                         f"{n_items} training items; lower --batch_size")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_steps * accelerator.num_processes)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema = EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
                   power=args.ema_power, model_cls=model_cls, model_config=accelerator.unwrap_model(model).config)
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
            ema.to(accelerator.device)  # accelerate loads registered objects onto the CPU
            global_step = checkpoint_step(path)

    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"{type(accelerator.unwrap_model(model)).__name__}: {n_params:,} parameters; {desc}; "
                      f"{args.max_steps} steps of batch {args.batch_size}")
    progress = tqdm(total=args.max_steps, initial=global_step, desc="train", disable=not accelerator.is_main_process)
    model.train()
    first_step, started = global_step, time.time()
    loss = torch.tensor(math.nan)
    while global_step < args.max_steps:
        idx = batch_indices(global_step, n_items, args.batch_size, args.seed, accelerator.process_index,
                            accelerator.num_processes)
        loss = loss_of(model, idx)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        global_step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args, global_step)
    progress.close()
    steps_run = global_step - first_step
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(model).eval()
    ema.copy_to(final.parameters())
    return {"model": final, "steps": global_step, "time_s": clock.lap(),
            "seconds_per_step": (time.time() - started) / steps_run if steps_run else None,
            "final_loss": loss.item(), "parameters": n_params, "device": device_name(accelerator.device)}
