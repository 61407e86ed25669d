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


@pytest.mark.parametrize("guidance, clip", [(1.0, False), (3.0, False), (3.0, True)])
def test_unguided_ddim_is_the_priors_own_decoding_bit_for_bit(prior, guidance, clip):
    from diffusers import DDIMScheduler

    from genprior.priors.diffusion import DiffusionPrior

    p = DiffusionPrior(prior.unet, DDIMScheduler(clip_sample=clip), num_inference_steps=5, guidance_scale=guidance)
    labels = torch.tensor([0, 1, 2])
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(guided_sample(p, labels, x_T), p.decode({"x_T": x_T}, labels))


def test_the_guided_sampler_refuses_what_would_be_ignored(prior):
    """A term whose window holds no step that runs, and LD3M's skip connection, would be dropped
    without a word: both are one-line errors."""
    from diffusers import DDIMScheduler

    from genprior.priors.diffusion import DiffusionPrior

    labels = torch.tensor([0, 1])
    modes = torch.zeros(2, 1, 8, 8)
    with pytest.raises(GenpriorError, match="window .*start 0.99, stop 1 .* holds none of the 5 steps") as err:
        guided_sample(prior, labels, terms=[ModeGuidance(modes, start=0.99, stop=1.0)])
    assert "\n" not in str(err.value)
    # IGD's 0.1-0.4 window at 2 steps (trajectory points 0 and 0.5) guides nothing
    with pytest.raises(GenpriorError, match="num_inference_steps"):
        guided_sample(DiffusionPrior(prior.unet, DDIMScheduler(), num_inference_steps=2), labels,
                      terms=[ModeGuidance(modes, start=0.1, stop=0.4)])
    skip = DiffusionPrior(prior.unet, DDIMScheduler(), num_inference_steps=5, skip_weight=1.0)
    with pytest.raises(GenpriorError, match="drop --prior-option skip_weight"):
        guided_sample(skip, labels)
    with pytest.raises(GenpriorError, match="not both: pass one"):  # x_T would be dropped for x0
        guided_sample(prior, labels, x_T=torch.randn(2, 1, 8, 8), x0=torch.randn(2, 1, 8, 8), strength=0.5)
    with pytest.raises(GenpriorError, match="0 <= start < stop <= 1"):
        ModeGuidance(modes, start="0.1")


def test_mode_guidance_pulls_samples_towards_their_modes(prior):
    labels = torch.tensor([0, 1, 2, 0])
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    modes = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    free = guided_sample(prior, labels, x_T, return_x0=True)
    steered = guided_sample(prior, labels, x_T, terms=[ModeGuidance(modes, scale=0.05, stop=1.0)], return_x0=True)
    assert (steered - modes).norm() < (free - modes).norm()
    # outside its window a term does nothing: guiding the last step only, the steps before are free
    seen = []

    class Spy(ModeGuidance):
        def gradient(self, ctx):
            seen.append(ctx.x_t.clone())
            return super().gradient(ctx)

    guided_sample(prior, labels, x_T, terms=[Spy(modes, scale=0.5, start=0.8, stop=1.0)], return_x0=True)
    assert len(seen) == 1
    timesteps, alphas, _ = prior._schedule()
    x = x_T.clone()
    model = prior._denoiser(labels, None)
    from genprior.priors.diffusion import _split_prediction

    for i in range(4):  # the free DDIM steps before the window, by hand
        t = int(timesteps[i])
        x0_hat, eps = _split_prediction(model(x, torch.full((4,), t), torch.zeros(4, dtype=torch.bool)), x,
                                        alphas[t], "epsilon")
        a_prev = alphas[int(timesteps[i + 1])]
        x = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    assert torch.allclose(seen[0], x, atol=1e-5)


