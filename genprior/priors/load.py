"""``load_prior(ref)``: a prior from a registry name, a local folder, a hub id or a pickle.

Resolution order:
1. a name in ``pretrained/registry.json`` (the priors genprior ships, and known hub models);
2. an existing local path: a genprior prior folder (``prior.json``), a diffusers folder
   (``model_index.json`` or a single model's ``config.json``), or a StyleGAN ``.pkl``
   (only with ``allow_pickle=True``: unpickling runs code from the file);
3. a Hugging Face hub id ``owner/name``, read from the local cache first; offline, an
   uncached id fails at once with a message saying how to get the files.

A local folder never touches the network.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import GenpriorError, UnknownNameError
from ..hub import download, is_hub_id
from .base import PRIOR_CARD, Prior, read_card, read_json

FAMILIES = {
    "pixel": "genprior.priors.pixel:PixelPrior",
    "stylegan": "genprior.priors.stylegan:StyleGANPrior",
    "dcgan": "genprior.priors.dcgan:DCGANPrior",
    "diffusion": "genprior.priors.diffusion:DiffusionPrior",
    "latent_diffusion": "genprior.priors.diffusion:LatentDiffusionPrior",
    "vae": "genprior.priors.diffusion:VAEPrior",
    "text_diffusion": "genprior.priors.text_diffusion:TextDiffusionPrior",
}
#: what a prior's hub download fetches: configs, tokenizer files, cards, and the safetensors
#: weights of each part by the names diffusers and transformers save them under (sharded too).
#: Not: a pipeline repository's single-file checkpoints at its root (Stable Diffusion's 4-8 GB
#: ``v1-5-pruned*.safetensors``), ``fp16`` / ``non_ema`` variants, the safety checker's weights.
HUB_PATTERNS = ["*.json", "*.txt", "*.md",
                "diffusion_pytorch_model.safetensors", "*/diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model-?????-of-?????.safetensors",
                "*/diffusion_pytorch_model-?????-of-?????.safetensors",
                "text_encoder*/model.safetensors", "text_encoder*/model-?????-of-?????.safetensors"]


def pretrained_dir() -> Path:
    """The ``pretrained/`` folder: ``$GENPRIOR_PRETRAINED``, else the installed
    ``genprior.pretrained`` package (the checkout's ``pretrained/`` under an editable install,
    a copy inside the wheel otherwise), else the folder beside the package."""
    env = os.environ.get("GENPRIOR_PRETRAINED")
    if env:
        return Path(env)
    return package_folder("genprior.pretrained", "pretrained")


def package_folder(package: str, beside: str) -> Path:
    """Where the data package ``package`` lives, or the checkout folder ``beside`` the library
    when it is not installed as a package (genprior run from a source tree)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / beside


def registry() -> Dict[str, Dict[str, Any]]:
    path = pretrained_dir() / "registry.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())["priors"]


def list_priors() -> List[str]:
    return sorted(registry())


