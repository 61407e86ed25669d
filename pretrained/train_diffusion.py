"""Train a class-conditional diffusion prior on mnist5k: the pixel UNet shipped as
``mnist5k-diffusion``, or a latent DiT on the VAE of ``pretrained/train_vae.py``.

    python pretrained/train_diffusion.py --output_dir pretrained/mnist5k-diffusion
    python pretrained/train_vae.py --output_dir pretrained/mnist5k-vae
    python pretrained/train_diffusion.py --arch dit --vae pretrained/mnist5k-vae --output_dir pretrained/mnist5k-dit
    python pretrained/train_diffusion.py --arch text --vae pretrained/mnist5k-vae --output_dir pretrained/mnist5k-text

``--arch unet``: a small ``UNet2DModel`` (28 px, block_out_channels (16, 32, 64), one attention
block at 7 px; 0.69 M parameters, 2.8 MB) learns DDPM noise prediction on the mnist5k **train
split only** (4,000 images). ``--arch dit``: a ``DiTTransformer2DModel`` (patch 1 over the
VAE's 4 x 7 x 7 latents, 6 blocks of width 128, AdaLN-Zero label conditioning) learns the same
in the VAE's scaled latent space (each image encoded once, by its posterior mean); the folder
it writes has the layout of a diffusers ``DiTPipeline`` (``model_index.json``, transformer/,
vae/, scheduler/) plus genprior's card, so genprior loads it through the code path of
``facebook/DiT-XL-2-256`` (diffusers' own ``DiTPipeline`` assumes ImageNet's 1,000 classes for
its null label, so call it with ``guidance_scale=1`` there). 10% of the
labels are dropped to the null class so sampling can use classifier-free guidance; the prior
ships the EMA weights with a DDIM sampler. ``--arch text``: a prompt-conditioned
``UNet2DConditionModel`` in the same latent space, each class's prompt ("a handwritten digit
7") read by a small frozen CLIP text encoder through a character tokenizer whose files the
script writes; the folder has Stable Diffusion's layout (unet/, vae/, text_encoder/,
tokenizer/, scheduler/), and dropped labels get the empty negative prompt.

The loop, its checkpoints (``--checkpoint_dir``, outside the prior folder so that they are
never shipped; ``--resume_from_checkpoint latest`` continues exactly) and its batches are
``pretrained/training.py``'s.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiTTransformer2DModel, UNet2DModel

from genprior.data import load_dataset
from genprior.priors.diffusion import DiffusionPrior, LatentDiffusionPrior
from genprior.synset import save_grid, write_json_atomic

try:  # run as a script (python pretrained/train_diffusion.py) or as a module of the package
    from .training import add_loop_args, finish_args, make_accelerator, train
except ImportError:
    from training import add_loop_args, finish_args, make_accelerator, train

DATASET = "mnist5k"
DATA = "mnist5k train split (4,000 images)"
SAMPLES_PER_CLASS = 10
#: the prompt of a class for --arch text (the class names are mnist5k's: "0" ... "9")
TEXT_TEMPLATE = "a handwritten digit {name}"
#: the text encoder's context: the longest prompt above is 23 tokens with its start and end
TEXT_CONTEXT = 32


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("pretrained/mnist5k-diffusion"),
                        help="the prior folder written at the end: prior.json, the model, scheduler/, samples.png, "
                             "training.json")
    parser.add_argument("--arch", choices=["unet", "dit", "text"], default="unet",
                        help="unet: pixel space; dit: the latent space of --vae; text: a prompt-conditioned UNet in "
                             "the latent space of --vae (Stable Diffusion's layout)")
    parser.add_argument("--template", default=TEXT_TEMPLATE, help="--arch text: the prompt of a class")
    parser.add_argument("--vae", type=Path, help="the AutoencoderKL folder of pretrained/train_vae.py (--arch dit)")
    add_loop_args(parser)
    parser.add_argument("--label_dropout", type=float, default=0.1, help="share of labels replaced by the null class")
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--beta_schedule", default="linear")
    parser.add_argument("--num_inference_steps", type=int, default=20, help="DDIM steps the shipped prior decodes with")
    # 1.25: the scale at which both shipped class-conditional priors met both bars (class fidelity >= 98 %
    # and IPC 10 samples >= the StyleGAN's 92.9 % on ConvNet); at 2.0 their samples were less diverse
    # (pixel UNet 100 % / 92.53, DiT 100 % / 92.03: benchmarks/results/diffusion_prior_samples.md)
    parser.add_argument("--guidance_scale", type=float, default=1.25, help="CFG scale the shipped prior decodes with")
    args = finish_args(parser.parse_args(argv))
    if args.arch in ("dit", "text") and args.vae is None:
        parser.error(f"--arch {args.arch} trains in a VAE's latent space: pass --vae DIR (pretrained/train_vae.py)")
    return args


def build_unet(num_classes: int) -> UNet2DModel:
    """28 -> 14 -> 7 px, widening as it shrinks (the 28-px level costs most); attention
    only at 7 px, where it is cheap."""
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32, num_class_embeds=num_classes + 1,
    )


def build_dit(num_classes: int, latent_channels: int, latent_size: int) -> DiTTransformer2DModel:
    """Patch 1 over the latent grid (49 tokens at 7 x 7), 6 AdaLN-Zero blocks of width 128. Each
    block has its own label table (num_classes + 1 rows, the last the null class) that would drop
    labels on its own draw while training; that is switched off, so a dropped label (``loss_of``)
    is the null class in every block at once, as classifier-free guidance samples it."""
    from diffusers.models.embeddings import LabelEmbedding

    dit = DiTTransformer2DModel(num_attention_heads=4, attention_head_dim=32, in_channels=latent_channels,
                                out_channels=latent_channels, num_layers=6, sample_size=latent_size, patch_size=1,
                                num_embeds_ada_norm=num_classes)
    for m in dit.modules():
        if isinstance(m, LabelEmbedding):
            m.dropout_prob = 0.0  # the table keeps its null row; only the per-block random drop goes
    return dit


def build_text_model(args: argparse.Namespace, class_names, vae: AutoencoderKL, latent_channels: int,
                     latent_size: int):
    """--arch text: a one-level ``UNet2DConditionModel`` (the 7 x 7 latent grid is not halved;
    2 cross-attention ResNet blocks of width 96 and a cross-attention middle block), a frozen
    2-layer CLIP text encoder of width 64 (seeded, like the UNet; Stable Diffusion's text encoder
    is frozen too) and the character tokenizer, assembled as the prior they make, whose table
    of encoded prompts (the negative prompt, empty, is the null row) conditions training."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from genprior.priors.text_diffusion import TextDiffusionPrior, char_tokenizer

    tokenizer = char_tokenizer(args.checkpoint_dir / "tokenizer", TEXT_CONTEXT)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TEXT_CONTEXT, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
                                block_out_channels=(96,), layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",),
                                up_block_types=("CrossAttnUpBlock2D",), cross_attention_dim=64, norm_num_groups=32,
                                attention_head_dim=8)
    prior = TextDiffusionPrior(unet, vae, text_encoder, tokenizer, class_names, template=args.template)
    unet.requires_grad_(True)  # the prior froze it; here it learns
    return unet, prior


