"""Synthetic sets straight from a prior or a trained generator, at any IPC.

``generate_set`` draws image ``i`` of class ``c`` from its own latent, seeded from
``(seed, c, i)``, and decodes the set chunk by chunk without an autograd graph. So:

- a set is reproducible from (prior, seed, IPC) alone;
- sets are **nested**: for one seed, the IPC 10 set holds the first 10 images per class
  of the IPC 50 set, so one generator gives a coherent family of sets;
- memory is flat in the IPC: only one chunk's latents and activations exist at a time
  (the finished images are what grows).

``genprior generate PRIOR OUT_DIR --ipc N`` writes it as a set directory (``genprior
sample`` is the same command under its older name).
"""
from __future__ import annotations

import json
from typing import List, Optional, Sequence

import torch

from .data import RealData
from .distill.common import MIXED_PRECISION, check_device, check_fit, compute_dtype, derive_seed
from .errors import GenpriorError
from .images import resize_images
from .priors.base import Latents, Prior
from .progress import progress_bar
from .synset import SyntheticSet



def class_labels(num_classes: int, ipc: int) -> torch.Tensor:
    """0,0,..,1,1,..: a set's labels, class by class."""
    return torch.arange(num_classes).repeat_interleave(ipc)


def class_index(num_classes: int, ipc: int) -> torch.Tensor:
    """0,1,..,ipc-1,0,1,..: each image's place within its class (what its seeds are drawn from)."""
    return torch.arange(ipc).repeat(num_classes)


def check_generate_options(ipc: int, chunk_size: int, mixed_precision: str, device: torch.device) -> None:
    """The options of a generation, checked before any prior is loaded."""
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise GenpriorError(f"IPC must be at least 1, got {ipc}; pass --ipc 1 or more")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise GenpriorError(f"chunk size must be at least 1, got {chunk_size}; pass --chunk-size 1 or more")
    if mixed_precision not in MIXED_PRECISION:
        raise GenpriorError(f"unknown mixed precision {mixed_precision!r}; choose one of {', '.join(MIXED_PRECISION)}")
    check_device(mixed_precision, device)


