"""A run's saved latents (``latent.save_latents``), decoded again on demand.

``export_run`` decodes them into a synthetic-set directory again (``genprior export
RUN_DIR``), so a set can be re-made, e.g. at another chunk size or on another machine, without re-distilling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import GenpriorError
from ..images import resize_images
from ..synset import SyntheticSet, save_synset
from .common import MIXED_PRECISION, compute_dtype, prior_for
from .latent import DistillConfig, load_latents, method_name

def export_run(run_dir, out_dir: Optional[str] = None, chunk_size: int = 50, overwrite: bool = False,
               mixed_precision: Optional[str] = None) -> SyntheticSet:
    """Decode a run's saved latents into a synthetic-set directory (default RUN_DIR/export).

    The prior decodes in the run's own precision (``mixed_precision`` None), so the set
    matches the run's ``synset/`` up to the chunking's rounding; ``"no"`` decodes a bf16
    or fp16 run in fp32 instead (slightly different images)."""
    from ..data import load_dataset

    out = Path(out_dir) if out_dir else Path(run_dir) / "export"
    if out.exists() and not overwrite:  # before any decoding
        raise GenpriorError(f"{out} already exists; choose another --out or pass --overwrite")
    if mixed_precision is not None and mixed_precision not in MIXED_PRECISION:
        raise GenpriorError(f"unknown mixed precision {mixed_precision!r}; choose one of {', '.join(MIXED_PRECISION)}")
    latents, labels, meta = load_latents(run_dir)
    cfg = DistillConfig.from_dict(meta["config"])
    precision = mixed_precision or cfg.mixed_precision
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "fp16" and device.type == "cpu":
        raise GenpriorError(f"{run_dir} was distilled in fp16, which needs a GPU to decode the same way; "
                            "pass --mixed-precision no to decode in fp32 (images differ slightly from its synset/)")
    dtype = compute_dtype(precision)
    real = load_dataset(cfg.dataset, "train", root=cfg.data_root, resolution=cfg.resolution)
    prior = prior_for(meta["prior"], real, **cfg.prior_options).eval()
    prior.set_normalization(real.mean, real.std)
    prior.to(device, dtype=dtype)
    mapped = torch.tensor(cfg.class_map) if cfg.class_map is not None else torch.arange(real.num_classes)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        images = prior.decode({k: v.to(device) for k, v in latents.items()}, mapped[labels].to(device),
                              chunk_size=chunk_size).float().cpu()
    images = resize_images(images, real.resolution)  # as the run's own _to_data_size
    synset = SyntheticSet(images=images, labels=labels, mean=real.mean, std=real.std, dataset=real.name,
                          class_names=real.class_names, method=method_name(cfg), prior=meta["prior"],
                          config={"distill": meta["config"], "space": meta["space"], "exported_from": str(run_dir),
                                  "decoded_in": precision})
    save_synset(synset, out, overwrite=overwrite)
    return synset
