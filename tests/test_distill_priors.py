"""Every matching loss through real (tiny) priors of every family: the loop never special-cases one."""
import json
from dataclasses import replace

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from genprior.data import load_dataset
from genprior.distill import DistillConfig, distill
from genprior.distill.latent import LatentDistiller
from genprior.matching.experts import train_experts
from genprior.priors.diffusion import DiffusionPrior
from genprior.priors.stylegan import StyleGAN2Generator, StyleGANPrior

from conftest import subset

DIGITS_MEAN, DIGITS_STD = (0.3060,), (0.3252,)
NET = {"net_options": {"width": 8}}


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    torch.manual_seed(0)
    g = StyleGAN2Generator(z_dim=8, c_dim=10, w_dim=8, mapping_layers=2, img_resolution=32, img_channels=1,
                           channel_base=64, channel_max=8, output_resolution=28)
    StyleGANPrior(g, mean=DIGITS_MEAN, std=DIGITS_STD, mean_samples=32).save_pretrained(root / "stylegan")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=11)
    DiffusionPrior.from_components(unet, DDIMScheduler(clip_sample=False), mean=DIGITS_MEAN, std=DIGITS_STD,
                                   num_inference_steps=2).save_pretrained(root / "diffusion")
    return root


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    train = subset(load_dataset("digits", "train"), 10)
    return train_experts(train, "convnet", 1, 2, root / "buffer", net_options={"width": 8}, progress=False)


CASES = [
    ("stylegan", "w+", "dm", NET), ("stylegan", "F", "dm", NET), ("stylegan", "z", "dm", NET), ("stylegan", "w+", "mmd", NET),
    ("stylegan", "w", "wasserstein", NET), ("stylegan", "w+", "dc", {**NET, "outer_loop": 1, "inner_loop": 1}),
    ("stylegan", "w+", "cafe", {**NET, "outer_loop": 1, "inner_loop": 1}),
    ("diffusion", "x_T+class", "dm", NET), ("diffusion", "x_T", "dc", {**NET, "outer_loop": 1, "inner_loop": 1}),
]


@pytest.mark.parametrize("prior, space, loss, options", CASES)
def test_loss_decreases_through_the_prior(tmp_path, priors, prior, space, loss, options):
    cfg = DistillConfig(dataset="digits", prior=str(priors / prior), space=space, loss=loss, loss_options=options,
                        ipc=1, iterations=10, init="random", optimizer="adam", lr=0.2, batch_real=16,
                        chunk_size=4, log_every=1, checkpoint_every=100)
    cfg = replace(cfg, loss_options={**options, "dsa": False})
    distill(cfg, tmp_path / "run", progress=False)
    assert_decreases(tmp_path / "run")


def assert_decreases(run_dir):
    """Losses drawn with a fresh random network each iteration are noisy: compare thirds."""
    losses = [json.loads(l)["loss"] for l in (run_dir / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) < sum(losses[:3]), losses


def test_mtt_through_the_gan_prior(tmp_path, priors, buffer):
    cfg = DistillConfig(dataset="digits", prior=str(priors / "stylegan"), space="w+", loss="mtt", ipc=1,
                        loss_options={**NET, "buffer": str(buffer), "syn_steps": 2, "expert_epochs": 1,
                                      "max_start_epoch": 1, "dsa": False},
                        iterations=10, init="random", optimizer="adam", lr=0.2, log_every=1, checkpoint_every=100)
    distill(cfg, tmp_path / "run", progress=False)
    assert_decreases(tmp_path / "run")


def test_buffer_for_another_net_is_refused(tmp_path, priors, buffer):
    from genprior.errors import GenpriorError

    cfg = DistillConfig(dataset="digits", prior="pixel", loss="mtt", ipc=1, iterations=1,
                        loss_options={"buffer": str(buffer), "net": "alexnet"})
    with pytest.raises(GenpriorError, match="made for"):
        distill(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("loss, options", [
    ("dm", NET), ("mmd", NET), ("wasserstein", NET), ("dc", {**NET, "outer_loop": 1, "inner_loop": 1}),
    ("cafe", {**NET, "outer_loop": 1, "inner_loop": 1}), ("mtt", None),
])
def test_every_loss_moves_pixel_latents(tmp_path, buffer, loss, options):
    """Pixel space is a prior too: the classic methods' gradients must reach the pixels."""
    if options is None:  # MTT: a set-level loss (not per class)
        options = {**NET, "buffer": str(buffer), "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1}
    cfg = DistillConfig(dataset="digits", prior="pixel", loss=loss, ipc=1, iterations=1, init="invert",
                        optimizer="sgd", lr=1.0 if loss != "mtt" else 1000.0, batch_real=8, loss_options=options)
    d = LatentDistiller(cfg, tmp_path / "run", progress=False)
    d.init_latents()
    before = d.latents["x"].detach().clone()
    d.iteration(0)
    assert (d.latents["x"].detach() - before).abs().max() > 0, f"{loss} did not change the pixels"
