"""The guided sampler: DDIM as the prior decodes, pluggable guidance terms, img2img, modes."""
import pytest
import torch

from genprior.errors import GenpriorError, UnknownNameError
from genprior.sampling import GUIDANCE, GuidanceTerm, guided_sample
from genprior.sampling.mode import ModeGuidance
from genprior.sampling.modes import class_modes, kmeans
from genprior.sampling.sampler import make_terms


@pytest.fixture(scope="module")
def prior():
    from diffusers import DDIMScheduler, UNet2DModel

    from genprior.priors.diffusion import DiffusionPrior

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=4)
    return DiffusionPrior(unet, DDIMScheduler(clip_sample=False), num_inference_steps=5)


def test_unguided_ddim_is_the_priors_own_decoding(prior):
    labels = torch.tensor([0, 1, 2])
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = guided_sample(prior, labels, x_T)
    assert torch.allclose(ours, prior.decode({"x_T": x_T}, labels), atol=1e-5)


def test_mode_guidance_pulls_samples_towards_their_modes(prior):
    labels = torch.tensor([0, 1, 2, 0])
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    modes = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    free = guided_sample(prior, labels, x_T, return_x0=True)
    steered = guided_sample(prior, labels, x_T, terms=[ModeGuidance(modes, scale=0.05, stop=1.0)], return_x0=True)
    assert (steered - modes).norm() < (free - modes).norm()
    # outside its window a term does nothing
    idle = guided_sample(prior, labels, x_T, terms=[ModeGuidance(modes, scale=0.5, start=0.99, stop=1.0)],
                         return_x0=True)
    assert torch.allclose(idle, free)


def test_a_new_term_is_one_registered_class(prior):
    @GUIDANCE.register("test-brighter", summary="a test term: pushes x0 up")
    class Brighter(GuidanceTerm):
        def gradient(self, ctx):
            return torch.ones_like(ctx.x0_hat)

    labels = torch.tensor([1, 2])
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    brighter = guided_sample(prior, labels, x_T, terms=make_terms([{"name": "test-brighter"}]), return_x0=True)
    assert brighter.mean() > guided_sample(prior, labels, x_T, return_x0=True).mean()
    with pytest.raises(UnknownNameError, match="unknown guidance term 'nope'"):
        make_terms([{"name": "nope"}])


def test_img2img_and_ancestral_sampling(prior):
    labels = torch.tensor([0, 1])
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    # strength 0: nothing runs, the clean samples come back
    assert torch.allclose(guided_sample(prior, labels, x0=x0, strength=0.0, return_x0=True), x0)
    partial = guided_sample(prior, labels, x0=x0, strength=0.4, generator=torch.Generator().manual_seed(0),
                            return_x0=True)
    full = guided_sample(prior, labels, x0=x0, strength=1.0, generator=torch.Generator().manual_seed(0),
                         return_x0=True)
    assert (partial - x0).norm() < (full - x0).norm()  # a weaker strength stays nearer its start
    a = guided_sample(prior, labels, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = guided_sample(prior, labels, eta=1.0, generator=torch.Generator().manual_seed(5))
    c = guided_sample(prior, labels, eta=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)  # seeded
    with pytest.raises(GenpriorError, match="pass x0"):
        guided_sample(prior, labels, strength=0.5)
    with pytest.raises(GenpriorError, match="eta must lie"):
        guided_sample(prior, labels, eta=2.0)
    with pytest.raises(GenpriorError, match="guidance window"):
        ModeGuidance(x0, start=0.6, stop=0.5)


def test_kmeans_finds_separated_clusters_and_class_modes_have_the_models_shape(prior):
    gen = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(30, 2, generator=gen) * 0.1 + torch.tensor([5.0, 0.0]),
                        torch.randn(20, 2, generator=gen) * 0.1 - torch.tensor([5.0, 0.0])])
    centres = kmeans(points, 2, torch.Generator().manual_seed(1))
    assert torch.allclose(centres[0], torch.tensor([5.0, 0.0]), atol=0.1)  # the larger cluster first
    assert torch.allclose(centres[1], torch.tensor([-5.0, 0.0]), atol=0.1)
    from genprior.data import load_dataset

    real = load_dataset("digits", "train")
    sub = type(real)(**{**real.__dict__, "images": real.images[:200], "labels": real.labels[:200] % 3,
                        "class_names": real.class_names[:3]})
    modes = class_modes(prior, sub, per_class=2)
    assert modes.shape == (6, 1, 8, 8)


def _three_classes_at_8px():
    import torch.nn.functional as F

    from genprior.data import load_dataset

    real = load_dataset("digits", "train")
    keep = real.labels < 3
    images = F.interpolate(real.images[keep], size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    return type(real)(**{**real.__dict__, "images": images, "labels": real.labels[keep],
                         "class_names": real.class_names[:3]})


def test_synthesize_d4m_and_mgd3_make_sets(prior):
    from genprior.sampling import synthesize
    from genprior.sampling.modes import class_modes

    real = _three_classes_at_8px()
    s = synthesize("d4m", prior, real, ipc=2, seed=0, options={"strength": 0.0}, prior_ref="tiny", progress=False)
    assert s.images.shape == (6, 1, 8, 8) and s.labels.tolist() == [0, 0, 1, 1, 2, 2] and s.method == "d4m"
    # strength 0: the prototypes themselves, decoded
    protos = class_modes(prior, real, 2, seed=0)
    assert torch.allclose(s.images, prior.from_m11(prior._from_x0(protos)).float(), atol=1e-5)
    a = synthesize("mgd3", prior, real, ipc=2, seed=1, progress=False)
    b = synthesize("mgd3", prior, real, ipc=2, seed=1, progress=False)
    assert torch.equal(a.images, b.images) and a.config["options"] == {}
    with pytest.raises(GenpriorError, match="d4m takes no option lam; its options: strength"):
        synthesize("d4m", prior, real, ipc=1, options={"lam": 1}, progress=False)
    with pytest.raises(UnknownNameError, match="unknown training-free method"):
        synthesize("nope", prior, real, ipc=1, progress=False)


def test_synthesize_command_checks_before_work(tmp_path, capsys, monkeypatch):
    from genprior.cli import main

    monkeypatch.chdir(tmp_path)

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genprior: error:") and "\n" not in err
        return err

    assert "unknown training-free method 'nope'" in error(["synthesize", "nope", "mnist5k-diffusion", "o", "--ipc", "1"])
    assert "--ipc 1 or more" in error(["synthesize", "d4m", "mnist5k-diffusion", "o", "--ipc", "0"])
    assert "needs a diffusion prior" in error(["synthesize", "d4m", "mnist5k-stylegan", "o", "--ipc", "1"])
    assert not (tmp_path / "o").exists()