def test_mode_guidance_in_its_reference_form_moves_the_sample(prior):
    """form="sample": the next sample moves by λ s_t (m − x̂₀), s_t = σ_t on ancestral steps, √ᾱ_t
    under DDIM; it pulls towards the modes on both samplers, and one step is that shift exactly."""
    labels = torch.tensor([0, 1, 2, 0])
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    modes = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    seeds = list(range(4))
    for eta in (0.0, 1.0):
        free = guided_sample(prior, labels, x_T, eta=eta, noise_seeds=seeds, return_x0=True)
        term = ModeGuidance(modes, scale=0.2, stop=1.0, form="sample")
        steered = guided_sample(prior, labels, x_T, terms=[term], eta=eta, noise_seeds=seeds, return_x0=True)
        assert (steered - modes).norm() < (free - modes).norm()
    # only the first step guided: the sample after it is the free one plus λ √ᾱ_t (m − x̂₀) (DDIM)
    from genprior.priors.diffusion import _split_prediction

    seen = {}

    class Spy(ModeGuidance):
        def shift(self, ctx, sigma):
            seen["moved"] = super().shift(ctx, sigma)
            return seen["moved"]

    one = Spy(modes, scale=0.2, start=0.0, stop=0.2, form="sample")  # 5 steps: step 0 only
    assert one.active(0, 5) and not one.active(1, 5)
    assert one.gradient(None) is None
    timesteps, alphas, _ = prior._schedule()
    x0_hat, _ = _split_prediction(prior._denoiser(labels, None)(x_T, torch.full((4,), int(timesteps[0])),
                                                                 torch.zeros(4, dtype=torch.bool)),
                                  x_T, alphas[int(timesteps[0])], prior.scheduler.config.prediction_type)
    guided_sample(prior, labels, x_T, terms=[one], return_x0=True)
    assert torch.allclose(seen["moved"], alphas[int(timesteps[0])].sqrt() * 0.2 * (modes - x0_hat), atol=1e-5)
    with pytest.raises(GenpriorError, match="form must be one of eps, sample"):
        ModeGuidance(modes, form="x0")


def test_a_diverging_guided_trajectory_is_refused_with_the_fix(prior):
    """A term steering so hard that each step overshoots the last ends in unbounded samples:
    the sampler refuses them, naming the term, rather than return them as images; the same
    term at a sane scale samples."""
    labels = torch.tensor([0, 1, 2, 0])
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    modes = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    wild = ModeGuidance(modes, scale=1e6, stop=1.0, form="sample")
    with pytest.raises(GenpriorError, match="diverged.*lower the guidance scale of ModeGuidance"):
        guided_sample(prior, labels, x_T, terms=[wild], eta=1.0, noise_seeds=list(range(4)))
    sane = guided_sample(prior, labels, x_T, terms=[ModeGuidance(modes, scale=0.2, stop=1.0, form="sample")],
                         eta=1.0, noise_seeds=list(range(4)), return_x0=True)
    assert torch.isfinite(sane).all() and sane.abs().max() < 1e3


def test_ancestral_steps_are_diffusers_ddim_steps_with_eta(prior):
    """eta 1, step by step as diffusers' DDIMScheduler.step(eta=1) with the same step noise; the
    last step adds none (its ᾱ_prev is 1)."""
    from diffusers import DDIMScheduler

    from genprior.sampling.sampler import _step_noise

    labels = torch.tensor([0, 1, 2])
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    seeds = [11, 12, 13]
    ours = guided_sample(prior, labels, x_T, eta=1.0, noise_seeds=seeds, return_x0=True)
    scheduler = DDIMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(5)
    model, keep = prior._denoiser(labels, None), torch.zeros(3, dtype=torch.bool)
    x = x_T.clone()
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            eps = model(x, torch.full((3,), int(t)), keep)
            noise = _step_noise(x.shape, i, None, seeds) if i + 1 < 5 else torch.zeros_like(x)
            x = scheduler.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
    assert torch.allclose(ours, x, atol=1e-5)
    assert not torch.allclose(ours, guided_sample(prior, labels, x_T, return_x0=True), atol=1e-3)


