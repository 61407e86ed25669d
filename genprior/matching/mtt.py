"""Trajectory matching: a student trained on the synthetic set should land where an expert did.

Cazenavette, Wang, Torralba, Efros & Zhu, Dataset Distillation by Matching Training
Trajectories, CVPR 2022 (reference: GeorgeCazenavette/mtt-distillation ``distill.py``
and ``reparam_module.py``). Every iteration picks an expert trajectory (trained on real
data by ``experts.train_experts``) and a start epoch below ``max_start_epoch``, starts
a student at the expert's parameters of that epoch, takes ``syn_steps`` differentiable
SGD steps on mini-batches of the synthetic set with a learnable step size ``syn_lr``,
and compares the result with the expert ``expert_epochs`` epochs later, normalised by
how far the expert itself moved. Long-range matching without a bi-level loop, at the
price of unrolling ``syn_steps`` steps in memory: the graph holds ``syn_steps`` x
``batch_syn`` images' activations, so with the default ``batch_syn`` (the whole set) it
grows with IPC; fix ``batch_syn`` to bound it (``benchmarks/distill_memory.py``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import GenpriorError
from .base import MATCHERS, Matcher, check_positive_float, check_positive_int
from .experts import PAPER, ExpertBuffer, load_experts

# MTT's hyper-parameter table, CIFAR-10 rows (the paper has no MNIST rows).
MTT_SCHEDULES: Dict[int, Dict[str, Any]] = {
    1: {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_lr": 1e-7},
    10: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "lr_lr": 1e-4},
    50: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 40, "lr_lr": 1e-5},
}
SCHEDULED = ("syn_steps", "expert_epochs", "max_start_epoch", "lr_lr")


@MATCHERS.register("mtt", summary="trajectory matching against expert networks trained on real data", paper=PAPER)
class MTT(Matcher):
    """Paper defaults (CIFAR-10 rows): ``syn_steps``/``expert_epochs``/``max_start_epoch``/
    ``lr_lr`` 50/2/2/1e-7 at IPC 1, 30/2/20/1e-4 at IPC 10, 30/2/40/1e-5 at IPC 50; the
    student step size starts at ``syn_lr`` 0.01 (the experts' lr); ``batch_syn`` None
    uses the whole synthetic set per step. DSA, when on, draws per image at every step,
    as the reference does. ``buffer`` is the expert directory (required). Loop: 5,000
    iterations, SGD momentum 0.5 on the images (lr 1000 in the reference's commands)
    and on ``syn_lr`` (lr ``extra_lr``), real-image initialisation."""

    name = "mtt"
    paper = PAPER
    per_class = False
    OPTIONS = {"buffer": None, "syn_steps": None, "expert_epochs": None, "max_start_epoch": None,
               "lr_lr": None, "syn_lr": 0.01, "batch_syn": None}
    paper_loop = {"iterations": 5000, "optimizer": "sgd", "lr_images": 1000.0, "momentum": 0.5, "init": "real"}

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        unset = [k for k in SCHEDULED if opts[k] is None]
        if unset:
            if self.ipc not in MTT_SCHEDULES:
                known = ", ".join(str(k) for k in MTT_SCHEDULES)
                raise GenpriorError(
                    f"mtt: the paper sets {', '.join(SCHEDULED)} only for IPC {known}; pass {', '.join(unset)} for IPC {self.ipc}"
                )
            opts.update({k: MTT_SCHEDULES[self.ipc][k] for k in unset})
        for key in ("syn_steps", "expert_epochs", "max_start_epoch"):
            check_positive_int(self.name, key, opts[key])
        opts["lr_lr"] = check_positive_float(self.name, "lr_lr", opts["lr_lr"])
        opts["syn_lr"] = check_positive_float(self.name, "syn_lr", opts["syn_lr"])
        if opts["batch_syn"] is not None:
            check_positive_int(self.name, "batch_syn", opts["batch_syn"])
        if opts["buffer"] is None:
            raise GenpriorError(
                f"mtt needs buffer=DIR, a directory of expert trajectories; build one with "
                f"`genprior experts --dataset {self.dataset_name} --net {self.net_name} --out-dir DIR`"
            )
        opts["buffer"] = str(opts["buffer"])
        self.buffer: ExpertBuffer = load_experts(opts["buffer"], self.dataset_name, self.net_name, self.channels,
                                                 self.num_classes, self.resolution, self.net_options)
        last_start = opts["max_start_epoch"] - 1
        if last_start + opts["expert_epochs"] > self.buffer.epochs:
            raise GenpriorError(
                f"mtt: start epochs up to {last_start} plus expert_epochs {opts['expert_epochs']} need "
                f"{last_start + opts['expert_epochs']} expert epochs but {opts['buffer']} has {self.buffer.epochs}; "
                "lower max_start_epoch / expert_epochs or train longer experts"
            )
        with torch.random.fork_rng(devices=[]):
            self.student: nn.Module = self.new_net()
        self.student.train()
        named = list(self.student.named_parameters())
        self.param_names = [n for n, _ in named]
        self.param_shapes = [p.shape for _, p in named]
        self.param_sizes = [p.numel() for _, p in named]
        if sum(self.param_sizes) != self.buffer.meta.get("num_params"):
            raise GenpriorError(
                f"mtt: the student has {sum(self.param_sizes)} parameters but the experts in {opts['buffer']} have "
                f"{self.buffer.meta.get('num_params')}; build the buffer with the same net and net options"
            )
        self.syn_lr = torch.tensor(opts["syn_lr"], requires_grad=True)
        self.expert: Optional[int] = None
        self.start_epoch: Optional[int] = None
        return opts

    def to(self, device: Any) -> "MTT":
        super().to(device)
        self.student.to(self.device)
        self.syn_lr = self.syn_lr.detach().to(self.device).requires_grad_(True)
        return self

    def extra_parameters(self) -> List[Tensor]:
        return [self.syn_lr]

    @property
    def extra_lr(self) -> float:
        return self.opts["lr_lr"]

    def state_dict(self) -> Dict[str, Tensor]:
        return {"syn_lr": self.syn_lr.detach().cpu().clone()}

    def describe(self) -> Dict[str, Any]:
        """The options, plus the student step size learned so far: MTT trains its evaluation
        networks with it, while genprior's shared protocol uses lr 0.01 for every set."""
        return {**super().describe(), "learned_syn_lr": float(self.syn_lr.detach())}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        if set(state) != {"syn_lr"}:
            raise GenpriorError(f"mtt state needs exactly syn_lr, got {', '.join(sorted(state)) or 'nothing'}")
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"])

    def start_iteration(self, it: int, generator: torch.Generator) -> None:
        self.expert = int(torch.randint(self.buffer.num_experts, (1,), generator=generator))
        self.start_epoch = int(torch.randint(self.opts["max_start_epoch"], (1,), generator=generator))

    def _as_params(self, flat: Tensor) -> Dict[str, Tensor]:
        pieces = flat.split(self.param_sizes)
        return {n: p.view(s) for n, p, s in zip(self.param_names, pieces, self.param_shapes)}

    def set_loss(self, syn_images: Tensor, syn_labels: Tensor, real: Any, generator: torch.Generator) -> Tensor:
        """||student - target||^2 / ||start - target||^2 after ``syn_steps`` student steps."""
        if self.expert is None or self.start_epoch is None:
            raise GenpriorError("matcher 'mtt' has no expert yet; call start_iteration first")
        device = syn_images.device
        start = self.buffer.params(self.expert, self.start_epoch).to(device)
        target = self.buffer.params(self.expert, self.start_epoch + self.opts["expert_epochs"]).to(device)
        labels = syn_labels.to(device)
        n = syn_images.shape[0]
        batch = self.opts["batch_syn"] or n
        student = start.clone().requires_grad_(True)
        chunks: List[Tensor] = []
        for _ in range(self.opts["syn_steps"]):
            if not chunks:
                chunks = list(torch.randperm(n, generator=generator).split(batch))
            idx = chunks.pop().to(device)
            x = syn_images[idx]
            if self.dsa is not None:
                x = self.dsa(x, generator=generator)
            loss = F.cross_entropy(functional_call(self.student, self._as_params(student), (x,)), labels[idx])
            grad = torch.autograd.grad(loss, student, create_graph=True)[0]
            student = student - self.syn_lr * grad
        return ((student - target) ** 2).sum() / ((start - target) ** 2).sum()
