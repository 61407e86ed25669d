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
    latents.safetensors    final latents; latents.json says which prior decodes them
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

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data import RealData, check_resolution, load_dataset
from ..errors import GenpriorError
from ..matching import MATCHERS, Matcher, create_matcher
from ..priors.base import Latents, Prior
from ..priors.load import load_prior
from ..runtime import memory_setting
from ..synset import SyntheticSet, save_synset, write_dir_atomic, write_json_atomic, write_text_atomic

MIXED_PRECISION = ("no", "bf16", "fp16")
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
    invert_steps: int = 100
    lr: float = 0.01
    latent_lrs: Dict[str, float] = field(default_factory=dict)
    optimizer: str = "sgd"
    momentum: float = 0.5
    batch_real: int = 256
    chunk_size: int = 10
    mixed_precision: str = "no"
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    eval_every: int = 0
    eval_epochs: int = 100
    class_map: Optional[List[int]] = None
    resize: bool = False
    resolution: Optional[int] = None  # for datasets that take a size (imagefolder, ImageNet subsets)
    data_root: Optional[str] = None
    prior_options: Dict[str, Any] = field(default_factory=dict)
    method: str = ""

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "DistillConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GenpriorError(f"unknown distillation option {', '.join(unknown)}; options: {', '.join(sorted(known))}")
        return cls(**values)


def method_name(cfg: DistillConfig) -> str:
    """What a set's meta.json calls its method: the recipe's name, else e.g. ``dm`` / ``latent-dm``."""
    return cfg.method or (cfg.loss if cfg.prior == PIXEL_PRIOR else f"latent-{cfg.loss}")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts: the same parts give the same seed in every process."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


# ---- set-up and checks -------------------------------------------------------------------

PIXEL_PRIOR = "pixel"


def prior_for(ref: str, real: RealData, **options: Any) -> Prior:
    """``pixel`` is the identity prior sized to the dataset; any other ref goes to ``load_prior``."""
    if ref == PIXEL_PRIOR:
        from ..priors.pixel import PixelPrior

        return PixelPrior(real.num_classes, real.channels, real.resolution, real.mean, real.std)
    return load_prior(ref, **options)


