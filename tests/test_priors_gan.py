import json
import pickle

import pytest
import torch

from genprior.errors import GenpriorError
from genprior.priors.convert import convert_stylegan_pkl
from genprior.priors.dcgan import DCGANDiscriminator, DCGANGenerator, DCGANPrior
from genprior.priors.stylegan import StyleGAN2Discriminator, StyleGAN2Generator, StyleGANPrior

NUM_CLASSES = 3


def tiny_stylegan(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(z_dim=8, c_dim=NUM_CLASSES, w_dim=8, mapping_layers=2, img_resolution=16, img_channels=1,
                  channel_base=64, channel_max=8, output_resolution=14)
    config.update(overrides)
    generator = StyleGAN2Generator(**config)
    with torch.no_grad():  # fresh noise strengths are zero; make the noise buffers matter
        for name, p in generator.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    return generator


def tiny_stylegan_prior(**kwargs):
    kwargs.setdefault("mean_samples", 64)
    return StyleGANPrior(tiny_stylegan(), mean=(0.1307,), std=(0.3081,), **kwargs)


def tiny_dcgan_prior(seed=0):
    torch.manual_seed(seed)
    generator = DCGANGenerator(z_dim=8, num_classes=NUM_CLASSES, embed_dim=4, channels=(8, 4), img_channels=1,
                               output_resolution=14)
    with torch.no_grad():  # non-trivial running statistics, as after training
        for m in generator.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return DCGANPrior(generator, mean=(0.1307,), std=(0.3081,))


LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0])


def latents_for(prior, space, seed=0):
    return prior.init_latents(LABELS, space, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make, loader", [(tiny_stylegan_prior, StyleGANPrior), (tiny_dcgan_prior, DCGANPrior)])
def test_round_trip_through_safetensors(tmp_path, make, loader):
    prior = make()
    prior.save_pretrained(tmp_path / "prior")
    assert (tmp_path / "prior" / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "prior").rglob("*.bin"))
    loaded = loader.from_pretrained(tmp_path / "prior")
    assert loaded.describe() == prior.describe()
    latents = latents_for(prior, prior.default_space)
    with torch.no_grad():
        assert torch.equal(loaded.decode(latents, LABELS), prior.decode(latents, LABELS))


def test_stylegan_loads_with_overrides_and_rejects_unknown(tmp_path):
    tiny_stylegan_prior().save_pretrained(tmp_path)
    assert StyleGANPrior.from_pretrained(tmp_path, feature_block=4).feature_block == 4
    with pytest.raises(GenpriorError, match="unknown StyleGAN prior option"):
        StyleGANPrior.from_pretrained(tmp_path, feature_layer=4)
    with pytest.raises(GenpriorError, match="holds a 'stylegan' prior, not a 'dcgan' one"):
        DCGANPrior.from_pretrained(tmp_path)


@pytest.mark.parametrize("space", ["z", "w", "w+", "F"])
def test_gradients_reach_every_stylegan_space(space):
    prior = tiny_stylegan_prior(feature_block=8)
    latents = {k: v.requires_grad_(True) for k, v in latents_for(prior, space).items()}
    prior.decode(latents, LABELS).square().mean().backward()
    assert set(latents) == set(prior.latent_shapes()[space])
    for key, value in latents.items():
        assert value.grad is not None and torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0, key


def test_gradients_reach_dcgan_z():
    prior = tiny_dcgan_prior()
    z = latents_for(prior, "z")["z"].requires_grad_(True)
    prior.decode({"z": z}, LABELS).square().mean().backward()
    assert torch.isfinite(z.grad).all() and (z.grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("make, space", [(tiny_stylegan_prior, "w+"), (tiny_stylegan_prior, "F"),
                                         (tiny_stylegan_prior, "z"), (tiny_dcgan_prior, "z")])
def test_chunked_decode_matches_full_decode(make, space):
    prior = make()
    grads = []
    outs = []
    for chunk in (None, 3):
        latents = {k: v.requires_grad_(True) for k, v in latents_for(prior, space).items()}
        out = prior.decode(latents, LABELS, chunk_size=chunk)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append({k: v.grad for k, v in latents.items()})
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], atol=1e-5, rtol=1e-5)


