"""The synthetic-set directory: the one format every genprior method writes.

A set is a directory::

    images.safetensors   normalised images (N, C, H, W) float32, labels (N,) int64,
                         optionally soft_labels (N, K) float32
    images/<class>/<n>.png   each image in pixel space; loads with torchvision ImageFolder
    grid.png             preview, one row per class
    meta.json            dataset, IPC, method, prior, resolved config, mean/std, versions

Writing goes to a temporary sibling directory that is renamed into place, so a
crash never leaves a half-written set under the final name. Loading checks every
invariant and names the broken one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CorruptedSetError, GenpriorError
from .images import LabelledImages

FORMAT_NAME = "genprior-synset"
FORMAT_VERSION = 1
TENSORS_FILE = "images.safetensors"
META_FILE = "meta.json"
GRID_FILE = "grid.png"
PNG_DIR = "images"
GRID_MAX_PER_CLASS = 20

PathLike = Union[str, os.PathLike]


@dataclass
class SyntheticSet(LabelledImages):
    """Images (normalised) and labels, plus what is needed to use and reproduce them."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: Sequence[float]
    std: Sequence[float]
    dataset: str
    class_names: List[str]
    method: str
    prior: Optional[str] = None
    config: Dict[str, Any] = field(default_factory=dict)
    soft_labels: Optional[torch.Tensor] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        self.class_names = [str(c) for c in self.class_names]
        problem = _check_tensors(self.images, self.labels, self.soft_labels, len(self.class_names), self.mean)
        if problem:
            raise GenpriorError(f"invalid synthetic set: {problem}")

    @property
    def ipc(self) -> int:
        """Images per class; every class holds the same number (checked on creation)."""
        return self.images.shape[0] // self.num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def pixels(self) -> torch.Tensor:
        """Images in pixel space [0, 1] (clamped), as written to the PNGs."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (self.images.detach().float().cpu() * std + mean).clamp(0, 1)

    def to_meta(self) -> Dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "method": self.method,
            "prior": self.prior,
            "ipc": self.ipc,
            "num_classes": self.num_classes,
            "num_images": len(self),
            "channels": self.channels,
            "resolution": self.resolution,
            "class_names": self.class_names,
            "mean": list(self.mean),
            "std": list(self.std),
            "soft_labels": self.soft_labels is not None,
            "config": self.config,
            "extra": self.extra,
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def _check_tensors(images, labels, soft_labels, num_classes: int, mean: Sequence[float]) -> Optional[str]:
    """Return a description of the first broken invariant, or None."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        return f"images must be a (N, C, H, W) tensor, got shape {tuple(getattr(images, 'shape', ()))}"
    if not images.is_floating_point():
        return f"images must be floating point, got {images.dtype}"
    if images.shape[-1] != images.shape[-2]:
        return f"images must be square, got {images.shape[-2]}x{images.shape[-1]}"
    if images.shape[1] != len(mean):
        return f"images have {images.shape[1]} channels but mean/std have {len(mean)}"
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.int64:
        return "labels must be a 1-D int64 tensor"
    if labels.shape[0] != images.shape[0]:
        return f"{images.shape[0]} images but {labels.shape[0]} labels"
    if num_classes < 1 or images.shape[0] == 0:
        return "a set needs at least one class and one image"
    if labels.min() < 0 or labels.max() >= num_classes:
        return f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
    counts = torch.bincount(labels, minlength=num_classes)
    if not bool((counts == counts[0]).all()) or counts[0] == 0:
        return f"every class needs the same number of images, got counts {counts.tolist()}"
    if not bool(torch.isfinite(images).all()):
        return "images contain NaN or inf"
    if soft_labels is not None:
        if soft_labels.shape != (images.shape[0], num_classes):
            return f"soft_labels must have shape {(images.shape[0], num_classes)}, got {tuple(soft_labels.shape)}"
    return None


