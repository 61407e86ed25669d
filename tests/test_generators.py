"""The generator loop and DiM on a tiny StyleGAN: the method's terms work, a run resumes
bit-identically, the trained generator is a prior, bad input fails first."""
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from genprior.data import load_dataset
from genprior.errors import GenpriorError
from genprior.generate import generate_set
from genprior.generators.train import GeneratorConfig, GeneratorTrainer, train_generator
from genprior.priors.load import load_prior
from genprior.priors.stylegan import StyleGAN2Generator, StyleGANPrior

DIGITS_MEAN, DIGITS_STD = (0.3060,), (0.3252,)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    g = StyleGAN2Generator(z_dim=8, c_dim=10, w_dim=8, mapping_layers=2, img_resolution=32, img_channels=1,
                           channel_base=64, channel_max=8, output_resolution=28)
    prior = StyleGANPrior(g, mean=DIGITS_MEAN, std=DIGITS_STD, mean_samples=32)
    prior.card["dataset"] = "digits"
    return prior.save_pretrained(root / "stylegan")


def config(prior_dir, **overrides):
    options = {"pool": ["convnet"], "pool_net_options": {"width": 8}, "pool_steps": 1, "d_warmup": 2, "dsa": False}
    options.update(overrides.pop("method_options", {}))
    base = GeneratorConfig(dataset="digits", prior=str(prior_dir), method="dim", method_options=options, iterations=4,
                           batch_size=8, log_every=1, checkpoint_every=2, ema=0.5)
    return replace(base, **overrides)


def test_run_exports_a_generator_that_loads_as_a_prior(tmp_path, tiny_prior):
    out = train_generator(config(tiny_prior), tmp_path / "run", progress=False)
    prior = load_prior(str(out))
    card = prior.describe()
    assert card["method"] == "dim" and card["base_prior"] == str(tiny_prior) and card["trained_iterations"] == 4
    assert (tmp_path / "run" / "samples.png").is_file()
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in logged] == [0, 1, 2, 3] and {"match", "adversarial", "d_loss"} <= set(logged[0])
    # the exported weights are the EMA, which moved away from the base prior
    base = load_file(str(tiny_prior / "generator" / "diffusion_pytorch_model.safetensors"))
    trained = load_file(str(out / "generator" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    # a trained generator draws sets of any IPC like any prior, and a round trip is exact
    digits = load_dataset("digits", "train")
    a = generate_set(prior, digits, 2, seed=1)
    b = generate_set(load_prior(str(out)), digits, 2, seed=1)
    assert torch.equal(a.images, b.images)


def test_resume_is_bit_identical(tmp_path, tiny_prior):
    cfg = config(tiny_prior)
    train_generator(cfg, tmp_path / "straight", progress=False)
    train_generator(replace(cfg, iterations=2), tmp_path / "split", progress=False)
    train_generator(cfg, tmp_path / "split", resume="latest", progress=False)
    for name in ("straight", "split"):
        assert (tmp_path / name / "checkpoints" / "step-000004").is_dir()
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-000004" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-000004" / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("module.discriminator.") for k in a) and any(k.startswith("optimizer.pool.") for k in a)
    losses = [[json.loads(l)["loss"] for l in (tmp_path / n / "log.jsonl").read_text().splitlines()]
              for n in ("straight", "split")]
    assert losses[0] == losses[1]


def test_logit_matching_pulls_generated_logits_to_real_ones(tmp_path, tiny_prior):
    """Matching alone (no adversary, a fixed pool network): on a fixed batch, the trained
    generator's log-softmax outputs are closer to the real ones' than the base generator's."""
    cfg = config(tiny_prior, iterations=15, lr=0.01, ema=0.0,
                 method_options={"adversarial_weight": 0.0, "match_weight": 1.0, "pool_steps": 0,
                                 "pool_reset_every": 1000, "d_warmup": 0})
    trainer = GeneratorTrainer(cfg, tmp_path / "run", progress=False)
    trainer.run()
    method = trainer.method

    def fixed_batch_loss(prior):
        method.prior = prior
        gen = torch.Generator().manual_seed(123)
        labels = torch.arange(10).repeat(4)
        real = method.real_batch(labels, gen)
        with torch.no_grad():
            fake = method.generate(trainer, labels, gen)
            return float(method.match_loss(real, fake, labels, gen))

    trained = fixed_batch_loss(trainer.prior)
    base = load_prior(str(tiny_prior))
    base.set_normalization(trainer.real.mean, trainer.real.std)
    before = fixed_batch_loss(base)
    assert trained < 0.8 * before


def test_bad_input_fails_first(tmp_path, tiny_prior):
    with pytest.raises(GenpriorError, match="unknown generator method"):
        GeneratorTrainer(config(tiny_prior, method="nope"), tmp_path / "a")
    with pytest.raises(GenpriorError, match="pixel prior has no weights"):
        GeneratorTrainer(config(tiny_prior, prior="pixel"), tmp_path / "b")
    with pytest.raises(GenpriorError, match="takes no option"):
        GeneratorTrainer(config(tiny_prior, method_options={"lambda": 1}), tmp_path / "c")
    with pytest.raises(GenpriorError, match="unknown network"):
        GeneratorTrainer(config(tiny_prior, method_options={"pool": ["resnet99"]}), tmp_path / "d")
    with pytest.raises(GenpriorError, match="iterations must be"):
        GeneratorTrainer(config(tiny_prior, iterations=0), tmp_path / "e")
    with pytest.raises(GenpriorError, match="ema must be"):
        GeneratorTrainer(config(tiny_prior, ema=1.0), tmp_path / "f")
    if not torch.cuda.is_available():
        with pytest.raises(GenpriorError, match="fp16"):
            GeneratorTrainer(config(tiny_prior, mixed_precision="fp16"), tmp_path / "g")
    for path in "abcdefg":
        assert not (tmp_path / path).exists()


def test_a_latent_runs_checkpoint_is_refused(tmp_path, tiny_prior):
    from genprior.distill import DistillConfig, distill

    distill(DistillConfig(dataset="digits", prior="pixel", loss="dm", ipc=1, iterations=2, batch_real=8,
                          loss_options={"net_options": {"width": 8}, "dsa": False}), tmp_path / "run", progress=False)
    with pytest.raises(GenpriorError, match="made by a 'latent' run, not a 'generator' one"):
        train_generator(config(tiny_prior), tmp_path / "run", resume="latest", progress=False)