def test_decoding_is_deterministic_and_noise_modes_differ():
    prior = tiny_stylegan_prior()
    latents = latents_for(prior, "w+")
    with torch.no_grad():
        first, second = prior.decode(latents, LABELS), prior.decode(latents, LABELS)
        prior.noise_mode = "none"
        without = prior.decode(latents, LABELS)
    assert torch.equal(first, second)
    assert not torch.allclose(first, without)


@pytest.mark.parametrize("make, space", [(tiny_stylegan_prior, "w+"), (tiny_dcgan_prior, "z")])
def test_inversion_beats_random_latents(make, space):
    prior = make()
    with torch.no_grad():
        targets = prior.decode(latents_for(prior, space, seed=1), LABELS)
        random_mse = (prior.decode(latents_for(prior, space, seed=2), LABELS) - targets).square().mean()
    inverted = prior.init_latents(LABELS, space, method="invert", images=targets, steps=20, lr=0.05)
    with torch.no_grad():
        inverted_mse = (prior.decode(inverted, LABELS) - targets).square().mean()
    assert inverted_mse < 0.5 * random_mse
    # in batches of 2 (memory bounded by the batch) the same latents come out
    batched = prior.init_latents(LABELS, space, method="invert", images=targets, steps=20, lr=0.05, batch_size=2)
    for key in inverted:
        torch.testing.assert_close(batched[key], inverted[key], atol=1e-5, rtol=1e-4)


def test_class_mean_init_is_per_class_and_deterministic():
    prior = tiny_stylegan_prior()
    labels = torch.tensor([0, 1, 2, 0])
    w = prior.init_latents(labels, "w", method="mean")["w"]
    assert torch.equal(w[0], w[3])
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    again = tiny_stylegan_prior().init_latents(labels, "w+", method="mean")["w+"]
    assert torch.equal(again[:, 0], w) and torch.equal(again[:, -1], w)
    z = prior.init_latents(labels, "z", method="mean")["z"]
    assert torch.equal(z[0], z[3]) and not torch.equal(z[0], z[1])
    f = prior.init_latents(labels, "F", method="mean")
    assert torch.equal(f["F"][0], f["F"][3]) and not torch.equal(f["F"][0], f["F"][1])


def test_dcgan_mean_init_is_the_mode_and_decodes_per_class():
    prior = tiny_dcgan_prior()
    z = prior.init_latents(LABELS[:3], method="mean")
    assert torch.equal(z["z"], torch.zeros(3, 8))
    with torch.no_grad():
        images = prior.decode(z, LABELS[:3])
    assert not torch.allclose(images[0], images[1])


def test_truncation_pulls_random_latents_to_the_average():
    prior = tiny_stylegan_prior(truncation_psi=0.0)
    w = latents_for(prior, "w")["w"]
    torch.testing.assert_close(w, prior.generator.mapping.w_avg.expand_as(w))


def ada_init_kwargs(generator):
    """What ADA's persistence records; ``activation`` as its legacy.py writes it for TF networks."""
    c = generator.config
    return {
        "z_dim": c.z_dim, "c_dim": c.c_dim, "w_dim": c.w_dim, "img_resolution": c.img_resolution,
        "img_channels": c.img_channels,
        "mapping_kwargs": {"num_layers": c.mapping_layers, "activation": "lrelu"},
        "synthesis_kwargs": {"channel_base": c.channel_base, "channel_max": c.channel_max,
                             "num_fp16_res": 4, "conv_clamp": None, "architecture": "skip", "activation": "lrelu"},
    }