def library_versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("genprior", "torch", "torchvision", "diffusers", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue  # not installed: nothing to record
    return out


def _class_dir(c: int, name: str, num_classes: int) -> str:
    """Zero-padded index first, so ImageFolder's sorted order equals the label order."""
    width = len(str(num_classes - 1))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return f"{c:0{width}d}_{slug}" if slug and slug != str(c) else f"{c:0{width}d}"


def write_png(pixels: torch.Tensor, path: PathLike) -> None:
    """Write a (C, H, W) image in [0, 1] as an 8-bit grey or RGB PNG."""
    from PIL import Image

    array = (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path, format="PNG")


def save_grid(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, path: PathLike,
              max_per_class: int = GRID_MAX_PER_CLASS) -> None:
    """One row per class, at most ``max_per_class`` images each, 2-px white padding."""
    from torchvision.utils import make_grid

    rows = [pixels[labels == c][:max_per_class] for c in range(num_classes)]
    ncol = max(r.shape[0] for r in rows)
    tiles = []
    for r in rows:
        pad = torch.ones((ncol - r.shape[0],) + tuple(pixels.shape[1:]))
        tiles.append(torch.cat([r, pad]))
    grid = make_grid(torch.cat(tiles), nrow=ncol, padding=2, pad_value=1.0)
    if pixels.shape[1] == 1:
        grid = grid[:1]
    write_png(grid, path)


def save_synset(synset: SyntheticSet, out_dir: PathLike, overwrite: bool = False) -> Path:
    """Write ``synset`` to ``out_dir`` atomically and return the path."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise GenpriorError(f"{out} already exists; choose another directory or overwrite it (--overwrite; overwrite=True in Python)")

    def write(tmp: Path) -> None:
        tensors = {
            "images": synset.images.detach().float().cpu().contiguous(),
            "labels": synset.labels.detach().cpu().contiguous(),
        }
        if synset.soft_labels is not None:
            tensors["soft_labels"] = synset.soft_labels.detach().float().cpu().contiguous()
        save_file(tensors, str(tmp / TENSORS_FILE), metadata={"format": FORMAT_NAME})

        pixels = synset.pixels()
        labels = tensors["labels"]
        for c, name in enumerate(synset.class_names):
            cdir = tmp / PNG_DIR / _class_dir(c, name, synset.num_classes)
            cdir.mkdir(parents=True)
            idx = (labels == c).nonzero().flatten().tolist()
            width = len(str(len(idx) - 1))
            for n, i in enumerate(idx):
                write_png(pixels[i], cdir / f"{n:0{width}d}.png")
        save_grid(pixels, labels, synset.num_classes, tmp / GRID_FILE)
        with open(tmp / META_FILE, "w") as f:
            json.dump(synset.to_meta(), f, indent=2, default=str)

    write_dir_atomic(out, write)
    return out


def write_dir_atomic(final: PathLike, write) -> Path:
    """Call ``write(tmp_dir)`` on a sibling temporary directory, then rename it to ``final``:
    readers see the old directory or the complete new one, never a partial one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; outputs are meant to be shared
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is only removed once ``src`` is in place."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.replace(dst, old / dst.name)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(obj: Any, path: PathLike) -> None:
    """Write JSON next to its final place, then rename: readers never see half a file."""
    write_text_atomic(json.dumps(obj, indent=2, default=str), path)


def _write_atomic(path: PathLike, write) -> None:
    """``write(tmp)`` next to the final place, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(text: str, path: PathLike) -> None:
    """Write text atomically (see ``_write_atomic``)."""
    _write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def save_tensors_atomic(tensors: Dict[str, torch.Tensor], path: PathLike,
                        metadata: Optional[Dict[str, str]] = None) -> None:
    """Save tensors as safetensors atomically (see ``_write_atomic``)."""
    _write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


#: the files of a set a hub download fetches: all of them (a set is checked whole on loading)
HUB_SET_PATTERNS = ["*.json", "*.safetensors", "*.md", "grid.png", "images/*/*.png"]


def load_synset(path: PathLike) -> SyntheticSet:
    """Load and validate a set directory, or a set pushed to the hub by its id ``owner/name``
    (the local cache first); any broken invariant raises CorruptedSetError."""
    root = Path(path)
    if not root.exists():
        from .hub import download, is_hub_id

        if is_hub_id(str(path)):
            try:
                root = download(str(path), "dataset", HUB_SET_PATTERNS, "synthetic set")
            except GenpriorError as e:
                raise CorruptedSetError(f"{root} is not a synthetic-set directory (no such folder), nor a set on the "
                                        f"hub: {e}") from None
    hint = "re-create it with the method that wrote it"
    if not root.is_dir():
        raise CorruptedSetError(f"{root} is not a synthetic-set directory (it does not exist or is a file)")
    meta_path, tensors_path = root / META_FILE, root / TENSORS_FILE
    for p in (meta_path, tensors_path):
        if not p.is_file():
            raise CorruptedSetError(f"{root} is incomplete: {p.name} is missing; {hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptedSetError(f"{meta_path} is not valid JSON ({e}); {hint}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptedSetError(f"{meta_path} is not a genprior synthetic-set description; {hint}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptedSetError(
            f"{root} has format version {meta.get('format_version')}, this genprior reads {FORMAT_VERSION}; upgrade genprior"
        )
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptedSetError(f"{tensors_path} cannot be read ({e}); {hint}") from None
    for key in ("images", "labels"):
        if key not in tensors:
            raise CorruptedSetError(f"{tensors_path} has no '{key}' tensor; {hint}")
    try:
        synset = SyntheticSet(
            images=tensors["images"],
            labels=tensors["labels"],
            soft_labels=tensors.get("soft_labels"),
            mean=meta["mean"],
            std=meta["std"],
            dataset=meta["dataset"],
            class_names=meta["class_names"],
            method=meta["method"],
            prior=meta.get("prior"),
            config=meta.get("config", {}),
            extra=meta.get("extra", {}),
        )
    except KeyError as e:
        raise CorruptedSetError(f"{meta_path} lacks the field {e}; {hint}") from None
    except GenpriorError as e:
        raise CorruptedSetError(f"{root}: {e}; {hint}") from None
    expected = {"ipc": synset.ipc, "num_images": len(synset), "channels": synset.channels,
                "resolution": synset.resolution, "num_classes": synset.num_classes}
    for key, value in expected.items():
        if meta.get(key) != value:
            raise CorruptedSetError(f"{root}: meta.json says {key}={meta.get(key)} but the tensors give {value}; {hint}")
    pngs = sum(1 for _ in (root / PNG_DIR).glob("*/*.png")) if (root / PNG_DIR).is_dir() else 0
    if pngs != len(synset):
        raise CorruptedSetError(f"{root} is partial: {pngs} of {len(synset)} PNGs under {PNG_DIR}/; {hint}")
    return synset
