"""Expert trajectories for trajectory matching: networks trained on the real data.

Cazenavette, Wang, Torralba, Efros & Zhu, Dataset Distillation by Matching Training
Trajectories, CVPR 2022 (reference: GeorgeCazenavette/mtt-distillation ``buffer.py``).
Each expert is a network trained on the real train split with plain SGD (lr 0.01, no
momentum, no weight decay, batch 256, per-image DSA), its parameters saved at the start
and after every epoch; MTT's paper uses 50 epochs per expert.

A buffer is a directory::

    buffer.json              what the experts were trained on, and which are finished
    expert_{i}.safetensors   tensors epoch_0 ... epoch_E: the flat parameter vector
                             (``net.parameters()`` order) at the start and after each epoch

Experts are written atomically and trained from their own seed, so an interrupted
run resumes by skipping finished experts and retraining the interrupted one from
scratch, with the same result.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from safetensors import SafetensorError, safe_open

from ..augment import DSA, strategy_for
from ..data import RealData, load_dataset
from ..errors import GenpriorError
from ..nets import create_net
from ..progress import progress_bar
from ..synset import save_tensors_atomic, write_json_atomic
from .dc import train_epochs

PAPER = (
    "Cazenavette, Wang, Torralba, Efros & Zhu, Dataset Distillation by Matching Training Trajectories, CVPR 2022"
)
BUFFER_FILE = "buffer.json"
BUFFER_FORMAT = "genprior-experts"
BUFFER_VERSION = 1
# Buffer keys that must agree for a resumed run to add experts to the same buffer.
TRAINING_KEYS = ("dataset", "net", "net_options", "channels", "resolution", "num_classes", "epochs", "lr",
                 "batch", "dsa", "seed")


def expert_file(i: int) -> str:
    return f"expert_{i}.safetensors"


def _flat_params(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).cpu()


def _read_buffer_json(root: Path) -> Optional[Dict[str, Any]]:
    path = root / BUFFER_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GenpriorError(f"{path} is not valid JSON ({e}); delete the buffer and build it again") from None
    if meta.get("format") != BUFFER_FORMAT:
        raise GenpriorError(f"{path} is not a genprior expert buffer; build one with `genprior experts`")
    return meta


def train_experts(dataset: Union[str, RealData], net: str, num_experts: int, epochs: int,
                  out_dir: Union[str, os.PathLike], lr: float = 0.01, batch: int = 256, dsa: bool = True,
                  seed: int = 0, net_options: Optional[Dict[str, Any]] = None, device: str = "cpu",
                  progress: bool = True) -> Path:
    """Train ``num_experts`` networks on the real train split and save their trajectories.

    ``dataset`` is a registered name (its train split is loaded) or a ``RealData``.
    Expert ``i`` initialises, shuffles and augments from seed ``seed * 100_000 + i``.
    Returns the buffer directory.
    """
    data = load_dataset(dataset, "train") if isinstance(dataset, str) else dataset
    for option, value in (("num_experts", num_experts), ("epochs", epochs), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenpriorError(f"train_experts: {option} must be a positive integer, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise GenpriorError(f"train_experts: lr must be a positive number, got {lr!r}")
    net_options = dict(net_options or {})
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise GenpriorError(f"{root} is a file; give the expert buffer a folder")
    with torch.random.fork_rng(devices=[]):  # an unknown network fails here, before anything is written
        num_params = sum(p.numel() for p in
                         create_net(net, data.channels, data.num_classes, data.resolution, **net_options).parameters())
    root.mkdir(parents=True, exist_ok=True)
    meta: Dict[str, Any] = {
        "format": BUFFER_FORMAT,
        "version": BUFFER_VERSION,
        "paper": PAPER,
        "dataset": data.name,
        "net": net,
        "net_options": net_options,
        "channels": data.channels,
        "resolution": data.resolution,
        "num_classes": data.num_classes,
        "epochs": epochs,
        "lr": float(lr),
        "batch": batch,
        "dsa": bool(dsa),
        "dsa_strategy": strategy_for(data.name) if dsa else None,
        "seed": seed,
        "num_train_images": len(data),
        "num_params": num_params,
    }
    old = _read_buffer_json(root)
    if old is not None:
        differ = [k for k in TRAINING_KEYS if old.get(k) != meta[k]]
        if differ:
            was = ", ".join(f"{k}={old.get(k)!r}" for k in differ)
            raise GenpriorError(f"{root} holds experts trained with {was}; use another output directory or the same settings")
    for stale in root.glob(".expert_*.tmp"):
        stale.unlink()

    def finished() -> List[str]:
        done = [p.name for p in root.glob("expert_*.safetensors") if p.stem.split("_")[1].isdigit()]
        return sorted(done, key=lambda name: int(name.split("_")[1].split(".")[0]))

    todo = [i for i in range(num_experts) if not (root / expert_file(i)).is_file()]
    write_json_atomic({**meta, "experts": finished()}, root / BUFFER_FILE)
    dev = torch.device(device)
    augment = DSA(strategy_for(data.name)) if dsa else None
    images, labels = data.images.to(dev), data.labels.to(dev)
    bar = progress_bar(total=num_experts * epochs, initial=(num_experts - len(todo)) * epochs, desc="experts",
               unit="ep", disable=not progress)
    for i in todo:
        expert_seed = seed * 100_000 + i
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(expert_seed)
            model = create_net(net, data.channels, data.num_classes, data.resolution, **net_options).to(dev)
        generator = torch.Generator().manual_seed(expert_seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
        trajectory = {"epoch_0": _flat_params(model)}
        for epoch in range(1, epochs + 1):
            bar.set_description(f"expert {i + 1}/{num_experts}")
            train_epochs(model, optimizer, images, labels, 1, batch, augment, generator)
            trajectory[f"epoch_{epoch}"] = _flat_params(model)
            bar.update(1)
        file_meta = {k: json.dumps(meta[k]) for k in TRAINING_KEYS + ("num_params",)}
        file_meta["expert"] = str(i)
        save_tensors_atomic(trajectory, root / expert_file(i), metadata=file_meta)
        write_json_atomic({**meta, "experts": finished()}, root / BUFFER_FILE)
    bar.close()
    return root


@dataclass
class ExpertBuffer:
    """A validated buffer; trajectories stay on disk and are read two epochs at a time."""

    root: Path
    meta: Dict[str, Any]
    files: List[Path]

    @property
    def num_experts(self) -> int:
        return len(self.files)

    @property
    def epochs(self) -> int:
        return int(self.meta["epochs"])

    def params(self, expert: int, epoch: int) -> torch.Tensor:
        """The flat parameter vector of ``expert`` after ``epoch`` epochs (0: initialisation)."""
        if not 0 <= epoch <= self.epochs:
            raise GenpriorError(f"expert buffer {self.root} has epochs 0..{self.epochs}, not {epoch}")
        try:
            with safe_open(str(self.files[expert]), framework="pt") as f:
                return f.get_tensor(f"epoch_{epoch}")
        except (SafetensorError, OSError) as e:
            raise GenpriorError(f"expert file {self.files[expert]} cannot be read ({e}); train it again with "
                                "`genprior experts` (finished experts are kept)") from None


def load_experts(root: Union[str, os.PathLike], dataset: str, net: str, channels: int, num_classes: int,
                 resolution: int, net_options: Optional[Dict[str, Any]] = None) -> ExpertBuffer:
    """Open a buffer and check it was made for this dataset and network."""
    root = Path(root)
    meta = _read_buffer_json(root)
    build = f"build one with `genprior experts --dataset {dataset} --net {net} --out-dir {root}`"
    if meta is None:
        raise GenpriorError(f"no expert buffer in {root} ({BUFFER_FILE} is missing); {build}")
    wanted = {"dataset": dataset, "net": net, "net_options": dict(net_options or {}), "channels": channels,
              "num_classes": num_classes, "resolution": resolution}
    differ = [k for k, v in wanted.items() if meta.get(k) != v]
    if differ:
        made = ", ".join(f"{k} {meta.get(k)!r}" for k in differ)
        asked = ", ".join(f"{k} {wanted[k]!r}" for k in differ)
        raise GenpriorError(f"this buffer was made for {made}, not {asked}; {build}")
    files = [root / name for name in meta.get("experts", []) if (root / name).is_file()]
    if not files:
        raise GenpriorError(f"expert buffer {root} has no finished experts; {build} (it resumes where it stopped)")
    return ExpertBuffer(root, meta, files)
