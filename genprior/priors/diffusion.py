"""Diffusion models and VAEs as priors: decoding runs a short DDIM chain from x_T.

LD3M (Moser et al., "Latent Dataset Distillation with Diffusion Models", arXiv:2403.03881)
distils the initial noise x_T and the class embedding of a class-conditional latent
diffusion model through a few DDIM steps; Minimax Diffusion and D4M sample a DiT in a VAE
latent space. diffusers pipelines run under ``torch.no_grad``, so the sampler lives here:
``ddim_sample`` is DDIM (eta 0) with classifier-free guidance, differentiable in x_T and
in whatever the denoiser closes over (the class embeddings).

* ``DiffusionPrior`` ("diffusion"): a pixel-space ``UNet2DModel``.
* ``LatentDiffusionPrior`` ("latent_diffusion"): a ``DiTTransformer2DModel`` in the latent
  space of an ``AutoencoderKL``.
* ``VAEPrior`` ("vae"): the ``AutoencoderKL`` latent space alone.

Latent spaces of the two diffusion priors: ``x_T`` ({"x_T": (N, C, H, W)}, the labels pick
the class) and ``x_T+class`` ({"x_T", "class_emb": (N, D)}, one optimisable class
embedding per image, initialised from the model's table row for its label). The default
is ``x_T+class``: LD3M optimises both, and since ``class_emb`` starts at the table row a
fresh ``x_T+class`` latent decodes exactly like the same ``x_T`` with its label.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel, UNet2DModel
from diffusers.models.embeddings import LabelEmbedding
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import GenpriorError
from ..images import resize_images
from ..progress import progress_bar
from .base import Latents, Prior, keep_card_extras, load_model, read_card, read_json

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

#: decode-time options of the two DDIM priors, with their defaults; saved in prior.json
SAMPLER_DEFAULTS: Dict[str, Any] = {
    "num_inference_steps": 25,
    "guidance_scale": 1.0,
    "skip_weight": 0.0,
    "output_resolution": None,
    "gradient_checkpointing": False,
}

# what Prior.describe() derives from attributes; everything else in prior.json is card
# denoiser(x, t, drop) -> model output; row i of x shows image i mod N, and rows where
# drop is True are conditioned on the null class (the unconditional pass of CFG)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ---- the sampler ---------------------------------------------------------------------
def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise GenpriorError(f"unknown prediction type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")


def _split_prediction(output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor,
                      prediction_type: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x_0, noise) implied by a model output for ``x`` at noise level alpha-bar ``alpha``."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (x - s * output) / a, output
    if prediction_type == "v_prediction":
        return a * x - s * output, a * output + s * x
    return output, (x - a * output) / s


def ddim_sample(model_fn: Denoiser, x_T: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
                prediction_type: str = "epsilon", guidance_scale: float = 1.0, *, final_alpha_cumprod: float = 1.0,
                clip_sample: Optional[float] = None, skip_weight: float = 0.0,
                checkpoint_model: bool = False) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from ``x_T`` through ``timesteps`` (descending), with autograd.

    Each step goes from ``timesteps[i]`` to ``timesteps[i + 1]`` (the last one to
    ``final_alpha_cumprod``). That equals diffusers' ``DDIMScheduler.step`` whenever the
    timesteps are evenly spaced ("leading", or "trailing" with K dividing the training
    steps); otherwise diffusers jumps to t - T // K, which can miss the next timestep,
    while this sampler always lands on it. ``guidance_scale`` != 1 adds the unconditional
    pass of classifier-free guidance (one batched call on [x, x]); 1 makes one conditional
    call. ``clip_sample`` clamps the x_0 estimate as the scheduler's ``clip_sample`` does
    (its gradient is zero where it clamps).

    ``skip_weight`` is LD3M's skip connection from the initial state (paper: "a linearly
    decaying skip connection, injected from the initial noisy state into every reverse
    step"; code: ``p_sample_ddim`` in Brian-Moser/prune_and_distill,
    ``src/latentdiff/ldm/models/diffusion/ddim.py``): before each update the x_0 estimate
    becomes ``(1 - w_i) x0 + w_i x_T`` with ``w_i = skip_weight * (K-1-i) / (K-1)``, i.e.
    the whole x_T at the first of the K steps, nothing at the last, so every step hands
    gradient straight back to x_T. LD3M is ``skip_weight=1``, plain DDIM 0. (LD3M's code
    also starts from its latent noised by ``q_sample`` with fresh noise, and mixes in the
    VQ-quantised latent; genprior starts from and mixes in x_T itself, so decoding stays
    deterministic.)

    ``checkpoint_model`` recomputes each denoiser call in the backward pass (as LD3M's
    code does), so activation memory no longer grows with the number of steps.
    """
    _check_prediction_type(prediction_type)
    steps = [int(t) for t in timesteps]
    if not steps:
        raise GenpriorError("DDIM needs at least one timestep")
    n = x_T.shape[0]
    guided = guidance_scale != 1.0
    drop = torch.zeros(2 * n if guided else n, dtype=torch.bool, device=x_T.device)
    drop[n:] = True
    alphas = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    final = torch.tensor(float(final_alpha_cumprod), device=x_T.device)
    last = len(steps) - 1
    x = x_T
    for i, t in enumerate(steps):
        x_in = torch.cat([x, x]) if guided else x
        t_in = torch.full((x_in.shape[0],), t, dtype=torch.long, device=x.device)
        if checkpoint_model and torch.is_grad_enabled():
            out = checkpoint(model_fn, x_in, t_in, drop, use_reentrant=False)
        else:
            out = model_fn(x_in, t_in, drop)
        if guided:
            cond, uncond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        alpha_prev = alphas[steps[i + 1]] if i < last else final
        x0, eps = _split_prediction(out, x, alphas[t], prediction_type)
        if clip_sample is not None:
            x0 = x0.clamp(-clip_sample, clip_sample)
        if skip_weight:
            w = skip_weight * (last - i) / max(last, 1)
            x0 = (1 - w) * x0 + w * x_T
        x = alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps
    return x


