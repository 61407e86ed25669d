"""DiM: Distilling Dataset into Generative Model (Wang et al., 2023; reference: vimar-gu/DiM,
``pool_match.py``).

A class-conditional GAN keeps its adversarial game and also learns to make images that a
pool of classifiers reads as it reads real ones: for a random network of the pool, the
log-softmax outputs of a real batch and of a generated batch with the same labels (paired
image by image, under one shared augmentation) are matched by mean squared error. The
pool network is itself trained on real data as the run goes: before every generator step
it takes ``pool_steps`` SGD steps on augmented real batches, and a fresh network of a
random pool architecture replaces it every ``pool_reset_every`` iterations (the reference:
once per epoch of the real data). Generator loss = adversarial + ``match_weight`` x match.

Departures, each an option: the reference continues a WGAN-GP AC-GAN it trained itself
(G and D at lr 5e-6 for 100 epochs); genprior fine-tunes a shipped prior with the prior's
own adversarial loss (non-saturating logistic + lazy R1, ``gan.py``) and a fresh
discriminator of its family, warmed up for ``d_warmup`` steps against the frozen
generator (the shipped priors carry no discriminator), at a generator lr of 1e-4 since a
CPU run is about a hundredth of the reference's steps. ``match="dm"`` matches per-class
mean embeddings instead of logits (the issue's alternative term).
"""
from __future__ import annotations

import math
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment import DSA, strategy_for
from ..distill.common import seeded_generator
from ..errors import GenpriorError
from ..matching.base import check_positive_float, check_positive_int
from ..nets import NETS, create_net
from .base import GENERATOR_METHODS, GeneratorMethod
from .gan import Adversary, generator_loss

PAPER = "Wang et al., DiM: Distilling Dataset into Generative Model, 2023"
#: the reference's pool (convnet, resnet10, resnet18, resnet10_ap, resnet18_ap) as far as genprior has it
PAPER_POOL = ("convnet", "resnet_ap10", "resnet18", "resnet18_ap")
MATCHES = ("logit", "dm")


@GENERATOR_METHODS.register("dim", summary="DiM: a GAN trained with logit matching against a pool of classifiers "
                            "that learn from real data", paper=PAPER)
