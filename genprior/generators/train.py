"""The generator loop: train a prior's own weights with a method (DiM, DCGM, Minimax), so
that the generator itself is the dataset and ``genprior generate`` draws a set of any IPC.

It is the latent loop's run (``distill/common.py``: run directory, ``config.json``,
``log.jsonl``, checkpoints, ``--resume latest`` bit-identical on a CPU, NaN stop, progress
bar, accelerate) around another state. Run directory::

    config.json, log.jsonl, checkpoints/step-N/   as in a latent run; a checkpoint holds the
                           prior's weights, the method's modules (discriminator, classifier
                           pool), every optimiser, the EMA weights and the method's memories
    generator/             the trained generator as a prior folder (EMA weights when
                           ``ema`` > 0): ``load_prior(RUN/generator)`` and
                           ``genprior generate RUN/generator OUT --ipc N`` use it
    samples.png            10 samples per class of the exported generator

Iteration ``it`` draws all its randomness from ``(seed, it)``; under ``accelerate launch``
every process draws its own batch (the seed also names the process) and gradients are
averaged over processes before each optimiser step (as DDP does), so all processes hold the
same weights and N processes train like one with N times the batch. ``time_s`` in the log
counts the iterations; set-up (a discriminator warm-up) is not counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..data import check_resolution, load_dataset
from ..distill.common import (MIXED_PRECISION, PIXEL_PRIOR, TrainingRun, check_finite_config, check_fit,
                              check_keep_checkpoints, config_from_dict, derive_seed, flatten_optimizer, prior_for,
                              seeded_generator, unflatten_optimizer)
from ..errors import GenpriorError
from ..synset import save_grid, write_dir_atomic
from .base import GENERATOR_METHODS, GeneratorMethod, create_method


@dataclass
class GeneratorConfig:
    """Everything a generator-training run depends on; saved as ``config.json``."""

    dataset: str = "mnist5k"
    prior: str = "mnist5k-stylegan"
    method: str = "dim"
    method_options: Dict[str, Any] = field(default_factory=dict)
    iterations: int = 1000
    batch_size: int = 64
    lr: Optional[float] = None  # None: the method's (paper's) generator learning rate
    ema: float = 0.99  # decay of the exported EMA weights; 0 exports the trained weights
    mixed_precision: str = "no"
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 0  # the newest N checkpoints stay on disk; 0 keeps all
    log_every: int = 10
    class_map: Optional[List[int]] = None
    resize: bool = False
    resolution: Optional[int] = None
    data_root: Optional[str] = None
    prior_options: Dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "GeneratorConfig":
        return config_from_dict(cls, values, "generator-training")


def check_generator_config(cfg: GeneratorConfig) -> None:
    """The checks that need no files: each fails before any work starts."""
    GENERATOR_METHODS.entry(cfg.method)  # unknown method: the error lists the known ones
    check_finite_config(cfg)
    if cfg.prior == PIXEL_PRIOR:
        raise GenpriorError("the pixel prior has no weights to train; pick a GAN or diffusion prior "
                            "(e.g. mnist5k-stylegan), or distil pixels with `genprior distill`")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise GenpriorError(f"unknown mixed_precision {cfg.mixed_precision!r}; choose one of {', '.join(MIXED_PRECISION)}")
    for name in ("iterations", "batch_size", "checkpoint_every", "log_every"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenpriorError(f"{name} must be an integer of at least 1, got {value!r}")
    check_keep_checkpoints(cfg.keep_checkpoints)
    if cfg.lr is not None and not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0):
        raise GenpriorError(f"lr must be a positive number, got {cfg.lr!r}")
    if not (isinstance(cfg.ema, (int, float)) and 0 <= cfg.ema < 1):
        raise GenpriorError(f"ema must be a decay in [0, 1) (0: export the trained weights), got {cfg.ema!r}")
    check_resolution(cfg.resolution)


class GeneratorTrainer(TrainingRun):
    """Holds a run: the prior being trained, the method, its optimisers; ``run()`` drives it."""

    kind = "generator"

    def __init__(self, cfg: GeneratorConfig, run_dir, accelerator=None, progress: bool = True):
        check_generator_config(cfg)
        super().__init__(cfg, run_dir, accelerator, progress)
        self.real = load_dataset(cfg.dataset, "train", root=cfg.data_root, resolution=cfg.resolution)
        self.prior = prior_for(cfg.prior, self.real, **cfg.prior_options)
        check_fit(self.prior, self.real, cfg.class_map, cfg.resize)
        self.prior.set_normalization(self.real.mean, self.real.std)
        self.prior.to(self.device)  # weights stay fp32; bf16/fp16 compute through autocast
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.mixed_precision == "fp16")
        self.class_map = torch.tensor(cfg.class_map) if cfg.class_map is not None else None
        with torch.random.fork_rng(devices=[]):  # the method's fresh modules (a discriminator) from the run's seed
            torch.manual_seed(derive_seed(cfg.seed, "method-init"))
            self.method: GeneratorMethod = create_method(cfg.method, self.prior, self.real, self.device,
                                                         **cfg.method_options)
        in_prior = self.method.trainable_parameters()
        ids = {id(p) for p in in_prior}
        self.prior.requires_grad_(False)
        for p in in_prior:
            p.requires_grad_(True)
        trainable = in_prior + self.method.extra_parameters()
        self.trainable = trainable
        #: the prior's parameters that must stay bit-identical
        self.frozen_names = [n for n, p in self.prior.named_parameters() if id(p) not in ids]
        opt = dict(self.method.generator_optimizer)
        if cfg.lr is not None:
            opt["lr"] = float(cfg.lr)
        self.generator_optimizer = torch.optim.Adam(trainable, **opt)
        self.ema = [p.detach().clone() for p in trainable] if cfg.ema > 0 else []
        self._opt_rest: Dict[str, Any] = {}

    @property
    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """Every optimiser of the run by name (a method may replace its own as it goes)."""
        return {"generator": self.generator_optimizer, **self.method.optimizers()}

    # -- what the methods call --
    def prior_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset classes -> the prior's classes (``class_map``)."""
        return self.class_map[labels] if self.class_map is not None else labels

    def autocast(self):
        return self.acc.autocast()

    def update(self, name: str, loss: torch.Tensor, it: int) -> None:
        """Backpropagate ``loss`` into the parameters of optimiser ``name`` and step it: the loss
        scaled under fp16 (the scale updated after every step, since a method steps several
        optimisers, some several times, per iteration); under several processes the gradients
        averaged over them, as DDP does, so N processes train like one with N times the batch.
        A non-finite loss in any process stops every process."""
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.acc.num_processes > 1:
            finite = self.acc.reduce(finite.to(self.device), reduction="sum") / self.acc.num_processes
        if float(finite) < 1.0:
            self.check_finite(loss if not torch.isfinite(loss).all() else loss.new_tensor(float("nan")), it,
                              f"{name}, in one of the processes" if self.acc.num_processes > 1 else name,
                              "lower --lr or run without mixed precision")
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.acc.num_processes > 1:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad = self.acc.reduce(p.grad, reduction="mean")
        self.scaler.step(opt)
        self.scaler.update()

    def save_checkpoint(self, it: int) -> None:
        """Under several processes, first check that every process holds the same generator (a
        fingerprint of the trained weights, gathered): a checkpoint is one generator or none."""
        if self.acc.num_processes > 1:
            fingerprint = torch.stack([p.detach().double().sum() for p in self.trainable]).to(self.device)
            every = self.acc.gather(fingerprint.unsqueeze(0))
            if not torch.equal(every.min(dim=0).values, every.max(dim=0).values):
                raise GenpriorError(f"after iteration {it - 1} the {self.acc.num_processes} processes hold different "
                                    "generators; resume from the last checkpoint, and report this as a genprior bug")
        super().save_checkpoint(it)

    # -- the run --
    def initialize(self) -> None:
        """A new run starts from the prior as loaded and the method's fresh modules."""
        self.method.initialize(self)

    def iteration(self, it: int) -> float:
        cfg = self.cfg
        rank = self.acc.process_index
        torch.manual_seed(derive_seed(cfg.seed, it, rank, "global"))
        logs = self.method.step(self, it, seeded_generator(cfg.seed, it, rank))
        if self.ema:
            with torch.no_grad():
                for shadow, p in zip(self.ema, self.trainable):
                    shadow.lerp_(p.detach(), 1.0 - cfg.ema)
        self._last_logs = {k: float(v) for k, v in logs.items() if k != "loss"}
        return float(logs["loss"])

    def log_fields(self) -> Dict[str, Any]:
        return dict(getattr(self, "_last_logs", {}))

    def progress_label(self) -> str:
        return f"train {self.cfg.method} {self.cfg.prior}"

    def checkpoint_tensors(self) -> Dict[str, torch.Tensor]:
        tensors = {f"prior.{k}": v for k, v in self.prior.state_dict().items()}
        for name, module in self.method.modules().items():
            tensors.update({f"module.{name}.{k}": v for k, v in module.state_dict().items()})
        for i, shadow in enumerate(self.ema):
            tensors[f"ema.{i}"] = shadow
        tensors.update({f"state.{k}": v for k, v in self.method.state_tensors().items()})
        self._opt_rest = {}
        for name, opt in self.optimizers.items():
            opt_tensors, rest = flatten_optimizer(opt)
            tensors.update({f"optimizer.{name}.{k}": v for k, v in opt_tensors.items()})
            self._opt_rest[name] = rest
        return tensors

    def checkpoint_state(self) -> Dict[str, Any]:
        return {"optimizers": self._opt_rest, "loss_scaler": self.scaler.state_dict(), "method": self.method.describe()}

    required_state = ("optimizers",)

    def restore(self, tensors: Dict[str, torch.Tensor], state: Dict[str, Any]) -> None:
        def part(prefix: str) -> Dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.prior.load_state_dict(part("prior."))
        self.method.load_state_tensors(part("state."))  # first: it may rebuild modules of the saved shape
        for name, module in self.method.modules().items():
            module.load_state_dict(part(f"module.{name}."))
        with torch.no_grad():
            for i, shadow in enumerate(self.ema):
                shadow.copy_(tensors[f"ema.{i}"])
        for name, opt in self.optimizers.items():
            unflatten_optimizer(opt, part(f"optimizer.{name}."), state["optimizers"][name])
        if state.get("loss_scaler"):
            self.scaler.load_state_dict(state["loss_scaler"])

    def export(self) -> Path:
        """The trained generator as a prior folder (EMA weights when kept), and its samples."""
        from ..generate import generate_set

        out = self.run_dir / "generator"
        if self.acc.is_main_process:
            kept_prior = {k: v.detach().clone() for k, v in self.prior.state_dict().items()}
            kept = [p.detach().clone() for p in self.trainable]
            with torch.no_grad():
                for p, shadow in zip(self.trainable, self.ema):
                    p.copy_(shadow)
            self.method.before_export()  # e.g. fold scale factors into the prior's weights
            self.prior.card.update({
                "method": self.cfg.method, "method_options": self.method.describe(),
                "base_prior": self.cfg.prior, "dataset": self.real.name,
                "data": f"{self.real.name} train split ({len(self.real.labels):,} images)",
                "trained_iterations": self.cfg.iterations, "ema": self.cfg.ema,
                "command": self.cfg.command, "trained_by": "genprior generator loop",
            })
            self.prior.requires_grad_(False).eval()
            write_dir_atomic(out, self.prior.save_pretrained)
            samples = generate_set(self.prior, self.real, 10, seed=self.cfg.seed, class_map=self.cfg.class_map,
                                   resize=self.cfg.resize, device=str(self.device), method=self.cfg.method)
            save_grid(samples.pixels(), samples.labels, samples.num_classes, self.run_dir / "samples.png")
            with torch.no_grad():  # the run keeps its trained weights (not averaged, not folded; frozen, in eval mode)
                self.prior.load_state_dict(kept_prior)
                for p, k in zip(self.trainable, kept):
                    p.copy_(k)
        self.acc.wait_for_everyone()
        return out


def train_generator(cfg: GeneratorConfig, run_dir, resume: Optional[str] = None, progress: bool = True) -> Path:
    """Run (or resume) a generator training; returns the exported generator's folder."""
    return GeneratorTrainer(cfg, run_dir, progress=progress).run(resume=resume)