def ddim_invert(model_fn: Denoiser, x_0: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
                prediction_type: str = "epsilon", *, final_alpha_cumprod: float = 1.0) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 -> x_T with the conditional model (no guidance).

    The sampler's steps run backwards: climbing from one level to ``t``, the noise is
    the one the model predicts at ``t`` for the current, less noisy ``x``
    (eps(x_prev, t) ~ eps(x_t, t), the usual DDIM-inversion approximation that becomes
    exact as the steps shrink). Inverting plain DDIM: a ``skip_weight`` > 0 sampler
    does not reproduce the images exactly.
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "sample" and final_alpha_cumprod >= 1:
        raise GenpriorError("DDIM inversion of a sample-predicting model needs a scheduler with "
                            "set_alpha_to_one=False (the noise in an exactly clean image is undefined)")
    alphas = alphas_cumprod.to(device=x_0.device, dtype=torch.float32)
    alpha = torch.tensor(float(final_alpha_cumprod), device=x_0.device)
    drop = torch.zeros(x_0.shape[0], dtype=torch.bool, device=x_0.device)
    x = x_0
    for t in reversed([int(t) for t in timesteps]):
        out = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), drop)
        x0, eps = _split_prediction(out, x, alpha, prediction_type)
        alpha = alphas[t]
        x = alpha.sqrt() * x0 + (1 - alpha).sqrt() * eps
    return x


# ---- shared helpers ------------------------------------------------------------------
def _per_channel(values: Sequence[float], channels: int) -> Tuple[float, ...]:
    values = tuple(float(v) for v in values)
    return values * channels if len(values) == 1 else values


def _square_size(sample_size: Any) -> int:
    """A diffusers ``sample_size`` (int or [h, w]) as one side length."""
    return int(sample_size if isinstance(sample_size, int) else sample_size[0])


def _check_resolution(size: Any) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise GenpriorError(f"output_resolution must be a positive integer or None, got {size!r}")


def _ddim_scheduler(scheduler: Any) -> DDIMScheduler:
    """A DDIM scheduler with the noise schedule of any diffusers scheduler (or its config)."""
    if scheduler is None:
        return DDIMScheduler()
    config = scheduler.config if hasattr(scheduler, "config") else scheduler
    ddim = DDIMScheduler.from_config(config)
    if ddim.config.thresholding:
        raise GenpriorError("schedulers with dynamic thresholding are not supported; pass one with thresholding=False")
    _check_prediction_type(ddim.config.prediction_type)
    return ddim


def _load(cls: Any, folder: Path, subfolder: Optional[str], torch_dtype: Optional[torch.dtype]) -> Any:
    """A diffusers model from a local folder, with a one-line error when it cannot be read."""
    return load_model(cls, folder / subfolder if subfolder else folder, torch_dtype=torch_dtype)


def _load_scheduler(folder: Path) -> DDIMScheduler:
    """``scheduler/`` of a pipeline, a root ``scheduler_config.json``, or DDIM defaults."""
    for where in (folder / "scheduler", folder):
        if (where / "scheduler_config.json").is_file():
            return _ddim_scheduler(read_json(where / "scheduler_config.json"))
    return DDIMScheduler()