class DiM(GeneratorMethod):
    name = "dim"
    paper = PAPER
    families = ("stylegan", "dcgan")
    OPTIONS = {"match": "logit", "match_weight": 0.01, "adversarial_weight": 1.0, "pool": PAPER_POOL,
               "pool_steps": 16, "pool_lr": 0.01, "pool_momentum": 0.9, "pool_weight_decay": 5e-4,
               "pool_reset_every": None, "pool_net_options": {}, "d_lr": 0.0025, "d_warmup": 200, "dsa": True}
    generator_optimizer = {"lr": 1e-4, "betas": (0.0, 0.99), "eps": 1e-8}

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        if opts["match"] not in MATCHES:
            raise GenpriorError(f"dim: match must be one of {', '.join(MATCHES)}, got {opts['match']!r}")
        pool = opts["pool"].split(",") if isinstance(opts["pool"], str) else list(opts["pool"])  # "convnet,resnet18" too
        if not pool:
            raise GenpriorError("dim: pool needs at least one network, e.g. pool=convnet")
        for arch in pool:
            NETS.entry(arch)  # unknown network: the error lists the known ones
        opts["pool"] = pool
        for key in ("match_weight", "pool_lr"):
            check_positive_float(self.name, key, opts[key])
        for key in ("adversarial_weight", "pool_momentum", "pool_weight_decay", "d_lr"):
            if isinstance(opts[key], bool) or not isinstance(opts[key], (int, float)) or opts[key] < 0:
                raise GenpriorError(f"dim: {key} must be a number >= 0, got {opts[key]!r}")
        if not isinstance(opts["pool_steps"], int) or isinstance(opts["pool_steps"], bool) or opts["pool_steps"] < 0:
            raise GenpriorError(f"dim: pool_steps must be an integer >= 0, got {opts['pool_steps']!r}")
        if not isinstance(opts["d_warmup"], int) or isinstance(opts["d_warmup"], bool) or opts["d_warmup"] < 0:
            raise GenpriorError(f"dim: d_warmup must be an integer >= 0, got {opts['d_warmup']!r}")
        if opts["pool_reset_every"] is not None:
            check_positive_int(self.name, "pool_reset_every", opts["pool_reset_every"])
        if not isinstance(opts["dsa"], bool):
            raise GenpriorError(f"dim: dsa must be true or false, got {opts['dsa']!r}")
        return opts

    def __init__(self, prior, real, device, **options: Any):
        super().__init__(prior, real, device, **options)
        self.adversary = Adversary(prior, device, lr=self.opts["d_lr"])
        self.dsa = DSA(strategy_for(real.name)) if self.opts["dsa"] else None
        self.pool_arch = -1
        self.pool_net: nn.Module = nn.Identity()
        self.pool_opt: torch.optim.Optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)

    # ---- state -------------------------------------------------------------------------
    def modules(self) -> Dict[str, nn.Module]:
        return {"discriminator": self.adversary.net, "pool_net": self.pool_net}

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return {"discriminator": self.adversary.optimizer, "pool": self.pool_opt}

    def state_tensors(self) -> Dict[str, Tensor]:
        return {"pool_arch": torch.tensor(self.pool_arch)}

    def load_state_tensors(self, tensors: Dict[str, Tensor]) -> None:
        """Rebuild the pool network of the saved architecture, so its weights can load."""
        arch = int(tensors["pool_arch"])
        if arch >= 0:
            self._new_pool_net(arch)

    def _new_pool_net(self, arch: int) -> None:
        self.pool_arch = arch
        real = self.real
        self.pool_net = create_net(self.opts["pool"][arch], real.channels, real.num_classes, real.resolution,
                                   **self.opts["pool_net_options"]).to(self.device)
        self.pool_opt = torch.optim.SGD(self.pool_net.parameters(), lr=self.opts["pool_lr"],
                                        momentum=self.opts["pool_momentum"],
                                        weight_decay=self.opts["pool_weight_decay"])

    def reset_every(self, batch_size: int) -> int:
        """A new pool network every epoch of the real data by default, as the reference."""
        every = self.opts["pool_reset_every"]
        return every if every is not None else max(1, math.ceil(len(self.real.labels) / batch_size))

    # ---- the iteration -------------------------------------------------------------------
    def generate(self, trainer: Any, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Normalised images of ``labels`` from fresh latents, differentiable in the prior."""
        prior_labels = trainer.prior_labels(labels).to(self.device)
        z = self.prior.init_latents(prior_labels, space="z", method="random", generator=generator)
        return self.prior.decode(z, prior_labels)

    def initialize(self, trainer: Any) -> None:
        """Warm the fresh discriminator up against the frozen generator."""
        for k in range(self.opts["d_warmup"]):
            gen = seeded_generator(trainer.cfg.seed, "dim-warmup", k)
            self.discriminator_step(trainer, -1 - k, trainer.cfg.batch_size, gen)

    def discriminator_step(self, trainer: Any, it: int, batch: int, generator: torch.Generator) -> float:
        labels = self.sample_labels(batch, generator)
        real = self.real_batch(labels, generator)
        fake_labels = self.sample_labels(batch, generator)
        with torch.no_grad(), trainer.autocast():
            fake = self.generate(trainer, fake_labels, generator)
        prior = self.prior
        with trainer.autocast():
            loss = self.adversary.loss(prior.to_m11(real), trainer.prior_labels(labels).to(self.device),
                                       prior.to_m11(fake.float()), trainer.prior_labels(fake_labels).to(self.device),
                                       abs(it), generator)
        trainer.update("discriminator", loss, it)
        return loss.item()

    def train_pool(self, trainer: Any, it: int, batch: int, generator: torch.Generator) -> None:
        net = self.pool_net
        net.train()
        for _ in range(self.opts["pool_steps"]):
            labels = self.sample_labels(batch, generator)
            x = self.real_batch(labels, generator)
            if self.dsa is not None:
                x = self.dsa(x, generator=generator)
            with trainer.autocast():
                loss = F.cross_entropy(net(x), labels.to(self.device))
            trainer.update("pool", loss, it)

    def match_loss(self, real: Tensor, fake: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        if self.dsa is not None:
            real, fake = self.dsa.siamese(real, fake, generator=generator)
        net = self.pool_net
        if self.opts["match"] == "logit":
            # the reference: MSE between log-softmax outputs, image by image
            return (F.log_softmax(net(real), dim=1) - F.log_softmax(net(fake), dim=1)).square().mean()
        e_real, e_fake = net.embed(real), net.embed(fake)
        loss = fake.new_zeros(())
        for c in labels.unique().tolist():
            where = labels == c
            loss = loss + (e_real[where].mean(0) - e_fake[where].mean(0)).square().sum()
        return loss

    def step(self, trainer: Any, it: int, generator: torch.Generator) -> Dict[str, float]:
        batch = trainer.cfg.batch_size
        if self.pool_arch < 0 or it % self.reset_every(batch) == 0:
            self._new_pool_net(int(torch.randint(len(self.opts["pool"]), (1,), generator=generator)))
        self.train_pool(trainer, it, batch, generator)

        labels = self.sample_labels(batch, generator)
        real = self.real_batch(labels, generator)
        self.adversary.net.requires_grad_(False)
        self.pool_net.requires_grad_(False)
        with trainer.autocast():
            fake = self.generate(trainer, labels, generator)
            adv = generator_loss(self.adversary.judge(self.prior.to_m11(fake), trainer.prior_labels(labels).to(self.device),
                                                      generator))
            match = self.match_loss(real, fake, labels, generator)
            loss = self.opts["adversarial_weight"] * adv + self.opts["match_weight"] * match
        trainer.update("generator", loss, it)
        self.adversary.net.requires_grad_(True)
        self.pool_net.requires_grad_(True)

        d_loss = self.discriminator_step(trainer, it, batch, generator)
        return {"loss": loss.item(), "adversarial": adv.item(), "match": match.item(), "d_loss": d_loss}

