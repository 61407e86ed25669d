"""Matching losses through real (tiny) priors of every family (StyleGAN, DCGAN, pixel and latent\ndiffusion, VAE): the loop never special-cases one."""
import json
from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel, UNet2DModel

from genprior.data import load_dataset
from genprior.distill import DistillConfig, distill
from genprior.distill.latent import LatentDistiller
from genprior.matching.experts import train_experts
from genprior.distill import export_run, load_latents
from genprior.priors.dcgan import DCGANGenerator, DCGANPrior
from genprior.priors.diffusion import DiffusionPrior, LatentDiffusionPrior, VAEPrior
from genprior.priors.stylegan import StyleGAN2Generator, StyleGANPrior
from genprior.synset import load_synset

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
    torch.manual_seed(0)
    DCGANPrior(DCGANGenerator(z_dim=8, num_classes=10, embed_dim=4, channels=(8, 4), img_channels=1, output_resolution=28),
               mean=DIGITS_MEAN, std=DIGITS_STD).save_pretrained(root / "dcgan")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=28, layers_per_block=1)
    VAEPrior.from_components(vae, mean=DIGITS_MEAN, std=DIGITS_STD, num_classes=10).save_pretrained(root / "vae")
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                num_layers=1, sample_size=14, patch_size=2, num_embeds_ada_norm=10)
    LatentDiffusionPrior.from_components(dit, vae, DDIMScheduler(clip_sample=False), mean=DIGITS_MEAN, std=DIGITS_STD,
                                         num_inference_steps=2).save_pretrained(root / "latent-diffusion")
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
    ("dcgan", "z", "dm", NET), ("vae", "z", "dm", NET), ("latent-diffusion", "x_T+class", "dm", NET),
]


@pytest.mark.parametrize("prior, space, loss, options", CASES)
def test_loss_decreases_through_the_prior(tmp_path, priors, prior, space, loss, options):
    cfg = DistillConfig(dataset="digits", prior=str(priors / prior), space=space, loss=loss, loss_options=options,
                        ipc=1, iterations=10, init="random", optimizer="adam", lr=0.2, batch_real=16,
                        chunk_size=4, log_every=1, checkpoint_every=100)
    assert_decreases(replace(cfg, loss_options={**options, "dsa": False}), tmp_path)


def assert_decreases(cfg, tmp_path):
    """A fresh random network each iteration makes the losses noisy, but the draws depend
    only on (seed, iteration): the same run with the latents held still (lr 1e-30, below
    float32 resolution) sees the same draws, so its losses are the baseline the optimised
    run must fall below."""
    distill(cfg, tmp_path / "run", progress=False)
    distill(replace(cfg, lr=1e-30, latent_lrs={}), tmp_path / "still", progress=False)
    moved, still = (load_latents(tmp_path / d)[0] for d in ("run", "still"))
    assert any(not torch.equal(moved[k], still[k]) for k in moved), "the latents did not move"
    losses, frozen = ([json.loads(l)["loss"] for l in (tmp_path / d / "log.jsonl").read_text().splitlines()]
                      for d in ("run", "still"))
    assert losses[0] == pytest.approx(frozen[0])  # the same start and the same first draw
    assert sum(losses[-3:]) < sum(frozen[-3:]), (losses, frozen)


def test_mtt_through_the_gan_prior(tmp_path, priors, buffer):
    cfg = DistillConfig(dataset="digits", prior=str(priors / "stylegan"), space="w+", loss="mtt", ipc=1,
                        loss_options={**NET, "buffer": str(buffer), "syn_steps": 2, "expert_epochs": 1,
                                      "max_start_epoch": 1, "dsa": False},
                        iterations=10, init="random", optimizer="adam", lr=0.2, log_every=1, checkpoint_every=100)
    assert_decreases(cfg, tmp_path)


def test_mtt_resume_is_bit_identical_with_its_learned_step_size(tmp_path, buffer):
    cfg = DistillConfig(dataset="digits", prior="pixel", loss="mtt", ipc=1, iterations=4, init="invert", lr=100.0,
                        loss_options={**NET, "buffer": str(buffer), "syn_steps": 2, "expert_epochs": 1,
                                      "max_start_epoch": 1, "lr_lr": 1e-5},
                        checkpoint_every=2, log_every=1)
    full = LatentDistiller(cfg, tmp_path / "full", progress=False)
    full.run()
    distill(replace(cfg, iterations=2), tmp_path / "split", progress=False)
    resumed = LatentDistiller(cfg, tmp_path / "split", progress=False)
    resumed.run(resume="latest")
    assert torch.equal(full.latents["x"], resumed.latents["x"])
    assert float(full.matcher.syn_lr.detach()) != 0.01 and torch.equal(full.matcher.syn_lr, resumed.matcher.syn_lr)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_export_remakes_the_set_of_a_gan_run(tmp_path, priors, precision):
    """Decoding the saved latents again gives the run's own set: through the prior, with the
    class map and in the run's precision."""
    cfg = DistillConfig(dataset="digits", prior=str(priors / "stylegan"), space="w+", loss="dm", loss_options=NET,
                        ipc=2, iterations=2, init="random", lr=0.2, batch_real=16, chunk_size=4,
                        class_map=list(range(9, -1, -1)), mixed_precision=precision)
    made = distill(cfg, tmp_path / "run", progress=False)
    exported = export_run(tmp_path / "run", chunk_size=3)
    torch.testing.assert_close(exported.images, made.images, atol=1e-4, rtol=0)
    assert load_synset(tmp_path / "run" / "export").config["decoded_in"] == precision
    if precision == "bf16":  # decoding in fp32 instead is allowed, and differs
        fp32 = export_run(tmp_path / "run", tmp_path / "fp32", mixed_precision="no")
        assert not torch.allclose(fp32.images, made.images, atol=1e-4)


def test_buffer_for_another_net_is_refused(tmp_path, priors, buffer):
    from genprior.errors import GenpriorError

    cfg = DistillConfig(dataset="digits", prior="pixel", loss="mtt", ipc=1, iterations=1,
                        loss_options={"buffer": str(buffer), "net": "alexnet"})
    with pytest.raises(GenpriorError, match="made for .*genprior experts --dataset digits --net alexnet"):
        distill(cfg, tmp_path / "run", progress=False)
    # the buffer was made on digits: another dataset is refused too, naming the command for it
    with pytest.raises(GenpriorError, match="made for .*genprior experts --dataset mnist5k --net convnet") as err:
        distill(replace(cfg, dataset="mnist5k", loss_options={"buffer": str(buffer), **NET}), tmp_path / "run",
                progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


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