def test_the_guided_denoiser_is_classifier_free_guidance(prior):
    """What the sampler steps with, and what D3HR's guided inversion climbs with."""
    from genprior.sampling.sampler import guided_denoiser

    labels, x = torch.tensor([0, 1]), torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.full((2,), 500)
    raw = prior._denoiser(prior.check_labels(labels), None)
    cond, uncond = raw(x, t, torch.zeros(2, dtype=torch.bool)), raw(x, t, torch.ones(2, dtype=torch.bool))
    assert torch.equal(guided_denoiser(prior, labels)(x, t, None), cond)  # scale 1: the conditional model
    old = prior.card["guidance_scale"]
    try:
        prior.card["guidance_scale"] = 3.0
        assert torch.allclose(guided_denoiser(prior, labels)(x, t, None), uncond + 3.0 * (cond - uncond), atol=1e-5)
    finally:
        prior.card["guidance_scale"] = old


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
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    a = guided_sample(prior, labels, x_T, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = guided_sample(prior, labels, x_T, eta=1.0, generator=torch.Generator().manual_seed(5))
    c = guided_sample(prior, labels, x_T, eta=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)  # the step noise is seeded (x_T is the same)
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


# ---- IGD, D3HR, CaO2 and the snapshots of the networks they use -------------------------------
@pytest.fixture(scope="module")
def three_classes():
    """Digits 0-2 at 28 px, the smallest size genprior's networks take (the prior draws 8 px)."""
    from genprior.data import load_dataset

    real = load_dataset("digits", "train")
    keep = real.labels < 3
    return type(real)(**{**real.__dict__, "images": real.images[keep], "labels": real.labels[keep],
                         "class_names": real.class_names[:3]})


@pytest.fixture(scope="module")
def prior28(prior):
    """The tiny prior's UNet, its images resized to 28 px (as a user's --prior-option output_resolution=28)."""
    from diffusers import DDIMScheduler

    from genprior.priors.diffusion import DiffusionPrior

    return DiffusionPrior(prior.unet, DDIMScheduler(clip_sample=False), num_inference_steps=5, output_resolution=28)


@pytest.fixture(scope="module")
def surrogate(three_classes, tmp_path_factory):
    """A ConvNet trained 2 epochs on the 3-class data, with its start and both epochs saved."""
    from genprior.teacher import train_teacher

    return train_teacher(three_classes, tmp_path_factory.mktemp("surrogate") / "t", epochs=2, progress=False,
                         snapshots=[0, 1, 2])


def test_teacher_snapshots_are_the_weights_at_those_epochs(surrogate, three_classes):
    from genprior.teacher import load_teacher

    final, card = load_teacher(surrogate, three_classes)
    last, _ = load_teacher(surrogate, three_classes, epoch=2)
    start, _ = load_teacher(surrogate, three_classes, epoch=0)
    assert card["snapshots"] == [0, 1, 2]
    for a, b, c in zip(final.state_dict().values(), last.state_dict().values(), start.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(final.state_dict().values(), start.state_dict().values()))
    with pytest.raises(GenpriorError, match="no snapshot after epoch 5 .*--snapshots"):
        load_teacher(surrogate, three_classes, epoch=5)
    from genprior.teacher import train_teacher

    with pytest.raises(GenpriorError, match="between 0 \\(the start\\) and 2"):
        train_teacher(three_classes, surrogate.parent / "u", epochs=2, snapshots=[3], progress=False)


def test_influence_guidance_raises_the_influence_cosine_and_diversity_keeps_samples_apart(prior, three_classes,
                                                                                         surrogate):
    from genprior.sampling.influence import InfluenceGuidance, class_gradients, load_surrogate
    from genprior.sampling.methods import decode_x0

    prior.set_normalization(three_classes.mean, three_classes.std)
    nets = load_surrogate(surrogate, three_classes, [0, 2], torch.device("cpu"))
    grads = [class_gradients(net, three_classes) for net in nets]
    assert grads[0].shape == (3, sum(p.numel() for p in nets[0].parameters()))

    def to_images(x0):
        return decode_x0(prior, x0, three_classes.resolution)

    labels = torch.tensor([0, 1, 2, 0])
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    free = guided_sample(prior, labels, x_T, return_x0=True)
    term = InfluenceGuidance(nets, grads, to_images, scale=300.0, diversity=0.0, start=0.0, stop=1.0)
    guided = guided_sample(prior, labels, x_T, terms=[term], return_x0=True)
    with torch.enable_grad():
        assert term.influence(guided, labels).sum() > term.influence(free, labels).sum() + 0.1
    # the diversity term: samples end farther (in cosine) from the class's earlier samples
    far = InfluenceGuidance(nets, grads, to_images, scale=0.0, diversity=3000.0, start=0.0, stop=1.0)
    far.remember(free, labels)
    apart = guided_sample(prior, labels, x_T + 0.01, terms=[far], return_x0=True)
    near = guided_sample(prior, labels, x_T + 0.01, return_x0=True)
    assert far.closeness(apart, labels).sum() < far.closeness(near, labels).sum()
    far.remember(torch.randn(70, 1, 8, 8), torch.zeros(70, dtype=torch.long))
    assert far.memory[0].shape == (64, 64)  # first in, first out
    with pytest.raises(GenpriorError, match="not both 0"):
        InfluenceGuidance(nets, grads, to_images, scale=0.0, diversity=0.0)
    with pytest.raises(GenpriorError, match="form must be one of eps, sample"):
        InfluenceGuidance(nets, grads, to_images, form="x")


def test_influence_guidance_in_its_reference_form_takes_normalised_steps_on_the_sample(prior, three_classes,
                                                                                       surrogate):
    """``form=sample``, as IGD's code: the next sample moves by ρ_t k ∇G_I with RMS
    0.0015 · RMS(ε) · √(1 − ᾱ_t) · k whatever the raw gradient's size, and the diversity term
    pushes the noisy sample away from its nearest memory entry."""
    from genprior.sampling.influence import CODE_STEP, InfluenceGuidance, class_gradients, code_diversity, load_surrogate
    from genprior.sampling.methods import decode_x0
    from genprior.sampling.sampler import StepContext

    prior.set_normalization(three_classes.mean, three_classes.std)
    nets = load_surrogate(surrogate, three_classes, [0, 2], torch.device("cpu"))
    grads = [class_gradients(net, three_classes) for net in nets]

    def to_images(x0):
        return decode_x0(prior, x0, three_classes.resolution)

    labels = torch.tensor([0, 1, 2, 0])
    gen = torch.Generator().manual_seed(5)
    x_t, x0_hat = torch.randn(4, 1, 8, 8, generator=gen), 0.3 * torch.randn(4, 1, 8, 8, generator=gen)
    alpha = torch.tensor(0.6)
    ctx = StepContext(3, 10, 500, alpha, x_t, x0_hat, labels, torch.arange(4), 1.0)
    eps = (x_t - alpha.sqrt() * x0_hat) / (1 - alpha).sqrt()
    step = InfluenceGuidance(nets, grads, to_images, scale=5.0, diversity=0.0, form="sample")
    moved = step.shift(ctx, torch.tensor(0.1))
    assert step.gradient(ctx) is None
    rms = moved.flatten(1).pow(2).mean(1).sqrt()
    want = 5.0 * CODE_STEP * eps.flatten(1).pow(2).mean(1).sqrt() * (1 - alpha).sqrt()
    assert torch.allclose(rms, want, rtol=1e-4)
    # its direction is the influence's own: the cosine rises along it
    with torch.enable_grad():
        before = step.influence(x0_hat, labels)
        after = step.influence(x0_hat + moved / step.scale / CODE_STEP * 0.05, labels)
    assert (after > before).all()
    # over a whole trajectory, against the same seed without it
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    strong = InfluenceGuidance(nets, grads, to_images, scale=300.0, diversity=0.0, start=0.0, stop=1.0, form="sample")
    free = guided_sample(prior, labels, x_T, return_x0=True, eta=1.0, noise_seeds=list(range(4)))
    guided = guided_sample(prior, labels, x_T, terms=[strong], return_x0=True, eta=1.0, noise_seeds=list(range(4)))
    with torch.enable_grad():
        assert strong.influence(guided, labels).sum() > strong.influence(free, labels).sum()
    # the diversity term moves x_t down the cosine to its nearest memory entry
    far = InfluenceGuidance(nets, grads, to_images, scale=0.0, diversity=3.0, form="sample")
    far.remember(torch.randn(6, 1, 8, 8, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2]))
    pushed = x_t + far.shift(ctx, torch.tensor(0.1))
    assert (far.closeness(pushed, labels) < far.closeness(x_t, labels)).all()
    assert code_diversity(prior) == pytest.approx(120 * 64 / 4096)  # the code's γ per value, on 8 x 8 samples