def family_class(family: str) -> type:
    if family not in FAMILIES:
        raise GenpriorError(f"unknown prior family {family!r}; known families: {', '.join(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def _from_diffusers_folder(folder: Path, dataset_classes: Optional[Sequence[str]] = None, **options: Any) -> Prior:
    """Build a prior from a plain diffusers folder (a pipeline or a single model)."""
    index = folder / "model_index.json"
    if index.is_file():
        components = read_json(index)
        if "text_encoder" in components or "tokenizer" in components:  # Stable Diffusion's layout
            options.setdefault("class_names", dataset_classes or ())
            return family_class("text_diffusion").from_diffusers(folder, **options)
        if "transformer" in components and "vae" in components:
            return family_class("latent_diffusion").from_diffusers(folder, **options)
        if "unet" in components:
            return family_class("diffusion").from_diffusers(folder, **options)
        raise GenpriorError(f"{folder} is a diffusers pipeline genprior cannot use as a prior "
                            f"(components: {', '.join(k for k in components if not k.startswith('_'))}); "
                            "it needs unet/ or transformer/ + vae/")
    config = read_json(folder / "config.json")
    kind = config.get("_class_name")
    if kind == "AutoencoderKL":
        return family_class("vae").from_diffusers(folder, **options)
    if kind == "UNet2DModel":
        return family_class("diffusion").from_diffusers(folder, **options)
    raise GenpriorError(f"{folder} holds a diffusers {kind or 'model'}; genprior priors take AutoencoderKL, UNet2DModel, "
                        "or a pipeline with unet/ or transformer/ + vae/")


def _load_folder(folder: Path, dataset_classes: Optional[Sequence[str]] = None, **options: Any) -> Prior:
    """A prior folder (genprior's card) or a diffusers folder; ``dataset_classes`` name the
    classes of a text-conditioned prior that does not name its own (a Stable Diffusion folder)."""
    if (folder / PRIOR_CARD).is_file():
        card = read_card(folder)
        cls = family_class(card.get("family", ""))
        try:
            return cls.from_pretrained(folder, **options)
        except GenpriorError:
            raise
        except KeyError as e:
            raise GenpriorError(f"{folder / PRIOR_CARD} lacks the entry {e}: the prior folder is incomplete or "
                                "from another genprior version; re-train or re-download it") from None
        except (TypeError, ValueError) as e:
            what = f"prior options {options}" if options else f"the values in {folder / PRIOR_CARD}"
            raise GenpriorError(f"{what} do not fit this {card.get('family')} prior ({e}); "
                                "check names and types (numbers for numeric options)") from None
    if (folder / "model_index.json").is_file() or (folder / "config.json").is_file():
        return _from_diffusers_folder(folder, dataset_classes, **options)
    raise GenpriorError(f"{folder} is not a prior folder: it has no {PRIOR_CARD}, model_index.json or config.json; "
                        "pass the folder that holds one (a training run's prior is RUN/generator)")


def _download(repo_id: str) -> Path:
    return download(repo_id, "model", HUB_PATTERNS, "prior")


def load_prior(ref: str, allow_pickle: bool = False, dataset_classes: Optional[Sequence[str]] = None,
               **options: Any) -> Prior:
    """Load a prior by registry name, local path or hub id; ``options`` go to the family
    (e.g. ``num_inference_steps`` for diffusion priors). ``dataset_classes``: the class names a
    text-conditioned prior without its own (a Stable Diffusion folder) makes prompts of."""
    entries = registry()
    if ref in entries:
        entry = entries[ref]
        if "path" in entry:
            folder = pretrained_dir() / entry["path"]
            if not folder.is_dir():
                raise GenpriorError(f"registered prior {ref!r} should be in {folder}, which is missing; "
                                    "train it with the script its card names, or reinstall genprior from a full checkout")
            return _load_folder(folder, dataset_classes, **options)
        prior = _load_folder(_download(entry["hub"]), dataset_classes, **options)
        prior.card.update({k: v for k, v in entry.items() if k not in {"hub"}}, source=entry["hub"])
        return prior
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".pkl":
            from .convert import convert_stylegan_pkl

            out = path.with_suffix("")
            out = out.parent / f"{out.name}-genprior"
            if not (out / PRIOR_CARD).is_file():
                convert_stylegan_pkl(path, out, allow_pickle=allow_pickle)
            return _load_folder(out, dataset_classes, **options)
        if path.is_dir():
            return _load_folder(path, dataset_classes, **options)
        raise GenpriorError(f"{path} is a file genprior cannot load as a prior; pass a folder, a .pkl, a registry name or a hub id")
    if is_hub_id(ref):
        return _load_folder(_download(ref), dataset_classes, **options)
    known = ", ".join(sorted(entries)) or "none"
    raise UnknownNameError(f"unknown prior {ref!r}: not a registered name ({known}), an existing path, or a hub id owner/name")