def _subfolder(folder: Path, name: str) -> Optional[str]:
    """``name`` when the folder is a pipeline holding it, None when the model sits at the root."""
    if (folder / name / "config.json").is_file():
        return name
    if (folder / "config.json").is_file():
        return None
    raise GenpriorError(f"{folder} has neither {name}/config.json nor config.json; pass a diffusers pipeline folder "
                        f"(with a {name}/ subfolder) or the {name} model's own folder")


class _DDIMPrior(Prior):
    """What the pixel and latent diffusion priors share: x_T spaces, DDIM decode and
    inversion, sampler options. Subclasses provide the denoiser and the image <-> x_0 maps."""

    supports_mean_init = False
    inverts_by_optimisation = False

    def __init__(self, num_classes: Optional[int], channels: int, native_resolution: int,
                 latent_shape: Tuple[int, int, int], class_dim: Optional[int], scheduler: Any,
                 mean: Sequence[float], std: Sequence[float], **options: Any):
        super().__init__(num_classes, channels, native_resolution, _per_channel(mean, channels),
                         _per_channel(std, channels))
        self.native_resolution = native_resolution
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.class_dim = class_dim
        #: the label index of the unconditional pass (the table's last row), None if unconditional
        self.null_class = num_classes
        self.scheduler = _ddim_scheduler(scheduler)
        conditional = num_classes is not None
        self.latent_spaces = ("x_T", "x_T+class") if conditional else ("x_T",)
        self.default_space = "x_T+class" if conditional else "x_T"
        self.configure(**{**SAMPLER_DEFAULTS, **options})

    # ---- options -------------------------------------------------------------------
    def configure(self, **options: Any) -> "_DDIMPrior":
        """Set sampler options (see ``SAMPLER_DEFAULTS``); they go into the card, so
        ``save_pretrained`` keeps them."""
        unknown = sorted(set(options) - set(SAMPLER_DEFAULTS))
        if unknown:
            raise GenpriorError(f"unknown sampler option(s) {', '.join(unknown)}; known: {', '.join(SAMPLER_DEFAULTS)}")
        merged = {**{k: self.card[k] for k in SAMPLER_DEFAULTS if k in self.card}, **options}
        steps, size = merged["num_inference_steps"], merged["output_resolution"]
        guidance, skip = float(merged["guidance_scale"]), float(merged["skip_weight"])
        limit = self.scheduler.config.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= limit:
            raise GenpriorError(f"num_inference_steps must be an integer in [1, {limit}], got {steps!r}")
        if guidance < 0:
            raise GenpriorError(f"guidance_scale must be >= 0 (1 = no guidance), got {guidance}")
        if guidance != 1.0 and self.null_class is None:
            raise GenpriorError("guidance_scale other than 1 needs a class-conditional model; "
                                "this one is unconditional")
        if not 0.0 <= skip <= 1.0:
            raise GenpriorError(f"skip_weight must lie in [0, 1] (LD3M: 1, plain DDIM: 0), got {skip}")
        _check_resolution(size)
        self.card.update(num_inference_steps=steps, guidance_scale=guidance, skip_weight=skip, output_resolution=size,
                         gradient_checkpointing=bool(merged["gradient_checkpointing"]))
        self.resolution = size or self.native_resolution
        return self

    @property
    def num_inference_steps(self) -> int:
        return self.card["num_inference_steps"]

    @property
    def guidance_scale(self) -> float:
        return self.card["guidance_scale"]

    def train(self, mode: bool = True) -> "_DDIMPrior":
        """The generator stays in eval mode: decoding must stay deterministic (no dropout,
        no DiT label dropout)."""
        super().train(mode)
        for module in self.children():
            module.eval()
        return self

    # ---- what subclasses provide ---------------------------------------------------
    @abstractmethod
    def _denoiser(self, labels: torch.Tensor, class_emb: Optional[torch.Tensor]) -> Denoiser:
        """The model as ``denoise(x, t, drop)`` for these labels (and class embeddings)."""

    @abstractmethod
    def class_table(self) -> torch.Tensor:
        """(num_classes + 1, D): the label embedding rows ``class_emb`` starts from (last: null)."""

    @abstractmethod
    def _to_x0(self, images_m11: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the space DDIM runs in (pixels or scaled VAE latents)."""

    @abstractmethod
    def _from_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """The DDIM result -> images in [-1, 1] at the model's own resolution."""

    # ---- latents -------------------------------------------------------------------
    def _space_of(self, latents: Latents) -> str:
        if set(latents) == {"x_T"}:
            return "x_T"
        if set(latents) == {"x_T", "class_emb"}:
            return self.check_space("x_T+class")
        raise GenpriorError(f"latents with keys {', '.join(sorted(latents))} name no latent space of "
                            f"{type(self).__name__}; use {{'x_T'}} or {{'x_T', 'class_emb'}}")

    def check_latents(self, latents: Latents, labels: torch.Tensor) -> None:
        super().check_latents(latents, labels)
        self._space_of(latents)
        x = latents["x_T"]
        if tuple(x.shape[1:]) != self.latent_shape:
            raise GenpriorError(f"x_T must have shape (N, {', '.join(map(str, self.latent_shape))}) for this prior, "
                                f"got {tuple(x.shape)}")
        if "class_emb" in latents and tuple(latents["class_emb"].shape[1:]) != (self.class_dim,):
            raise GenpriorError(f"class_emb must have shape (N, {self.class_dim}) for this prior, "
                                f"got {tuple(latents['class_emb'].shape)}")

    def _class_latents(self, labels: torch.Tensor) -> torch.Tensor:
        return self.class_table()[labels].detach().float().clone()

    def _init_space(self, labels: torch.Tensor, space: str, method: str,
                    generator: Optional[torch.Generator]) -> Latents:
        if method != "random":
            raise GenpriorError("diffusion priors have no class-mean latents; initialise with 'random' (x_T ~ N(0, I)) "
                                "or 'invert' (DDIM inversion of real images)")
        device = self.out_mean.device
        shape = (labels.shape[0],) + self.latent_shape
        x_T = torch.randn(shape, generator=generator, device=generator.device if generator is not None else "cpu")
        latents = {"x_T": x_T.to(device)}
        if space == "x_T+class":
            latents["class_emb"] = self._class_latents(labels.to(device))
        return latents

    def invert(self, images: torch.Tensor, labels: torch.Tensor, space: Optional[str] = None,
               generator: Optional[torch.Generator] = None, progress: bool = False, batch_size: int = 64) -> Latents:
        """DDIM inversion of real (normalised) images with the conditional model, in
        batches of ``batch_size``: a fixed ``num_inference_steps`` map, no optimisation.
        ``class_emb`` starts at the label's table row."""
        space = self.check_space(space or self.default_space)
        labels = self.check_labels(labels)
        device = self.out_mean.device
        timesteps, alphas, final = self._schedule()
        outs = []
        with torch.no_grad():
            for start in progress_bar(range(0, labels.shape[0], batch_size), desc="DDIM inversion", disable=not progress):
                lab = labels[start:start + batch_size].to(device)
                x0 = self._to_x0(self.to_m11(images[start:start + batch_size].to(device).float()))
                outs.append(ddim_invert(self._denoiser(lab, None), x0, timesteps, alphas,
                                        self.scheduler.config.prediction_type, final_alpha_cumprod=final))
        latents = {"x_T": torch.cat(outs)}
        if space == "x_T+class":
            latents["class_emb"] = self._class_latents(labels.to(device))
        return latents

    # ---- training --------------------------------------------------------------------
    def training_loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                      uncond_prob: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The denoising loss on real (normalised) ``images``: a timestep t ~ U{0..T-1} and noise
        per image, the model's prediction against its target (the scheduler's prediction type),
        with each label dropped to the null class with ``uncond_prob`` (classifier-free guidance
        training). Returns (loss, the predicted clean sample x̂_0, the clean sample x_0), in the
        space the model denoises (pixels, or scaled VAE latents); x̂_0 carries gradients."""
        if not 0.0 <= uncond_prob < 1.0:
            raise GenpriorError(f"uncond_prob must lie in [0, 1), got {uncond_prob}")
        labels = self.check_labels(labels).to(self.out_mean.device)
        n = labels.shape[0]
        with torch.no_grad():  # the encoder is not trained: x_0 is data
            x0 = self._to_x0(self.to_m11(images.to(self.out_mean.device).float())).float()
        config = self.scheduler.config
        t = torch.randint(0, config.num_train_timesteps, (n,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        drop = (torch.rand(n, generator=generator) < uncond_prob) if self.null_class is not None else torch.zeros(n, dtype=torch.bool)
        alpha = self.scheduler.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1))).float()
        x_t = alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise
        out = self._denoiser(labels, None)(x_t, t.to(x0.device), drop.to(x0.device))
        if config.prediction_type == "epsilon":
            target = noise
        elif config.prediction_type == "v_prediction":
            target = alpha.sqrt() * noise - (1 - alpha).sqrt() * x0
        else:
            target = x0
        x0_hat, _ = _split_prediction(out, x_t, alpha, config.prediction_type)
        return F.mse_loss(out, target), x0_hat, x0

    # ---- decoding ------------------------------------------------------------------
    def _schedule(self) -> Tuple[List[int], torch.Tensor, float]:
        self.scheduler.set_timesteps(self.num_inference_steps)
        scheduler = self.scheduler
        return scheduler.timesteps.tolist(), scheduler.alphas_cumprod, float(scheduler.final_alpha_cumprod)

    def _decode(self, latents: Latents, labels: torch.Tensor) -> torch.Tensor:
        timesteps, alphas, final = self._schedule()
        config = self.scheduler.config
        x0 = ddim_sample(self._denoiser(labels, latents.get("class_emb")), latents["x_T"].float(), timesteps, alphas,
                         config.prediction_type, self.guidance_scale, final_alpha_cumprod=final,
                         clip_sample=config.clip_sample_range if config.clip_sample else None,
                         skip_weight=self.card["skip_weight"], checkpoint_model=self.card["gradient_checkpointing"])
        return self.from_m11(resize_images(self._from_x0(x0).float(), self.card["output_resolution"]))


def _conditioned_call(model: nn.Module, embedders: Sequence[Tuple[nn.Module, torch.Tensor]], x: torch.Tensor,
                      t: torch.Tensor, drop: torch.Tensor, labels: torch.Tensor, null_class: Optional[int],
                      class_emb: Optional[torch.Tensor]) -> torch.Tensor:
    """One denoiser call. With ``class_emb``, forward hooks replace the outputs of the
    model's label embedders by per-row vectors for the duration of the call (the model
    itself is not changed), so the embeddings receive gradients.

    ``embedders`` lists (module, its label table); ``class_emb`` replaces the first one's
    rows, and any other embedder gets ``class_emb`` plus its own fixed difference to the
    first for that label (zero for equal tables, as in converted DiT checkpoints).
    """
    dtype = model.dtype
    image = torch.arange(x.shape[0], device=x.device) % labels.shape[0]
    if null_class is None:
        return model(x.to(dtype), t).sample.float()
    classes = torch.where(drop, null_class, labels[image])
    if class_emb is None:
        return model(x.to(dtype), t, class_labels=classes).sample.float()
    first = embedders[0][1]
    hooks = []
    try:
        for module, table in embedders:
            rows = class_emb[image].to(dtype)
            if table is not first:
                rows = rows + (table[labels[image]] - first[labels[image]])
            vectors = torch.where(drop[:, None], table[null_class], rows)
            hooks.append(module.register_forward_hook(lambda mod, args, out, vectors=vectors: vectors))
        return model(x.to(dtype), t, class_labels=classes).sample.float()
    finally:
        for hook in hooks:
            hook.remove()


class _VAESpace:
    """DDIM in the scaled latent space of ``self.vae`` (an ``AutoencoderKL``): what the latent
    diffusion priors share."""

    vae: AutoencoderKL
    native_resolution: int
    scaling_factor: float
    shift_factor: float

    def _set_vae(self, vae: AutoencoderKL) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.shift_factor or 0.0)

    def _to_x0(self, images_m11: torch.Tensor) -> torch.Tensor:
        x = resize_images(images_m11, self.native_resolution).to(self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mean.float()
        return (z - self.shift_factor) * self.scaling_factor

    def _from_x0(self, x0: torch.Tensor) -> torch.Tensor:
        z = x0 / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae.dtype)).sample


# ---- pixel-space diffusion -----------------------------------------------------------
class DiffusionPrior(_DDIMPrior):
    """A pixel-space ``UNet2DModel`` (class-conditional through ``num_class_embeds =
    num_classes + 1``, the last index being the null class of CFG label dropout; an
    unconditional UNet gives only the ``x_T`` space) decoded by DDIM.

    The UNet runs at its own ``sample_size``; ``output_resolution`` resizes the result
    (antialiased), e.g. a 32-px UNet for 28-px data. ``UNet2DModel`` also runs at 28 px
    directly (28 -> 14 -> 7 with two downsamplings), which the shipped MNIST prior does.
    """

    family = "diffusion"

    def __init__(self, unet: UNet2DModel, scheduler: Any = None, mean: Sequence[float] = (0.5,),
                 std: Sequence[float] = (0.5,), **options: Any):
        config = unet.config
        if config.class_embed_type is not None:
            raise GenpriorError(f"UNet2DModel with class_embed_type={config.class_embed_type!r} is not supported; "
                                "genprior needs a label table (num_class_embeds) or an unconditional UNet")
        size = _square_size(config.sample_size)
        conditional = config.num_class_embeds is not None
        super().__init__(
            num_classes=config.num_class_embeds - 1 if conditional else None,
            channels=config.out_channels, native_resolution=size,
            latent_shape=(config.in_channels, size, size),
            class_dim=unet.class_embedding.weight.shape[1] if conditional else None,
            scheduler=scheduler, mean=mean, std=std, **options)
        self.unet = unet.eval().requires_grad_(False)

    @classmethod
    def from_components(cls, unet: UNet2DModel, scheduler: Any = None, mean: Sequence[float] = (0.5,),
                        std: Sequence[float] = (0.5,), **options: Any) -> "DiffusionPrior":
        """From plain diffusers objects; ``scheduler`` is any diffusers scheduler (its noise
        schedule is used with DDIM), None for DDIM defaults. mean/std 0.5 keep [-1, 1]."""
        return cls(unet, scheduler, mean, std, **options)

    @classmethod
    def from_diffusers(cls, folder, torch_dtype: Optional[torch.dtype] = None, **options: Any) -> "DiffusionPrior":
        """From a diffusers folder: a pipeline with ``unet/`` (+ ``scheduler/``) or a
        ``UNet2DModel`` at the root."""
        folder = Path(folder)
        unet = _load(UNet2DModel, folder, _subfolder(folder, "unet"), torch_dtype)
        return cls.from_components(unet, _load_scheduler(folder), **options)

    @classmethod
    def from_pretrained(cls, directory, torch_dtype: Optional[torch.dtype] = None, **options: Any) -> "DiffusionPrior":
        """Load what ``save_pretrained`` wrote; ``options`` override the saved sampler options."""
        directory = Path(directory)
        card = read_card(directory)
        unet = _load(UNet2DModel, directory, "unet", torch_dtype)
        saved = {k: card[k] for k in SAMPLER_DEFAULTS if k in card}
        prior = cls.from_components(unet, _load_scheduler(directory), card["mean"], card["std"], **{**saved, **options})
        return keep_card_extras(prior, card)

    def _save_components(self, directory: Path) -> None:
        self.unet.save_pretrained(directory / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(directory / "scheduler")

    def class_table(self) -> torch.Tensor:
        if self.null_class is None:
            raise GenpriorError("this UNet is unconditional: it has no class embeddings")
        return self.unet.class_embedding.weight

    def _denoiser(self, labels: torch.Tensor, class_emb: Optional[torch.Tensor]) -> Denoiser:
        table = self.unet.class_embedding
        embedders = [(table, table.weight)] if self.null_class is not None else []
        channels = self.latent_shape[0]

        def denoise(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            return _conditioned_call(self.unet, embedders, x, t, drop, labels, self.null_class, class_emb)[:, :channels]

        return denoise

    def _to_x0(self, images_m11: torch.Tensor) -> torch.Tensor:
        return resize_images(images_m11, self.native_resolution)

    def _from_x0(self, x0: torch.Tensor) -> torch.Tensor:
        return x0


# ---- latent diffusion (DiT + VAE) ----------------------------------------------------
class LatentDiffusionPrior(_VAESpace, _DDIMPrior):
    """A class-conditional ``DiTTransformer2DModel`` denoising in the (scaled) latent space
    of an ``AutoencoderKL``: decode = DDIM in latent space, ``vae.decode``, ``from_m11``.

    DiT conditions each block through its own AdaLayerNormZero label table (the output
    layer reuses block 0's). ``class_emb`` is one (N, D) vector per image that replaces
    block 0's row; every other block gets ``class_emb`` plus its fixed difference to
    block 0 for that label. Converted DiT checkpoints (facebook/DiT-XL-2-*) copy one label
    table into every block, so there the same vector conditions all blocks, as in the
    original DiT; untied tables (a DiT trained in diffusers) still decode exactly like the
    label at initialisation. With learned sigma (out_channels = 2 x latent channels) the
    variance half of the output is dropped, as DiTPipeline does; guidance applies to all
    channels.
    """

    family = "latent_diffusion"

    def __init__(self, transformer: DiTTransformer2DModel, vae: AutoencoderKL, scheduler: Any = None,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), **options: Any):
        config = transformer.config
        if config.num_embeds_ada_norm is None or not self._embedders_of(transformer):
            raise GenpriorError("the DiT must be class-conditional "
                                "(norm_type 'ada_norm_zero' with num_embeds_ada_norm)")
        if config.in_channels != vae.config.latent_channels:
            raise GenpriorError(f"the DiT takes {config.in_channels} channels but the VAE makes "
                                f"{vae.config.latent_channels}-channel latents")
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size = int(config.sample_size)
        table = self._embedders_of(transformer)[0][1]
        super().__init__(
            num_classes=int(config.num_embeds_ada_norm), channels=vae.config.out_channels,
            native_resolution=size * factor, latent_shape=(config.in_channels, size, size),
            class_dim=table.shape[1], scheduler=scheduler, mean=mean, std=std, **options)
        if table.shape[0] != self.num_classes + 1:
            raise GenpriorError("the DiT label table has no null-class row (class_dropout_prob 0); genprior needs it")
        self.transformer = transformer.eval().requires_grad_(False)
        self._set_vae(vae)

    @staticmethod
    def _embedders_of(transformer: nn.Module) -> List[Tuple[nn.Module, torch.Tensor]]:
        """Each block's AdaLayerNormZero label embedder (block 0 first) with its table."""
        return [(m, m.embedding_table.weight) for m in transformer.modules() if isinstance(m, LabelEmbedding)]

    @classmethod
    def from_components(cls, transformer: DiTTransformer2DModel, vae: AutoencoderKL, scheduler: Any = None,
                        mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
                        **options: Any) -> "LatentDiffusionPrior":
        """From plain diffusers objects (e.g. the parts of ``DiTPipeline``)."""
        return cls(transformer, vae, scheduler, mean, std, **options)

    @classmethod
    def from_diffusers(cls, folder, torch_dtype: Optional[torch.dtype] = None,
                       **options: Any) -> "LatentDiffusionPrior":
        """From a diffusers pipeline folder with ``transformer/``, ``vae/`` and ``scheduler/``
        (e.g. a snapshot of facebook/DiT-XL-2-256)."""
        folder = Path(folder)
        transformer = _load(DiTTransformer2DModel, folder, "transformer", torch_dtype)
        vae = _load(AutoencoderKL, folder, "vae", torch_dtype)
        return cls.from_components(transformer, vae, _load_scheduler(folder), **options)

    @classmethod
    def from_pretrained(cls, directory, torch_dtype: Optional[torch.dtype] = None,
                        **options: Any) -> "LatentDiffusionPrior":
        """Load what ``save_pretrained`` wrote; ``options`` override the saved sampler options."""
        directory = Path(directory)
        card = read_card(directory)
        transformer = _load(DiTTransformer2DModel, directory, "transformer", torch_dtype)
        vae = _load(AutoencoderKL, directory, "vae", torch_dtype)
        saved = {k: card[k] for k in SAMPLER_DEFAULTS if k in card}
        prior = cls.from_components(transformer, vae, _load_scheduler(directory), card["mean"], card["std"],
                                    **{**saved, **options})
        return keep_card_extras(prior, card)

    def _save_components(self, directory: Path) -> None:
        self.transformer.save_pretrained(directory / "transformer", safe_serialization=True)
        self.vae.save_pretrained(directory / "vae", safe_serialization=True)
        self.scheduler.save_pretrained(directory / "scheduler")

    def class_table(self) -> torch.Tensor:
        return self._embedders_of(self.transformer)[0][1]

    def _denoiser(self, labels: torch.Tensor, class_emb: Optional[torch.Tensor]) -> Denoiser:
        embedders = self._embedders_of(self.transformer)
        channels = self.latent_shape[0]

        def denoise(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            out = _conditioned_call(self.transformer, embedders, x, t, drop, labels, self.null_class, class_emb)
            return out[:, :channels]

        return denoise


# ---- the VAE latent space alone ------------------------------------------------------
class VAEPrior(Prior):
    """The ``AutoencoderKL`` latent space as a prior: space ``z`` ({"z": (N, latent_ch, h, w)},
    the VAE's own unscaled latents). Labels are accepted but unused (``num_classes`` only
    range-checks them and may be None). Random z is N(0, 1) in the scaled space; invert
    is the encoder's posterior mean, exact and without optimisation.

    The VAE decodes at ``sample_size`` px (latent grid = sample_size / downsampling
    factor); ``output_resolution`` resizes the result (antialiased).
    """

    family = "vae"
    latent_spaces = ("z",)
    default_space = "z"
    supports_mean_init = False
    inverts_by_optimisation = False

    def __init__(self, vae: AutoencoderKL, sample_size: Optional[int] = None, mean: Sequence[float] = (0.5,),
                 std: Sequence[float] = (0.5,), num_classes: Optional[int] = None,
                 output_resolution: Optional[int] = None):
        config = vae.config
        size = sample_size or _square_size(config.sample_size)
        factor = 2 ** (len(config.block_out_channels) - 1)
        if size % factor:
            raise GenpriorError(f"sample_size must be a multiple of the VAE's downsampling factor {factor}, "
                                f"got {size}; use output_resolution for other sizes")
        _check_resolution(output_resolution)
        channels = config.out_channels
        super().__init__(num_classes, channels, output_resolution or size, _per_channel(mean, channels),
                         _per_channel(std, channels))
        self.vae = vae.eval().requires_grad_(False)
        self.sample_size = size
        self.latent_shape = (config.latent_channels, size // factor, size // factor)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.shift_factor or 0.0)
        self.card.update(sample_size=size, output_resolution=output_resolution)

    def train(self, mode: bool = True) -> "VAEPrior":
        """The VAE stays in eval mode: decoding must stay deterministic."""
        super().train(mode)
        self.vae.eval()
        return self

    @classmethod
    def from_components(cls, vae: AutoencoderKL, sample_size: Optional[int] = None, mean: Sequence[float] = (0.5,),
                        std: Sequence[float] = (0.5,), num_classes: Optional[int] = None,
                        output_resolution: Optional[int] = None) -> "VAEPrior":
        """From a plain ``AutoencoderKL`` (e.g. stabilityai/sd-vae-ft-mse)."""
        return cls(vae, sample_size, mean, std, num_classes, output_resolution)

    @classmethod
    def from_diffusers(cls, folder, torch_dtype: Optional[torch.dtype] = None, **options: Any) -> "VAEPrior":
        """From a folder holding an ``AutoencoderKL`` at the root or in ``vae/``."""
        folder = Path(folder)
        return cls.from_components(_load(AutoencoderKL, folder, _subfolder(folder, "vae"), torch_dtype), **options)

    @classmethod
    def from_pretrained(cls, directory, torch_dtype: Optional[torch.dtype] = None, **options: Any) -> "VAEPrior":
        """Load what ``save_pretrained`` wrote; ``options`` override sample_size / output_resolution."""
        directory = Path(directory)
        card = read_card(directory)
        saved = {"sample_size": card["sample_size"], "output_resolution": card.get("output_resolution"),
                 "num_classes": card["num_classes"]}
        prior = cls.from_components(_load(AutoencoderKL, directory, "vae", torch_dtype), mean=card["mean"],
                                    std=card["std"], **{**saved, **options})
        return keep_card_extras(prior, card)

    def _save_components(self, directory: Path) -> None:
        self.vae.save_pretrained(directory / "vae", safe_serialization=True)

    def check_latents(self, latents: Latents, labels: torch.Tensor) -> None:
        super().check_latents(latents, labels)
        if set(latents) != {"z"}:
            raise GenpriorError(f"latents with keys {', '.join(sorted(latents))} name no latent space of VAEPrior; "
                                "use {'z'}")
        if tuple(latents["z"].shape[1:]) != self.latent_shape:
            raise GenpriorError(f"z must have shape (N, {', '.join(map(str, self.latent_shape))}) for this prior, "
                                f"got {tuple(latents['z'].shape)}")

    def _init_space(self, labels: torch.Tensor, space: str, method: str,
                    generator: Optional[torch.Generator]) -> Latents:
        if method != "random":
            raise GenpriorError("the VAE prior has no class means; initialise with 'random' or 'invert' real images")
        shape = (labels.shape[0],) + self.latent_shape
        noise = torch.randn(shape, generator=generator, device=generator.device if generator is not None else "cpu")
        return {"z": (noise / self.scaling_factor + self.shift_factor).to(self.out_mean.device)}

    def invert(self, images: torch.Tensor, labels: torch.Tensor, space: Optional[str] = None,
               generator: Optional[torch.Generator] = None, progress: bool = False, batch_size: int = 64) -> Latents:
        """The encoder's posterior mean of the real (normalised) images, in batches."""
        self.check_space(space or self.default_space)
        self.check_labels(labels)
        device = self.out_mean.device
        outs = []
        with torch.no_grad():
            for start in progress_bar(range(0, images.shape[0], batch_size), desc="VAE encode", disable=not progress):
                x = resize_images(self.to_m11(images[start:start + batch_size].to(device).float()), self.sample_size)
                outs.append(self.vae.encode(x.to(self.vae.dtype)).latent_dist.mean.float())
        return {"z": torch.cat(outs)}

    def _decode(self, latents: Latents, labels: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(latents["z"].to(self.vae.dtype)).sample.float()
        return self.from_m11(resize_images(x, self.card["output_resolution"]))