def test_skewness_and_the_d3hr_group_is_the_best_scored_candidate():
    from genprior.sampling.d3hr import best_group, moment_score, skewness

    # scipy.stats.skew([0, 0, 3], bias=False) = sqrt(3)
    assert skewness(torch.tensor([[[0.0], [0.0], [3.0]]])).item() == pytest.approx(3 ** 0.5, rel=1e-5)
    assert skewness(torch.tensor([[[1.0], [2.0], [3.0]]])).item() == pytest.approx(0.0, abs=1e-6)
    mu, sigma = torch.randn(12), torch.rand(12) + 0.5
    group, score = best_group(mu, sigma, 4, 50, torch.Generator().manual_seed(3), batch=20)
    # the same draws, scored one by one: the group is the lowest-scoring candidate
    gen = torch.Generator().manual_seed(3)
    cands = torch.cat([mu + sigma * torch.randn((k, 4, 12), generator=gen) for k in (20, 20, 10)])
    scores = moment_score(cands, mu, sigma)
    assert score == pytest.approx(scores.min().item()) and torch.equal(group, cands[scores.argmin()])
    assert (scores > score).sum() == 49
    # the public code's skewness term: per member, over the dimensions, standardised by the group
    from genprior.sampling.d3hr import member_skewness

    g = torch.randn(2, 4, 12, generator=torch.Generator().manual_seed(5))
    z = (g[1, 2] - g[1].mean(0)) / g[1].std(0)
    assert member_skewness(g)[1, 2].item() == pytest.approx((z ** 3).sum().item() * 12 / (11 * 10), rel=1e-5)
    by_members = moment_score(cands, mu, sigma, skew_over="members")
    assert torch.equal(best_group(mu, sigma, 4, 50, torch.Generator().manual_seed(3), batch=20,
                                  skew_over="members")[0], cands[by_members.argmin()])
    # IPC 1: one member has no spread; the score stays finite and the best group is found
    for over in ("dimensions", "members"):
        single, single_score = best_group(mu, sigma, 1, 20, torch.Generator().manual_seed(3), skew_over=over)
        assert single.shape == (1, 12) and single_score == single_score  # not NaN
    with pytest.raises(GenpriorError, match="skew_over must be one of dimensions, members"):
        moment_score(cands, mu, sigma, skew_over="features")