@pytest.mark.parametrize("with_init_kwargs", [True, False])
def test_convert_pickle_needs_opt_in_and_decodes_the_same(tmp_path, with_init_kwargs):
    source = tiny_stylegan(seed=3, output_resolution=None)
    with torch.no_grad():
        source.mapping.w_avg.normal_()
    if with_init_kwargs:
        source.init_kwargs = ada_init_kwargs(source)
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"G": None, "D": None, "G_ema": source}))
    with pytest.raises(GenpriorError, match="allow_pickle=True") as info:
        convert_stylegan_pkl(path, tmp_path / "prior")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "prior").exists()
    out = convert_stylegan_pkl(path, tmp_path / "prior", allow_pickle=True, feature_block=4, truncation_psi=0.7)
    prior = StyleGANPrior.from_pretrained(out)
    assert prior.feature_block == 4 and prior.resolution == 16
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        expected = prior.from_m11(source(z, labels, truncation_psi=0.7))
        torch.testing.assert_close(prior.decode({"z": z}, labels), expected, atol=1e-6, rtol=0)


def test_convert_refuses_a_truncated_pickle_in_one_line(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"G_ema": 1})[:5])
    with pytest.raises(GenpriorError, match="cannot be unpickled .*download it again"):
        convert_stylegan_pkl(path, tmp_path / "prior", allow_pickle=True)
    path.write_bytes(b"")
    with pytest.raises(GenpriorError, match="cannot be unpickled"):
        convert_stylegan_pkl(path, tmp_path / "prior", allow_pickle=True)


def test_convert_rejects_unsupported_generators(tmp_path):
    source = tiny_stylegan()
    source.init_kwargs = dict(ada_init_kwargs(source), synthesis_kwargs={"architecture": "resnet"})
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"G_ema": source}))
    with pytest.raises(GenpriorError, match="'skip'"):
        convert_stylegan_pkl(path, tmp_path / "out", allow_pickle=True)
    source.init_kwargs = dict(ada_init_kwargs(source), mapping_kwargs={"num_layers": 2, "activation": "relu"})
    path.write_bytes(pickle.dumps({"G_ema": source}))
    with pytest.raises(GenpriorError, match="mapping_kwargs.activation"):
        convert_stylegan_pkl(path, tmp_path / "out", allow_pickle=True)
    source.init_kwargs = dict(ada_init_kwargs(source), mapping_kwargs={"num_layers": 3})
    path.write_bytes(pickle.dumps({"G_ema": source}))
    with pytest.raises(GenpriorError, match="missing"):
        convert_stylegan_pkl(path, tmp_path / "out", allow_pickle=True)
    path.write_bytes(pickle.dumps({"D": torch.nn.Linear(2, 2)}))
    with pytest.raises(GenpriorError, match="G_ema"):
        convert_stylegan_pkl(path, tmp_path / "out", allow_pickle=True)
    path.write_bytes(b"cgenprior_missing_torch_utils.persistence\n_reconstruct_persistent_obj\n.")
    with pytest.raises(GenpriorError, match="torch_utils and dnnlib importable"):
        convert_stylegan_pkl(path, tmp_path / "out", allow_pickle=True)


def test_bad_inputs_fail_with_clear_errors():
    prior = tiny_stylegan_prior()
    with pytest.raises(GenpriorError, match="no latent space 'x'.*z, w, w\\+, F"):
        prior.init_latents(LABELS, "x")
    latents = latents_for(prior, "w+")
    with pytest.raises(GenpriorError, match="7 images but 2 labels"):
        prior.decode(latents, LABELS[:2])
    with pytest.raises(GenpriorError, match=r"labels must lie in \[0, 3\)"):
        prior.decode(latents, torch.full((7,), 3))
    with pytest.raises(GenpriorError, match="name no space"):
        prior.decode({"w++": latents["w+"]}, LABELS)
    with pytest.raises(GenpriorError, match=r"must be \(N, 6, 8\)"):
        prior.decode({"w+": latents["w+"][:, :3]}, LABELS)
    with pytest.raises(GenpriorError, match="feature_block must be one of 4, 8"):
        tiny_stylegan_prior(feature_block=16)
    dcgan = tiny_dcgan_prior()
    with pytest.raises(GenpriorError, match="no latent space 'w\\+'"):
        dcgan.init_latents(LABELS, "w+")
    with pytest.raises(GenpriorError, match=r"labels must lie in \[0, 3\)"):
        dcgan.decode({"z": torch.zeros(2, 8)}, torch.tensor([0, -1]))


