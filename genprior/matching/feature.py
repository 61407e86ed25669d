"""Layer-wise feature alignment with a discrimination term.

Wang, Zhao, Peng, Zhu, Yang, Wang, Huang, Bilen, Wang & You, CAFE: Learning to Condense
Dataset by Aligning Features, CVPR 2022 (reference: kaiwang960112/CAFE ``distill.py``).
Matching only gradients lets a few large-gradient samples dominate; CAFE instead
matches the per-class mean of every block's features, and adds a discrimination
loss: the synthetic class centres (mean last-layer features) must classify real
features, through softmax(real feature . centre) and cross-entropy. The network is
trained on the synthetic set between image updates, as in DC.

Maps and weights, from the reference: on a ConvNet, each block's map before its pooling
and the last pooled map, weighted 0.1 / 0.1 / 1 / 1 for ConvNet-3
(``fourth/third/second/first_weight``); the flattened last map is matched once more as
the output term (weight 1); the discrimination cross-entropy is summed over the real
images with weight 0.01 (``inner_weight``). On other networks the maps are their block
outputs (``net.features``), every one but the last at 0.1. The reference stops its
outer and inner loops when a running accuracy on real images levels off
(``lambda_1``/``lambda_2``); a matcher sees no real data after an update, so the fixed
DC schedule its code also computes (``get_loops``) takes their place. The reference
also halves the image learning rate at iterations 1,200 / 1,600 / 1,800 of its 2,000;
that belongs to the loop (``paper_loop`` records it) and is not applied by genprior's.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import GenpriorError
from ..nets.convnet import ConvNet
from .base import MATCHERS
from .dc import TrainedOnTheSet

PAPER = (
    "Wang, Zhao, Peng, Zhu, Yang, Wang, Huang, Bilen, Wang & You, "
    "CAFE: Learning to Condense Dataset by Aligning Features, CVPR 2022"
)


def class_means(x: Tensor, positions: Tensor, num: int) -> Tensor:
    """Mean of the rows of ``x`` (flattened) per class position 0..num-1."""
    flat = x.flatten(1)
    sums = flat.new_zeros(num, flat.shape[1]).index_add(0, positions, flat)
    counts = torch.bincount(positions, minlength=num).to(flat.dtype).unsqueeze(1)
    return sums / counts


@MATCHERS.register("cafe", summary="layer-wise feature matching plus a discrimination loss", paper=PAPER)
class CAFE(TrainedOnTheSet):
    """Paper defaults: ConvNet, batch_real 256, siamese DSA drawn per class;
    ``layer_weights`` None = the reference's (ConvNet: 0.1 for each pre-pool map but the
    last, 1 for the last one and 1 for the final pooled map; other nets: 0.1 for every
    block but the last, 1 for the last);
    ``discrimination_weight`` 0.01; loops as DC (``outer_loop``/``inner_loop`` 1/1 at
    IPC 1, 10/50 at IPC 10, 50/10 at IPC 50), network SGD lr 0.01, batch 256. Loop: 2,000
    iterations, SGD on the images with lr 0.1, momentum 0.5, halved at iterations 1,200,
    1,600 and 1,800, noise initialisation."""

    name = "cafe"
    paper = PAPER
    per_class = False
    OPTIONS = {"outer_loop": None, "inner_loop": None, "lr_net": 0.01, "batch_train": 256,
               "layer_weights": None, "discrimination_weight": 0.01}
    paper_loop = {"iterations": 2000, "optimizer": "sgd", "lr_images": 0.1, "momentum": 0.5, "init": "noise",
                  "lr_images_halved_at": [1200, 1600, 1800]}

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        opts = self.resolve_loop_options(opts)
        weight = opts["discrimination_weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise GenpriorError(f"cafe: discrimination_weight must be a number >= 0, got {weight!r}")
        opts["discrimination_weight"] = float(weight)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            probe = self.new_net().eval()
            num_maps = len(self.maps(probe, torch.zeros(1, self.channels, self.resolution, self.resolution,
                                                        device=self.device)))
        weights = opts["layer_weights"]
        if weights is None:
            weights = [0.1] * (num_maps - 2) + [1.0, 1.0] if isinstance(probe, ConvNet) else [0.1] * (num_maps - 1) + [1.0]
        if not isinstance(weights, (list, tuple)) or len(weights) != num_maps or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights
        ):
            raise GenpriorError(
                f"cafe: layer_weights needs {num_maps} numbers >= 0 (one per block of {self.net_name}), got {weights!r}"
            )
        opts["layer_weights"] = [float(w) for w in weights]
        return opts

    @staticmethod
    def maps(net: torch.nn.Module, x: Tensor) -> List[Tensor]:
        """The feature maps CAFE matches: a ConvNet's pre-pool block maps and its last pooled
        map (the reference's ``f1..f4``); any other network's block outputs."""
        return net.features(x, pre_pool=True) if isinstance(net, ConvNet) else net.features(x)

    def terms(self, syn_images: Tensor, syn_labels: Tensor, real: Any, generator: torch.Generator) -> Dict[str, Tensor]:
        """The parts of the loss: ``feature`` (layer-weighted already), ``output`` and
        ``discrimination`` (unweighted), for logging and for checking each one."""
        net = self.require_net()
        device = syn_images.device
        syn_labels = syn_labels.to(device)
        classes: List[int] = torch.unique(syn_labels).tolist()
        real_parts, syn_parts, real_pos, syn_pos = [], [], [], []
        for pos, c in enumerate(classes):
            real_c = real.sample_class(c, self.batch_real, generator)
            real_c, syn_c = self.augment_pair(real_c, syn_images[syn_labels == c], generator)
            real_parts.append(real_c)
            syn_parts.append(syn_c)
            real_pos.append(torch.full((real_c.shape[0],), pos, dtype=torch.long))
            syn_pos.append(torch.full((syn_c.shape[0],), pos, dtype=torch.long))
        real_pos_t, syn_pos_t = torch.cat(real_pos).to(device), torch.cat(syn_pos).to(device)
        with torch.no_grad():
            real_maps = self.maps(net, torch.cat(real_parts))
        syn_maps = self.maps(net, torch.cat(syn_parts))
        k = len(classes)
        feature = syn_images.new_zeros(())
        for w, r, s in zip(self.opts["layer_weights"], real_maps, syn_maps):
            feature = feature + w * ((class_means(r, real_pos_t, k) - class_means(s, syn_pos_t, k)) ** 2).sum()
        real_last, syn_centres = real_maps[-1].flatten(1), class_means(syn_maps[-1], syn_pos_t, k)
        output = ((class_means(real_last, real_pos_t, k) - syn_centres) ** 2).sum()
        discrimination = F.cross_entropy(real_last @ syn_centres.t(), real_pos_t, reduction="sum")
        return {"feature": feature, "output": output, "discrimination": discrimination}

    def set_loss(self, syn_images: Tensor, syn_labels: Tensor, real: Any, generator: torch.Generator) -> Tensor:
        parts = self.terms(syn_images, syn_labels, real, generator)
        return parts["feature"] + parts["output"] + self.opts["discrimination_weight"] * parts["discrimination"]