def test_d3hr_and_igd_make_seeded_sets(prior28, three_classes, surrogate):
    prior = prior28
    from genprior.sampling import synthesize

    a = synthesize("d3hr", prior, three_classes, ipc=2, seed=0, options={"candidates": 200}, progress=False)
    b = synthesize("d3hr", prior, three_classes, ipc=2, seed=0, options={"candidates": 200}, progress=False)
    assert a.images.shape == (6, 1, 28, 28) and torch.equal(a.images, b.images) and torch.isfinite(a.images).all()
    # as the public code: inverted with the prior's guidance, skewness over the members
    opts = {"candidates": 200, "skew_weight": 1000.0}  # the skewness term decides which group wins
    dims = synthesize("d3hr", prior, three_classes, ipc=3, seed=0, options=opts, progress=False)
    ref = synthesize("d3hr", prior, three_classes, ipc=3, seed=0, progress=False,
                     options={**opts, "guided_inversion": True, "skew_over": "members"})
    assert torch.isfinite(ref.images).all() and not torch.allclose(ref.images, dims.images)
    # guided inversion alone changes the set once the prior guides (scale 1: the same model)
    old = prior.card["guidance_scale"]
    try:
        prior.card["guidance_scale"] = 3.0
        unguided = synthesize("d3hr", prior, three_classes, ipc=2, seed=0, options={"candidates": 50}, progress=False)
        guided = synthesize("d3hr", prior, three_classes, ipc=2, seed=0, progress=False,
                            options={"candidates": 50, "guided_inversion": True})
    finally:
        prior.card["guidance_scale"] = old
    assert not torch.allclose(guided.images, unguided.images, atol=1e-3)
    with pytest.raises(GenpriorError, match="guided_inversion is true or false"):
        synthesize("d3hr", prior, three_classes, ipc=1, options={"guided_inversion": "yes"}, progress=False)
    with pytest.raises(GenpriorError, match="at least one of the 5 steps"):
        synthesize("d3hr", prior, three_classes, ipc=1, options={"strength": 0.0}, progress=False)
    s = synthesize("igd", prior, three_classes, ipc=2, seed=0, options={"surrogate": str(surrogate), "snapshots": [0, 2],
                                                                       "grad_images": 20}, progress=False)
    assert s.images.shape == (6, 1, 28, 28) and torch.isfinite(s.images).all() and s.method == "igd"
    with pytest.raises(GenpriorError, match="genprior teacher --dataset digits --snapshots"):
        synthesize("igd", prior, three_classes, ipc=1, progress=False)
    with pytest.raises(GenpriorError, match=r"snapshots are epochs, e.g. --option snapshots=\[0,5,16,40\]"):
        synthesize("igd", prior, three_classes, ipc=1, options={"surrogate": str(surrogate), "snapshots": "0,2"},
                   progress=False)
    # options are refused before the surrogate's and the inversion's work (none is given here)
    for method, opts, match in (("igd", {"form": "x"}, "form must be one of"),
                                ("igd", {"grad_images": 0}, "grad_images is how many"),
                                ("igd", {"scale": "x"}, "option scale takes a finite number"),
                                ("igd", {"start": 0.5, "stop": 0.4}, "0 <= start < stop"),
                                ("mgd3", {"scale": float("nan")}, "scale λ must be a positive number"),
                                ("d4m", {"strength": 2}, "strength must lie in"),
                                ("cao2", {"refine_lr": -1.0}, "refine_lr must be positive"),
                                ("d3hr", {"candidates": 0}, "at least one candidate group"),
                                ("d3hr", {"max_images": 0}, "max_images is how many"),
                                ("d3hr", {"skew_weight": -0.1}, "skew_weight must be >= 0")):
        with pytest.raises(GenpriorError, match=match):
            synthesize(method, prior, three_classes, ipc=1, options=opts, progress=False)


