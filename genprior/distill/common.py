"""What every genprior training loop shares: seeds, devices and precision, the prior a
run decodes with, and its checkpoints on disk.

The latent loop (``latent.py``), the generator loops and ``genprior generate`` all
build on these, so a run directory, a checkpoint and a seed mean the same thing in
each of them.
"""
from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..data import RealData
from ..errors import GenpriorError
from ..priors.base import Prior
from ..priors.load import load_prior
from ..synset import write_dir_atomic, write_json_atomic, write_text_atomic

MIXED_PRECISION = ("no", "bf16", "fp16")


# ---- configs -------------------------------------------------------------------------------

def config_from_dict(cls: Any, values: Dict[str, Any], what: str) -> Any:
    """A run config dataclass from a dict; an unknown key fails naming the known ones."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GenpriorError(f"unknown {what} option {', '.join(unknown)}; options: {', '.join(sorted(known))}")
    return cls(**values)


# ---- seeds ---------------------------------------------------------------------------------

def non_finite(value: Any, where: str = "") -> List[Tuple[str, Any]]:
    """(path, value) of every nan or inf number in ``value`` (nested dicts and lists walked)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(where, value)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in non_finite(v, f"{where}[{i}]")]
    return []


def check_finite_config(cfg: Any) -> None:
    """Refuse a run whose config holds nan or inf anywhere (a learning rate, a loss option, a
    weight), before any file is written: such a run would only stop at its first NaN loss."""
    bad = non_finite({name: getattr(cfg, name) for name in cfg.__dataclass_fields__})
    if bad:
        raise GenpriorError("numeric settings must be finite numbers, got " + ", ".join(f"{p}={v}" for p, v in bad))


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts: the same parts give the same seed in every process."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seeded_generator(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from ``derive_seed(*parts)``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


# ---- priors, devices, precision --------------------------------------------------------------

PIXEL_PRIOR = "pixel"


def prior_for(ref: str, real: RealData, **options: Any) -> Prior:
    """``pixel`` is the identity prior sized to the dataset; any other ref goes to ``load_prior``."""
    if ref == PIXEL_PRIOR:
        from ..priors.pixel import PixelPrior

        return PixelPrior(real.num_classes, real.channels, real.resolution, real.mean, real.std)
    return load_prior(ref, dataset_classes=real.class_names, **options)


def check_fit(prior: Prior, real: RealData, class_map: Optional[List[int]] = None, resize: bool = False) -> None:
    """The prior must make this dataset's classes, channels and size, unless mapped."""
    if prior.channels != real.channels:
        raise GenpriorError(f"prior makes {prior.channels}-channel images but {real.name} has {real.channels}; "
                            "pick a prior trained on data with the same channels")
    if prior.resolution != real.resolution and not resize:
        raise GenpriorError(f"prior makes {prior.resolution}-px images but {real.name} is {real.resolution} px; "
                            "pass --resize to resize decoded images, or pick a prior of that size")
    if class_map is not None:
        if len(class_map) != real.num_classes:
            raise GenpriorError(f"class_map needs {real.num_classes} entries (one prior class per {real.name} class), "
                                f"got {len(class_map)}")
        if prior.num_classes is not None and any(not 0 <= c < prior.num_classes for c in class_map):
            raise GenpriorError(f"class_map entries must lie in [0, {prior.num_classes}) for this prior")
    elif prior.num_classes is not None and prior.num_classes != real.num_classes:
        raise GenpriorError(f"prior has {prior.num_classes} classes but {real.name} has {real.num_classes}; "
                            "pass --class-map with one prior class per dataset class")


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype the frozen prior computes in under ``mixed_precision``."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def check_device(mixed_precision: str, device: torch.device) -> None:
    if mixed_precision == "fp16" and device.type == "cpu":
        raise GenpriorError("fp16 mixed precision needs a GPU (accelerate would silently run fp32 on a CPU); "
                            "use --mixed-precision bf16 or no")


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


# ---- checkpoints ----------------------------------------------------------------------------