def check_config(cfg: DistillConfig) -> None:
    """The checks that need no files: every one fails before any work starts."""
    if not isinstance(cfg.ipc, int) or cfg.ipc < 1:
        raise GenpriorError(f"IPC must be at least 1, got {cfg.ipc}")
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
    if cfg.eval_every < 0:
        raise GenpriorError(f"eval_every must be 0 (no quick evaluation) or positive, got {cfg.eval_every}")
    check_resolution(cfg.resolution)
    lrs = {"lr": cfg.lr, **cfg.latent_lrs}
    not_numbers = {k: v for k, v in lrs.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if not_numbers:
        raise GenpriorError(f"learning rates must be numbers, got {not_numbers}; e.g. --latent-lr F=10")
    if cfg.lr <= 0 or any(v <= 0 for v in cfg.latent_lrs.values()):
        raise GenpriorError(f"learning rates must be positive, got lr={cfg.lr}, latent_lrs={cfg.latent_lrs}")


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype the frozen prior computes in under ``mixed_precision``."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def check_device(mixed_precision: str, device: torch.device) -> None:
    if mixed_precision == "fp16" and device.type == "cpu":
        raise GenpriorError("fp16 mixed precision needs a GPU (accelerate would silently run fp32 on a CPU); "
                            "use --mixed-precision bf16 or no")


def check_fit(prior: Prior, real: RealData, cfg: DistillConfig) -> None:
    """The prior must make this dataset's classes, channels and size, unless mapped."""
    if prior.channels != real.channels:
        raise GenpriorError(f"prior makes {prior.channels}-channel images but {real.name} has {real.channels}; "
                            "pick a prior trained on data with the same channels")
    if prior.resolution != real.resolution and not cfg.resize:
        raise GenpriorError(f"prior makes {prior.resolution}-px images but {real.name} is {real.resolution} px; "
                            "pass --resize to resize decoded images, or pick a prior of that size")
    if cfg.class_map is not None:
        if len(cfg.class_map) != real.num_classes:
            raise GenpriorError(f"class_map needs {real.num_classes} entries (one prior class per {real.name} class), "
                                f"got {len(cfg.class_map)}")
        if prior.num_classes is not None and any(not 0 <= c < prior.num_classes for c in cfg.class_map):
            raise GenpriorError(f"class_map entries must lie in [0, {prior.num_classes}) for this prior")
    elif prior.num_classes is not None and prior.num_classes != real.num_classes:
        raise GenpriorError(f"prior has {prior.num_classes} classes but {real.name} has {real.num_classes}; "
                            "pass --class-map with one prior class per dataset class")


def make_accelerator(mixed_precision: str):
    """An Accelerator for this run. accelerate keeps one state per process; a run in a
    process that already ran with another precision (a notebook, a test session)
    resets that state but keeps the process group of ``accelerate launch``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    # without a GPU, say so: accelerate then joins the launched processes with gloo; left to
    # itself it would run every launched process alone, each as process 0 of 1
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


# ---- checkpoints ---------------------------------------------------------------------------

def _flatten_optimizer(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Optimiser state as tensors (safetensors) + its JSON-able rest."""
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], rest: Dict[str, Any]) -> None:
    state: Dict[int, Dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in rest["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def resolve_resume(run_dir: Path, resume: Optional[str]) -> Optional[Path]:
    """The checkpoint ``resume`` names (``'latest'`` or a checkpoint folder), checked before
    any work and without touching the disk; with no ``resume`` the run directory must not
    hold a run already."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise GenpriorError(f"output directory {run_dir} is a file; choose a folder")
    if not resume:
        if latest_checkpoint(run_dir) is not None:
            raise GenpriorError(f"{run_dir} already holds a run; pass --resume latest to continue it or choose another --output-dir")
        return None
    if resume == "latest":
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise GenpriorError(f"nothing to resume in {run_dir}: no checkpoint found; drop --resume to start anew")
        return ckpt
    ckpt = Path(resume)
    if not (ckpt / "state.json").is_file():
        raise GenpriorError(f"--resume {resume}: not a checkpoint folder (one holds state.json, e.g. "
                            "RUN/checkpoints/step-000100); pass 'latest' to continue the newest")
    return ckpt


# ---- the loop ------------------------------------------------------------------------------

class LatentDistiller:
    """Holds a run: prior, matcher, real data, latents, optimiser; ``run()`` drives it."""

    def __init__(self, cfg: DistillConfig, run_dir, accelerator=None, progress: bool = True):
        check_config(cfg)
        memory_setting()  # a bad GENPRIOR_KEEP_MEMORY fails before any work
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        if accelerator is None:
            check_device(cfg.mixed_precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
            accelerator = make_accelerator(cfg.mixed_precision)
        self.acc = accelerator
        self.device = accelerator.device
        check_device(cfg.mixed_precision, self.device)

        self.real = load_dataset(cfg.dataset, "train", root=cfg.data_root, resolution=cfg.resolution)
        self.prior = prior_for(cfg.prior, self.real, **cfg.prior_options)
        check_fit(self.prior, self.real, cfg)
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
        self._check_latent_lrs()
        self.latents: Latents = {}
        self.opt: Optional[torch.optim.Optimizer] = None
        self.start_it = 0
        self.best: Dict[str, Any] = {}
        self.elapsed_before = 0.0  # loop seconds of the parts before a resume
        self._t0: Optional[float] = None

    # -- latents --
    def _check_latent_lrs(self) -> None:
        """``latent_lrs`` may name only the space's latents: checked on one random draw, before
        any inversion or iteration."""
        if not self.cfg.latent_lrs:
            return
        with torch.random.fork_rng(devices=[]):
            names = set(self.prior.init_latents(self.prior_labels[:1], space=self.space, method="random",
                                                generator=_generator(self.cfg.seed, "latent-names")))
        unknown = sorted(set(self.cfg.latent_lrs) - names)
        if unknown:
            raise GenpriorError(f"latent_lrs names {', '.join(unknown)}, which space {self.space!r} does not have; "
                                f"its latents: {', '.join(sorted(names))}")

    def init_latents(self) -> None:
        cfg = self.cfg
        gen = _generator(cfg.seed, "init")
        images, kwargs = None, {}
        if cfg.init == "invert":
            images = torch.cat([self.real.sample_class(c, cfg.ipc, gen) for c in range(self.real.num_classes)])
            images = self._to_prior_size(images).to(self.device)
            kwargs = {"batch_size": cfg.chunk_size, "progress": self.progress and self.acc.is_main_process}
            if self.prior.inverts_by_optimisation:
                kwargs["steps"] = cfg.invert_steps
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "init-global"))
            latents = self.prior.init_latents(self.prior_labels, space=self.space, method=cfg.init, images=images,
                                              generator=gen, **kwargs)
        self.latents = {k: v.detach().float().to(self.device).requires_grad_(True) for k, v in latents.items()}
        self._build_optimizer()

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        groups = [{"params": [v], "lr": cfg.latent_lrs.get(k, cfg.lr)} for k, v in sorted(self.latents.items())]
        extra = self.matcher.extra_parameters()
        if extra:
            groups.append({"params": extra, "lr": self.matcher.extra_lr})
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(groups)
        else:
            self.opt = torch.optim.SGD(groups, momentum=cfg.momentum)

    def _to_prior_size(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.prior.resolution:
            return images
        return F.interpolate(images, size=self.prior.resolution, mode="bilinear", antialias=True, align_corners=False)

    def _to_data_size(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.real.resolution:
            return images
        return F.interpolate(images, size=self.real.resolution, mode="bilinear", antialias=True, align_corners=False)

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
        m.start_iteration(it, _generator(cfg.seed, it, "matcher"))
        total = 0.0
        for u in range(m.updates_per_iteration):
            self.opt.zero_grad(set_to_none=True)
            if m.per_class:
                for c in self.my_classes:
                    gen = _generator(cfg.seed, it, u, c)
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
                gen = _generator(cfg.seed, it, u)
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
                m.after_update(self.decode_all(), self.labels.to(self.device), _generator(cfg.seed, it, u, "after"))
        return total / m.updates_per_iteration

    def _sum_gradients(self, extra: bool = True) -> None:
        """Sum the latent gradients over processes, and the loss's own parameters' ones when
        each process computed a part of them (``extra``)."""
        if self.acc.num_processes == 1:
            return
        for tensor in self.latents.values():
            if tensor.grad is None:
                tensor.grad = torch.zeros_like(tensor)
            tensor.grad = self.acc.reduce(tensor.grad, reduction="sum")
        for tensor in self.matcher.extra_parameters() if extra else ():
            if tensor.grad is not None:
                tensor.grad = self.acc.reduce(tensor.grad, reduction="sum")

    def _check_finite(self, loss: torch.Tensor, it: int, where: str) -> None:
        if not torch.isfinite(loss).all():
            last = latest_checkpoint(self.run_dir)
            keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            raise GenpriorError(f"loss became {loss.item()} at iteration {it} ({where}); {keep}; "
                                "lower --lr or run without mixed precision")

    def elapsed_s(self) -> float:
        """Seconds spent in the iteration loop so far, summed over resumed parts (the time lost
        between a run's last checkpoint and its interruption is not counted)."""
        return self.elapsed_before + (time.time() - self._t0 if self._t0 is not None else 0.0)

    # -- checkpoints --
    def save_checkpoint(self, it: int) -> None:
        """After iteration ``it - 1``: state to start iteration ``it``."""
        if not self.acc.is_main_process:
            return
        tensors = {f"latent.{k}": v.detach().cpu().contiguous() for k, v in self.latents.items()}
        opt_tensors, opt_rest = _flatten_optimizer(self.opt)
        tensors.update(opt_tensors)
        tensors.update({f"matcher.{k}": v.detach().cpu().contiguous() for k, v in self.matcher.state_dict().items()})
        for i, p in enumerate(self.matcher.extra_parameters()):
            tensors[f"extra.{i}"] = p.detach().cpu().contiguous()
        state = {"next_iteration": it, "optimizer": opt_rest, "best": self.best, "config": asdict(self.cfg),
                 "elapsed_s": self.elapsed_s(), "loss_scaler": self.scaler.state_dict()}

        def write(d: Path) -> None:
            save_file(tensors, str(d / "state.safetensors"))
            (d / "state.json").write_text(json.dumps(state, indent=2, default=str))

        write_dir_atomic(self.run_dir / "checkpoints" / f"step-{it:06d}", write)

    def load_checkpoint(self, path: Path) -> None:
        corrupted = f"checkpoint {path} cannot be read ({{}}); delete it to resume from the one before"
        try:
            state = json.loads((path / "state.json").read_text())
            tensors = load_file(str(path / "state.safetensors"))
            missing = [k for k in ("config", "next_iteration", "optimizer") if k not in state]
        except (OSError, ValueError, TypeError) as e:
            raise GenpriorError(corrupted.format(e)) from None
        if missing:
            raise GenpriorError(corrupted.format(f"state.json lacks {', '.join(missing)}"))
        saved = {k: v for k, v in state["config"].items() if k not in ("iterations", "eval_every", "log_every", "checkpoint_every")}
        now = {k: v for k, v in asdict(self.cfg).items() if k in saved}
        if json.loads(json.dumps(saved, default=str)) != json.loads(json.dumps(now, default=str)):
            diff = sorted(k for k in saved if json.dumps(saved[k], default=str) != json.dumps(now[k], default=str))
            raise GenpriorError(f"checkpoint {path} was made with other settings ({', '.join(diff)}); "
                                "resume with the same options or start a new output directory")
        self.latents = {k[len("latent."):]: v.to(self.device).requires_grad_(True)
                        for k, v in tensors.items() if k.startswith("latent.")}
        self.matcher.load_state_dict({k[len("matcher."):]: v for k, v in tensors.items() if k.startswith("matcher.")})
        for i, p in enumerate(self.matcher.extra_parameters()):
            with torch.no_grad():
                p.copy_(tensors[f"extra.{i}"])
        self._build_optimizer()
        _unflatten_optimizer(self.opt, tensors, state["optimizer"])
        self.start_it = state["next_iteration"]
        self.best = state.get("best", {})
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if state.get("loss_scaler"):
            self.scaler.load_state_dict(state["loss_scaler"])

    # -- outputs --
    def current_set(self) -> SyntheticSet:
        images = self.decode_all().float().cpu()
        return SyntheticSet(images=images, labels=self.labels.clone(), mean=self.real.mean, std=self.real.std,
                            dataset=self.real.name, class_names=self.real.class_names,
                            method=method_name(self.cfg), prior=self.cfg.prior,
                            config={"distill": asdict(self.cfg), "space": self.space, "matcher": self.matcher.describe(),
                                    "prior_card": self.prior.describe()})

    def _log(self, record: Dict[str, Any]) -> None:
        if self.acc.is_main_process:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _trim_log(self) -> None:
        """On resume: drop what the interrupted part logged after its last checkpoint (it is
        done again) and a line torn by the interruption, so the log reads as one run."""
        path = self.run_dir / "log.jsonl"
        if not self.acc.is_main_process or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            it = record.get("iteration")
            # loss records count iterations from 0; quick evaluations count iterations done
            if it is None or it < self.start_it or ("quick_eval_acc" in record and it == self.start_it):
                kept.append(line)
        write_text_atomic("".join(line + "\n" for line in kept), path)

    def _quick_eval(self, it: int) -> None:
        from ..evaluate import evaluate_synset, with_counts

        synset = self.current_set()
        test = load_dataset(self.cfg.dataset, "test", root=self.cfg.data_root, resolution=self.cfg.resolution)
        proto = with_counts("quick", epochs=self.cfg.eval_epochs, num_models=1)
        acc = evaluate_synset(synset, protocol=proto, test=test, device="cpu" if self.device.type == "cpu" else "auto",
                              progress=False)["results"]["convnet"]["mean"]
        self._log({"iteration": it, "quick_eval_acc": acc, "protocol": proto.name})
        if acc > self.best.get("acc", -1.0):
            self.best = {"acc": acc, "iteration": it}
            save_synset(synset, self.run_dir / "best", overwrite=True)

    def export(self) -> SyntheticSet:
        from .export import save_latents

        synset = self.current_set()
        if self.acc.is_main_process:
            save_latents(self.run_dir, self.latents, self.labels, self.cfg, self.space)
            save_synset(synset, self.run_dir / "synset", overwrite=True)
        return synset

    def run(self, resume: Optional[str] = None) -> SyntheticSet:
        cfg = self.cfg
        ckpt = resolve_resume(self.run_dir, resume)
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            self._trim_log()
        else:
            self.init_latents()
            if self.acc.is_main_process:
                write_json_atomic(asdict(cfg), self.run_dir / "config.json")
        bar = tqdm(range(self.start_it, cfg.iterations), initial=self.start_it, total=cfg.iterations,
                   desc=f"distill {cfg.loss} {self.space}", disable=not (self.progress and self.acc.is_main_process))
        memory = memory_setting()  # logged with every loss line: a resumed part may run under another setting
        self._t0 = time.time()
        for it in bar:
            loss = self.iteration(it)
            bar.set_postfix(loss=f"{loss:.4g}")
            if (it + 1) % cfg.log_every == 0 or it == cfg.iterations - 1:
                self._log({"iteration": it, "loss": loss, "time_s": self.elapsed_s(), "processes": self.acc.num_processes,
                           "threads": torch.get_num_threads(), "keep_freed_memory": memory["keep_freed_memory"]})
            if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and self.acc.is_main_process:
                self._quick_eval(it + 1)
            if (it + 1) % cfg.checkpoint_every == 0 or it == cfg.iterations - 1:
                self.save_checkpoint(it + 1)
        bar.close()
        self.acc.wait_for_everyone()
        return self.export()


def distill(cfg: DistillConfig, run_dir, resume: Optional[str] = None, progress: bool = True) -> SyntheticSet:
    """Run (or resume) a latent distillation and return the final synthetic set."""
    return LatentDistiller(cfg, run_dir, progress=progress).run(resume=resume)