def test_cao2_keeps_the_most_confident_right_samples(prior28, three_classes, surrogate):
    prior = prior28
    from genprior.sampling import synthesize
    from genprior.sampling.cao2 import overgenerate, refine, select_confident
    from genprior.sampling.methods import decode_x0
    from genprior.teacher import load_teacher

    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8], [0.95, 0.05]])
    labels = torch.zeros(5, dtype=torch.long)
    assert select_confident(probs, labels, 2).tolist() == [4, 0]  # right, most confident first
    assert select_confident(probs, labels, 4).tolist() == [4, 0, 2, 3]  # then the most confident wrong ones
    # through the method (no refinement): its images are the chosen candidates, decoded
    prior.set_normalization(three_classes.mean, three_classes.std)
    s = synthesize("cao2", prior, three_classes, ipc=2, seed=0, options={"classifier": str(surrogate), "ratio": 3,
                                                                        "refine_steps": 0}, progress=False)
    net, _ = load_teacher(surrogate, three_classes)
    for c in range(3):
        x0 = overgenerate(prior, c, 6, 0, 64)
        with torch.no_grad():
            p = net(decode_x0(prior, x0, 28)).softmax(dim=1)
        keep = select_confident(p, torch.full((6,), c), 2)
        assert torch.allclose(s.images[2 * c:2 * c + 2], decode_x0(prior, x0[keep], 28), atol=1e-6)
    # refinement lowers the denoising error at low noise
    x0 = overgenerate(prior, 1, 4, 0, 64)
    lab = torch.ones(4, dtype=torch.long)
    refined = refine(prior, x0, lab, steps=30, lr=0.05, generators=[torch.Generator().manual_seed(j) for j in range(4)])

    def error(z):
        from genprior.priors.diffusion import _split_prediction

        timesteps, alphas, _ = prior._schedule()
        t = torch.full((4,), sorted(timesteps)[1])
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        a = alphas[t].view(-1, 1, 1, 1).float()
        x_t = a.sqrt() * z + (1 - a).sqrt() * noise
        with torch.no_grad():
            out = prior._denoiser(lab, None)(x_t, t, torch.ones(4, dtype=torch.bool))
        return (_split_prediction(out, x_t, a, "epsilon")[1] - noise).pow(2).mean()

    assert error(refined) < error(x0)
    with pytest.raises(GenpriorError, match="classifier of the real data: make one with `genprior teacher"):
        synthesize("cao2", prior, three_classes, ipc=1, progress=False)
    with pytest.raises(GenpriorError, match="'null' or 'class'"):
        synthesize("cao2", prior, three_classes, ipc=1, options={"classifier": str(surrogate), "condition": "x"},
                   progress=False)