def image_latents(prior: Prior, prior_labels: torch.Tensor, classes: Sequence[int], indices: Sequence[int],
                  seed: int, space: str) -> Latents:
    """One latent per image, drawn from its own generator seeded by (seed, class, index), so an
    image does not depend on which other images are drawn with it."""
    parts = []
    for label, c, i in zip(prior_labels.tolist(), classes, indices):
        generator = torch.Generator().manual_seed(derive_seed("generate", seed, int(c), int(i)))
        parts.append(prior.init_latents(torch.tensor([label]), space=space, method="random", generator=generator))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def generate_set(prior: Prior, real: RealData, ipc: int, seed: int = 0, space: Optional[str] = None,
                 chunk_size: int = 100, mixed_precision: str = "no", class_map: Optional[List[int]] = None,
                 resize: bool = False, device: Optional[str] = None, method: Optional[str] = None,
                 prior_ref: Optional[str] = None, progress: bool = False) -> SyntheticSet:
    """``ipc`` images per class of ``real``'s classes from ``prior``, normalised like ``real``.

    ``class_map`` gives the prior class for each dataset class (a prior with other classes);
    ``resize`` resizes decoded images to the dataset's size; ``mixed_precision`` ``bf16``
    decodes in bfloat16 (``fp16`` needs a GPU). The prior is prepared in place: normalised like
    ``real``, frozen, in eval mode, on ``device``, and under bf16 its weights stay in bfloat16
    (load it again for full precision)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_generate_options(ipc, chunk_size, mixed_precision, dev)
    check_fit(prior, real, class_map, resize)
    space = prior.check_space(space or prior.default_space)
    dtype = compute_dtype(mixed_precision)

    nc = real.num_classes
    labels = class_labels(nc, ipc)
    index = class_index(nc, ipc)
    mapping = torch.tensor(class_map) if class_map is not None else torch.arange(nc)
    prior_labels = mapping[labels]
    prior.set_normalization(real.mean, real.std)
    prior.requires_grad_(False).eval().to(dev, dtype=dtype)

    images = torch.empty(len(labels), real.channels, real.resolution, real.resolution)
    bar = progress_bar(total=len(labels), desc=f"generate ipc {ipc}", unit="img", disable=not progress)
    with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        for lo in range(0, len(labels), chunk_size):
            hi = min(lo + chunk_size, len(labels))
            latents = image_latents(prior, prior_labels[lo:hi], labels[lo:hi].tolist(), index[lo:hi].tolist(), seed, space)
            out = prior.decode({k: v.to(dev) for k, v in latents.items()}, prior_labels[lo:hi].to(dev)).float()
            images[lo:hi] = resize_images(out, real.resolution).cpu()
            bar.update(hi - lo)
    bar.close()
    card = prior.describe()
    return SyntheticSet(images=images, labels=labels, mean=real.mean, std=real.std, dataset=real.name,
                        class_names=real.class_names, method=method or card.get("method") or "prior-samples",
                        prior=prior_ref, config={"generate": {"ipc": ipc, "seed": seed, "space": space,
                                                              "mixed_precision": mixed_precision,
                                                              "class_map": class_map, "resize": resize},
                                                 "prior_card": card})


def generator_of(synset: SyntheticSet, real: RealData, device: Optional[str] = None) -> Prior:
    """The prior that wrote ``synset`` (``generate_set``), loaded with the options it was written
    with; a set no generator made, whose options cannot be known, or that cannot be drawn again
    on ``device`` (fp16 on a CPU) is refused in one line."""
    from .priors.load import load_prior

    made = (synset.config or {}).get("generate")
    if synset.prior and (synset.config or {}).get("method") and not isinstance(made, dict):
        raise GenpriorError(f"on-the-fly evaluation draws plain samples from the set's generator; this set was made by "
                            f"the training-free method {synset.config['method']!r}, whose draws need the real data "
                            "and its selection: evaluate it as a fixed set (drop --on-the-fly)")
    if not synset.prior or not isinstance(made, dict):
        raise GenpriorError(f"on-the-fly evaluation draws from the generator that made the set; this {synset.method} "
                            "set was not written by `genprior generate` (no prior and generate settings in its "
                            "meta.json): make it with `genprior generate PRIOR OUT --ipc N`")
    if not torch.equal(synset.labels, class_labels(synset.num_classes, synset.ipc)):
        raise GenpriorError("on-the-fly evaluation needs the set's labels in generate's order (class by class); "
                            "this set's were changed after it was written: write it again with `genprior generate`")
    if made.get("mixed_precision") == "fp16" and torch.device(device or "cpu").type == "cpu":
        raise GenpriorError("this set was generated in fp16, which draws only on a GPU: evaluate it on the fly on "
                            "a GPU (--device cuda), or write it again with --mixed-precision bf16 or no")
    prior = load_prior(synset.prior, dataset_classes=real.class_names, **made.get("prior_options", {}))
    if "prior_options" not in made and json.loads(json.dumps(prior.describe(), default=str)) != \
            json.loads(json.dumps(synset.config.get("prior_card"), default=str)):
        raise GenpriorError("this set was written before genprior recorded generate's prior options, and its prior "
                            "card differs from the prior loaded without options: write it again with `genprior "
                            "generate` to evaluate it on the fly")
    if getattr(prior, "noise_mode", None) == "random":  # StyleGAN's per-layer noise from the global RNG
        raise GenpriorError("on-the-fly draws must be seeded, but this set's prior draws its StyleGAN noise unseeded "
                            "(noise_mode=random): write the set with --prior-option noise_mode=const")
    return prior


def on_the_fly(synset: SyntheticSet, real: RealData, eval_seed: int, device: Optional[str] = None,
               prior: Optional[Prior] = None):
    """DiM's deployment protocol for a set that ``generate_set`` wrote: a function of the epoch
    giving a fresh set of the same labels from the same prior and options, seeded from (the
    set's seed, ``eval_seed``, epoch), so an evaluation with it is reproducible and resumes
    exactly. ``real`` gives the normalisation and classes (the test split serves); ``prior`` is
    ``generator_of(synset, real)``, loaded here when not given. A training with it sees as many
    images per epoch as the set holds, but new ones every epoch: what the generator can teach,
    not what a fixed set of that size can."""
    prior = prior if prior is not None else generator_of(synset, real, device)
    made = synset.config["generate"]

    def draw(epoch: int) -> torch.Tensor:
        seed = derive_seed("on-the-fly", made["seed"], eval_seed, epoch)
        return generate_set(prior, real, synset.ipc, seed=seed, space=made["space"],
                            mixed_precision=made["mixed_precision"], class_map=made["class_map"],
                            resize=made["resize"], device=device).images
    return draw
