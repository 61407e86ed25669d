"""Turn a StyleGAN2(-ADA) pickle into a genprior prior directory (safetensors).

NVlabs publishes generators as pickles, and unpickling runs code stored in the
file, so conversion is opt-in (``allow_pickle=True``) and happens once: the
directory it writes holds only tensors and JSON and loads without pickle.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..errors import GenpriorError
from .stylegan import StyleGAN2Generator, StyleGANPrior

GENERATOR_KEYS = ("G_ema", "G")
# ADA options with no effect on the decoded values here: genprior computes in fp32,
# so the fp16 settings do not apply.
IGNORED_SYNTHESIS_OPTIONS = {"num_fp16_res", "fp16_channels_last", "channels_last"}
MAPPING_OPTIONS = {
    "num_layers": "mapping_layers",
    "embed_features": "embed_features",
    "layer_features": "layer_features",
    "lr_multiplier": "mapping_lr_multiplier",
    "w_avg_beta": "w_avg_beta",
}
SYNTHESIS_OPTIONS = {
    "channel_base": "channel_base",
    "channel_max": "channel_max",
    "conv_clamp": "conv_clamp",
    "use_noise": "use_noise",
    "resample_filter": "resample_filter",
}
ADA_DEFAULTS = {
    "mapping_layers": 8,
    "mapping_lr_multiplier": 0.01,
    "w_avg_beta": 0.995,
    "channel_base": 32768,
    "channel_max": 512,
    "conv_clamp": None,
    "use_noise": True,
    "resample_filter": (1, 3, 3, 1),
}


def convert_stylegan_pkl(pkl_path, out_dir, allow_pickle: bool = False, output_resolution: Optional[int] = None,
                         **prior_kwargs: Any) -> Path:
    """Write the prior directory of the generator in ``pkl_path`` (``G_ema`` of an ADA
    snapshot) to ``out_dir``; ``output_resolution`` resizes its images (default: the
    synthesis resolution) and ``prior_kwargs`` go to ``StyleGANPrior`` (mean, std,
    feature_block, truncation_psi, ...)."""
    if not allow_pickle:
        raise GenpriorError(
            f"converting {pkl_path} unpickles it, which executes code from the file; "
            "pass allow_pickle=True / --allow-pickle only for files you trust"
        )
    source = _unpickle_generator(Path(pkl_path))
    state = {k: v.detach().float().cpu() for k, v in source.state_dict().items()}
    config = _generator_config(source)
    if output_resolution is not None:
        config["output_resolution"] = output_resolution
    generator = StyleGAN2Generator(**config)
    _load_by_name(generator, state, pkl_path)
    return StyleGANPrior(generator, **prior_kwargs).save_pretrained(out_dir)


def _unpickle_generator(path: Path) -> nn.Module:
    if not path.is_file():
        raise GenpriorError(f"no StyleGAN pickle at {path}")
    try:
        with path.open("rb") as f:
            data = pickle.load(f)
    except ModuleNotFoundError as e:
        raise GenpriorError(
            f"unpickling {path} needs the module {e.name!r}: real StyleGAN2-ADA pickles need NVlabs' "
            "torch_utils and dnnlib importable (put a stylegan2-ada-pytorch checkout on PYTHONPATH)"
        ) from e
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise GenpriorError(f"{path} cannot be unpickled ({type(e).__name__}: {e}); the file is truncated or not a "
                            "StyleGAN snapshot: download it again") from None
    if isinstance(data, dict):
        key = next((k for k in GENERATOR_KEYS if k in data), None)
        if key is None:
            raise GenpriorError(f"{path} holds a dict without a generator; expected one of the keys {', '.join(GENERATOR_KEYS)}")
        data = data[key]
    if not isinstance(data, nn.Module):
        raise GenpriorError(f"{path} holds a {type(data).__name__}, not a generator module")
    return data


def _generator_config(source: nn.Module) -> Dict[str, Any]:
    """Constructor arguments of the matching ``StyleGAN2Generator``: from ADA's
    ``init_kwargs`` (what persistence records), or the config of a pickled genprior
    generator."""
    init_kwargs = getattr(source, "init_kwargs", None)
    if init_kwargs is None:
        if isinstance(source, StyleGAN2Generator):
            return {k: v for k, v in source.config.items() if not k.startswith("_")}
        raise GenpriorError(
            f"the pickled {type(source).__name__} has no init_kwargs (a StyleGAN2-ADA generator records them); "
            "cannot tell its architecture"
        )
    kwargs = dict(init_kwargs)
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    architecture = synthesis.pop("architecture", "skip")
    if architecture != "skip":
        raise GenpriorError(f"only the StyleGAN2 'skip' generator architecture converts, this one is {architecture!r}")
    for options in (mapping, synthesis):
        # ADA's legacy.py writes activation='lrelu' (its default) when it converts TF networks
        if options.get("activation", "lrelu") == "lrelu":
            options.pop("activation", None)
    config = dict(ADA_DEFAULTS)
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if key not in kwargs:
            raise GenpriorError(f"the generator's init_kwargs lack {key!r}; is this a StyleGAN2-ADA generator?")
        config[key] = kwargs.pop(key)
    config.update({MAPPING_OPTIONS[k]: mapping.pop(k) for k in list(mapping) if k in MAPPING_OPTIONS})
    config.update({SYNTHESIS_OPTIONS[k]: synthesis.pop(k) for k in list(synthesis) if k in SYNTHESIS_OPTIONS})
    unsupported = sorted(f"mapping_kwargs.{k}" for k in mapping) + sorted(
        f"synthesis_kwargs.{k}" for k in synthesis if k not in IGNORED_SYNTHESIS_OPTIONS
    ) + sorted(k for k in kwargs)
    if unsupported:
        raise GenpriorError(f"generator options genprior cannot reproduce: {', '.join(unsupported)}")
    config["output_resolution"] = config["img_resolution"]
    return config


def _load_by_name(generator: StyleGAN2Generator, state: Dict[str, torch.Tensor], pkl_path) -> None:
    """Strict load by parameter name, failing with what differs."""
    own = generator.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} of other shape (first {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise GenpriorError(
            f"the weights in {pkl_path} do not match a StyleGAN2 skip generator of their config: {'; '.join(parts)}"
        )
    generator.load_state_dict(state, strict=True)
