"""Teachers for soft-label evaluation: a network trained on the whole real train split.

The soft-label protocols of SRe2L (Yin et al., NeurIPS 2023) and RDED (Sun et al., CVPR
2024) train the student on a synthetic set whose augmented views a teacher labels (its
softened logits), so the teacher is part of the protocol: a set evaluated with another
teacher, or with a teacher of other data, gives another number. ``train_teacher`` trains
and saves one for a dataset (``genprior teacher``); ``load_teacher`` refuses a teacher made
for other data, by a fingerprint of the train split it learned from.

A teacher folder::

    teacher.safetensors           the network's weights
    teacher.json                  dataset, train-split fingerprint, network, epochs, seed, test accuracy
    teacher-epoch<E>.safetensors  the weights after epoch E, for each of ``snapshots`` (optional)

The same folder serves the training-free sampling methods that need a network trained on
the real data: CaO2's selection classifier, and IGD's surrogate at a few points of its
training (``snapshots``; ``load_teacher(..., epoch=E)``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from .data import RealData, load_dataset
from .errors import GenpriorError

TEACHER_FORMAT = "genprior-teacher"
WEIGHTS, CARD = "teacher.safetensors", "teacher.json"


def data_fingerprint(data: RealData) -> str:
    """SHA-256 of a split's images and labels: which data a teacher learned from."""
    h = hashlib.sha256()
    h.update(data.images.detach().float().contiguous().cpu().numpy().tobytes())
    h.update(data.labels.detach().long().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def train_teacher(dataset: Union[str, RealData], out_dir: Union[str, os.PathLike], arch: str = "convnet",
                  epochs: int = 50, seed: int = 0, device: str = "cpu", data_root: Optional[str] = None,
                  progress: bool = True, snapshots: Sequence[int] = ()) -> Path:
    """Train ``arch`` on the whole train split with the shared protocol's optimiser (SGD, lr 0.01,
    momentum 0.9, weight decay 5e-4, DSA, lr x0.1 at half time) for ``epochs``; save it, and its
    weights after each epoch in ``snapshots`` (0: before training, up to ``epochs``)."""
    from dataclasses import replace

    from safetensors.torch import save_file

    from .augment import DSA, strategy_for
    from .evaluate import PROTOCOLS, resolve_device, test_accuracy, train_net
    from .nets import create_net
    from .progress import progress_bar
    from .synset import write_dir_atomic, write_json_atomic

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise GenpriorError(f"teacher epochs must be a positive integer, got {epochs!r}")
    snapshots = sorted(set(snapshots))
    if any(isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= epochs for e in snapshots):
        raise GenpriorError(f"teacher snapshots must be epochs between 0 (the start) and {epochs}, got {list(snapshots)}")
    train = load_dataset(dataset, "train", root=data_root) if isinstance(dataset, str) else dataset
    test = load_dataset(train.name, "test", root=data_root, resolution=train.resolution)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GenpriorError(f"{out} is a file; give the teacher a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / CARD).is_file():
        raise GenpriorError(f"{out} holds something other than a teacher, and the teacher replaces its folder; "
                            "give it a new folder")
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_net(arch, train.channels, train.num_classes, train.resolution).to(dev)
    proto = replace(PROTOCOLS["quick"], name="teacher", epochs=epochs, lr_drop_epoch=max(1, epochs // 2), num_models=1)
    bar = progress_bar(total=epochs, desc=f"teacher {arch} on {train.name}", unit="ep", disable=not progress)
    kept: Dict[int, Dict[str, torch.Tensor]] = {}

    def keep(epoch: int) -> None:
        if epoch in snapshots:
            kept[epoch] = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}

    done = [0]

    def on_epoch() -> None:
        bar.update(1)
        done[0] += 1
        keep(done[0])

    keep(0)
    train_net(net, train.images.to(dev), train.labels.to(dev), proto, DSA(strategy_for(train.name)),
              torch.Generator().manual_seed(seed), on_epoch=on_epoch)
    bar.close()
    card = {"format": TEACHER_FORMAT, "dataset": train.name, "train_fingerprint": data_fingerprint(train),
            "train_images": len(train), "arch": arch, "channels": train.channels, "num_classes": train.num_classes,
            "resolution": train.resolution, "epochs": epochs, "seed": seed,
            "test_accuracy": test_accuracy(net, test, dev), "snapshots": snapshots}

    def write(folder: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS))
        for epoch, weights in kept.items():
            save_file(weights, str(folder / snapshot_file(epoch)))
        write_json_atomic(card, folder / CARD)

    write_dir_atomic(out, write)
    return out


def snapshot_file(epoch: int) -> str:
    return f"teacher-epoch{epoch}.safetensors"


def load_teacher(folder: Union[str, os.PathLike], train: RealData, device: str = "cpu",
                 epoch: Optional[int] = None) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The teacher in ``folder`` (eval mode, frozen) and its card; refused when it learned from
    other data than the train split ``train``. ``epoch``: its snapshot after that epoch
    (saved with ``snapshots``) instead of its final weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .nets import create_net

    folder = Path(folder)
    if train.split != "train":
        raise GenpriorError(f"a teacher is checked against the train split it learned from, not {train.split!r}")
    fix = f"train one with `genprior teacher --dataset {train.name} --out DIR`"
    if not (folder / CARD).is_file() or not (folder / WEIGHTS).is_file():
        raise GenpriorError(f"{folder} is not a teacher folder ({CARD} and {WEIGHTS} are needed); {fix}")
    try:
        card = json.loads((folder / CARD).read_text())
        if epoch is not None and epoch not in card.get("snapshots", []):
            raise GenpriorError(f"teacher {folder} has no snapshot after epoch {epoch} (it has "
                                f"{card.get('snapshots') or 'none'}); train it with `genprior teacher --snapshots ...`")
        weights = load_file(str(folder / (WEIGHTS if epoch is None else snapshot_file(epoch))))
    except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as e:
        raise GenpriorError(f"teacher {folder} cannot be read ({e}); {fix}") from None
    if card.get("format") != TEACHER_FORMAT:
        raise GenpriorError(f"{folder / CARD} is not a genprior teacher; {fix}")
    if card.get("dataset") != train.name or card.get("train_fingerprint") != data_fingerprint(train):
        raise GenpriorError(f"teacher {folder} learned from {card.get('dataset')!r} data at {card.get('resolution')} px, "
                            f"not from this {train.name} train split at {train.resolution} px; {fix}")
    net = create_net(card["arch"], card["channels"], card["num_classes"], card["resolution"])
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise GenpriorError(f"teacher {folder} does not fit a {card['arch']} ({str(e).splitlines()[0]}); {fix}") from None
    return net.eval().requires_grad_(False).to(device), card
