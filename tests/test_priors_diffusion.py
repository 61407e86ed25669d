import math

import pytest
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMPipeline, DDPMScheduler, DiTPipeline, DiTTransformer2DModel,
                       UNet2DModel)

from genprior.data import load_dataset
from genprior.errors import GenpriorError
from genprior.priors.diffusion import DiffusionPrior, LatentDiffusionPrior, VAEPrior, ddim_invert, ddim_sample
from genprior.priors.load import load_prior


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest and never oversubscribes a busy machine."""
    torch.set_num_threads(1)


def tiny_unet(num_class_embeds=4, seed=0, block_out_channels=(8, 16)):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=block_out_channels,
                       norm_num_groups=4, layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds)


def tiny_vae(channels=3, seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=4, sample_size=8, layers_per_block=1)


def tiny_dit(num_classes=3, seed=0):
    torch.manual_seed(seed)
    # out_channels = 2 x latent channels: learned sigma, as in DiT-XL/2
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                 num_layers=2, sample_size=4, patch_size=2, num_embeds_ada_norm=num_classes)


def ddim():
    return DDIMScheduler(clip_sample=False)


def diffusion_prior(**options):
    return DiffusionPrior.from_components(tiny_unet(), ddim(), mean=(0.5,), std=(0.25,),
                                          **{"num_inference_steps": 4, **options})


def latent_prior(**options):
    return LatentDiffusionPrior.from_components(tiny_dit(), tiny_vae(), ddim(), **{"num_inference_steps": 3, **options})


def vae_prior():
    return VAEPrior.from_components(tiny_vae(), num_classes=3)


PRIORS = {"diffusion": diffusion_prior, "latent_diffusion": latent_prior, "vae": vae_prior}


def trainable(latents):
    return {k: v.clone().requires_grad_(True) for k, v in latents.items()}


def toy_model(x, t, drop):
    return 0.5 * torch.tanh(x) + t.float().view(-1, 1, 1, 1) / 2000


# ---- the sampler ----------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_sample_equals_diffusers_ddim_scheduler(prediction_type, spacing):
    scheduler = DDIMScheduler(prediction_type=prediction_type, timestep_spacing=spacing, clip_sample=True,
                              clip_sample_range=1.5)
    scheduler.set_timesteps(5)
    x_T = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = x_T
    for t in scheduler.timesteps:
        t_in = torch.full((3,), int(t))
        ref = scheduler.step(toy_model(ref, t_in, None), t, ref).prev_sample
    ours = ddim_sample(toy_model, x_T, scheduler.timesteps, scheduler.alphas_cumprod, prediction_type,
                       final_alpha_cumprod=float(scheduler.final_alpha_cumprod), clip_sample=1.5)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_ld3m_skip_connection_mixes_x_T_into_every_x0_estimate():
    """LD3M's DDIM (prune_and_distill, ldm/models/diffusion/ddim.py): before each update
    pred_x0 <- (1 - index/T) pred_x0 + (index/T) x_T, index running from T = K-1 to 0."""
    scheduler = ddim()
    scheduler.set_timesteps(4)
    steps, alphas = scheduler.timesteps.tolist(), scheduler.alphas_cumprod
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x = x_T
    for i, t in enumerate(steps):
        eps = toy_model(x, torch.full((2,), t), None)
        a, a_prev = alphas[t], (alphas[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0))
        index = len(steps) - 1 - i
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x0 = (1 - index / 3) * x0 + index / 3 * x_T
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    ours = ddim_sample(toy_model, x_T, steps, alphas, skip_weight=1.0)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-6)
    plain = ddim_sample(toy_model, x_T, steps, alphas)
    assert not torch.allclose(plain, ours)


def test_guidance_one_skips_the_unconditional_pass():
    seen = []

    def model(x, t, drop):
        seen.append((x.shape[0], int(drop.sum())))
        return toy_model(x, t, drop)

    x_T = torch.randn(3, 1, 4, 4)
    scheduler = ddim()
    scheduler.set_timesteps(5)
    ddim_sample(model, x_T, scheduler.timesteps, scheduler.alphas_cumprod, guidance_scale=1.0)
    assert seen == [(3, 0)] * 5
    seen.clear()
    ddim_sample(model, x_T, scheduler.timesteps, scheduler.alphas_cumprod, guidance_scale=3.0)
    assert seen == [(6, 3)] * 5

    prior = diffusion_prior()
    calls = []
    prior.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    labels = torch.tensor([0, 1, 2])
    latents = prior.init_latents(labels, generator=torch.Generator().manual_seed(0))
    plain = prior.decode(latents, labels)
    assert calls == [3] * 4
    calls.clear()
    guided = prior.configure(guidance_scale=3.0).decode(latents, labels)
    assert calls == [6] * 4
    assert not torch.allclose(plain, guided, atol=1e-3)


# ---- the priors ---------------------------------------------------------------------
@pytest.mark.parametrize("family", PRIORS)
def test_save_and_load_give_identical_decodes(family, tmp_path):
    prior = PRIORS[family]()
    if family == "diffusion":
        prior.configure(guidance_scale=2.0, skip_weight=0.5)
    prior.card["dataset"] = "digits"
    labels = torch.tensor([0, 2, 1])
    latents = prior.init_latents(labels, generator=torch.Generator().manual_seed(0))
    prior.save_pretrained(tmp_path / family)
    weights = sorted(p.relative_to(tmp_path / family).as_posix() for p in (tmp_path / family).rglob("*.safetensors"))
    assert weights and not list((tmp_path / family).rglob("*.bin"))
    loaded = type(prior).from_pretrained(tmp_path / family)
    by_path = load_prior(str(tmp_path / family))
    assert type(by_path) is type(prior) and loaded.describe() == prior.describe() == by_path.describe()
    with torch.no_grad():
        expected = prior.decode(latents, labels)
        assert torch.equal(loaded.decode(latents, labels), expected)
        assert torch.equal(by_path.decode(latents, labels), expected)
    if family == "diffusion":
        assert weights == ["unet/diffusion_pytorch_model.safetensors"]
        assert loaded.card["guidance_scale"] == 2.0 and loaded.card["num_inference_steps"] == 4
        assert DiffusionPrior.from_pretrained(tmp_path / family, num_inference_steps=2).num_inference_steps == 2


@pytest.mark.parametrize("family", PRIORS)
def test_gradients_reach_every_latent(family):
    prior = PRIORS[family]()
    labels = torch.tensor([0, 1, 2])
    latents = trainable(prior.init_latents(labels, generator=torch.Generator().manual_seed(0)))
    assert set(latents) == ({"z"} if family == "vae" else {"x_T", "class_emb"})
    prior.decode(latents, labels).square().mean().backward()
    for key, value in latents.items():
        assert torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0, key


@pytest.mark.parametrize("family", ["diffusion", "latent_diffusion"])
def test_class_emb_starts_where_the_label_decodes(family):
    prior = PRIORS[family](guidance_scale=2.0)
    labels = torch.tensor([0, 1, 2, 1])
    latents = prior.init_latents(labels, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(prior.decode(latents, labels), prior.decode({"x_T": latents["x_T"]}, labels))


def test_dit_class_emb_conditions_every_block_like_a_shared_table():
    """Converted DiT checkpoints hold one label table copied into every block: moving
    class_emb must act like moving that row in all blocks at once."""
    dit = tiny_dit()
    tables = [block.norm1.emb.class_embedder.embedding_table.weight for block in dit.transformer_blocks]
    with torch.no_grad():
        for table in tables[1:]:
            table.copy_(tables[0])
    prior = LatentDiffusionPrior.from_components(dit, tiny_vae(), ddim(), num_inference_steps=2, guidance_scale=2.0)
    labels = torch.tensor([0, 2])
    latents = prior.init_latents(labels, generator=torch.Generator().manual_seed(0))
    shift = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        moved = prior.decode({"x_T": latents["x_T"], "class_emb": latents["class_emb"] + shift}, labels)
        for table in tables:
            table[labels] += shift
        torch.testing.assert_close(moved, prior.decode({"x_T": latents["x_T"]}, labels))


@pytest.mark.parametrize("family", ["diffusion", "latent_diffusion"])
def test_chunked_and_checkpointed_decodes_match_full_decode(family):
    prior = PRIORS[family](guidance_scale=2.0)
    labels = torch.tensor([0, 1, 2, 0, 1])
    latents = trainable(prior.init_latents(labels, generator=torch.Generator().manual_seed(0)))
    size = prior.resolution
    weight = torch.randn(5, prior.channels, size, size, generator=torch.Generator().manual_seed(1))

    def run(chunk_size):
        out = prior.decode(latents, labels, chunk_size=chunk_size)
        grads = torch.autograd.grad((out * weight).sum(), list(latents.values()))
        return out, grads

    full, g_full = run(None)
    chunked, g_chunked = run(2)
    prior.configure(gradient_checkpointing=True)
    checkpointed, g_checkpointed = run(None)
    for out, grads in ((chunked, g_chunked), (checkpointed, g_checkpointed)):
        torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)
        for g, g_ref in zip(grads, g_full):
            torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5 * g_ref.abs().max().item())


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", "train", resolution=8)
    keep = torch.cat([torch.nonzero(data.labels == c).flatten()[:2] for c in range(4)])
    return data, data.images[keep], data.labels[keep]


def test_ddim_inversion_reconstructs_better_than_random_noise(digits):
    data, images, labels = digits
    unet = tiny_unet(num_class_embeds=11)
    scheduler = DDPMScheduler()
    x = data.denormalize(data.images) * 2 - 1
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(unet.parameters(), 5e-3)
    for _ in range(80):
        i = torch.randint(len(x), (32,), generator=g)
        noise, t = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 1000, (32,), generator=g)
        prediction = unet(scheduler.add_noise(x[i], noise, t), t, class_labels=data.labels[i]).sample
        loss = (prediction - noise).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior = DiffusionPrior.from_components(unet, ddim(), data.mean, data.std, num_inference_steps=10)
    with torch.no_grad():
        inverted = prior.init_latents(labels, method="invert", images=images)
        reconstruction = prior.decode(inverted, labels)
        sampled = prior.decode(prior.init_latents(labels, generator=torch.Generator().manual_seed(0)), labels)
    error = (reconstruction - images).square().mean()
    assert error < 0.5 < (sampled - images).square().mean()
    assert torch.equal(inverted["class_emb"], unet.class_embedding.weight[labels])
    manual = ddim_invert(prior._denoiser(labels, None), prior.to_m11(images), *prior._schedule()[:2])
    torch.testing.assert_close(manual, inverted["x_T"])


def test_vae_invert_reconstructs_better_than_random_z(digits):
    data, images, labels = digits
    vae = tiny_vae(channels=1)
    x = data.denormalize(data.images) * 2 - 1
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    for _ in range(60):
        batch = x[torch.randint(len(x), (32,), generator=g)]
        loss = (vae(batch).sample - batch).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior = VAEPrior.from_components(vae, mean=data.mean, std=data.std)
    with torch.no_grad():
        reconstruction = prior.decode(prior.init_latents(labels, method="invert", images=images), labels)
        sampled = prior.decode(prior.init_latents(labels, generator=torch.Generator().manual_seed(0)), labels)
    assert (reconstruction - images).square().mean() < 0.5 * (sampled - images).square().mean()


def test_latent_prior_inverts_through_the_vae():
    prior = latent_prior()
    labels = torch.tensor([0, 1])
    images = torch.randn(2, 3, 8, 8)
    latents = prior.init_latents(labels, method="invert", images=images)
    assert latents["x_T"].shape == (2, 4, 4, 4) and torch.isfinite(latents["x_T"]).all()


def test_output_resolution_resizes_and_inversion_resizes_back():
    prior = diffusion_prior(output_resolution=6)
    labels = torch.tensor([0, 1])
    assert prior.resolution == 6 and prior.decode(prior.init_latents(labels), labels).shape == (2, 1, 6, 6)
    assert prior.init_latents(labels, method="invert", images=torch.randn(2, 1, 6, 6))["x_T"].shape == (2, 1, 8, 8)


def test_unconditional_unet_has_only_the_x_T_space():
    prior = DiffusionPrior.from_components(tiny_unet(num_class_embeds=None), ddim(), num_inference_steps=2)
    labels = torch.tensor([0, 5])
    assert prior.num_classes is None and prior.latent_spaces == ("x_T",) and prior.default_space == "x_T"
    assert prior.decode(prior.init_latents(labels), labels).shape == (2, 1, 8, 8)
    with pytest.raises(GenpriorError, match="its spaces: x_T$"):
        prior.init_latents(labels, space="x_T+class")
    with pytest.raises(GenpriorError, match="class-conditional"):
        prior.configure(guidance_scale=2.0)


def test_diffusers_folders_load_through_load_prior(tmp_path):
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(clip_sample=False)).save_pretrained(tmp_path / "ddpm")
    DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=ddim()).save_pretrained(tmp_path / "dit")
    tiny_vae().save_pretrained(tmp_path / "vae")
    pixel = load_prior(str(tmp_path / "ddpm"), num_inference_steps=2)
    latent = load_prior(str(tmp_path / "dit"))
    vae = load_prior(str(tmp_path / "vae"))
    assert isinstance(pixel, DiffusionPrior) and pixel.num_classes == 3 and pixel.num_inference_steps == 2
    assert isinstance(latent, LatentDiffusionPrior) and latent.num_classes == 3 and latent.resolution == 8
    assert isinstance(vae, VAEPrior) and vae.num_classes is None and vae.latent_shape == (4, 4, 4)


def test_bad_inputs_are_named():
    prior = diffusion_prior()
    labels = torch.tensor([0, 1])
    with pytest.raises(GenpriorError, match="its spaces: x_T, x_T\\+class"):
        prior.init_latents(labels, space="w+")
    with pytest.raises(GenpriorError, match="no class-mean latents"):
        prior.init_latents(labels, method="mean")
    latents = prior.init_latents(labels)
    with pytest.raises(GenpriorError, match="one label per image"):
        prior.decode(latents, torch.tensor([0, 1, 2]))
    with pytest.raises(GenpriorError, match=r"labels must lie in \[0, 3\)"):
        prior.decode(latents, torch.tensor([0, 3]))
    with pytest.raises(GenpriorError, match=r"x_T must have shape \(N, 1, 8, 8\)"):
        prior.decode({"x_T": torch.zeros(2, 1, 4, 4)}, labels)
    with pytest.raises(GenpriorError, match=r"class_emb must have shape \(N, 32\)"):
        prior.decode({"x_T": latents["x_T"], "class_emb": torch.zeros(2, 5)}, labels)
    with pytest.raises(GenpriorError, match="name no latent space"):
        prior.decode({"w": latents["x_T"]}, labels)
    with pytest.raises(GenpriorError, match="unknown sampler option"):
        prior.configure(steps=3)
    with pytest.raises(GenpriorError, match="num_inference_steps"):
        prior.configure(num_inference_steps=0)
    with pytest.raises(GenpriorError, match="skip_weight"):
        prior.configure(skip_weight=2.0)
    with pytest.raises(GenpriorError, match="unknown prediction type"):
        ddim_sample(toy_model, torch.zeros(1, 1, 2, 2), [1], torch.ones(2), prediction_type="x0")
    with pytest.raises(GenpriorError, match="no class means"):
        vae_prior().init_latents(labels, method="mean")
    with pytest.raises(GenpriorError, match="no null-class row"):
        dit = tiny_dit()
        for block in dit.transformer_blocks:
            block.norm1.emb.class_embedder.embedding_table.weight.data = torch.zeros(3, 16)
        LatentDiffusionPrior.from_components(dit, tiny_vae())
    assert math.isclose(prior.guidance_scale, 1.0)


def test_the_shipped_dit_prior_loads_like_a_hub_dit_pipeline():
    """``mnist5k-dit`` is a DiTPipeline folder: it loads through the code path of a hub DiT
    (transformer + VAE + scheduler), at its measured default sampler, and decodes seeded digits."""
    from genprior.priors.diffusion import LatentDiffusionPrior
    from genprior.priors.load import load_prior

    prior = load_prior("mnist5k-dit")
    assert isinstance(prior, LatentDiffusionPrior)
    assert (prior.num_classes, prior.resolution, prior.latent_spaces) == (10, 28, ("x_T", "x_T+class"))
    assert prior.card["guidance_scale"] == 1.25 and prior.card["dataset"] == "mnist5k"
    labels = torch.tensor([3, 7])
    latents = prior.init_latents(labels, space="x_T", method="random", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = prior.decode(latents, labels), prior.decode(latents, labels)
    assert a.shape == (2, 1, 28, 28) and torch.equal(a, b) and a.std() > 0.1
