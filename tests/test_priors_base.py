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
