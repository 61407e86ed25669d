"""The one interface every generative prior implements.

A prior turns latents + labels into normalised images, differentiably. Distillation
loops and matching losses only ever call this interface, so every loss runs on every
prior (GAN, diffusion, VAE, or plain pixels).

Latents are a dict of tensors whose first dimension indexes the images, e.g.
``{"w+": (N, num_ws, w_dim)}`` for a StyleGAN in w+ space or
``{"x_T": (N, C, H, W), "class_emb": (N, D)}`` for a diffusion model. The keys name
the latent space, so ``decode`` needs nothing else to know which one it is given.
"""
from __future__ import annotations

import json
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import GenpriorError
from ..progress import progress_bar

Latents = Dict[str, torch.Tensor]

INIT_METHODS = ("random", "mean", "invert")
PRIOR_CARD = "prior.json"
REPAIR = "re-download the prior or re-create it with the script its card names"


def read_json(path) -> Dict[str, Any]:
    """A JSON file of a prior folder, with a one-line error when it is missing or corrupted."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise GenpriorError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}); {REPAIR}") from None


def read_card(directory, family: Optional[str] = None) -> Dict[str, Any]:
    """``prior.json`` of ``directory``, checked to belong to ``family`` when one is given."""
    path = Path(directory) / PRIOR_CARD
    if not path.is_file():
        raise GenpriorError(f"{directory} is not a prior directory: {PRIOR_CARD} is missing; pass a folder that "
                            "`genprior list priors` shows or one a training run wrote (RUN/generator)")
    card = read_json(path)
    if family is not None and card.get("family") != family:
        raise GenpriorError(f"{directory} holds a {card.get('family')!r} prior, not a {family!r} one; load it with "
                            "genprior.priors.load.load_prior, which picks the family from its card")
    return card


#: card entries every prior writes itself (``Prior.describe``)
DESCRIBED = {"family", "class", "num_classes", "channels", "resolution", "mean", "std", "latent_spaces",
             "default_space"}


def keep_card_extras(prior: "Prior", card: Dict[str, Any]) -> "Prior":
    """Carry prior.json entries beyond the described ones (dataset, data, ...) over on load;
    options set at load time win."""
    prior.card = {**{k: v for k, v in card.items() if k not in DESCRIBED}, **prior.card}
    return prior


def load_model(cls: Any, where, **kwargs: Any) -> Any:
    """A diffusers-style model from a local folder, safetensors weights only (never a pickle),
    with a one-line error when the folder is incomplete or its weights are corrupted."""
    from safetensors import SafetensorError

    try:
        return cls.from_pretrained(str(where), use_safetensors=True, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise GenpriorError(f"cannot load a {cls.__name__} from {where} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            f"{REPAIR}") from None


class Prior(nn.Module, metaclass=ABCMeta):
    """Base class: subclasses set ``family`` and ``latent_spaces`` and implement
    ``_init_space`` (random / class-mean latents), ``_decode``, ``_save_components``
    and ``from_pretrained``."""

    family: str = ""
    latent_spaces: Tuple[str, ...] = ()
    #: the space a loop uses when none is named (GLaD: w+; diffusion: x_T)
    default_space: str = ""
    #: whether ``_init_space`` supports ``method="mean"`` (class-mean latents)
    supports_mean_init: bool = True
    #: whether ``invert`` optimises (and takes ``steps``/``lr``) or is a closed-form encoding
    inverts_by_optimisation: bool = True

    def __init__(self, num_classes: Optional[int], channels: int, resolution: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.num_classes = num_classes
        self.channels = channels
        self.resolution = resolution
        self.card: Dict[str, Any] = {}
        self.register_buffer("out_mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("out_std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    # ---- normalisation -------------------------------------------------------------
    @property
    def mean(self) -> Tuple[float, ...]:
        """Rounded: the buffers are float32, the datasets' constants are short decimals."""
        return tuple(round(v, 6) for v in self.out_mean.flatten().tolist())

    @property
    def std(self) -> Tuple[float, ...]:
        return tuple(round(v, 6) for v in self.out_std.flatten().tolist())

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> "Prior":
        """Make ``decode`` return images normalised like a given dataset."""
        if len(mean) != self.channels or len(std) != self.channels:
            raise GenpriorError(f"mean/std need {self.channels} values for this prior, got {len(mean)}/{len(std)}")
        self.out_mean.copy_(torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.out_std.copy_(torch.tensor(list(std)).view(1, -1, 1, 1))
        return self

    def from_m11(self, x: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] -> normalised images."""
        return ((x + 1) / 2 - self.out_mean.to(x.dtype)) / self.out_std.to(x.dtype)

    def to_m11(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> the generator's [-1, 1] range (for inversion)."""
        return (x * self.out_std.to(x.dtype) + self.out_mean.to(x.dtype)) * 2 - 1

    # ---- checks --------------------------------------------------------------------
    def check_space(self, space: str) -> str:
        if space not in self.latent_spaces:
            raise GenpriorError(
                f"{type(self).__name__} has no latent space {space!r}; its spaces: {', '.join(self.latent_spaces)}"
            )
        return space

    def check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.long:
            raise GenpriorError("labels must be a 1-D int64 tensor, one class index per image")
        if self.num_classes is not None and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise GenpriorError(
                f"labels must lie in [0, {self.num_classes}) for this prior, got [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels

    def check_latents(self, latents: Latents, labels: torch.Tensor) -> None:
        self.check_labels(labels)
        if not isinstance(latents, dict) or not latents:
            raise GenpriorError("latents must be a non-empty dict of tensors (see Prior.init_latents)")
        for key, value in latents.items():
            if value.shape[0] != labels.shape[0]:
                raise GenpriorError(
                    f"latent {key!r} holds {value.shape[0]} images but {labels.shape[0]} labels were given; pass one label per image"
                )

    # ---- latents -------------------------------------------------------------------
    def init_latents(self, labels: torch.Tensor, space: Optional[str] = None, method: str = "random",
                     images: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                     **invert_kwargs: Any) -> Latents:
        """Latents for ``labels`` in ``space``: ``random`` draws, ``mean`` class means
        (where the prior has them), ``invert`` reconstructs the given real ``images``."""
        space = self.check_space(space or self.default_space)
        labels = self.check_labels(labels)
        if method not in INIT_METHODS:
            raise GenpriorError(f"unknown latent initialisation {method!r}; choose one of {', '.join(INIT_METHODS)}")
        if method == "invert":
            if images is None or images.shape[0] != labels.shape[0]:
                raise GenpriorError("initialisation 'invert' needs one real image per label (images=...)")
            return self.invert(images, labels, space, generator=generator, **invert_kwargs)
        return self._init_space(labels, space, method, generator)

    @abstractmethod
    def _init_space(self, labels: torch.Tensor, space: str, method: str,
                    generator: Optional[torch.Generator]) -> Latents:
        """Random (``method="random"``) or class-mean (``"mean"``) latents of ``space``."""

    def invert(self, images: torch.Tensor, labels: torch.Tensor, space: Optional[str] = None,
               steps: int = 200, lr: float = 0.05, generator: Optional[torch.Generator] = None,
               progress: bool = False, batch_size: Optional[int] = None, lpips: Optional[nn.Module] = None,
               lpips_weight: float = 0.0) -> Latents:
        """Find latents whose decoding reconstructs ``images`` (normalised), by Adam on
        the pixel MSE from the class-mean (or random) start, plus ``lpips_weight`` times the
        mean LPIPS distance (``lpips``, a ``genprior.perceptual.lpips_metric``) as StyleGAN2's
        projector matches images perceptually. With ``batch_size`` the
        images are inverted that many at a time, so memory is bounded by the batch; each
        latent's gradient depends only on its own image and the loss is normalised by
        the whole set, so the result equals inverting all at once (up to float
        rounding). Diffusion priors override this with DDIM inversion."""
        space = self.check_space(space or self.default_space)
        if lpips_weight and lpips is None:
            raise GenpriorError("lpips_weight needs an LPIPS module (genprior.perceptual.lpips_metric)")
        start = "mean" if self.supports_mean_init else "random"
        init = self._init_space(labels, space, start, generator)
        target = images.detach().to(self.out_mean.device)
        if lpips_weight:
            from ..perceptual import to_lpips_input

            def perceptual(x: torch.Tensor) -> torch.Tensor:  # normalised images -> LPIPS's input
                return to_lpips_input((x * self.out_std + self.out_mean).clamp(0, 1))

            target_p = perceptual(target)
        n = labels.shape[0]
        batch_size = n if batch_size is None else max(1, int(batch_size))
        parts = []
        bar = progress_bar(total=steps * -(-n // batch_size), desc=f"invert {space}", disable=not progress)
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            latents = {k: v[lo:hi].detach().clone().requires_grad_(True) for k, v in init.items()}
            opt = torch.optim.Adam(latents.values(), lr=lr)
            for _ in range(steps):
                decoded = self.decode(latents, labels[lo:hi])
                loss = (decoded - target[lo:hi]).square().sum() / target.numel()  # the whole set's mean, split by batch
                if lpips_weight:
                    loss = loss + lpips_weight * lpips(perceptual(decoded), target_p[lo:hi]).sum() / n
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
            parts.append({k: v.detach() for k, v in latents.items()})
        bar.close()
        return {k: torch.cat([part[k] for part in parts]) for k in init}

    # ---- decoding ------------------------------------------------------------------
    @abstractmethod
    def _decode(self, latents: Latents, labels: torch.Tensor) -> torch.Tensor:
        """Normalised images for one chunk of latents (no chunking here)."""

    def decode(self, latents: Latents, labels: torch.Tensor, chunk_size: Optional[int] = None) -> torch.Tensor:
        """Normalised images (N, C, H, W), differentiable w.r.t. the latents.

        With ``chunk_size`` the images are decoded ``chunk_size`` at a time under
        activation checkpointing: the forward pass keeps only each chunk's latents and
        output, and the backward pass recomputes one chunk at a time. Activations are
        bounded by the chunk, but every chunk's autograd graph stays alive until the
        backward pass, so memory still grows slowly with the number of images (measured
        in ``benchmarks/results/prior_cost.md``). For memory flat in the number of images,
        decode under ``torch.no_grad()`` and use ``backward_chunked`` (the distillation
        loop does).
        """
        self.check_latents(latents, labels)
        n = labels.shape[0]
        if chunk_size is None or chunk_size >= n:
            return self._decode(latents, labels)
        if chunk_size < 1:
            raise GenpriorError(f"chunk_size must be at least 1, got {chunk_size}")
        keys = sorted(latents)
        track = torch.is_grad_enabled() and (
            any(latents[k].requires_grad for k in keys) or any(p.requires_grad for p in self.parameters())
        )

        def run(lab: torch.Tensor, *parts: torch.Tensor) -> torch.Tensor:
            return self._decode(dict(zip(keys, parts)), lab)

        outs = []
        for start in range(0, n, chunk_size):
            lab = labels[start:start + chunk_size]
            parts = [latents[k][start:start + chunk_size] for k in keys]
            outs.append(checkpoint(run, lab, *parts, use_reentrant=False) if track else run(lab, *parts))
        return torch.cat(outs)

    def backward_chunked(self, latents: Latents, labels: torch.Tensor, grad_images: torch.Tensor,
                         chunk_size: int, transform=None) -> None:
        """GLaD's second pass: push dL/d(images) into the latents, one chunk at a time.

        With images decoded under ``torch.no_grad()`` and a loss backpropagated to them,
        this re-decodes each chunk with autograd and calls ``backward`` on it right away,
        so only one chunk's graph and activations exist at any time: memory no longer
        grows with the number of images (checkpointed ``decode`` keeps every chunk's
        graph until the end). ``transform`` (e.g. a resize) is applied to each decoded
        chunk as it was in the first pass. Gradients accumulate into the latents' ``.grad``.
        """
        self.check_latents(latents, labels)
        if chunk_size < 1:
            raise GenpriorError(f"chunk_size must be at least 1, got {chunk_size}")
        if grad_images.shape[0] != labels.shape[0]:
            raise GenpriorError(f"{grad_images.shape[0]} image gradients for {labels.shape[0]} labels")
        for start in range(0, labels.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            out = self._decode({k: v[sl] for k, v in latents.items()}, labels[sl])
            if transform is not None:
                out = transform(out)
            out.backward(grad_images[sl].to(out.dtype))

    # ---- saving --------------------------------------------------------------------
    def describe(self) -> Dict[str, Any]:
        """The prior card: what ``prior.json`` records next to the weights."""
        return {
            "family": self.family,
            "class": type(self).__name__,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "resolution": self.resolution,
            "mean": list(self.mean),
            "std": list(self.std),
            "latent_spaces": list(self.latent_spaces),
            "default_space": self.default_space,
            **{k: v for k, v in self.card.items() if k not in {"family", "class"}},
        }

    def save_pretrained(self, directory) -> Path:
        """Write weights (safetensors) and ``prior.json`` to ``directory``."""
        from ..synset import write_json_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_components(directory)
        # the card goes last and whole: a folder interrupted while saving has no card and is refused
        write_json_atomic(self.describe(), directory / PRIOR_CARD)
        return directory

    @abstractmethod
    def _save_components(self, directory: Path) -> None:
        """Write the family's weights (safetensors) and configs into ``directory``."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory, **kwargs: Any) -> "Prior":
        """Load what ``save_pretrained`` wrote (``prior.json`` + components)."""