def test_guided_methods_start_from_generates_noise_and_igd_sets_are_nested(prior28, three_classes, surrogate):
    from genprior.generate import generate_set
    from genprior.sampling import synthesize
    from genprior.sampling.cao2 import overgenerate
    from genprior.sampling.methods import decode_x0

    plain = generate_set(prior28, three_classes, ipc=3, seed=4, chunk_size=4)
    # CaO2's candidate i of a class is generate's image i of that class
    x0 = overgenerate(prior28, 2, 3, 4, 2)
    assert torch.allclose(decode_x0(prior28, x0, 28), plain.images[6:9], atol=1e-5)
    # MGD3 starts from generate's noise: with a vanishing pull it is plain generation
    faint = synthesize("mgd3", prior28, three_classes, ipc=3, seed=4, chunk_size=4, options={"scale": 1e-9},
                       progress=False)
    assert torch.allclose(faint.images, plain.images, atol=1e-5)
    # IGD: IPC 1 is the first image per class of IPC 2
    opts = {"surrogate": str(surrogate), "snapshots": [2], "grad_images": 20, "scale": 50.0, "diversity": 50.0}
    one = synthesize("igd", prior28, three_classes, ipc=1, seed=4, options=opts, progress=False)
    two = synthesize("igd", prior28, three_classes, ipc=2, seed=4, options=opts, progress=False)
    assert torch.allclose(one.images, two.images[::2], atol=1e-5)


