"""The evaluation protocol: train fresh networks on a synthetic set, test on the real test split.

Follows the protocol of the Dataset Condensation codebase (DC/DSA/DM, kept by MTT,
GLaD and DC-BENCH) exactly under the name ``paper``; ``quick`` changes only the
counts (300 epochs, 3 models) so that CPU machines can compare methods side by side.
The reported number is the test accuracy after the last epoch.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .augment import DSA, strategy_for
from .data import RealData, load_dataset
from .errors import GenpriorError, UnknownNameError
from .nets import create_net
from .progress import progress_bar
from .runtime import memory_setting
from .synset import SyntheticSet, library_versions, save_tensors_atomic, write_json_atomic

#: Files of a paused evaluation-network training (``train_net(state_path=...)``).
_STATE_META = "genprior_train_state"


@dataclass(frozen=True)
class Protocol:
    """How a network is trained on a synthetic set (README, "Evaluation protocol")."""

    name: str
    epochs: int
    lr_drop_epoch: int
    num_models: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    #: ``sgd`` (with ``momentum``) or ``adamw``
    optimizer: str = "sgd"
    #: ``step`` (lr x0.1 and a fresh optimiser at ``lr_drop_epoch``), ``cosine`` (per epoch, to 0) or
    #: ``multistep`` (lr x ``gamma`` at each of ``milestones``, keeping the optimiser)
    schedule: str = "step"
    #: > 0: knowledge distillation at this temperature from a teacher labelling every augmented
    #: batch (the soft-label protocol); 0: the set's own labels
    temperature: float = 0.0
    #: CutMix's Beta parameter (0: off), applied to a batch with probability ``cutmix_p``
    cutmix: float = 0.0
    cutmix_p: float = 1.0
    #: ``schedule`` ``multistep``: the lr is multiplied by ``gamma`` at these fractions (num, den) of
    #: the epochs, keeping the optimiser (torch's MultiStepLR at epochs * num // den)
    milestones: Tuple[Tuple[int, int], ...] = ()
    gamma: float = 0.1
    #: DSA ops removed from the dataset's strategy (e.g. cutout, when CutMix replaces it)
    dsa_drop: Tuple[str, ...] = ()
    #: > 0: the test accuracy is also measured this many times, evenly over the epochs (every
    #: epochs // tests, and after the last), and the best is reported beside the last-epoch number
    #: (as papers that report a maximum do)
    tests: int = 0
    #: ``dsa`` (the dataset's DSA family, when ``dsa``), ``imagenet`` (random-resized crop of
    #: 50-100 % of the area, flip, colour jitter 0.4 and PCA lighting 0.1: ``ImageNetAugment``)
    #: ``crop`` (the crop and flip alone) or ``idc`` (the DSA ops composed as IDC's evaluation:
    #: ``DSA(compose=True)``)
    augment: str = "dsa"
    #: ((max IPC, epochs), ...): the epochs follow the set's IPC (the first bound it does not
    #: exceed), two thirds of them (rounded down to hundreds) for 100 classes, as Minimax's code
    epochs_by_ipc: Tuple[Tuple[int, int], ...] = ()

    @property
    def test_every(self) -> int:
        return max(1, self.epochs // self.tests) if self.tests > 0 else 0

    def for_set(self, ipc: int, num_classes: int) -> "Protocol":
        """This protocol as it runs for a set of ``ipc`` images of ``num_classes`` classes."""
        if not self.epochs_by_ipc:
            return self
        epochs = next(e for bound, e in self.epochs_by_ipc if ipc <= bound)
        if num_classes == 100:
            epochs = int(2 / 3 * epochs)
            epochs -= epochs % 100
        return replace(self, epochs=epochs, lr_drop_epoch=epochs, epochs_by_ipc=())


#: the fields added after the first protocols; left at these values they stay out of a training
#: state's fingerprint, so states saved before them still resume
_LATER_FIELDS = {"optimizer": "sgd", "schedule": "step", "temperature": 0.0, "cutmix": 0.0, "cutmix_p": 1.0,
                 "milestones": (), "gamma": 0.1, "dsa_drop": (), "tests": 0, "augment": "dsa",
                 "epochs_by_ipc": ()}

PROTOCOLS: Dict[str, Protocol] = {
    "paper": Protocol("paper", epochs=1000, lr_drop_epoch=500, num_models=5),
    "quick": Protocol("quick", epochs=300, lr_drop_epoch=150, num_models=3),
    # SRe2L / RDED's soft-label protocol for ImageNet-1K (Yin et al. 2023; Sun et al. 2024): a teacher
    # trained on the real data labels every augmented, CutMix-ed batch of the set (the same crops the
    # student sees); the student learns by KL divergence at temperature 20 (no T^2 factor, as their
    # code); AdamW lr 1e-3, weight decay 0.01 on weights only (not on biases and norm parameters),
    # cosine to 0 (SRe2L's; RDED's stops at half the lr), 300 epochs, batch 100 (RDED's rule gives
    # 10/50/100 at IPC 1/10/50). Augmentation: RDED's random-resized crop of 50-100 % of the area
    # and flip (without its patch shuffling), CutMix (Beta 1) on every batch; 30 tests, the best
    # reported beside the last (both papers report the best).
    "soft": Protocol("soft", epochs=300, lr_drop_epoch=300, num_models=3, lr=1e-3, weight_decay=0.01,
                     batch_size=100, optimizer="adamw", schedule="cosine", temperature=20.0, cutmix=1.0,
                     dsa=False, augment="crop", tests=30),
    # The hard-label protocol of Minimax Diffusion's evaluation code for small datasets, which is
    # IDC's train.py (Minimax's argument.py keeps IDC's settings; its own train.py cannot load a
    # synthetic CIFAR set): 1,000 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 64,
    # MultiStepLR x0.2 at 2/3 and 5/6 of the epochs, IDC's composed DSA (flip where the dataset
    # allows it and colour on every batch, then one of crop/scale/rotate; no cutout), CutMix (Beta 1)
    # on half of the batches, last-epoch accuracy, 3 repetitions.
    "minimax": Protocol("minimax", epochs=1000, lr_drop_epoch=1000, num_models=3, batch_size=64,
                        schedule="multistep", milestones=((2, 3), (5, 6)), gamma=0.2, cutmix=1.0, cutmix_p=0.5,
                        dsa_drop=("cutout",), augment="idc"),
    # The same code's branch for ImageNet subsets (ImageNette, ImageWoof, ...; ConvNet-6, ResNet-AP-10,
    # ResNet-18 with instance norm in its papers): epochs by IPC (1: 3000, <= 10: 2000, <= 50: 1500,
    # <= 200: 1000, <= 500: 500, more: 300; two thirds for 100 classes), random-resized crop
    # (50-100 %), flip, colour jitter 0.4 and PCA lighting 0.1 in place of DSA, CutMix on every
    # batch, 100 tests over the run with the best reported beside the last (its papers report the best).
    "minimax-imagenet": Protocol("minimax-imagenet", epochs=2000, lr_drop_epoch=2000, num_models=3, batch_size=64,
                                 schedule="multistep", milestones=((2, 3), (5, 6)), gamma=0.2, cutmix=1.0,
                                 dsa=False, augment="imagenet", tests=100,
                                 epochs_by_ipc=((1, 3000), (10, 2000), (50, 1500), (200, 1000), (500, 500),
                                                (10 ** 9, 300))),
}


def get_protocol(protocol: Union[str, Protocol]) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise UnknownNameError(f"unknown protocol {protocol!r}; known protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenpriorError(f"device {device!r} was asked for but no CUDA device is visible; use --device cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise GenpriorError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None


def _fingerprint(images: torch.Tensor, targets: torch.Tensor, protocol: Protocol, net: torch.nn.Module) -> str:
    """What a saved state belongs to: the data (shapes and sums), the protocol and the network."""
    data = (f"{tuple(images.shape)}:{float(images.sum(dtype=torch.float64)):.9e}:"
            f"{tuple(targets.shape)}:{targets.dtype}:{float(targets.sum(dtype=torch.float64)):.9e}")
    n_params = sum(p.numel() for p in net.parameters())
    proto = {k: v for k, v in asdict(protocol).items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
    found = {"data": data, "protocol": proto, "net": f"{type(net).__name__}:{n_params}"}
    revision = protocol_revision(protocol)
    if revision:  # the code behind these fields changed: states and results of the earlier code stay apart
        found["revision"] = revision
    return json.dumps(found, sort_keys=True)


def protocol_revision(protocol: Protocol) -> Dict[str, int]:
    """Revisions of the code a protocol field stands for, where it changed after results were saved:
    ``augment`` imagenet/crop 2 (torchvision's crop retries, unclamped jitter in a per-image order),
    ``optimizer`` adamw 2 (no decay on biases and norm parameters)."""
    revision = {}
    if protocol.augment in ("imagenet", "crop"):
        revision["augment"] = 2
    if protocol.optimizer == "adamw":
        revision["optimizer"] = 2
    return revision


def _save_train_state(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator,
                      epoch: int, lr: float, fingerprint: str, elapsed_s: Optional[float] = None,
                      best: Optional[Dict[str, Any]] = None) -> None:
    """Everything needed to continue training bit-identically after ``epoch`` epochs (safetensors, atomic)."""
    from .distill.common import flatten_optimizer

    tensors = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    info: Dict[str, Any] = {"epoch": epoch, "lr": lr, "for": fingerprint, "elapsed_s": elapsed_s}
    if best is not None:
        info["best"] = dict(best)
    if isinstance(opt, torch.optim.SGD):  # the momentum buffers (the layout of the first states)
        for i, p in enumerate(net.parameters()):
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{i}"] = buf.detach().contiguous()
    else:  # any other optimiser: its whole state
        opt_tensors, info["optimizer"] = flatten_optimizer(opt)
        tensors.update(opt_tensors)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {_STATE_META: json.dumps(info)}
    save_tensors_atomic({k: v.cpu() for k, v in tensors.items()}, path, metadata=meta)


def _load_train_state(path: Path, net: torch.nn.Module, generator: torch.Generator, fingerprint: str, epochs: int):
    """Restore what ``_save_train_state`` wrote into ``net`` and ``generator``; return (epoch, lr,
    momentum, training seconds so far or None when the state does not say, the best test
    accuracy so far as ``{"best_acc", "best_epoch"}``, empty when the state has none)."""
    from safetensors import SafetensorError, safe_open

    fix = "delete it to train this network from the start"
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})[_STATE_META])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        epoch, lr = int(info["epoch"]), float(info["lr"])
        saved_for = info["for"]
        elapsed = info.get("elapsed_s")
        elapsed = None if elapsed is None else float(elapsed)
        saved_best = dict(info.get("best") or {})
    except (SafetensorError, KeyError, ValueError, TypeError, OSError) as e:
        raise GenpriorError(f"training state {path} cannot be read ({e!r}); {fix}") from None
    if saved_for != fingerprint:
        raise GenpriorError(f"training state {path} was saved for other data, another protocol or another network; "
                            "delete it or use another state folder")
    if not 0 < epoch < epochs:
        raise GenpriorError(f"training state {path} is at epoch {epoch} of {epochs}; {fix}")
    device = next(net.parameters()).device
    try:
        net.load_state_dict({k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("net.")})
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
    except (RuntimeError, KeyError) as e:
        raise GenpriorError(f"training state {path} does not fit this network ({str(e).splitlines()[0]}); {fix}") from None
    momentum = {int(k.split(".")[1]): v.to(device) for k, v in tensors.items() if k.startswith("momentum.")}
    if "optimizer" in info:  # another optimiser's whole state, restored by train_net once it is built
        momentum = {"optimizer": (tensors, info["optimizer"])}
    return epoch, lr, momentum, elapsed, saved_best


def adamw_groups(net: torch.nn.Module) -> List[Dict[str, Any]]:
    """SRe2L's and RDED's ``get_parameters``: weight decay on weight matrices and kernels (a name
    holding ``weight``, two or more dimensions), none on biases, norm parameters and embeddings."""
    decay, rest = [], []
    for name, p in net.named_parameters():
        (decay if "weight" in name and p.dim() > 1 else rest).append(p)
    return [g for g in ({"params": decay}, {"params": rest, "weight_decay": 0.0}) if g["params"]]


def train_net(
    net: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    protocol: Protocol,
    dsa: Optional[DSA],
    generator: torch.Generator,
    on_epoch=None,
    state_path: Optional[Union[str, Path]] = None,
    save_every: int = 10,
    timing: Optional[Dict[str, Any]] = None,
    teacher: Optional[torch.nn.Module] = None,
    tester=None,
    fresh: Optional[Callable[[int], torch.Tensor]] = None,
    keep_state: bool = False,
) -> torch.nn.Module:
    """SGD on (images, targets) for ``protocol.epochs``; lr ×0.1 and a fresh optimiser at the drop,
    or the protocol's multistep or cosine schedule (and AdamW, where it says so). With ``protocol.temperature`` > 0,
    ``teacher`` labels every augmented (and CutMix-ed) batch and the network learns by KL
    divergence at that temperature (the soft-label protocol); ``targets`` then only order the set.

    ``targets`` are class indices, or rows of class probabilities for soft labels.
    With ``state_path``, the training state (weights, momentum, random-number
    generators, epoch) is saved there every ``save_every`` epochs and a saved state
    is picked up first, so a killed training continues where it stopped: bit-identically
    on a CPU (CUDA kernels are not deterministic to begin with). The file is removed
    once training ends (``keep_state``: the caller removes it once it has recorded what it
    measures on the network, so that a kill while testing does not retrain from scratch).

    ``timing``, when given, receives ``train_s``: the training seconds over every part of
    a resumed training, or ``None`` when an earlier part did not record its time. With
    ``protocol.tests`` and ``tester`` (the network -> its test accuracy), it also receives
    ``best_acc`` and ``best_epoch``: the best test accuracy measured every
    ``protocol.test_every`` epochs and after the last (kept in the saved state, so a resumed
    training keeps it too).

    ``fresh``, when given (on-the-fly evaluation, ``generate.on_the_fly``), maps an epoch to the
    images that epoch trains on in place of ``images`` (same shape, same ``targets``); epoch 0
    trains on ``images`` themselves.
    """
    device = images.device
    lr = protocol.lr
    if protocol.temperature > 0 and teacher is None:
        raise GenpriorError(f"protocol {protocol.name!r} distils from a teacher: pass one (--teacher DIR, made by "
                            "`genprior teacher`)")

    def make_opt(lr: float) -> torch.optim.Optimizer:
        if protocol.optimizer == "adamw":
            return torch.optim.AdamW(adamw_groups(net), lr=lr, weight_decay=protocol.weight_decay)
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)

    start = 0
    best: Dict[str, Any] = {"best_acc": None, "best_epoch": None}
    state_path = Path(state_path) if state_path is not None else None
    momentum: Dict[int, torch.Tensor] = {}
    fingerprint = ""
    before: Optional[float] = 0.0  # training seconds of earlier parts
    if state_path is not None:
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise GenpriorError(f"save_every must be a positive number of epochs, got {save_every!r}")
        fingerprint = _fingerprint(images, targets, protocol, net) + ("|on-the-fly" if fresh is not None else "")
        if teacher is not None and protocol.temperature > 0:
            fingerprint += f"|teacher:{sum(float(p.double().sum()) for p in teacher.parameters()):.9e}"
        if state_path.exists():
            start, lr, momentum, before, saved_best = _load_train_state(state_path, net, generator, fingerprint,
                                                                        protocol.epochs)
            best.update(saved_best)
    t0 = time.time()
    opt = make_opt(lr)
    if "optimizer" in momentum:
        from .distill.common import unflatten_optimizer

        unflatten_optimizer(opt, *momentum["optimizer"])
    else:
        for i, p in enumerate(net.parameters()):
            if i in momentum:
                opt.state[p]["momentum_buffer"] = momentum[i]
    net.train()
    n = images.shape[0]
    # how many milestones fall on each epoch (MultiStepLR multiplies by gamma once for each)
    milestone_epochs = Counter(protocol.epochs * num // den for num, den in protocol.milestones)
    testing = protocol.tests > 0 and tester is not None
    for epoch in range(start, protocol.epochs):
        if protocol.schedule == "cosine":
            lr = protocol.lr * 0.5 * (1 + math.cos(math.pi * epoch / protocol.epochs))
            for group in opt.param_groups:
                group["lr"] = lr
        elif protocol.schedule == "multistep":
            if epoch in milestone_epochs:
                lr *= protocol.gamma ** milestone_epochs[epoch]
                for group in opt.param_groups:
                    group["lr"] = lr
        elif epoch == protocol.lr_drop_epoch:
            lr *= 0.1
            opt = make_opt(lr)
        epoch_images = images if fresh is None or epoch == 0 else fresh(epoch).to(device=device, dtype=images.dtype)
        order = torch.randperm(n, generator=generator).to(device)
        for b in range(0, n, protocol.batch_size):
            idx = order[b:b + protocol.batch_size]
            x, y = epoch_images[idx], targets[idx]
            if dsa is not None:
                x = dsa(x, generator=generator)
            mix = protocol.cutmix > 0 and (protocol.cutmix_p >= 1 or
                                           float(torch.rand((), generator=generator)) < protocol.cutmix_p)
            mixed = cutmix(x, protocol.cutmix, generator) if mix else None
            if mixed is not None:
                x = mixed[0]
            out = net(x)
            if protocol.temperature > 0:
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / protocol.temperature, dim=1)
                loss = F.kl_div(F.log_softmax(out / protocol.temperature, dim=1), soft, reduction="batchmean")
            elif mixed is not None:
                _, perm, lam = mixed
                loss = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])
            else:
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if testing and ((epoch + 1) % protocol.test_every == 0 or epoch + 1 == protocol.epochs):
            acc = float(tester(net))
            net.train()
            if best["best_acc"] is None or acc > best["best_acc"]:
                best.update(best_acc=acc, best_epoch=epoch + 1)
        if state_path is not None and (epoch + 1) % save_every == 0 and epoch + 1 < protocol.epochs:
            _save_train_state(state_path, net, opt, generator, epoch + 1, lr, fingerprint,
                              None if before is None else before + time.time() - t0, best if testing else None)
        if on_epoch is not None:
            on_epoch()
    if state_path is not None and not keep_state:
        state_path.unlink(missing_ok=True)
    if timing is not None:
        timing["train_s"] = None if before is None else before + time.time() - t0
        if testing:
            timing.update(best)
    return net


def cutmix(x: torch.Tensor, alpha: float, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., ICCV 2019) on a batch: a box of another image of the batch pasted into
    each, its area from Beta(alpha, alpha). Returns the mixed batch, the permutation that gave each
    image its box, and the share of the original left (lam)."""
    n, _, h, w = x.shape
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())  # the global stream, kept in states
    perm = torch.randperm(n, generator=generator).to(x.device)
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = (int(v) for v in (torch.randint(h, (1,), generator=generator), torch.randint(w, (1,), generator=generator)))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
    return mixed, perm, 1 - (y2 - y1) * (x2 - x1) / (h * w)


