import json
import time

import pytest
import torch

from genprior.errors import GenpriorError, UnknownNameError
from genprior.priors import PixelPrior
from genprior.priors.load import list_priors, load_prior


def pixel_prior():
    return PixelPrior(num_classes=3, channels=1, resolution=8, mean=(0.1307,), std=(0.3081,))


def test_pixel_prior_is_the_identity_and_invert_is_exact():
    p = pixel_prior()
    labels = torch.tensor([0, 1, 2, 0])
    images = torch.randn(4, 1, 8, 8)
    latents = p.init_latents(labels, method="invert", images=images)
    assert torch.equal(p.decode(latents, labels), images)
    assert p.init_latents(labels, generator=torch.Generator().manual_seed(0))["x"].shape == (4, 1, 8, 8)


def test_chunked_decode_matches_full_decode_with_gradients():
    p = pixel_prior()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    x = torch.randn(7, 1, 8, 8, requires_grad=True)
    weight = torch.randn(7, 1, 8, 8)
    full = p.decode({"x": x}, labels)
    (g_full,) = torch.autograd.grad((full * weight).sum(), x)
    chunked = p.decode({"x": x}, labels, chunk_size=3)
    (g_chunk,) = torch.autograd.grad((chunked * weight).sum(), x)
    assert torch.allclose(full, chunked, atol=1e-6) and torch.allclose(g_full, g_chunk, atol=1e-6)


def test_bad_inputs_are_named():
    p = pixel_prior()
    labels = torch.tensor([0, 1])
    with pytest.raises(GenpriorError, match="one label per image"):
        p.decode({"x": torch.zeros(3, 1, 8, 8)}, labels)
    with pytest.raises(GenpriorError, match=r"\[0, 3\)"):
        p.decode({"x": torch.zeros(2, 1, 8, 8)}, torch.tensor([0, 7]))
    with pytest.raises(GenpriorError, match="its spaces: x"):
        p.init_latents(labels, space="w+")
    with pytest.raises(GenpriorError, match="no class means"):
        p.init_latents(labels, method="mean")
    with pytest.raises(GenpriorError, match="choose one of random, mean, invert"):
        p.init_latents(labels, method="best")
    with pytest.raises(GenpriorError, match="one real image per label"):
        p.init_latents(labels, method="invert")
    with pytest.raises(GenpriorError, match="int64"):
        p.decode({"x": torch.zeros(2, 1, 8, 8)}, torch.tensor([0.0, 1.0]))


def test_save_and_load_by_path(tmp_path):
    p = pixel_prior()
    p.save_pretrained(tmp_path / "px")
    q = load_prior(str(tmp_path / "px"))
    assert isinstance(q, PixelPrior) and q.describe() == p.describe()


def test_unknown_prior_lists_the_registry():
    with pytest.raises(UnknownNameError) as e:
        load_prior("not-a-prior")
    for name in list_priors():
        assert name in str(e.value)


def test_uncached_hub_id_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.time()
    with pytest.raises(GenpriorError, match="hf download someone/some-prior"):
        load_prior("someone/some-prior")
    assert time.time() - t0 < 5


def test_registered_prior_with_missing_folder(tmp_path, monkeypatch):
    (tmp_path / "registry.json").write_text(json.dumps({"priors": {"gone": {"path": "gone", "family": "pixel"}}}))
    monkeypatch.setenv("GENPRIOR_PRETRAINED", str(tmp_path))
    with pytest.raises(GenpriorError, match="missing; train it"):
        load_prior("gone")


def _fake_hub_snapshot(cache, repo_id, write):
    """The Hugging Face cache layout: models--owner--name/{refs/main, snapshots/<hash>/...}."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    write(snapshot)


def test_cached_hub_id_loads_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

    from genprior.priors.diffusion import DiffusionPrior, VAEPrior

    cache = tmp_path / "hub"
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=8, layers_per_block=1)
    _fake_hub_snapshot(cache, "someone/tiny-vae", lambda d: vae.save_pretrained(d))
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=4)

    def pipeline(d):
        unet.save_pretrained(d / "unet")
        DDIMScheduler(clip_sample=False).save_pretrained(d / "scheduler")
        (d / "model_index.json").write_text(json.dumps({"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"],
                                                        "scheduler": ["diffusers", "DDIMScheduler"]}))

    _fake_hub_snapshot(cache, "someone/tiny-ddpm", pipeline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = load_prior("someone/tiny-vae")
    assert isinstance(p, VAEPrior) and p.latent_spaces == ("z",)
    q = load_prior("someone/tiny-ddpm")
    assert isinstance(q, DiffusionPrior) and q.num_classes == 3
    labels = torch.tensor([0, 2])
    assert q.decode(q.init_latents(labels, space="x_T"), labels).shape == (2, 1, 8, 8)


def test_pickle_needs_the_opt_in(tmp_path):
    import pickle

    (tmp_path / "net.pkl").write_bytes(pickle.dumps({"G_ema": None}))
    with pytest.raises(GenpriorError, match="allow_pickle"):
        load_prior(str(tmp_path / "net.pkl"))
    assert not (tmp_path / "net-genprior").exists()


def test_not_a_prior_folder(tmp_path):
    with pytest.raises(GenpriorError, match="not a prior folder"):
        load_prior(str(tmp_path))
