"""What the GAN-based generator methods (DiM, DCGM) share (``GANMethod``: the adversarial game,
a pool of networks that learn from real data, the iteration), and what
``pretrained/train_gan.py`` trains the shipped GAN priors with: the discriminator of a
prior's family, DiffAugment, and the non-saturating logistic loss with lazy R1
(StyleGAN2-ADA's recipe).

The shipped GAN priors carry only their generator, so a method that fine-tunes one builds
a fresh discriminator of the same family here and warms it up against the frozen
generator before the first generator step (``Adversary.warm_up``).
"""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment import cutout, translate
from ..errors import GenpriorError
from ..matching.base import check_count, check_number
from ..priors.base import Prior
from .base import GeneratorMethod

#: StyleGAN2-ADA's Adam for G and D, and its lazy-R1 setting as trained for the shipped prior
ADAM = {"lr": 0.0025, "betas": (0.0, 0.99), "eps": 1e-8}
R1_GAMMA, R1_INTERVAL = 1.0, 16


def diff_augment(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """DiffAugment translation (up to 1/8 of the side) and cutout (half the side), on images
    in [-1, 1] shifted so that the black background fills the gaps; per image."""
    n, _, h, w = x.shape
    shift = max(1, h // 8)
    x = translate(x + 1, torch.randint(-shift, shift + 1, (n,), generator=generator),
                  torch.randint(-shift, shift + 1, (n,), generator=generator))
    size = h // 2
    x = cutout(x, torch.randint(0, h + 1 - size % 2, (n,), generator=generator),
               torch.randint(0, w + 1 - size % 2, (n,), generator=generator), size, size)
    return x - 1


def make_discriminator(prior: Prior) -> nn.Module:
    """A fresh class-conditional discriminator of the prior's family, sized to its generator."""
    from ..priors.dcgan import DCGANDiscriminator
    from ..priors.stylegan import StyleGAN2Discriminator

    if prior.num_classes is None:
        raise GenpriorError("the GAN methods train class-conditional generators; this prior has no classes")
    g = getattr(prior, "generator", None)
    if prior.family == "stylegan":
        cfg = g.config
        return StyleGAN2Discriminator(c_dim=prior.num_classes, img_resolution=cfg.img_resolution,
                                      img_channels=cfg.img_channels, channel_base=cfg.channel_base,
                                      channel_max=cfg.channel_max)
    if prior.family == "dcgan":
        return DCGANDiscriminator(num_classes=prior.num_classes, img_channels=prior.channels)
    raise GenpriorError(f"no discriminator for a {prior.family!r} prior; the GAN methods train stylegan or dcgan priors")


def generator_loss(d_fake: Tensor) -> Tensor:
    """Non-saturating logistic loss of the generator."""
    return F.softplus(-d_fake).mean()


class Adversary:
    """A discriminator, its optimiser (lazy-R1 adjusted, as ADA) and its update."""

    def __init__(self, prior: Prior, device: torch.device, lr: float = ADAM["lr"], r1_gamma: float = R1_GAMMA,
                 r1_interval: int = R1_INTERVAL):
        self.net = make_discriminator(prior).to(device)
        self.r1_gamma, self.r1_interval = float(r1_gamma), int(r1_interval)
        ratio = self.r1_interval / (self.r1_interval + 1)
        beta1, beta2 = ADAM["betas"]
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr * ratio,
                                          betas=(beta1 ** ratio, beta2 ** ratio), eps=ADAM["eps"])

    def judge(self, images_m11: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """D's logits for images in [-1, 1], through DiffAugment."""
        return self.net(diff_augment(images_m11, generator), labels)

    def loss(self, real_m11: Tensor, real_labels: Tensor, fake_m11: Tensor, fake_labels: Tensor, step: int,
             generator: torch.Generator) -> Tensor:
        """Logistic loss on real and fake, plus lazy R1 on the real images every ``r1_interval`` steps."""
        regularise = self.r1_gamma > 0 and step % self.r1_interval == 0
        real = real_m11.detach().requires_grad_(regularise)
        real_logits = self.judge(real, real_labels, generator)
        loss = F.softplus(self.judge(fake_m11.detach(), fake_labels, generator)).mean() + F.softplus(-real_logits).mean()
        if regularise:  # (under fp16 a large scale would guard this gradient; bf16 or fp32 need none)
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss = loss + grad.square().sum(dim=(1, 2, 3)).mean() * (self.r1_gamma / 2) * self.r1_interval
        return loss


class GANMethod(GeneratorMethod):
    """A class-conditional GAN fine-tuned with its adversarial loss plus a method's matching
    terms computed through a network of a pool that learns from real data as the run goes
    (DiM, DCGM). Per iteration: the pool network takes ``pool_steps`` SGD steps on augmented
    real batches (a fresh network of a random pool architecture every ``pool_reset_every``
    iterations; default one epoch of the real data); the generator steps on
    ``adversarial_weight`` x adversarial + ``matching`` (the subclass's terms, on a real and a
    generated batch with the same labels); the discriminator steps on the logistic loss with
    lazy R1. Subclasses implement ``matching`` and set their paper's defaults."""

    families = ("stylegan", "dcgan")
    BASE_OPTIONS: Dict[str, Any] = {"adversarial_weight": 1.0, "pool": ("convnet",), "pool_steps": 16, "pool_lr": 0.01,
                                    "pool_momentum": 0.9, "pool_weight_decay": 5e-4, "pool_reset_every": None,
                                    "pool_net_options": {}, "d_lr": ADAM["lr"], "d_warmup": 200, "dsa": True}
    generator_optimizer = {"lr": 1e-4, "betas": ADAM["betas"], "eps": ADAM["eps"]}

    def resolve_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        from ..nets import NETS

        pool = opts["pool"].split(",") if isinstance(opts["pool"], str) else list(opts["pool"])  # "convnet,resnet18" too
        if not pool:
            raise GenpriorError(f"{self.name}: pool needs at least one network, e.g. pool=convnet")
        for arch in pool:
            NETS.entry(arch)  # unknown network: the error lists the known ones
        opts["pool"] = pool
        if check_number(self.name, "pool_lr", opts["pool_lr"]) == 0:
            raise GenpriorError(f"{self.name}: pool_lr must be positive")
        for key in ("adversarial_weight", "pool_momentum", "pool_weight_decay", "d_lr"):
            check_number(self.name, key, opts[key])
        for key in ("pool_steps", "d_warmup"):
            check_count(self.name, key, opts[key])
        if opts["pool_reset_every"] is not None and check_count(self.name, "pool_reset_every", opts["pool_reset_every"]) < 1:
            raise GenpriorError(f"{self.name}: pool_reset_every must be at least 1 (or unset: one epoch)")
        if not isinstance(opts["dsa"], bool):
            raise GenpriorError(f"{self.name}: dsa must be true or false, got {opts['dsa']!r}")
        return self.resolve_matching_options(opts)

    def resolve_matching_options(self, opts: Dict[str, Any]) -> Dict[str, Any]:
        """Check the subclass's own options."""
        return opts

    def __init__(self, prior, real, device, **options: Any):
        from ..augment import DSA, strategy_for

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
            self.new_pool_net(arch)

    def new_pool_net(self, arch: int) -> None:
        from ..nets import create_net

        self.pool_arch = arch
        real = self.real
        self.pool_net = create_net(self.opts["pool"][arch], real.channels, real.num_classes, real.resolution,
                                   **self.opts["pool_net_options"]).to(self.device)
        self.pool_opt = torch.optim.SGD(self.pool_net.parameters(), lr=self.opts["pool_lr"],
                                        momentum=self.opts["pool_momentum"],
                                        weight_decay=self.opts["pool_weight_decay"])

    def reset_every(self, batch_size: int) -> int:
        every = self.opts["pool_reset_every"]
        return every if every is not None else max(1, math.ceil(len(self.real.labels) / batch_size))

    # ---- pieces ----------------------------------------------------------------------------
    def generate(self, trainer: Any, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Normalised images of ``labels`` from fresh latents, differentiable in the prior."""
        prior_labels = trainer.prior_labels(labels).to(self.device)
        z = self.prior.init_latents(prior_labels, space="z", method="random", generator=generator)
        return self.prior.decode(z, prior_labels)

    def initialize(self, trainer: Any) -> None:
        """Warm the fresh discriminator up against the frozen generator."""
        from ..distill.common import seeded_generator

        for k in range(self.opts["d_warmup"]):
            self.discriminator_step(trainer, -1 - k, trainer.cfg.batch_size,
                                    seeded_generator(trainer.cfg.seed, f"{self.name}-warmup", k, trainer.acc.process_index))

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

    @abstractmethod
    def matching(self, real: Tensor, fake: Tensor, labels: Tensor, generator: torch.Generator) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The method's terms (weighted, summed) and each term for the log, through ``self.pool_net``."""

    def step(self, trainer: Any, it: int, generator: torch.Generator) -> Dict[str, float]:
        from ..distill.common import derive_seed, seeded_generator

        batch = trainer.cfg.batch_size
        if self.pool_arch < 0 or it % self.reset_every(batch) == 0:
            # the same architecture and initial weights in every process (batches differ per process)
            arch = int(torch.randint(len(self.opts["pool"]), (1,), generator=seeded_generator(trainer.cfg.seed, it, "pool")))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(trainer.cfg.seed, it, "pool-init"))
                self.new_pool_net(arch)
        self.train_pool(trainer, it, batch, generator)

        labels = self.sample_labels(batch, generator)
        real = self.real_batch(labels, generator)
        self.adversary.net.requires_grad_(False)
        self.pool_net.requires_grad_(False)
        with trainer.autocast():
            fake = self.generate(trainer, labels, generator)
            adv = generator_loss(self.adversary.judge(self.prior.to_m11(fake), trainer.prior_labels(labels).to(self.device),
                                                      generator))
            terms, parts = self.matching(real, fake, labels, generator)
            loss = self.opts["adversarial_weight"] * adv + terms
        trainer.update("generator", loss, it)
        self.adversary.net.requires_grad_(True)
        self.pool_net.requires_grad_(True)

        d_loss = self.discriminator_step(trainer, it, batch, generator)
        return {"loss": loss.item(), "adversarial": adv.item(), **{k: v.item() for k, v in parts.items()},
                "d_loss": d_loss}