@torch.no_grad()
def test_accuracy(net: torch.nn.Module, test: RealData, device: torch.device, batch_size: int = 500) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(test), batch_size):
        x = test.images[start:start + batch_size].to(device)
        y = test.labels[start:start + batch_size].to(device)
        correct += (net(x).argmax(1) == y).sum().item()
    return correct / len(test)


@dataclass(frozen=True)
class PGDAttack:
    """An L-infinity PGD attack (Madry et al., ICLR 2018) in pixel space ([0, 1] images):
    ``steps`` signed-gradient steps of ``step_size`` from a uniform random start inside the
    ``eps`` ball, each projected back onto the ball and the valid pixel range. ``step_size``
    None is ``eps / 4``."""

    eps: float
    steps: int = 10
    step_size: Optional[float] = None

    def __post_init__(self):
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps <= 1:
            raise GenpriorError(f"the PGD budget eps is in pixel units (images in [0, 1]); it must be in (0, 1], "
                                f"got {self.eps!r} (e.g. 0.1, or 8/255)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise GenpriorError(f"PGD steps must be a positive integer, got {self.steps!r}")
        if self.step_size is not None and not (isinstance(self.step_size, (int, float)) and 0 < self.step_size <= 1):
            raise GenpriorError(f"the PGD step size is in pixel units and must be in (0, 1], got {self.step_size!r}")

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / 4

    def describe(self) -> Dict[str, Any]:
        return {"attack": "pgd-linf", "eps": self.eps, "steps": self.steps, "step_size": self.alpha,
                "random_start": True, "space": "pixels in [0, 1], then the data's normalisation"}


def robust_accuracy(net: torch.nn.Module, test: RealData, attack: PGDAttack, device: torch.device,
                    generator: torch.Generator, batch_size: int = 500) -> float:
    """Test accuracy on ``attack``'s adversarial versions of the test images (net in eval mode)."""
    net.eval()
    mean = torch.tensor(test.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(test.std, device=device).view(1, -1, 1, 1)
    correct = 0
    for start in range(0, len(test), batch_size):
        x = (test.images[start:start + batch_size].to(device) * std + mean).clamp(0, 1)
        y = test.labels[start:start + batch_size].to(device)
        delta = ((torch.rand(x.shape, generator=generator) * 2 - 1) * attack.eps).to(device)
        delta = (x + delta).clamp(0, 1) - x  # projected onto the valid pixel range, so no pixel is stuck
        for _ in range(attack.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(net((x + delta - mean) / std), y)
            grad, = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + attack.alpha * grad.sign()).clamp(-attack.eps, attack.eps)
            delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            correct += (net((x + delta - mean) / std).argmax(1) == y).sum().item()
    return correct / len(test)


def _check_compatible(synset: SyntheticSet, test: RealData) -> None:
    if (synset.num_classes, synset.channels, synset.resolution) != (test.num_classes, test.channels, test.resolution):
        raise GenpriorError(
            f"the set has {synset.num_classes} classes, {synset.channels} channels, {synset.resolution} px but "
            f"{test.name} test has {test.num_classes}, {test.channels}, {test.resolution}; evaluate on the dataset it was made from"
        )
    if any(abs(a - b) > 1e-6 for a, b in zip(synset.mean, test.mean)) or any(
        abs(a - b) > 1e-6 for a, b in zip(synset.std, test.std)
    ):
        raise GenpriorError(
            f"the set is normalised with mean {synset.mean} / std {synset.std} but {test.name} uses {test.mean} / {test.std}; "
            "evaluate on the dataset it was made from"
        )


def evaluate_synset(
    synset: SyntheticSet,
    archs: Sequence[str] = ("convnet",),
    protocol: Union[str, Protocol] = "quick",
    test: Optional[RealData] = None,
    data_root: Optional[str] = None,
    seed: int = 0,
    device: str = "auto",
    soft_labels: bool = False,
    progress: bool = True,
    state_dir: Optional[Union[str, Path]] = None,
    attack: Optional[PGDAttack] = None,
    teacher: Optional[Union[str, Path]] = None,
    on_the_fly: bool = False,
) -> Dict[str, Any]:
    """Train ``protocol.num_models`` fresh networks of each architecture on ``synset``; report test accuracy.

    Model ``i`` of every architecture uses seed ``seed + i`` for its initialisation,
    batch order and augmentation, so two evaluations with the same seed agree.
    Returns a JSON-ready dict: per-architecture accuracies, mean ± std (population
    std, as the DC codebase reports), wall time, and the cross-architecture mean.
    With ``state_dir``, each network's training state is saved there as it trains
    (``train_net``) and each finished network's accuracy is kept, so running the same
    evaluation again after a kill skips the finished networks and resumes the one in
    training. With ``attack``, each network's accuracy under that PGD attack is reported
    beside its clean accuracy (``robust_accs``, ``robust_mean``, ``robust_std``). A protocol
    that distils from a teacher (``soft``) needs ``teacher``, a folder of ``genprior teacher``
    made on the set's dataset; the report names it. With ``on_the_fly`` (DiM's deployment
    protocol, for a set ``genprior generate`` wrote), every epoch after the first trains on a
    fresh draw of the same size from the generator that made the set (``generate.on_the_fly``).
    """
    memory = memory_setting()  # a bad GENPRIOR_KEEP_MEMORY fails before any training
    proto = get_protocol(protocol).for_set(synset.ipc, synset.num_classes)
    dev = resolve_device(device)
    if test is None:
        test = load_dataset(synset.dataset, "test", root=data_root)
        if test.resolution != synset.resolution:  # a set made at another size (e.g. --resolution 64)
            test = load_dataset(synset.dataset, "test", root=data_root, resolution=synset.resolution)
    _check_compatible(synset, test)
    if soft_labels and on_the_fly:
        raise GenpriorError("on-the-fly draws come without soft labels; drop --soft-labels (or --on-the-fly)")
    if soft_labels and synset.soft_labels is None:
        raise GenpriorError("soft labels were asked for but this set has none; drop --soft-labels")
    if proto.num_models < 1 or proto.epochs < 1:
        raise GenpriorError("a protocol needs at least one model and one epoch")
    if not archs:
        raise GenpriorError("no architecture given; pass at least one, e.g. --archs convnet")
    for arch in archs:  # fail on an unknown name before any training starts
        create_net(arch, synset.channels, synset.num_classes, synset.resolution)
    teacher_net, teacher_card = None, None
    if teacher is not None and proto.temperature == 0:
        raise GenpriorError(f"a teacher only serves a protocol that distils from one (soft), not {proto.name!r}; "
                            "drop --teacher or pass --protocol soft")
    if proto.temperature > 0:
        if teacher is None:
            raise GenpriorError(f"protocol {proto.name!r} distils from a teacher: pass --teacher DIR (train one with "
                                f"`genprior teacher --dataset {synset.dataset}`)")
        from .teacher import load_teacher

        train = load_dataset(synset.dataset, "train", root=data_root, resolution=synset.resolution)
        teacher_net, teacher_card = load_teacher(teacher, train, device=str(dev))
        weights = sum(float(p.double().sum()) for p in teacher_net.parameters())
        teacher_card = {**teacher_card, "path": str(teacher), "weights_fingerprint": f"{weights:.12e}"}

    strategy = "_".join(op for op in strategy_for(synset.dataset).split("_") if op not in proto.dsa_drop)
    dsa = DSA(strategy, compose=proto.augment == "idc") if proto.dsa and strategy else None
    if proto.augment in ("imagenet", "crop"):
        from .augment import ImageNetAugment

        dsa = (ImageNetAugment(synset.mean, synset.std) if proto.augment == "imagenet"
               else ImageNetAugment(synset.mean, synset.std, jitter=0.0, lighting=0.0))
    tester = (lambda trained: test_accuracy(trained, test, dev)) if proto.tests > 0 else None
    generator = None
    if on_the_fly:
        from .generate import generator_of, on_the_fly as on_the_fly_draws

        generator = generator_of(synset, test, str(dev))  # once; a set no generator made fails here, before any training
    images = synset.images.float().to(dev)
    targets = (synset.soft_labels if soft_labels else synset.labels).to(dev)
    results: Dict[str, Any] = {}
    bar = progress_bar(total=len(archs) * proto.num_models * proto.epochs, desc="evaluate", unit="ep", disable=not progress)
    t_all = time.time()
    for arch in archs:
        accs: List[float] = []
        bests: List[float] = []
        robust: List[float] = []
        times: List[Optional[float]] = []  # per model: training over all parts + testing
        t0 = time.time()
        for i in range(proto.num_models):
            bar.set_description(f"evaluate {arch} {i + 1}/{proto.num_models}")
            torch.manual_seed(seed + i)
            net = create_net(arch, synset.channels, synset.num_classes, synset.resolution).to(dev)
            gen = torch.Generator().manual_seed(seed + i)
            state = done = None
            if state_dir is not None:
                folder = Path(state_dir)
                stem = f"{arch}-seed{seed + i}-{proto.name}" + ("-on-the-fly" if on_the_fly else "")
                folder.mkdir(parents=True, exist_ok=True)
                state, done = folder / f"train-{stem}.safetensors", folder / f"done-{stem}.json"
                key = _fingerprint(images, targets, proto, net) + f"|test:{test.name}:{len(test)}"
                if attack is not None:
                    key += f"|attack:{json.dumps(attack.describe(), sort_keys=True)}"
                if teacher_card is not None:
                    key += f"|teacher:{teacher_card['weights_fingerprint']}"
                if on_the_fly:
                    key += "|on-the-fly"
                finished = json.loads(done.read_text()) if done.exists() else {}
                if finished.get("for") == key:
                    accs.append(finished["acc"])  # finished before a kill: not trained again
                    times.append(finished.get("time_s"))
                    if tester is not None:
                        bests.append(finished["best_acc"])
                    if attack is not None:
                        robust.append(finished["robust_acc"])
                    state.unlink(missing_ok=True)
                    bar.update(proto.epochs)
                    continue
            timing: Dict[str, Any] = {}
            fresh = on_the_fly_draws(synset, test, seed + i, device=str(dev), prior=generator) if on_the_fly else None
            train_net(net, images, targets, proto, dsa, gen, on_epoch=lambda: bar.update(1), state_path=state,
                      timing=timing, teacher=teacher_net, tester=tester, fresh=fresh, keep_state=True)
            t_test = time.time()
            accs.append(test_accuracy(net, test, dev))
            times.append(None if timing["train_s"] is None else timing["train_s"] + time.time() - t_test)
            unit = {"acc": accs[-1], "time_s": times[-1]}
            if tester is not None:
                bests.append(timing["best_acc"])
                unit.update(best_acc=timing["best_acc"], best_epoch=timing["best_epoch"])
            if attack is not None:
                robust.append(robust_accuracy(net, test, attack, dev, torch.Generator().manual_seed(seed + i)))
                unit["robust_acc"] = robust[-1]
            if done is not None:
                write_json_atomic({"for": key, **unit}, done)
                state.unlink(missing_ok=True)
        mean, std = mean_std(accs)
        results[arch] = {"accs": accs, "mean": mean, "std": std, "time_s": time.time() - t0}
        if tester is not None:
            b_mean, b_std = mean_std(bests)
            results[arch].update(best_accs=bests, best_mean=b_mean, best_std=b_std)
        if attack is not None:
            r_mean, r_std = mean_std(robust)
            results[arch].update(robust_accs=robust, robust_mean=r_mean, robust_std=r_std)
        if state_dir is not None:
            # resumed trainings: the wall time above is this process's share only
            results[arch]["model_times_s"] = times
            if all(t is not None for t in times):
                results[arch]["time_s"] = sum(times)
            else:
                results[arch]["time_note"] = "part of the training ran in an earlier process that did not time it"
    bar.close()
    report = {
        "dataset": synset.dataset,
        "method": synset.method,
        "prior": synset.prior,
        "ipc": synset.ipc,
        "test_images": [len(test), test.resolution],  # the test split as the networks saw it
        "protocol": asdict(proto),
        "dsa_strategy": dsa.strategy if dsa is not None else None,
        "soft_labels": soft_labels,
        "seeds": [seed + i for i in range(proto.num_models)],
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "memory": memory,
        "results": results,
        "total_time_s": time.time() - t_all,
        "versions": library_versions(),
    }
    if attack is not None:
        report["attack"] = attack.describe()
    if tester is not None:
        report["best_note"] = (f"best_*: the best test accuracy over tests every {proto.test_every} epochs and after "
                               "the last, as papers that report a maximum do; mean/std are the last epoch's")
    if teacher_card is not None:
        report["teacher"] = teacher_card
    if on_the_fly:
        report["on_the_fly"] = (f"every epoch after the first trained on a fresh draw of {len(synset.labels)} images from "
                                f"{synset.prior} (DiM's deployment protocol), not on the fixed set")
    if len(archs) > 1:
        report["cross_arch_mean"] = sum(r["mean"] for r in results.values()) / len(results)
        if attack is not None:
            report["cross_arch_robust_mean"] = sum(r["robust_mean"] for r in results.values()) / len(results)
    return report


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and population std (as the DC codebase reports)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def with_counts(protocol: Union[str, Protocol], epochs: Optional[int] = None, num_models: Optional[int] = None) -> Protocol:
    """A protocol with other counts; its name says so, so results cannot pass for the named protocol."""
    proto = get_protocol(protocol)
    if epochs is None and num_models is None:
        return proto
    for flag, value in (("--epochs", epochs), ("--models", num_models)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise GenpriorError(f"{flag} must be a positive integer, got {value!r}")
    given = epochs
    epochs = proto.epochs if epochs is None else epochs
    return replace(
        proto,
        name=f"{proto.name}-custom",
        epochs=epochs,
        lr_drop_epoch=epochs // 2,
        num_models=proto.num_models if num_models is None else num_models,
        epochs_by_ipc=proto.epochs_by_ipc if given is None else (),  # given epochs win over the IPC rule
    )
