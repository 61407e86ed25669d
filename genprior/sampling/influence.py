"""IGD's influence guidance (Chen et al., ICLR 2025, "Influence-Guided Diffusion for Dataset
Distillation").

A surrogate network trained on the real data, taken at a few points of its training θ_e
(``genprior teacher --snapshots``), judges each sample by the gradient it would give the
surrogate: the guidance raises the cosine between the sample's gradient ∇_θ ℓ(decode(x̂₀), c; θ_e)
and the mean gradient ḡ_{c,e} of the class's real images, summed over the snapshots,

    G_I = Σ_e cos(∇_θ ℓ(decode(x̂₀), c; θ_e), ḡ_{c,e}),

and, so that a class's samples do not collapse onto one influential image, lowers each
sample's largest cosine to the class's earlier samples (a memory of their final clean
samples in the model's space, the last ``memory_size`` per class):

    G_D = −max_m cos(x̂₀, m).

The sampler adds k·∇G_I + γ·∇G_D inside the window of steps (``form`` ``eps``, the issue's
form: on the noise prediction). ``form`` ``sample`` applies the guidance as IGD's public code
does (read in a copy of its sampler, ``p_sample`` of ``gaussian_diffusion.py``): after each
step the next sample moves by ρ_t · k · ∇G_I, where ρ_t rescales the gradient so that its RMS
is 0.0015 · RMS(ε) · √(1 − ᾱ_t) whatever its raw size (so k is a step size, not a gradient
weight), and by −γ · ∇_{x_t} cos(x_t, m), the cosine of the *noisy* sample to its nearest
memory entry. The code differentiates G_I with respect to x_t through the model; genprior's
sampler keeps no graph through the model, so ∇G_I is taken at x̂₀ with ε held fixed (the
chain factor 1/√ᾱ_t cancels in the rescaling; the model's Jacobian is what is left out).

Settings of the public code (DiT-XL/2, 50 ancestral steps, ImageWoof IPC 50): k = 5, γ = 120,
guidance while the respaced timestep t (49 … 0) lies in [30, 45], i.e. steps 4 to 19 of 50 (the
window 0.08 to 0.4 of the trajectory here), memory 64 per class, 200 real images per class for
ḡ, a ConvNet-6 surrogate trained 50 epochs and taken at epochs 0, 5, 16 and 40 (its
checkpoints were chosen where the class gradients' cosine to the last chosen one fell below
0.7). genprior's defaults take these numbers; its surrogate is the dataset's ConvNet
(``genprior teacher``) with the snapshots the user saved, and its γ the code's push per value
(``code_diversity``: 120 · D / 4096 for a prior of D values per sample; at 120 the pixel prior's
second image of every class, the first with a memory, ends as a white blot).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import RealData
from ..errors import GenpriorError
from .methods import IGD_PAPER, SAMPLING_METHODS, _chunks, advance, check_eta, check_number, decode_x0, image_noise
from .sampler import GUIDANCE, GuidanceTerm, StepContext, check_window, guided_sample, noise_seeds

FORMS = ("eps", "sample")
CODE_STEP = 0.0015  # the public code's step: ρ_t · RMS(∇G_I) = 0.0015 · RMS(ε) · √(1 − ᾱ_t)
CODE_DIVERSITY, CODE_VALUES = 120.0, 4 * 32 * 32  # the code's γ, on DiT-XL/2's 4 x 32 x 32 latents at 256 px


def code_diversity(prior: Any) -> float:
    """γ with the public code's push per value: the gradient of a cosine shrinks as 1/D per
    value of a D-value sample, so γ = 120 · D / 4096 (23 on a 28 x 28 pixel prior)."""
    return CODE_DIVERSITY * math.prod(int(n) for n in prior.latent_shape) / CODE_VALUES


def _flat_grad(loss: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, create_graph=create_graph)])


@contextmanager
def _live(nets: Sequence[torch.nn.Module]):
    """Parameters that autograd differentiates for the time being (each keeps its own flag after)."""
    flags = [(p, p.requires_grad) for net in nets for p in net.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def class_gradients(net: torch.nn.Module, real: RealData, per_class: int = 200, seed: int = 0,
                    batch_size: int = 100) -> torch.Tensor:
    """ḡ: (num_classes, P), the mean gradient of the cross-entropy over ``per_class`` real images
    of each class (all of them when fewer), with respect to every parameter of ``net``."""
    params = [p for p in net.parameters()]
    device = params[0].device
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for c in range(real.num_classes):
        idx = real.indices_of_class(c)
        idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
        total = None
        for lo, hi in _chunks(len(idx), batch_size):
            images = real.images[idx[lo:hi]].to(device)
            labels = torch.full((hi - lo,), c, dtype=torch.long, device=device)
            with _live([net]):
                g = _flat_grad(F.cross_entropy(net(images), labels, reduction="sum"), params)
            total = g if total is None else total + g
        rows.append(total / len(idx))
    return torch.stack(rows)


@GUIDANCE.register("influence", summary="IGD: raise the cosine of a sample's surrogate gradient to its class's "
                   "real mean gradient; keep a class's samples apart", paper=IGD_PAPER)
class InfluenceGuidance(GuidanceTerm):
    """``nets``: the surrogate at its snapshots (parameters are used, never changed);
    ``class_grads``: ḡ for each of them (``class_gradients``); ``to_images``: x̂₀ -> the
    surrogate's input, differentiably. ``scale`` is k, ``diversity`` is γ (0: no diversity term)."""

    def __init__(self, nets: Sequence[torch.nn.Module], class_grads: Sequence[torch.Tensor],
                 to_images: Callable[[torch.Tensor], torch.Tensor], scale: float = 5.0, diversity: float = 120.0,
                 memory_size: int = 64, start: float = 0.08, stop: float = 0.4, form: str = "eps"):
        check_term_options(scale, diversity, memory_size, start, stop, form)
        super().__init__(start, stop)
        if not nets or len(nets) != len(class_grads):
            raise GenpriorError("influence guidance needs one class-gradient table per surrogate snapshot")
        self.nets, self.class_grads, self.to_images = list(nets), list(class_grads), to_images
        self.scale, self.diversity, self.memory_size, self.form = float(scale), float(diversity), memory_size, form
        self.memory: Dict[int, torch.Tensor] = {}

    def remember(self, x0: torch.Tensor, labels: torch.Tensor) -> None:
        """Add finished samples (the model's space) to their classes' memories (first in, first out)."""
        for c in labels.unique().tolist():
            new = x0[labels == c].detach().flatten(1)
            old = self.memory.get(c)
            self.memory[c] = (new if old is None else torch.cat([old, new.to(old.device)]))[-self.memory_size:]

    def influence(self, x0: torch.Tensor, labels: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """G_I of each sample: (N,), the cosines summed over the snapshots."""
        out = []
        with _live(self.nets):
            images = self.to_images(x0)
            for j in range(x0.shape[0]):
                total = x0.new_zeros(())
                for net, grads in zip(self.nets, self.class_grads):
                    loss = F.cross_entropy(net(images[j:j + 1]), labels[j:j + 1])
                    g = _flat_grad(loss, list(net.parameters()), create_graph=create_graph)
                    total = total + F.cosine_similarity(g, grads[labels[j]].to(g.device), dim=0)
                out.append(total)
        return torch.stack(out)

    def closeness(self, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """max_m cos(x̂₀, m) over the memory of each sample's class (0 where it is empty): (N,)."""
        out = []
        for j in range(x0.shape[0]):
            mem = self.memory.get(int(labels[j]))
            out.append(F.cosine_similarity(x0[j].flatten()[None], mem.to(x0.device), dim=1).max()
                       if mem is not None else x0.new_zeros(()))
        return torch.stack(out)

    def _influence_grad(self, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            return torch.autograd.grad(self.influence(x0, labels, create_graph=True).sum(), x0)[0]

    def _closeness_grad(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            return torch.autograd.grad(self.closeness(z, labels).sum(), z)[0]

    def gradient(self, ctx: StepContext) -> Optional[torch.Tensor]:
        if self.form != "eps":
            return None
        grad = torch.zeros_like(ctx.x0_hat)
        if self.scale > 0:
            grad = grad + self.scale * self._influence_grad(ctx.x0_hat, ctx.labels)
        if self.diversity > 0 and self.memory:
            grad = grad - self.diversity * self._closeness_grad(ctx.x0_hat, ctx.labels)
        return grad

    def shift(self, ctx: StepContext, sigma: torch.Tensor) -> Optional[torch.Tensor]:
        if self.form != "sample":
            return None
        moved = torch.zeros_like(ctx.x_t)
        if self.diversity > 0 and self.memory:
            moved = moved - self.diversity * self._closeness_grad(ctx.x_t, ctx.labels)
        if self.scale > 0:
            grad = self._influence_grad(ctx.x0_hat, ctx.labels)
            eps = (ctx.x_t - ctx.alpha.sqrt() * ctx.x0_hat) / (1 - ctx.alpha).sqrt()
            rho = CODE_STEP * _rms(eps) * (1 - ctx.alpha).sqrt() / _rms(grad).clamp_min(1e-20)
            moved = moved + self.scale * rho * grad
        return moved


def _rms(v: torch.Tensor) -> torch.Tensor:
    """Each sample's root mean square, shaped to broadcast over it."""
    return v.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (v.dim() - 1)))


def check_term_options(scale: Any, diversity: Any, memory_size: Any, start: Any, stop: Any, form: Any) -> None:
    """IGD's term options, checked before any work (one line naming the fix)."""
    scale, diversity = check_number("scale", scale), check_number("diversity", diversity)
    if scale < 0 or diversity < 0 or (scale == 0 and diversity == 0):
        raise GenpriorError(f"influence guidance needs scale k >= 0 and diversity γ >= 0, not both 0; got "
                            f"{scale} and {diversity}")
    if isinstance(memory_size, bool) or not isinstance(memory_size, int) or memory_size < 1:
        raise GenpriorError(f"the diversity memory holds at least one sample per class, got {memory_size!r}")
    check_window(start, stop)
    if form not in FORMS:
        raise GenpriorError(f"influence guidance form must be one of {', '.join(FORMS)} (sample: as IGD's code "
                            f"applies it), got {form!r}")


def load_surrogate(folder: Any, real: RealData, snapshots: Optional[Sequence[int]], device: torch.device
                   ) -> List[torch.nn.Module]:
    """The surrogate's snapshots from a teacher folder (all it saved when ``snapshots`` is None)."""
    import json
    from pathlib import Path

    from ..teacher import CARD, load_teacher

    if folder is None:
        raise GenpriorError("IGD needs a surrogate trained on the real data: make one with `genprior teacher "
                            f"--dataset {real.name} --snapshots 0 5 16 40 --out DIR` and pass --option surrogate=DIR")
    if snapshots is None:
        card = Path(folder) / CARD
        snapshots = json.loads(card.read_text()).get("snapshots") if card.is_file() else None
        if not snapshots:
            raise GenpriorError(f"surrogate {folder} saved no snapshots; train it with `genprior teacher --snapshots "
                                "0 5 16 40`, or pass --option snapshots=final")
    if snapshots == "final":
        return [load_teacher(folder, real, device=str(device))[0]]
    if isinstance(snapshots, int) and not isinstance(snapshots, bool):
        snapshots = [snapshots]
    if not isinstance(snapshots, (list, tuple)) or not snapshots or \
            any(isinstance(e, bool) or not isinstance(e, int) for e in snapshots):
        raise GenpriorError(f"IGD's snapshots are epochs, e.g. --option snapshots=[0,5,16,40], or 'final'; "
                            f"got {snapshots!r}")
    return [load_teacher(folder, real, device=str(device), epoch=int(e))[0] for e in snapshots]


@SAMPLING_METHODS.register("igd", summary="influence guidance from a surrogate of the real data, with a diversity "
                           "memory per class", paper=IGD_PAPER)
def igd(prior: Any, real: RealData, ipc: int, seed: int, chunk_size: int, surrogate: Optional[str] = None,
        snapshots: Any = None, scale: float = 5.0, diversity: Optional[float] = None, start: float = 0.08,
        stop: float = 0.4, memory_size: int = 64, grad_images: int = 200, eta: float = 1.0, form: str = "sample"
        ) -> torch.Tensor:
    """Round by round, one sample of every class per round; each finished round enters the
    classes' diversity memories before the next is drawn (the paper draws one image at a time).
    Image i of a class starts from the noise ``genprior generate`` draws for it and depends only
    on the rounds before it, so the sets are nested: IPC 10 is the first 10 of IPC 50. The
    defaults are the public code's: its form, ancestral steps, k 5 and its γ per value
    (``code_diversity``)."""
    diversity = code_diversity(prior) if diversity is None else diversity
    check_term_options(scale, diversity, memory_size, start, stop, form)  # before the surrogate's work
    check_eta(eta)
    if isinstance(grad_images, bool) or not isinstance(grad_images, int) or grad_images < 1:
        raise GenpriorError(f"grad_images is how many real images per class give the mean gradient (e.g. 200), "
                            f"got {grad_images!r}")
    device = prior.out_mean.device
    nets = load_surrogate(surrogate, real, snapshots, device)
    grads = [class_gradients(net, real, per_class=grad_images, seed=seed) for net in nets]
    term = InfluenceGuidance(nets, grads, lambda x0: decode_x0(prior, x0, real.resolution), scale=scale,
                             diversity=diversity, memory_size=memory_size, start=start, stop=stop, form=form)
    images = torch.empty((real.num_classes * ipc, real.channels, real.resolution, real.resolution))
    for r in range(ipc):
        labels = torch.arange(real.num_classes)
        for lo, hi in _chunks(len(labels), chunk_size):
            x_T = image_noise(prior, labels[lo:hi], [r] * (hi - lo), seed)
            x0 = guided_sample(prior, labels[lo:hi], x_T=x_T, terms=[term], return_x0=True, eta=eta,
                               noise_seeds=noise_seeds(seed, labels[lo:hi], [r] * (hi - lo)))
            term.remember(x0, labels[lo:hi].to(x0.device))
            with torch.no_grad():
                images[labels[lo:hi] * ipc + r] = decode_x0(prior, x0, real.resolution).float().cpu()
            advance(hi - lo)
    return images
