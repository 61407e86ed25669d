"""Minimax Diffusion: Efficient Dataset Distillation via Minimax Diffusion (Gu et al., CVPR 2024;
reference: vimar-gu/MinimaxDiffusion, ``train_dit.py``).

A class-conditional diffusion prior is fine-tuned in part, as DiffFit does: only biases,
normalisation scales, the class embeddings and DiffFit's learnable scale factors train;
every other weight stays bit-identical. Beside the denoising loss, two terms shape each
class's samples against two memories of the paper's size (64 per class):

- representativeness: 1 − the *minimum* cosine similarity between the predicted clean
  samples x̂₀ of a class and a memory of that class's real x₀ (pull the farthest pair in);
- diversity: the *maximum* cosine similarity between x̂₀ and a memory of earlier x̂₀ of the
  class (push the nearest pair apart);

loss = denoising + Σ_c (λ_r · representativeness + λ_d · diversity) / classes in the batch,
λ_r 0.002, λ_d 0.008. Both terms start once the class's generated memory holds something,
as in the reference. Embeddings are the flattened x̂₀ and x₀ in the space the model denoises
(pixels, or scaled VAE latents for latent priors), as in the reference. After each step the
batch's real x₀ and detached x̂₀ join their class's memories; the oldest entries leave
(``memory="fifo"``), or, with ``memory="adaptive"`` (after Li et al., ICIP 2025, as this
project's issue states the rule), the entry with the largest summed similarity to the others.

``centre=True`` (genprior's option, off by default as in the reference) subtracts the mean real
x₀ (over up to ``memory_size`` real images per class) from every embedding before the cosine.
In pixel space a digit's flattened x₀ is mostly background, so any two digits' raw cosine is
high and the diversity term's gradient spreads over the background as speckle; centred, the
similarities are between strokes.

DiffFit's scale factors multiply, per channel, the output of each residual branch's last
layer (ResNet blocks' ``conv2``, attention outputs, feed-forward outputs) in the first
``scale_fraction`` of those layers (the reference: the first 14 of DiT-XL's 28 blocks).
They train from 1 and are folded into those layers' weights when the generator is
exported, so the trained generator is a plain prior folder of the same architecture.
The reference fine-tunes DiT-XL/2 with AdamW at lr 1e-3 and EMA 0.9999 for 12,000 steps
with label dropout 0.1 left on, and samples with guidance 4.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GenpriorError
from ..matching.base import check_number, check_positive_int
from ..sampling.modes import encode_class
from .base import GENERATOR_METHODS, GeneratorMethod

PAPER = "Gu et al., Efficient Dataset Distillation via Minimax Diffusion, CVPR 2024"
MEMORIES = ("fifo", "adaptive")
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.InstanceNorm2d)


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise cosine similarity of the rows of ``a`` and ``b`` (the reference adds no epsilon;
    a tiny one guards an all-zero row)."""
    return F.normalize(a, dim=1, eps=1e-12) @ F.normalize(b, dim=1, eps=1e-12).T


class ClassMemory:
    """Per class, at most ``size`` embeddings; FIFO or adaptive eviction. Adaptive eviction
    compares entries less ``centre`` (when given), the same similarity the terms compute."""

    def __init__(self, num_classes: int, size: int, rule: str, centre: Optional[Tensor] = None):
        self.size, self.rule = size, rule
        self.centre = None if centre is None else centre.detach().float().flatten().cpu()
        self.items: List[Tensor] = [torch.empty(0) for _ in range(num_classes)]

    def __getitem__(self, c: int) -> Tensor:
        return self.items[c]

    def add(self, c: int, entries: Tensor) -> None:
        entries = entries.detach().float().flatten(1).cpu()
        old = self.items[c].view(-1, entries.shape[1]) if self.items[c].numel() else entries[:0]
        if self.rule == "fifo":  # the newest ``size`` entries
            self.items[c] = torch.cat([old, entries])[-self.size:]
            return
        bank = old
        for row in entries:  # one at a time: each eviction depends on what is in the memory then
            bank = torch.cat([bank, row[None]])
            if bank.shape[0] > self.size:  # evict the entry most similar, in sum, to all the others
                shifted = bank if self.centre is None else bank - self.centre
                sim = cosine_matrix(shifted, shifted)
                summed = sim.sum(dim=1) - sim.diagonal()
                keep = torch.ones(bank.shape[0], dtype=torch.bool)
                keep[int(summed.argmax())] = False
                bank = bank[keep]
        self.items[c] = bank

    def state(self, prefix: str) -> Dict[str, Tensor]:
        return {f"{prefix}.{c}": t for c, t in enumerate(self.items) if t.numel()}

    def load(self, prefix: str, tensors: Dict[str, Tensor]) -> None:
        for c in range(len(self.items)):
            self.items[c] = tensors.get(f"{prefix}.{c}", torch.empty(0)).float()


