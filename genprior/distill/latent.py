"""Latent distillation: optimise the latents of a frozen prior against a matching loss.

This one loop is GLaD (DC / DM / MTT on StyleGAN w+ or F), IT-GAN (DM on z of
inverted real images), LD3M (diffusion x_T + class embedding through DDIM) and the
classic pixel-space DC / DM / MTT (the pixel prior): the prior decodes, the matcher
compares, and the loop only moves latents. It never special-cases a prior or a loss.

Run directory::

    config.json            the resolved config (every number is reproducible from it)
    log.jsonl              one JSON line per logged iteration and per quick evaluation; its
                           time_s is the loop's time summed over resumed parts, with the
                           threads and the allocator setting (runtime.py) it ran under
    checkpoints/step-N/    latents, optimiser and matcher state (safetensors) + state.json
    latents.safetensors    final latents and labels; latents.json: the prior reference, latent
                           space and config that decode them again (``genprior export``)
    synset/                the final synthetic set (the reported one: last iteration, not best)
    best/                  the best-so-far set by quick evaluation, when enabled

Randomness of iteration ``it`` comes only from seeds derived from (seed, it), and
checkpoints are taken between iterations, so a resumed run is bit-identical on CPU.
Under ``accelerate launch`` each process takes every world-size-th class and the latent
gradients are summed across processes, so all processes hold the same latents. Losses
over the whole set (MTT, CAFE) are computed by every process; each then pushes only its
own classes' image gradients through the prior before the sum.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..data import check_resolution, load_dataset
from ..errors import GenpriorError
from ..images import resize_images
from ..matching import MATCHERS, Matcher, create_matcher
from ..priors.base import Latents
from ..synset import SyntheticSet, save_synset, save_tensors_atomic, write_json_atomic
from .common import (MIXED_PRECISION, PIXEL_PRIOR, TrainingRun, check_finite_config, check_fit, check_keep_checkpoints,
                     compute_dtype, config_from_dict, derive_seed, flatten_optimizer, prior_for, seeded_generator,
                     unflatten_optimizer)

OPTIMIZERS = ("adam", "sgd")
INITS = ("random", "mean", "invert")


@dataclass
class DistillConfig:
    """Everything a latent-distillation run depends on; saved as ``config.json``."""

    dataset: str = "mnist5k"
    prior: str = "mnist5k-stylegan"
    space: Optional[str] = None
    loss: str = "dm"
    loss_options: Dict[str, Any] = field(default_factory=dict)
    ipc: int = 10
    iterations: int = 200
    # "mean" gives every image of a class the same latent; siamese losses then move them
    # identically, so it only suits IPC 1 (GLaD's README warns the same).
    init: str = "random"
    #: a synthetic-set directory whose images the latents start from (by inversion; with ``init="invert"``):
    #: e.g. a herding or k-center baseline, or the exact start of another code's run
    init_from: Optional[str] = None
    invert_steps: int = 100
    #: weight of the LPIPS term beside the pixel MSE when GAN latents are found by inversion
    #: (0: pixels only); the metric that ran (backbone, ImageNet or random weights) goes into
    #: RUN/inversion.json and the set's meta.json
    invert_lpips: float = 0.0
    #: where LPIPS's ImageNet backbone weights are not in the torch cache: its random-backbone
    #: fallback (True, announced and recorded), or a one-line error (False: ``--no-lpips-fallback``)
    invert_lpips_fallback: bool = True
    lr: float = 0.01
    latent_lrs: Dict[str, float] = field(default_factory=dict)
    #: latents of the space that stay as initialised (e.g. ``["x_T"]`` of ``x_T+class``: only the
    #: class or prompt embeddings move); saved and decoded like the others, never optimised
    frozen_latents: List[str] = field(default_factory=list)
    optimizer: str = "sgd"
    momentum: float = 0.5
    batch_real: int = 256
    chunk_size: int = 10
    mixed_precision: str = "no"
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 0  # the newest N checkpoints stay on disk; 0 keeps all
    log_every: int = 10
    eval_every: int = 0
    eval_epochs: int = 100
    class_map: Optional[List[int]] = None
    resize: bool = False
    resolution: Optional[int] = None  # for datasets that take a size (imagefolder, ImageNet subsets)
    data_root: Optional[str] = None
    prior_options: Dict[str, Any] = field(default_factory=dict)
    method: str = ""
    #: the command line that started the run (recorded in the set's meta.json and hub cards)
    command: str = ""

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "DistillConfig":
        return config_from_dict(cls, values, "distillation")


def method_name(cfg: DistillConfig) -> str:
    """What a set's meta.json calls its method: the recipe's name, else e.g. ``dm`` / ``latent-dm``."""
    return cfg.method or (cfg.loss if cfg.prior == PIXEL_PRIOR else f"latent-{cfg.loss}")


# ---- set-up and checks -------------------------------------------------------------------

def check_config(cfg: DistillConfig) -> None:
    """The checks that need no files: every one fails before any work starts."""
    if not isinstance(cfg.ipc, int) or cfg.ipc < 1:
        raise GenpriorError(f"IPC must be at least 1, got {cfg.ipc}")
    check_finite_config(cfg)
    MATCHERS.entry(cfg.loss)  # unknown loss: the error lists the known ones
    for key, flag in (("ipc", "--ipc"), ("batch_real", "--batch-real")):
        if key in cfg.loss_options:
            raise GenpriorError(f"{key} is a distillation setting, not a loss option; pass {flag} instead of --loss-option {key}=...")
    for name, value, allowed in (("mixed_precision", cfg.mixed_precision, MIXED_PRECISION),
                                 ("optimizer", cfg.optimizer, OPTIMIZERS), ("init", cfg.init, INITS)):
        if value not in allowed:
            raise GenpriorError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    for name in ("iterations", "chunk_size", "batch_real", "checkpoint_every", "log_every", "eval_epochs", "invert_steps"):
        if getattr(cfg, name) < 1:
            raise GenpriorError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    check_keep_checkpoints(cfg.keep_checkpoints)
    if isinstance(cfg.invert_lpips, bool) or not isinstance(cfg.invert_lpips, (int, float)) or cfg.invert_lpips < 0:
        raise GenpriorError(f"invert_lpips is the weight of LPIPS in the inversion: a number >= 0, got {cfg.invert_lpips!r}")
    if not isinstance(cfg.invert_lpips_fallback, bool):
        raise GenpriorError(f"invert_lpips_fallback is true or false, got {cfg.invert_lpips_fallback!r}")
    if cfg.invert_lpips and cfg.init != "invert":
        raise GenpriorError(f"--invert-lpips weighs LPIPS in the inversion of --init invert; this run starts with "
                            f"--init {cfg.init}")
    if cfg.init_from is not None and cfg.init != "invert":
        raise GenpriorError(f"--init-from starts the latents from a set's images by inversion; pass --init invert "
                            f"(got --init {cfg.init})")
    if cfg.eval_every < 0:
        raise GenpriorError(f"eval_every must be 0 (no quick evaluation) or positive, got {cfg.eval_every}")
    check_resolution(cfg.resolution)
    lrs = {"lr": cfg.lr, **cfg.latent_lrs}
    not_numbers = {k: v for k, v in lrs.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if not_numbers:
        raise GenpriorError(f"learning rates must be numbers, got {not_numbers}; e.g. --latent-lr F=10")
    if cfg.lr <= 0 or any(v <= 0 for v in cfg.latent_lrs.values()):
        raise GenpriorError(f"learning rates must be positive, got lr={cfg.lr}, latent_lrs={cfg.latent_lrs}")
    if not isinstance(cfg.frozen_latents, list) or not all(isinstance(k, str) for k in cfg.frozen_latents):
        raise GenpriorError(f"frozen_latents must be a list of latent names, got {cfg.frozen_latents!r}; e.g. --freeze x_T")
    both = sorted(set(cfg.frozen_latents) & set(cfg.latent_lrs))
    if both:
        raise GenpriorError(f"{', '.join(both)} is frozen and given a learning rate; drop --latent-lr or --freeze for it")


# ---- saved latents -------------------------------------------------------------------------

LATENTS_FILE = "latents.safetensors"
INVERSION_FILE = "inversion.json"
LATENTS_META = "latents.json"


def save_latents(run_dir, latents: Dict[str, torch.Tensor], labels: torch.Tensor, cfg, space: str) -> None:
    run_dir = Path(run_dir)
    tensors = {f"latent.{k}": v.detach().float().cpu().contiguous() for k, v in latents.items()}
    tensors["labels"] = labels.cpu().contiguous()
    save_tensors_atomic(tensors, run_dir / LATENTS_FILE)
    write_json_atomic({"prior": cfg.prior, "space": space, "config": asdict(cfg)}, run_dir / LATENTS_META)


def load_latents(run_dir) -> Tuple[Dict[str, torch.Tensor], torch.Tensor, Dict[str, Any]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GenpriorError(f"{run_dir} is not a folder; pass the output directory of a distillation run")
    for name in (LATENTS_FILE, LATENTS_META):
        if not (run_dir / name).is_file():
            raise GenpriorError(f"{run_dir} has no {name}; it is not a finished distillation run "
                                "(an interrupted one continues with --resume latest)")
    try:
        tensors = load_file(str(run_dir / LATENTS_FILE))
        meta = json.loads((run_dir / LATENTS_META).read_text())
        missing = [k for k in ("prior", "space", "config") if k not in meta] + (["labels"] if "labels" not in tensors else [])
    except (OSError, ValueError, TypeError, SafetensorError) as e:
        raise GenpriorError(f"{run_dir / LATENTS_FILE} cannot be read ({e}); re-run the distillation") from None
    latents = {k[len("latent."):]: v for k, v in tensors.items() if k.startswith("latent.")}
    if missing or not latents:
        raise GenpriorError(f"the saved latents of {run_dir} lack {', '.join(missing) or 'any latent'}; "
                            "they are corrupted: re-run the distillation")
    return latents, tensors["labels"], meta


# ---- the loop ------------------------------------------------------------------------------

class LatentDistiller(TrainingRun):
    """Holds a run: prior, matcher, real data, latents, optimiser; ``run()`` drives it."""

    kind = "latent"
    required_state = ("optimizer",)

    def __init__(self, cfg: DistillConfig, run_dir, accelerator=None, progress: bool = True):
        check_config(cfg)
        super().__init__(cfg, run_dir, accelerator, progress)
        cfg = self.cfg

        self.real = load_dataset(cfg.dataset, "train", root=cfg.data_root, resolution=cfg.resolution)
        self.prior = prior_for(cfg.prior, self.real, **cfg.prior_options)
        check_fit(self.prior, self.real, cfg.class_map, cfg.resize)
        self.space = self.prior.check_space(cfg.space or self.prior.default_space)
        self.matcher: Matcher = create_matcher(cfg.loss, self.real.channels, self.real.num_classes,
                                               self.real.resolution, self.real.name, ipc=cfg.ipc,
                                               batch_real=cfg.batch_real, **cfg.loss_options)
        self.matcher.to(self.device)
        self.prior.set_normalization(self.real.mean, self.real.std)
        self.prior.requires_grad_(False).eval()
        dtype = compute_dtype(cfg.mixed_precision)
        self.prior.to(self.device, dtype=dtype)  # frozen prior in the compute dtype; latents stay fp32
        # fp16 gradients underflow without loss scaling: the scaled loss's gradient goes through both
        # passes, and the latents' gradients are unscaled (a step with inf/NaN skipped) before the
        # step. Disabled (a no-op) in fp32 and bf16.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.mixed_precision == "fp16")

        nc = self.real.num_classes
        self.labels = torch.arange(nc).repeat_interleave(cfg.ipc)
        mapped = torch.tensor(cfg.class_map) if cfg.class_map is not None else torch.arange(nc)
        self.prior_labels = mapped[self.labels].to(self.device)
        self.my_classes = list(range(self.acc.process_index, nc, self.acc.num_processes))
        self._check_latent_names()
        self.latents: Latents = {}
        self.opt: Optional[torch.optim.Optimizer] = None

    # -- latents --
    def _check_latent_names(self) -> None:
        """``latent_lrs`` and ``frozen_latents`` may name only the space's latents, and something
        must stay trainable: checked on one random draw, before any inversion or iteration."""
        cfg = self.cfg
        if not cfg.latent_lrs and not cfg.frozen_latents:
            return
        with torch.random.fork_rng(devices=[]):
            names = set(self.prior.init_latents(self.prior_labels[:1], space=self.space, method="random",
                                                generator=seeded_generator(cfg.seed, "latent-names")))
        for what, given in (("latent_lrs", cfg.latent_lrs), ("frozen_latents", cfg.frozen_latents)):
            unknown = sorted(set(given) - names)
            if unknown:
                raise GenpriorError(f"{what} names {', '.join(unknown)}, which space {self.space!r} does not have; "
                                    f"its latents: {', '.join(sorted(names))}")
        if names <= set(cfg.frozen_latents):
            raise GenpriorError(f"--freeze leaves nothing to optimise in space {self.space!r} "
                                f"(latents: {', '.join(sorted(names))}); freeze fewer")

    def _as_leaf(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A latent as the run holds it: a contiguous float leaf that requires grad unless it is
        frozen. Contiguous because a checkpoint restores it so: an inversion can return another
        memory layout (e.g. channels-last), and convolutions over another layout round differently,
        so a resumed run would drift from an uninterrupted one by float noise."""
        value = value.detach().float().to(self.device).contiguous()
        return value.requires_grad_(name not in self.cfg.frozen_latents)

    def init_latents(self) -> None:
        cfg = self.cfg
        gen = seeded_generator(cfg.seed, "init")
        images, kwargs = None, {}
        if cfg.init_from is not None:
            images = self._init_images()
        elif cfg.init == "invert":
            images = torch.cat([self.real.sample_class(c, cfg.ipc, gen) for c in range(self.real.num_classes)])
        if images is not None:
            images = self._to_prior_size(images).to(self.device)
            kwargs = {"batch_size": cfg.chunk_size, "progress": self.progress and self.acc.is_main_process}
            from ..perceptual import lpips_metric

            # one metric for the inversion's LPIPS term and for measuring how far the start decodes
            metric, self.lpips_info = lpips_metric("alex", allow_fallback=cfg.invert_lpips_fallback,
                                                   device=str(self.device))
            if self.prior.inverts_by_optimisation:
                kwargs["steps"] = cfg.invert_steps
                inversion: Dict[str, Any] = {"objective": "pixel MSE", "lpips_weight": cfg.invert_lpips,
                                             "steps": cfg.invert_steps}
                if cfg.invert_lpips:  # (a prior that does not invert by optimisation is refused below)
                    kwargs["lpips"], kwargs["lpips_weight"] = metric, cfg.invert_lpips
                    inversion.update(objective="pixel MSE + lpips_weight x LPIPS", **self.lpips_info)
            elif cfg.invert_lpips:
                raise GenpriorError(f"--invert-lpips weighs LPIPS in an optimised inversion, but this prior "
                                    f"({type(self.prior).__name__}) inverts without optimisation; drop it")
            else:
                inversion = {"objective": f"{type(self.prior).__name__}'s own inversion (no optimisation)"}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "init-global"))
            latents = self.prior.init_latents(self.prior_labels, space=self.space, method=cfg.init, images=images,
                                              generator=gen, **kwargs)
        self.latents = {k: self._as_leaf(k, v) for k, v in latents.items()}
        self._build_optimizer()
        if images is not None and self.acc.is_main_process:
            inversion["reconstruction"] = self._reconstruction_error(latents, images, metric, self.lpips_info)
            write_json_atomic(inversion, self.run_dir / INVERSION_FILE)

    def config_extras(self) -> Dict[str, Any]:
        """The LPIPS metric that ran (backbone, ImageNet or random weights), beside the settings."""
        info = getattr(self, "lpips_info", None)
        return {"lpips_metric": info} if info else {}

    @torch.no_grad()
    def _reconstruction_error(self, latents, images: torch.Tensor, metric, info: Dict[str, Any]) -> Dict[str, Any]:
        """How far the start decodes from the images it was inverted from: the pixel MSE (in the
        normalised space the inversion minimises) and the mean LPIPS distance (with the metric the
        inversion used, or would have used: runs with and without the term compare)."""
        from ..perceptual import to_lpips_input

        mean, std = self.prior.out_mean, self.prior.out_std
        squared, distance, step = 0.0, 0.0, self.cfg.chunk_size
        for lo in range(0, images.shape[0], step):  # a chunk at a time: memory stays flat in the IPC
            part = {k: v[lo:lo + step] for k, v in latents.items()}
            decoded = self.prior.decode(part, self.prior_labels[lo:lo + step])
            target = images[lo:lo + step]
            squared += float((decoded - target).square().sum())
            distance += float(metric(to_lpips_input((decoded * std + mean).clamp(0, 1)),
                                     to_lpips_input((target * std + mean).clamp(0, 1))).sum())
        return {"mse": squared / images.numel(), "lpips": distance / images.shape[0], "lpips_weights": info["weights"]}

    def _init_images(self) -> torch.Tensor:
        """The images of the ``init_from`` set, checked against this run: dataset, normalisation,
        classes in order, IPC and size."""
        from ..synset import load_synset

        cfg, real = self.cfg, self.real
        start = load_synset(cfg.init_from)
        problems = []
        if start.dataset != real.name:
            problems.append(f"it was made for {start.dataset}, this run distils {real.name}")
        if start.ipc != cfg.ipc or start.num_classes != real.num_classes:
            problems.append(f"it holds {start.ipc} images for each of {start.num_classes} classes, this run needs "
                            f"{cfg.ipc} for each of {real.num_classes}")
        elif not torch.equal(start.labels, self.labels):
            problems.append("its images are not ordered by class")
        if tuple(start.images.shape[1:]) != tuple(real.images.shape[1:]):
            problems.append(f"its images are {tuple(start.images.shape[1:])}, the data's {tuple(real.images.shape[1:])}")
        if problems:
            raise GenpriorError(f"--init-from {cfg.init_from} cannot start this run: {'; '.join(problems)}")
        images = start.images.float()
        # a set normalised otherwise is brought to this data's normalisation
        if tuple(start.mean) != tuple(real.mean) or tuple(start.std) != tuple(real.std):
            images = real.normalize(start.pixels())
        return images

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        groups = [{"params": [v], "lr": cfg.latent_lrs.get(k, cfg.lr)} for k, v in sorted(self.latents.items())
                  if k not in cfg.frozen_latents]
        extra = self.matcher.extra_parameters()
        if extra:
            groups.append({"params": extra, "lr": self.matcher.extra_lr})
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(groups)
        else:
            self.opt = torch.optim.SGD(groups, momentum=cfg.momentum)

    def _to_prior_size(self, images: torch.Tensor) -> torch.Tensor:
        return resize_images(images, self.prior.resolution)

    def _to_data_size(self, images: torch.Tensor) -> torch.Tensor:
        return resize_images(images, self.real.resolution)

    def _class_slice(self, c: int) -> slice:
        return slice(c * self.cfg.ipc, (c + 1) * self.cfg.ipc)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        return self._to_data_size(images.float())

    @torch.no_grad()
    def decode_class(self, c: int) -> torch.Tensor:
        """First pass: class ``c``'s images without an autograd graph through the prior."""
        sl = self._class_slice(c)
        part = {k: v[sl] for k, v in self.latents.items()}
        with self.acc.autocast():
            images = self.prior.decode(part, self.prior_labels[sl], chunk_size=self.cfg.chunk_size)
        # detached: the pixel prior returns a view of its latents, and a view made under no_grad still
        # reports requires_grad; a loss's gradient would then stop at that view and never reach .grad
        return self._finish(images).detach()

    def backward_class(self, c: int, grad_images: torch.Tensor) -> None:
        """Second pass: dL/d(images of class c) into the latents, chunk by chunk."""
        sl = self._class_slice(c)
        part = {k: v[sl] for k, v in self.latents.items()}
        with self.acc.autocast():
            self.prior.backward_chunked(part, self.prior_labels[sl], grad_images, self.cfg.chunk_size,
                                        transform=self._finish)

    def decode_all(self) -> torch.Tensor:
        return torch.cat([self.decode_class(c) for c in range(self.real.num_classes)])

    # -- one iteration --
    def iteration(self, it: int) -> float:
        """Losses see detached images that require grad; their gradients then go through
        the prior in a second pass (GLaD), so memory is bounded by the chunk size."""
        cfg, m = self.cfg, self.matcher
        torch.manual_seed(derive_seed(cfg.seed, it, "global"))
        m.start_iteration(it, seeded_generator(cfg.seed, it, "matcher"))
        total = 0.0
        for u in range(m.updates_per_iteration):
            self.opt.zero_grad(set_to_none=True)
            if m.per_class:
                for c in self.my_classes:
                    gen = seeded_generator(cfg.seed, it, u, c)
                    real_c = self.real.sample_class(c, m.batch_real, gen).to(self.device)
                    syn = self.decode_class(c).requires_grad_(True)
                    with self.acc.autocast():
                        loss = m.class_loss(real_c, syn, c, gen)
                    self._check_finite(loss, it, f"class {c}")
                    self.scaler.scale(loss).backward()
                    if syn.grad is not None:
                        self.backward_class(c, syn.grad)
                    total += loss.item()
                self._sum_gradients()
                if self.acc.num_processes > 1:  # the loss of every class, as one process would log it
                    total = float(self.acc.reduce(torch.tensor([total], device=self.device), reduction="sum"))
            else:
                gen = seeded_generator(cfg.seed, it, u)
                syn = self.decode_all().requires_grad_(True)
                with self.acc.autocast():
                    loss = m.set_loss(syn, self.labels.to(self.device), self.real, gen)
                self._check_finite(loss, it, "the whole set")
                self.scaler.scale(loss).backward()
                # every process computed the same loss; each pushes only its own classes'
                # image gradients through the prior, and the latent gradients are summed
                for c in self.my_classes if syn.grad is not None else ():
                    self.backward_class(c, syn.grad[self._class_slice(c)])
                self._sum_gradients(extra=False)  # the loss's own parameters got the same gradient everywhere
                total += loss.item()
            self.scaler.step(self.opt)
            self.scaler.update()
            if type(m).after_update is not Matcher.after_update:
                m.after_update(self.decode_all(), self.labels.to(self.device), seeded_generator(cfg.seed, it, u, "after"))
        return total / m.updates_per_iteration

    def _sum_gradients(self, extra: bool = True) -> None:
        """Sum the latent gradients over processes, and the loss's own parameters' ones when
        each process computed a part of them (``extra``)."""
        if self.acc.num_processes == 1:
            return
        for tensor in self.latents.values():
            if not tensor.requires_grad:  # frozen
                continue
            if tensor.grad is None:
                tensor.grad = torch.zeros_like(tensor)
            tensor.grad = self.acc.reduce(tensor.grad, reduction="sum")
        for tensor in self.matcher.extra_parameters() if extra else ():
            if tensor.grad is not None:
                tensor.grad = self.acc.reduce(tensor.grad, reduction="sum")

    def _check_finite(self, loss: torch.Tensor, it: int, where: str) -> None:
        self.check_finite(loss, it, where, "lower --lr or run without mixed precision")

    # -- checkpoints --
    def initialize(self) -> None:
        self.init_latents()

    def checkpoint_tensors(self) -> Dict[str, torch.Tensor]:
        tensors = {f"latent.{k}": v for k, v in self.latents.items()}
        opt_tensors, self._opt_rest = flatten_optimizer(self.opt)
        tensors.update(opt_tensors)
        tensors.update({f"matcher.{k}": v for k, v in self.matcher.state_dict().items()})
        for i, p in enumerate(self.matcher.extra_parameters()):
            tensors[f"extra.{i}"] = p
        return tensors

    def checkpoint_state(self) -> Dict[str, Any]:
        return {"optimizer": self._opt_rest, "loss_scaler": self.scaler.state_dict()}

    def restore(self, tensors: Dict[str, torch.Tensor], state: Dict[str, Any]) -> None:
        self.latents = {k[len("latent."):]: self._as_leaf(k[len("latent."):], v)
                        for k, v in tensors.items() if k.startswith("latent.")}
        self.matcher.load_state_dict({k[len("matcher."):]: v for k, v in tensors.items() if k.startswith("matcher.")})
        for i, p in enumerate(self.matcher.extra_parameters()):
            with torch.no_grad():
                p.copy_(tensors[f"extra.{i}"])
        self._build_optimizer()
        unflatten_optimizer(self.opt, tensors, state["optimizer"])
        if state.get("loss_scaler"):
            self.scaler.load_state_dict(state["loss_scaler"])

    # -- outputs --
    def current_set(self) -> SyntheticSet:
        images = self.decode_all().float().cpu()
        return SyntheticSet(images=images, labels=self.labels.clone(), mean=self.real.mean, std=self.real.std,
                            dataset=self.real.name, class_names=self.real.class_names,
                            method=method_name(self.cfg), prior=self.cfg.prior,
                            config={"distill": asdict(self.cfg), "space": self.space, "matcher": self.matcher.describe(),
                                    "prior_card": self.prior.describe(), **self._inversion()})

    def _inversion(self) -> Dict[str, Any]:
        """How the start was found, when it was by inversion (``RUN/inversion.json``)."""
        path = self.run_dir / INVERSION_FILE
        return {"inversion": json.loads(path.read_text())} if path.is_file() else {}

    def _quick_eval(self, it: int) -> None:
        from ..evaluate import evaluate_synset, with_counts

        synset = self.current_set()
        test = load_dataset(self.cfg.dataset, "test", root=self.cfg.data_root, resolution=self.cfg.resolution)
        proto = with_counts("quick", epochs=self.cfg.eval_epochs, num_models=1)
        acc = evaluate_synset(synset, protocol=proto, test=test, device="cpu" if self.device.type == "cpu" else "auto",
                              progress=False)["results"]["convnet"]["mean"]
        self.log({"iteration": it, "quick_eval_acc": acc, "protocol": proto.name})
        if acc > self.best.get("acc", -1.0):
            self.best = {"acc": acc, "iteration": it}
            save_synset(synset, self.run_dir / "best", overwrite=True)

    def export(self) -> SyntheticSet:
        synset = self.current_set()
        if self.acc.is_main_process:
            save_latents(self.run_dir, self.latents, self.labels, self.cfg, self.space)
            save_synset(synset, self.run_dir / "synset", overwrite=True)
        return synset

    def progress_label(self) -> str:
        return f"distill {self.cfg.loss} {self.space}"

    def after_iteration(self, it: int) -> None:
        if self.cfg.eval_every and (it + 1) % self.cfg.eval_every == 0 and self.acc.is_main_process:
            self._quick_eval(it + 1)


def distill(cfg: DistillConfig, run_dir, resume: Optional[str] = None, progress: bool = True) -> SyntheticSet:
    """Run (or resume) a latent distillation and return the final synthetic set."""
    return LatentDistiller(cfg, run_dir, progress=progress).run(resume=resume)