def test_discriminators_take_prior_sized_images():
    images = torch.randn(6, 1, 14, 14)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    d = StyleGAN2Discriminator(c_dim=NUM_CLASSES, img_resolution=16, channel_base=64, channel_max=8)
    assert d(images, labels).shape == (6,)
    d = DCGANDiscriminator(num_classes=NUM_CLASSES, channels=(4, 8))
    assert d(images, labels).shape == (6,)


@pytest.mark.parametrize("space", ["w+", "F", "z"])
def test_two_pass_backward_equals_full_backward(space):
    prior = tiny_stylegan_prior()
    latents = {k: v.clone().requires_grad_(True) for k, v in latents_for(prior, space).items()}
    weight = torch.randn(len(LABELS), 1, 14, 14, generator=torch.Generator().manual_seed(1))
    (prior.decode(latents, LABELS) * weight).sum().backward()
    full = {k: v.grad.clone() for k, v in latents.items()}
    for v in latents.values():
        v.grad = None
    with torch.no_grad():
        images = prior.decode(latents, LABELS, chunk_size=3)
    images.requires_grad_(True)
    (images * weight).sum().backward()
    prior.backward_chunked(latents, LABELS, images.grad, chunk_size=3)
    for k in latents:
        assert torch.allclose(latents[k].grad, full[k], atol=1e-5), k


@pytest.mark.parametrize("make", [tiny_stylegan_prior, tiny_dcgan_prior])
def test_corrupted_or_partial_prior_folders_fail_with_one_line(tmp_path, make):
    from genprior.priors.load import load_prior

    make().save_pretrained(tmp_path / "ok")
    assert load_prior(str(tmp_path / "ok")).num_classes == NUM_CLASSES
    weights = next((tmp_path / "ok" / "generator").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
    with pytest.raises(GenpriorError, match="cannot load .*re-download") as err:
        load_prior(str(tmp_path / "ok"))
    assert "\n" not in str(err.value)
    make().save_pretrained(tmp_path / "card")
    (tmp_path / "card" / "prior.json").write_text('{"family": "sty')
    with pytest.raises(GenpriorError, match="prior.json cannot be read"):
        load_prior(str(tmp_path / "card"))
    make().save_pretrained(tmp_path / "pickled")  # weights only as a pickle: never loaded
    st = next((tmp_path / "pickled" / "generator").glob("*.safetensors"))
    torch.save({}, st.with_suffix(".bin"))
    st.unlink()
    with pytest.raises(GenpriorError, match="cannot load"):
        load_prior(str(tmp_path / "pickled"))
    make().save_pretrained(tmp_path / "old")  # a card without an entry the family needs
    card = json.loads((tmp_path / "old" / "prior.json").read_text())
    del card["mean"]
    (tmp_path / "old" / "prior.json").write_text(json.dumps(card))
    with pytest.raises(GenpriorError, match="lacks the entry 'mean'"):
        load_prior(str(tmp_path / "old"))


def test_a_prior_option_of_the_wrong_type_fails_with_one_line(tmp_path):
    from genprior.priors.load import load_prior

    tiny_stylegan_prior().save_pretrained(tmp_path / "p")
    with pytest.raises(GenpriorError, match="truncation_psi.*numbers for numeric options"):
        load_prior(str(tmp_path / "p"), truncation_psi="abc")


def test_shipped_priors_name_their_dataset():
    from genprior.priors.load import load_prior

    assert load_prior("mnist5k-stylegan").card["dataset"] == "mnist5k"