def test_ancestral_steps_draw_each_samples_noise_from_its_own_seed(prior, prior28, three_classes):
    """eta 1 (the references' DDPM sampling) with per-sample seeds: a sample's noise does not
    depend on the samples beside it, so a method's sets stay nested; eta 0 ignores the seeds."""
    from genprior.sampling import synthesize
    from genprior.sampling.sampler import noise_seeds

    labels = torch.tensor([0, 1, 2])
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    seeds = noise_seeds(0, labels, [0, 0, 0])
    all3 = guided_sample(prior, labels, x_T=x_T, eta=1.0, noise_seeds=seeds, return_x0=True)
    last = guided_sample(prior, labels[2:], x_T=x_T[2:], eta=1.0, noise_seeds=seeds[2:], return_x0=True)
    assert torch.allclose(all3[2:], last, atol=1e-5)
    ddim = guided_sample(prior, labels, x_T=x_T, return_x0=True)
    assert torch.equal(guided_sample(prior, labels, x_T=x_T, noise_seeds=seeds, return_x0=True), ddim)
    assert not torch.allclose(all3, ddim, atol=1e-3)
    with pytest.raises(GenpriorError, match="one per sample"):
        guided_sample(prior, labels, x_T=x_T, eta=1.0, noise_seeds=seeds[:2])
    with pytest.raises(GenpriorError, match="eta must lie"):
        guided_sample(prior, labels, eta=True)
    opts = {"eta": 1.0}
    # a method's set does not depend on how its samples are chunked (MGD3's modes depend on the IPC,
    # so its sets are not nested; IGD's are, the test above)
    two = synthesize("mgd3", prior28, three_classes, ipc=2, seed=4, chunk_size=4, options=opts, progress=False)
    chunked = synthesize("mgd3", prior28, three_classes, ipc=2, seed=4, chunk_size=1, options=opts, progress=False)
    plain = synthesize("mgd3", prior28, three_classes, ipc=2, seed=4, chunk_size=4, progress=False)
    assert torch.allclose(two.images, chunked.images, atol=1e-5)
    assert not torch.allclose(two.images, plain.images, atol=1e-3)


def test_d4m_and_cao2_sets_do_not_depend_on_chunking(prior28, three_classes, surrogate):
    """D4M's img2img noise and CaO2's refinement noise are each sample's own."""
    from genprior.sampling import synthesize

    prior28.set_normalization(three_classes.mean, three_classes.std)
    for method, opts in (("d4m", {"strength": 0.6}),
                         ("cao2", {"classifier": str(surrogate), "ratio": 2, "refine_steps": 3, "refine_lr": 0.05})):
        whole = synthesize(method, prior28, three_classes, ipc=2, seed=3, chunk_size=64, options=opts, progress=False)
        one_by_one = synthesize(method, prior28, three_classes, ipc=2, seed=3, chunk_size=1, options=opts,
                                progress=False)
        assert torch.allclose(whole.images, one_by_one.images, atol=1e-5), method


def test_generate_method_writes_a_training_free_set(tmp_path, capsys, monkeypatch):
    from genprior.cli import main
    from genprior.synset import load_synset

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "mnist5k-diffusion", "d4m", "--method", "d4m", "--ipc", "1",
                 "--option", "strength=0.0", "--prior-option", "num_inference_steps=2"]) == 0
    s = load_synset(tmp_path / "d4m")
    assert s.method == "d4m" and s.images.shape == (10, 1, 28, 28) and s.config["options"] == {"strength": 0.0}
    assert "by d4m" in capsys.readouterr().out
    assert main(["generate", "mnist5k-diffusion", "x", "--ipc", "1", "--option", "strength=0"]) == 2
    assert "pass --method too" in capsys.readouterr().err
    assert main(["generate", "mnist5k-diffusion", "x", "--ipc", "1", "--method", "d4m", "--space", "x_T"]) == 2
    assert "--space is for plain samples" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