def branch_outputs(model: nn.Module) -> List[nn.Module]:
    """The last layer of every residual branch, in module order: ResNet blocks' ``conv2``,
    attention ``to_out[0]``, feed-forward output linears (diffusers names)."""
    out = []
    for name, module in model.named_modules():
        if type(module).__name__ == "ResnetBlock2D" and isinstance(getattr(module, "conv2", None), nn.Conv2d):
            out.append(module.conv2)
        elif type(module).__name__ == "Attention" and isinstance(getattr(module, "to_out", None), nn.ModuleList):
            out.append(module.to_out[0])
        elif type(module).__name__ == "FeedForward" and isinstance(getattr(module, "net", None), nn.ModuleList):
            linears = [m for m in module.net if isinstance(m, nn.Linear)]
            if linears:
                out.append(linears[-1])
    return out


@GENERATOR_METHODS.register("minimax", summary="Minimax Diffusion: partial fine-tuning of a diffusion prior with "
                            "representativeness and diversity against class memories", paper=PAPER)
class Minimax(GeneratorMethod):
    name = "minimax"
    paper = PAPER
    families = ("diffusion", "latent_diffusion")
    default_prior = "mnist5k-diffusion"
    OPTIONS = {"lambda_r": 0.002, "lambda_d": 0.008, "memory_size": 64, "memory": "fifo", "uncond_prob": 0.1,
               "scale_factors": True, "scale_fraction": 0.5, "centre": False}
    generator_optimizer = {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0}

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        for key in ("lambda_r", "lambda_d"):
            check_number(self.name, key, opts[key])
        check_positive_int(self.name, "memory_size", opts["memory_size"])
        if opts["memory"] not in MEMORIES:
            raise GenpriorError(f"minimax: memory must be one of {', '.join(MEMORIES)}, got {opts['memory']!r}")
        if not check_number(self.name, "uncond_prob", opts["uncond_prob"]) < 1.0:
            raise GenpriorError(f"minimax: uncond_prob must lie in [0, 1), got {opts['uncond_prob']!r}")
        if not 0.0 < check_number(self.name, "scale_fraction", opts["scale_fraction"]) <= 1.0:
            raise GenpriorError(f"minimax: scale_fraction must lie in (0, 1], got {opts['scale_fraction']!r}")
        for key in ("scale_factors", "centre"):
            if not isinstance(opts[key], bool):
                raise GenpriorError(f"minimax: {key} must be true or false, got {opts[key]!r}")
        return opts

    def __init__(self, prior, real, device, **options: Any):
        super().__init__(prior, real, device, **options)
        if prior.num_classes is None:
            raise GenpriorError("minimax fine-tunes class-conditional diffusion priors; this one is unconditional")
        self.model: nn.Module = prior.unet if prior.family == "diffusion" else prior.transformer
        self.scaled: List[Tuple[nn.Module, nn.Parameter]] = []
        if self.opts["scale_factors"]:
            layers = branch_outputs(self.model)
            for layer in layers[:max(1, round(len(layers) * float(self.opts["scale_fraction"])))]:
                gamma = nn.Parameter(torch.ones(layer.weight.shape[0], device=layer.weight.device))
                layer.register_forward_hook(self._scale_hook(gamma))
                self.scaled.append((layer, gamma))
        self.centre = self.real_centre() if self.opts["centre"] else None
        self.real_memory, self.gen_memory = (ClassMemory(real.num_classes, self.opts["memory_size"],
                                                         self.opts["memory"], self.centre) for _ in range(2))

    def real_centre(self) -> Tensor:
        """The mean real x₀, flattened: up to ``memory_size`` images per class (a fixed draw),
        encoded into the space the model denoises. Recomputed identically on resume."""
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            x0 = torch.cat([encode_class(self.prior, self.real, c, generator, max_images=self.opts["memory_size"])
                            for c in range(self.real.num_classes)])
        return x0.flatten(1).mean(dim=0).cpu()

    @staticmethod
    def _scale_hook(gamma: nn.Parameter):
        def hook(module, args, out):
            shape = (1, -1) + (1,) * (out.dim() - 2) if out.dim() == 4 else (1,) * (out.dim() - 1) + (-1,)
            return out * gamma.to(out.dtype).view(shape)
        return hook

    # ---- what trains -----------------------------------------------------------------------
    def trainable_parameters(self) -> List[nn.Parameter]:
        """Biases, normalisation scales and class embeddings of the denoiser (DiffFit), plus the
        scale factors; everything else (the VAE included) is frozen."""
        chosen: Dict[int, nn.Parameter] = {}
        for module in self.model.modules():
            if isinstance(module, NORMS) and getattr(module, "weight", None) is not None:
                chosen[id(module.weight)] = module.weight
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter):
                chosen[id(bias)] = bias
        for _, table in self.prior._embedders_of(self.model) if self.prior.family == "latent_diffusion" else []:
            chosen[id(table)] = table
        if self.prior.family == "diffusion":
            chosen[id(self.prior.unet.class_embedding.weight)] = self.prior.unet.class_embedding.weight
        return list(chosen.values())

    def extra_parameters(self) -> List[nn.Parameter]:
        """Parameters that live outside the prior (the scale factors), trained with it."""
        return [gamma for _, gamma in self.scaled]

    def modules(self) -> Dict[str, nn.Module]:
        return {"scale_factors": nn.ParameterList(self.extra_parameters())} if self.scaled else {}

    def state_tensors(self) -> Dict[str, Tensor]:
        return {**self.real_memory.state("real"), **self.gen_memory.state("generated")}

    def load_state_tensors(self, tensors: Dict[str, Tensor]) -> None:
        self.real_memory.load("real", tensors)
        self.gen_memory.load("generated", tensors)

    def fold(self) -> None:
        """Fold each scale factor into its layer's weight and bias (exact: γ·(Wx + b) = (γW)x + γb)
        and reset it to 1, so the prior alone computes what prior + hooks computed."""
        with torch.no_grad():
            for layer, gamma in self.scaled:
                shape = (-1,) + (1,) * (layer.weight.dim() - 1)
                layer.weight.mul_(gamma.view(shape).to(layer.weight.dtype))
                if layer.bias is not None:
                    layer.bias.mul_(gamma.to(layer.bias.dtype))
                gamma.fill_(1.0)

    # ---- the iteration -------------------------------------------------------------------
    def minimax_terms(self, x0_hat: Tensor, labels: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        """Σ_c (λ_r (1 − min cos to real memory) + λ_d max cos to generated memory) / classes
        (every embedding less the real centre when ``centre`` is on)."""
        emb = x0_hat.flatten(1).float()
        centre = self.centre.to(emb.device) if self.centre is not None else emb.new_zeros(())
        emb = emb - centre
        total = emb.new_zeros(())
        classes = labels.unique().tolist()
        mins, maxs = [], []
        for c in classes:
            generated = self.gen_memory[c]
            if not generated.numel():
                continue
            mine = emb[labels.to(emb.device) == c]
            low = cosine_matrix(mine, self.real_memory[c].to(emb.device) - centre).min()
            high = cosine_matrix(mine, generated.to(emb.device) - centre).max()
            total = total + self.opts["lambda_r"] * (1 - low) + self.opts["lambda_d"] * high
            mins.append(low.item())
            maxs.append(high.item())
        logs = {"min_real_similarity": sum(mins) / len(mins), "max_generated_similarity": sum(maxs) / len(maxs)} \
            if mins else {}
        return total / len(classes), logs

    def step(self, trainer: Any, it: int, generator: torch.Generator) -> Dict[str, float]:
        labels = self.sample_labels(trainer.cfg.batch_size, generator)
        real = self.real_batch(labels, generator)
        with trainer.autocast():
            diffusion, x0_hat, x0 = self.prior.training_loss(real, trainer.prior_labels(labels), generator,
                                                             uncond_prob=float(self.opts["uncond_prob"]))
            terms, logs = self.minimax_terms(x0_hat, labels)
            loss = diffusion + terms
        trainer.update("generator", loss, it)
        # every process adds every process's batch, in process order: the memories are the same
        # everywhere (process 0's checkpoint holds them) and equal one process's with the whole batch
        x0, x0_hat, labels = (trainer.acc.gather(t.detach().to(self.device)) if trainer.acc.num_processes > 1
                              else t.detach() for t in (x0, x0_hat, labels.to(self.device)))
        for c in labels.unique().tolist():
            where = labels == c
            self.real_memory.add(c, x0[where])
            self.gen_memory.add(c, x0_hat[where])
        return {"loss": loss.item(), "diffusion": diffusion.item(), **logs}

    def before_export(self) -> None:
        self.fold()
