"""Text-conditioned latent diffusion as a prior, in Stable Diffusion's layout.

A ``UNet2DConditionModel`` denoises in the latent space of an ``AutoencoderKL``, conditioned
by the token states a ``transformers`` CLIP text encoder makes of a prompt. genprior turns
each class name into a prompt through a template (``"a photo of a {name}"`` by default,
overridable), and the negative prompt (empty by default) is the unconditional pass of
classifier-free guidance. The prompts are encoded once, when the prior is built: the table
of encoded prompts (one row per class, the negative prompt last) plays the role the label
table plays for the other diffusion priors.

Latent spaces: ``x_T`` (the initial noise, as LD3M) and ``x_T+class``, where ``class_emb``
is the **encoded prompt of each image's class**, flattened: distilling it optimises the text
conditioning itself, a latent space no published method has tried. A folder in Stable
Diffusion's layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
loads through ``load_prior``, from disk or the hub cache; the class names come from the
prior's card, or from the dataset a run distils (``class_names=`` when loading by hand).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from ..errors import GenpriorError
from .base import keep_card_extras, read_card
from .diffusion import SAMPLER_DEFAULTS, Denoiser, _DDIMPrior, _load, _load_scheduler, _VAESpace

DEFAULT_TEMPLATE = "a photo of a {name}"
#: the parts of a Stable-Diffusion-layout folder genprior needs
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


#: what ``char_tokenizer`` spells with: lower-case letters and digits
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def char_tokenizer(folder: Any, context: int = 32, chars: str = TOKEN_CHARS) -> Any:
    """A CLIP tokenizer of single characters (each also in its word-final form, no merges),
    its files written to ``folder``: the small tokenizer of genprior's own text-conditioned
    priors, which know a handful of prompts and no pretrained vocabulary. Ids 0 and 1 are
    the start and end (and padding) tokens."""
    import json

    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=context)


def prompts_for(class_names: Sequence[str], template: str) -> list:
    """The prompt of every class; a template without ``{name}`` is refused."""
    if not isinstance(template, str) or "{name}" not in template:
        raise GenpriorError(f"a prompt template must hold {{name}} where the class name goes, got {template!r}")
    return [template.replace("{name}", str(name)) for name in class_names]


class TextDiffusionPrior(_VAESpace, _DDIMPrior):
    """See the module docstring. ``class_names`` order the classes; ``template`` and
    ``negative_prompt`` make the prompts; the sampler options are the other diffusion priors'
    (``guidance_scale`` applies classifier-free guidance against the negative prompt)."""

    family = "text_diffusion"

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: nn.Module, tokenizer: Any,
                 class_names: Sequence[str], template: str = DEFAULT_TEMPLATE, negative_prompt: str = "",
                 scheduler: Any = None, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
                 **options: Any):
        if not class_names:
            raise GenpriorError("a text-conditioned prior needs the class names its prompts are made of")
        prompts = prompts_for(class_names, template) + [str(negative_prompt)]
        # the encoder's positions bound the context; a tokenizer saved without its own limit says ~1e30
        limits = [int(tokenizer.model_max_length),
                  int(getattr(getattr(text_encoder, "config", None), "max_position_embeddings", 0) or 0)]
        context = min(n for n in limits if n > 0)
        lengths = [len(ids) for ids in tokenizer(prompts, truncation=False).input_ids]
        too_long = [(p, n) for p, n in zip(prompts, lengths) if n > context]
        if too_long:
            prompt, n = too_long[0]
            raise GenpriorError(f"the prompt {prompt!r} is {n} tokens, longer than the text encoder's context of "
                                f"{context}; shorten the template or the class name")
        if unet.config.in_channels != vae.config.latent_channels:
            raise GenpriorError(f"the UNet takes {unet.config.in_channels} channels but the VAE makes "
                                f"{vae.config.latent_channels}-channel latents")
        ids = tokenizer(prompts, padding="max_length", max_length=context, truncation=False,
                        return_tensors="pt").input_ids
        text_encoder = text_encoder.eval().requires_grad_(False)
        with torch.no_grad():
            states = text_encoder(ids.to(text_encoder.device))[0].float()
        if states.shape[-1] != unet.config.cross_attention_dim:
            raise GenpriorError(f"the text encoder makes {states.shape[-1]}-wide states but the UNet attends to "
                                f"{unet.config.cross_attention_dim}")
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size = int(unet.config.sample_size)
        super().__init__(num_classes=len(class_names), channels=vae.config.out_channels,
                         native_resolution=size * factor, latent_shape=(unet.config.in_channels, size, size),
                         class_dim=states.shape[1] * states.shape[2], scheduler=scheduler, mean=mean, std=std,
                         **options)
        self.unet = unet.eval().requires_grad_(False)
        self._set_vae(vae)
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.tokens, self.width = states.shape[1], states.shape[2]
        self.register_buffer("prompt_table", states.flatten(1))
        self.card.update(class_names=list(map(str, class_names)), template=template,
                         negative_prompt=str(negative_prompt), prompts=prompts[:-1])

    # ---- loading and saving ----------------------------------------------------------
    @classmethod
    def from_diffusers(cls, folder, torch_dtype: Optional[torch.dtype] = None, class_names: Sequence[str] = (),
                       template: str = DEFAULT_TEMPLATE, negative_prompt: str = "",
                       **options: Any) -> "TextDiffusionPrior":
        """From a Stable-Diffusion-layout folder; a missing part is named."""
        from transformers import AutoTokenizer, CLIPTextModel

        folder = Path(folder)
        missing = [part for part in SD_PARTS if not (folder / part).is_dir()]
        if missing:
            raise GenpriorError(f"{folder} is not a complete Stable-Diffusion-layout prior: it has no "
                                f"{', '.join(f'{m}/' for m in missing)}")
        unet = _load(UNet2DConditionModel, folder, "unet", torch_dtype)
        vae = _load(AutoencoderKL, folder, "vae", torch_dtype)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        return cls(unet, vae, text_encoder, tokenizer, class_names, template, negative_prompt, _load_scheduler(folder),
                   **options)

    @classmethod
    def from_pretrained(cls, directory, torch_dtype: Optional[torch.dtype] = None,
                        **options: Any) -> "TextDiffusionPrior":
        """Load what ``save_pretrained`` wrote; ``options`` override the saved sampler and prompt options."""
        directory = Path(directory)
        card = read_card(directory)
        saved = {k: card[k] for k in SAMPLER_DEFAULTS if k in card}
        prompt = {k: options.pop(k, card[k]) for k in ("class_names", "template", "negative_prompt")}
        prior = cls.from_diffusers(directory, torch_dtype, mean=card["mean"], std=card["std"], **prompt,
                                   **{**saved, **options})
        return keep_card_extras(prior, card)

    def _save_components(self, directory: Path) -> None:
        self.unet.save_pretrained(directory / "unet", safe_serialization=True)
        self.vae.save_pretrained(directory / "vae", safe_serialization=True)
        self.text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(directory / "tokenizer")
        self.scheduler.save_pretrained(directory / "scheduler")

    # ---- conditioning ----------------------------------------------------------------
    def class_table(self) -> torch.Tensor:
        return self.prompt_table

    def _denoiser(self, labels: torch.Tensor, class_emb: Optional[torch.Tensor]) -> Denoiser:
        def denoise(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            image = torch.arange(x.shape[0], device=x.device) % labels.shape[0]
            rows = class_emb[image] if class_emb is not None else self.prompt_table[labels[image]]
            rows = torch.where(drop[:, None], self.prompt_table[self.null_class], rows)
            states = rows.view(-1, self.tokens, self.width).to(self.unet.dtype)
            return self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=states).sample.float()

        return denoise