@torch.no_grad()
def encode_all(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The scaled posterior means of ``pixels`` ([-1, 1]): the DiT's training data."""
    factor, shift = float(vae.config.scaling_factor), float(vae.config.shift_factor or 0.0)
    z = torch.cat([vae.encode(pixels[i:i + batch_size]).latent_dist.mean for i in range(0, len(pixels), batch_size)])
    return (z - shift) * factor


def main(args: argparse.Namespace) -> None:
    accelerator = make_accelerator(args)
    data = load_dataset(DATASET, "train")
    pixels = data.denormalize(data.images) * 2 - 1
    num_classes = data.num_classes
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.num_train_timesteps, beta_schedule=args.beta_schedule,
                                    prediction_type="epsilon")
    vae = text_prior = None
    if args.arch == "unet":
        model, model_cls = build_unet(num_classes), UNet2DModel
        clean_all = pixels
    else:
        vae = AutoencoderKL.from_pretrained(args.vae).eval().requires_grad_(False)
        clean_all = encode_all(vae, pixels)
        if args.arch == "dit":
            model = build_dit(num_classes, clean_all.shape[1], clean_all.shape[-1])
            model_cls = DiTTransformer2DModel
        else:
            from diffusers import UNet2DConditionModel

            model, text_prior = build_text_model(args, data.class_names, vae, clean_all.shape[1], clean_all.shape[-1])
            model_cls = UNet2DConditionModel
            prompt_table = text_prior.prompt_table.to(accelerator.device)

    def loss_of(net: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        clean = clean_all[idx].to(accelerator.device)
        labels = data.labels[idx].to(accelerator.device)
        labels = torch.where(torch.rand(labels.shape, device=labels.device) < args.label_dropout, num_classes, labels)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, args.num_train_timesteps, labels.shape, device=labels.device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        if args.arch == "unet":
            out = net(noisy, timesteps, class_labels=labels).sample
        elif args.arch == "dit":
            out = net(noisy, timestep=timesteps, class_labels=labels).sample
        else:  # the encoded prompt of each label; the null label is the (empty) negative prompt
            states = prompt_table[labels].view(-1, text_prior.tokens, text_prior.width)
            out = net(noisy, timesteps, encoder_hidden_states=states).sample
        return F.mse_loss(out.float(), noise)

    run = train(args, accelerator, model, model_cls, loss_of, len(pixels), DATA)
    if accelerator.is_main_process:
        final = run["model"]
        sampler = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False, timestep_spacing="trailing")
        options = {"mean": data.mean, "std": data.std, "num_inference_steps": args.num_inference_steps,
                   "guidance_scale": args.guidance_scale}
        if args.arch == "unet":
            prior = DiffusionPrior.from_components(final, sampler, **options)
        elif args.arch == "dit":
            prior = LatentDiffusionPrior.from_components(final, vae, sampler, **options)
        else:
            from genprior.priors.text_diffusion import TextDiffusionPrior

            prior = TextDiffusionPrior(final, vae, text_prior.text_encoder, text_prior.tokenizer, data.class_names,
                                       template=args.template, scheduler=sampler, **options)
        prior.card.update(dataset=DATASET, data=DATA)
        prior.to(accelerator.device)  # its VAE, text encoder and buffers beside the trained model
        prior.save_pretrained(args.output_dir)
        if args.arch == "dit":  # the layout of a diffusers DiTPipeline, so it also loads as one
            write_json_atomic({"_class_name": "DiTPipeline", "_diffusers_version": _diffusers_version(),
                               "transformer": ["diffusers", "DiTTransformer2DModel"],
                               "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"]},
                              args.output_dir / "model_index.json")
        elif args.arch == "text":  # Stable Diffusion's layout
            write_json_atomic({"_class_name": "StableDiffusionPipeline", "_diffusers_version": _diffusers_version(),
                               "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                               "text_encoder": ["transformers", "CLIPTextModel"],
                               "tokenizer": ["transformers", "CLIPTokenizer"],
                               "scheduler": ["diffusers", "DDIMScheduler"]}, args.output_dir / "model_index.json")
        labels = torch.arange(num_classes).repeat_interleave(SAMPLES_PER_CLASS)
        with torch.no_grad():
            latents = prior.init_latents(labels, space="x_T", generator=torch.Generator().manual_seed(args.seed))
            images = prior.decode(latents, labels.to(accelerator.device), chunk_size=100).cpu()
        save_grid(data.denormalize(images).clamp(0, 1), labels, num_classes, args.output_dir / "samples.png")
        write_json_atomic({
            "command": shlex.join(["python", *sys.argv]),
            "arch": args.arch,
            "vae": str(args.vae) if args.vae else None,
            "steps": run["steps"],
            "batch_size": args.batch_size,
            "time_s": run["time_s"],
            "seconds_per_step": run["seconds_per_step"],
            "final_loss": run["final_loss"],
            "device": run["device"],
            "mixed_precision": args.mixed_precision,
            "parameters": run["parameters"],
            "data": DATA,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }, args.output_dir / "training.json")
        accelerator.print(f"wrote {args.output_dir}")
    accelerator.end_training()


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


if __name__ == "__main__":
    main(parse_args())