def flatten_optimizer(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
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


def unflatten_optimizer(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], rest: Dict[str, Any]) -> None:
    state: Dict[int, Dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in rest["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def checkpoints(run_dir: Path) -> List[Path]:
    """A run's checkpoint folders, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = checkpoints(run_dir)
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


# ---- the run every loop shares ------------------------------------------------------------

#: settings a resumed run may change: how long it runs, how often it logs, evaluates and saves, and the
#: command line it was started with (a resumed one adds --resume)
RESUMABLE_CHANGES = ("iterations", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "command")


def check_keep_checkpoints(value: Any) -> None:
    """``keep_checkpoints``: how many of the newest checkpoints a run keeps (0: all of them)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GenpriorError(f"keep_checkpoints must be an integer of at least 0 (0 keeps every checkpoint), got {value!r}")


def prune_checkpoints(run_dir: Path, keep: int) -> List[Path]:
    """Delete all but the ``keep`` newest checkpoints of a run (``keep`` 0: none); returns those deleted."""
    import shutil

    if keep < 1:
        return []
    old = checkpoints(run_dir)[:-keep]
    for path in old:
        shutil.rmtree(path)
    return old


class TrainingRun(ABC):
    """The machinery of a resumable run, shared by every loop (latents, generators).

    A subclass sets ``kind`` (what its checkpoints are made by), holds a dataclass config
    with at least ``iterations``, ``seed``, ``mixed_precision``, ``log_every`` and
    ``checkpoint_every`` (and, optionally, ``keep_checkpoints``), and implements:

    - ``initialize()``: the state of iteration 0 (called only for a new run);
    - ``iteration(it) -> float``: one iteration, its loss; all randomness from ``(seed, it)``;
    - ``checkpoint_tensors()`` / ``checkpoint_state()``: everything the next iteration needs,
      as tensors (safetensors) and as JSON; ``restore(tensors, state)`` puts it back;
    - ``export()``: the run's outputs, after the last iteration.

    It gives the run directory (``config.json``, ``log.jsonl``, ``checkpoints/step-N``
    written atomically), ``run(resume)`` with ``'latest'`` or a checkpoint folder (a
    resumed run is bit-identical on a CPU: checkpoints fall between iterations), a stop
    on a non-finite loss that names the iteration and the last good checkpoint, the loop's
    time summed over resumed parts, and the progress bar.
    """

    kind = "run"
    #: entries of a checkpoint's state.json without which it cannot be restored
    required_state: Tuple[str, ...] = ()

    def __init__(self, cfg: Any, run_dir, accelerator=None, progress: bool = True):
        from ..runtime import memory_setting

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
        self.start_it = 0
        self.best: Dict[str, Any] = {}
        self.elapsed_before = 0.0  # loop seconds of the parts before a resume
        self._t0: Optional[float] = None

    # ---- what a loop implements -------------------------------------------------------------
    @abstractmethod
    def initialize(self) -> None:
        """See the class docstring."""

    @abstractmethod
    def iteration(self, it: int) -> float:
        """See the class docstring."""

    @abstractmethod
    def checkpoint_tensors(self) -> Dict[str, torch.Tensor]:
        """See the class docstring."""

    def checkpoint_state(self) -> Dict[str, Any]:
        """JSON state; called right after ``checkpoint_tensors`` for the same checkpoint."""
        return {}

    @abstractmethod
    def restore(self, tensors: Dict[str, torch.Tensor], state: Dict[str, Any]) -> None:
        """See the class docstring."""

    @abstractmethod
    def export(self) -> Any:
        """See the class docstring."""

    def after_iteration(self, it: int) -> None:
        """Called after iteration ``it`` is logged, before its checkpoint (e.g. a quick evaluation)."""

    def progress_label(self) -> str:
        return self.kind

    def log_fields(self) -> Dict[str, Any]:
        """Extra fields of every loss line."""
        return {}

    # ---- shared ---------------------------------------------------------------------------
    def config_dict(self) -> Dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.cfg)

    def config_extras(self) -> Dict[str, Any]:
        """What ``config.json`` records beside the settings: facts of this machine's run (e.g. the
        metric that ran), not compared on resume."""
        return {}

    def config_defaults(self) -> Dict[str, Any]:
        """Each setting's default: what a checkpoint written before the setting existed ran with."""
        from dataclasses import MISSING, fields

        return {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(self.cfg) if f.default is not MISSING or f.default_factory is not MISSING}

    def check_finite(self, loss: torch.Tensor, it: int, where: str, fix: str) -> None:
        """Stop on a NaN or infinite loss, naming the iteration and the last good checkpoint."""
        if not torch.isfinite(loss).all():
            last = latest_checkpoint(self.run_dir)
            keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            raise GenpriorError(f"loss became {loss.item()} at iteration {it} ({where}); {keep}; {fix}")

    def elapsed_s(self) -> float:
        """Seconds spent in the iteration loop so far, summed over resumed parts (the time lost
        between a run's last checkpoint and its interruption is not counted)."""
        return self.elapsed_before + (time.time() - self._t0 if self._t0 is not None else 0.0)

    def save_checkpoint(self, it: int) -> None:
        """After iteration ``it - 1``: the state to start iteration ``it``."""
        if not self.acc.is_main_process:
            return
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.checkpoint_tensors().items()}
        state = {"kind": self.kind, "next_iteration": it, "best": self.best, "config": self.config_dict(),
                 "elapsed_s": self.elapsed_s(), **self.checkpoint_state()}

        def write(d: Path) -> None:
            from safetensors.torch import save_file

            save_file(tensors, str(d / "state.safetensors"))
            (d / "state.json").write_text(json.dumps(state, indent=2, default=str))

        write_dir_atomic(self.run_dir / "checkpoints" / f"step-{it:06d}", write)
        prune_checkpoints(self.run_dir, getattr(self.cfg, "keep_checkpoints", 0))

    def load_checkpoint(self, path: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        corrupted = f"checkpoint {path} cannot be read ({{}}); delete it to resume from the one before"
        try:
            state = json.loads((path / "state.json").read_text())
            tensors = load_file(str(path / "state.safetensors"))
            missing = [k for k in ("config", "next_iteration", *self.required_state) if k not in state]
        except (OSError, ValueError, TypeError, SafetensorError) as e:
            raise GenpriorError(corrupted.format(e)) from None
        made_by = state.get("kind", "latent")  # checkpoints from before kinds were recorded are latent runs
        if made_by != self.kind:
            raise GenpriorError(f"checkpoint {path} was made by a {made_by!r} run, not a {self.kind!r} one; "
                                "resume it with the command that made it, or start a new output directory")
        if missing:
            raise GenpriorError(corrupted.format(f"state.json lacks {', '.join(missing)}"))
        # the settings the checkpoint names must be today's; a setting added to genprior since the
        # checkpoint was written ran at its default there, so it must be at its default now
        now, then = self.config_dict(), {**self.config_defaults(), **state["config"]}

        def same(a: Any, b: Any) -> bool:
            return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

        diff = sorted(k for k in set(then) | set(now) if k not in RESUMABLE_CHANGES
                      and (k not in now or (k in then and not same(then[k], now[k]))))
        if diff:
            was = ", ".join(f"{k}={json.dumps(then.get(k), default=str)}" for k in diff[:6])
            raise GenpriorError(f"checkpoint {path} was made with other settings ({was}; now "
                                + ", ".join(f"{k}={json.dumps(now.get(k), default=str)}" for k in diff[:6])
                                + f"); resume with the options that made it (listed in {self.run_dir / 'config.json'}) "
                                "or start a new output directory")
        try:
            self.restore(tensors, state)
        except GenpriorError:
            raise
        except (KeyError, IndexError, RuntimeError, ValueError) as e:  # parsed, but not this run's state
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise GenpriorError(corrupted.format(f"its state does not fit this run: {detail}")) from None
        self.start_it = state["next_iteration"]
        self.best = state.get("best", {})
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    def log(self, record: Dict[str, Any]) -> None:
        if self.acc.is_main_process:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def trim_log(self) -> None:
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
            # loss records count iterations from 0; evaluations count iterations done
            if it is None or it < self.start_it or ("quick_eval_acc" in record and it == self.start_it):
                kept.append(line)
        write_text_atomic("".join(line + "\n" for line in kept), path)

    def run(self, resume: Optional[str] = None) -> Any:
        from ..progress import progress_bar

        from ..runtime import memory_setting

        cfg = self.cfg
        ckpt = resolve_resume(self.run_dir, resume)
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            self.trim_log()
        else:
            self.initialize()
            if self.acc.is_main_process:
                write_json_atomic({**self.config_dict(), **self.config_extras()}, self.run_dir / "config.json")
        bar = progress_bar(range(self.start_it, cfg.iterations), initial=self.start_it, total=cfg.iterations,
                   desc=self.progress_label(), disable=not (self.progress and self.acc.is_main_process))
        memory = memory_setting()  # logged with every loss line: a resumed part may run under another setting
        self._t0 = time.time()
        for it in bar:
            loss = self.iteration(it)
            bar.set_postfix(loss=f"{loss:.4g}")
            if (it + 1) % cfg.log_every == 0 or it == cfg.iterations - 1:
                self.log({"iteration": it, "loss": loss, **self.log_fields(), "time_s": self.elapsed_s(),
                          "processes": self.acc.num_processes, "threads": torch.get_num_threads(),
                          "keep_freed_memory": memory["keep_freed_memory"]})
            self.after_iteration(it)
            if (it + 1) % cfg.checkpoint_every == 0 or it == cfg.iterations - 1:
                self.save_checkpoint(it + 1)
        bar.close()
        self.acc.wait_for_everyone()
        return self.export()
