"""The generator loop and DiM on a tiny StyleGAN: the method's terms work, a run resumes
bit-identically, the trained generator is a prior, bad input fails first."""
import json
import sys
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
from conftest import accelerate_launch

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
    trainer = GeneratorTrainer(config(tiny_prior), tmp_path / "run", progress=False)
    out = trainer.run()
    prior = load_prior(str(out))
    # the folder holds the trainer's EMA weights, exactly, and loads back to them
    names = {id(p): n for n, p in trainer.prior.named_parameters()}
    loaded = dict(prior.named_parameters())
    assert len(trainer.trainable) > 0
    for p, shadow in zip(trainer.trainable, trainer.ema):
        assert torch.equal(loaded[names[id(p)]].detach(), shadow.detach().to(loaded[names[id(p)]].dtype))
    assert any(not torch.equal(p.detach(), s.detach()) for p, s in zip(trainer.trainable, trainer.ema))  # EMA, not live
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
    import shutil

    cfg = config(tiny_prior)
    train_generator(cfg, tmp_path / "straight", progress=False)
    train_generator(replace(cfg, iterations=2), tmp_path / "split", progress=False)
    train_generator(cfg, tmp_path / "split", resume="latest", progress=False)
    # as a kill leaves a run: iterations logged past its last checkpoint, a torn line, no export
    train_generator(cfg, tmp_path / "killed", progress=False)
    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "step-000004")
    shutil.rmtree(tmp_path / "killed" / "generator")
    with open(tmp_path / "killed" / "log.jsonl", "a") as log:
        log.write('{"iteration": 4, "lo')
    train_generator(cfg, tmp_path / "killed", resume="latest", progress=False)
    killed = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in killed] == [0, 1, 2, 3]
    for name in ("straight", "split", "killed"):
        assert (tmp_path / name / "checkpoints" / "step-000004").is_dir()
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-000004" / "state.safetensors"))
    for other in ("split", "killed"):
        b = load_file(str(tmp_path / other / "checkpoints" / "step-000004" / "state.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("module.discriminator.") for k in a) and any(k.startswith("optimizer.pool.") for k in a)
    losses = [[json.loads(l)["loss"] for l in (tmp_path / n / "log.jsonl").read_text().splitlines()]
              for n in ("straight", "split", "killed")]
    assert losses[0] == losses[1] == losses[2]
    # a checkpoint that parses but holds another state: one line naming the fix
    step = tmp_path / "killed" / "checkpoints" / "step-000002"
    tensors = load_file(str(step / "state.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if not k.startswith("ema.")}, str(step / "state.safetensors"))
    with pytest.raises(GenpriorError, match="does not fit this run.*delete it to resume from the one before") as err:
        train_generator(cfg, tmp_path / "killed", resume=str(step), progress=False)
    assert "\n" not in str(err.value)


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
    with pytest.raises(GenpriorError, match="keep_checkpoints must be an integer of at least 0"):
        GeneratorTrainer(config(tiny_prior, keep_checkpoints=1.5), tmp_path / "e")
    with pytest.raises(GenpriorError, match="ema must be"):
        GeneratorTrainer(config(tiny_prior, ema=1.0), tmp_path / "f")
    if not torch.cuda.is_available():
        with pytest.raises(GenpriorError, match="fp16"):
            GeneratorTrainer(config(tiny_prior, mixed_precision="fp16"), tmp_path / "g")
    with pytest.raises(GenpriorError, match="finite numbers, got lr=inf"):
        GeneratorTrainer(config(tiny_prior, lr=float("inf")), tmp_path / "h")
    with pytest.raises(GenpriorError, match=r"method_options\.match_weight=nan"):
        GeneratorTrainer(config(tiny_prior, method_options={"match_weight": float("nan")}), tmp_path / "i")
    for path in "abcdefghi":
        assert not (tmp_path / path).exists()


def test_a_latent_runs_checkpoint_is_refused(tmp_path, tiny_prior):
    from genprior.distill import DistillConfig, distill

    distill(DistillConfig(dataset="digits", prior="pixel", loss="dm", ipc=1, iterations=2, batch_real=8,
                          loss_options={"net_options": {"width": 8}, "dsa": False}), tmp_path / "run", progress=False)
    with pytest.raises(GenpriorError, match="made by a 'latent' run, not a 'generator' one"):
        train_generator(config(tiny_prior), tmp_path / "run", resume="latest", progress=False)


# ---- Minimax Diffusion ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel, UNet2DModel

    from genprior.priors.diffusion import DiffusionPrior, LatentDiffusionPrior

    root = tmp_path_factory.mktemp("diffusion")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=11)
    pixel = DiffusionPrior.from_components(unet, DDIMScheduler(clip_sample=False), mean=DIGITS_MEAN, std=DIGITS_STD,
                                           num_inference_steps=2)
    pixel.card["dataset"] = "digits"
    pixel.save_pretrained(root / "pixel")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=28, layers_per_block=1)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                num_layers=2, sample_size=14, patch_size=2, num_embeds_ada_norm=10)
    LatentDiffusionPrior.from_components(dit, vae, DDIMScheduler(clip_sample=False), mean=DIGITS_MEAN, std=DIGITS_STD,
                                         num_inference_steps=2).save_pretrained(root / "latent")
    return root


def minimax_config(prior_dir, **overrides):
    options = {"memory_size": 4}
    options.update(overrides.pop("method_options", {}))
    base = GeneratorConfig(dataset="digits", prior=str(prior_dir), method="minimax", method_options=options,
                           iterations=3, batch_size=6, log_every=1, checkpoint_every=2, ema=0.0, lr=0.01)
    return replace(base, **overrides)


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_minimax_trains_only_difffit_parameters_and_folds_its_scales(tmp_path, tiny_diffusion, kind):
    cfg = minimax_config(tiny_diffusion / kind)
    trainer = GeneratorTrainer(cfg, tmp_path / "run", progress=False)
    before = {n: p.detach().clone() for n, p in trainer.prior.named_parameters()}
    assert trainer.method.scaled and trainer.frozen_names
    out = trainer.run()
    after = dict(trainer.prior.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in trainer.frozen_names)  # frozen: bit-identical
    trained = [n for n in before if n not in trainer.frozen_names]
    assert any(not torch.equal(before[n], after[n]) for n in trained)
    assert any("bias" in n for n in trained) and not any(n.startswith("vae.") for n in trained)
    assert any(not torch.equal(g, torch.ones_like(g)) for g in trainer.method.extra_parameters())
    # the exported folder (scales folded into the weights, no hooks) decodes as the trained model does
    exported = load_prior(str(out))
    labels = torch.arange(3)
    latents = exported.init_latents(labels, space="x_T", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported.decode(latents, labels), trainer.prior.decode(latents, labels),
                                   rtol=1e-4, atol=1e-4)


def test_minimax_resume_is_bit_identical(tmp_path, tiny_diffusion):
    cfg = minimax_config(tiny_diffusion / "pixel", iterations=4)
    train_generator(cfg, tmp_path / "straight", progress=False)
    train_generator(replace(cfg, iterations=2), tmp_path / "split", progress=False)
    train_generator(cfg, tmp_path / "split", resume="latest", progress=False)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-000004" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-000004" / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("state.real.") for k in a) and any(k.startswith("state.generated.") for k in a)


def test_memories_follow_fifo_and_adaptive_eviction():
    from genprior.generators.minimax import ClassMemory

    fifo = ClassMemory(1, 3, "fifo")
    fifo.add(0, torch.eye(4))
    assert torch.equal(fifo[0], torch.eye(4)[1:])  # the oldest left
    adaptive = ClassMemory(1, 3, "adaptive")
    near = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]])
    adaptive.add(0, near)
    # the entry most similar, in sum, to the others is the near-duplicate [0.9, 0.1, 0]
    assert torch.equal(adaptive[0], near[[0, 2, 3]])
    # with a centre, eviction compares entries less the centre (the similarity the centred terms
    # compute): the memory equals the uncentred one of the shifted rows, shifted back; here the raw
    # cosine would evict another entry ([1, -1, 0] centred; [2, -1, -2] raw)
    centre = torch.tensor([2.0, 0.0, 0.0])
    rows = torch.tensor([[2.0, -1, -2], [4, 1, -1], [1, -2, 1], [1, -1, 0]])
    raw, centred, shifted = (ClassMemory(1, 3, "adaptive", c) for c in (None, centre, None))
    raw.add(0, rows)
    centred.add(0, rows)
    shifted.add(0, rows - centre)
    assert torch.equal(centred[0], shifted[0] + centre) and torch.equal(centred[0], rows[[1, 2, 3]])
    assert torch.equal(raw[0], rows[[0, 1, 2]])


def test_minimax_terms_pull_to_real_and_push_from_generated(tmp_path, tiny_diffusion):
    """Against the same run with λ = 0, one training step on a batch (through the method and the
    trainer's optimiser), measured on that batch against the memories it was computed with:
    with λ_r the minimum similarity to the real memory rises, with λ_d the maximum similarity
    to the generated memory falls. (Across batches a few steps show little: x̂₀ at a random
    timestep is mostly noise for an untrained tiny model.)"""
    def after_one_step(lambda_r, lambda_d, name):
        cfg = minimax_config(tiny_diffusion / "pixel", batch_size=20, lr=0.03,
                             method_options={"lambda_r": lambda_r, "lambda_d": lambda_d, "memory_size": 8})
        trainer = GeneratorTrainer(cfg, tmp_path / name, progress=False)
        method = trainer.method
        method.step(trainer, 0, torch.Generator().manual_seed(0))  # fills both memories (terms wait)
        saved = {k: v.clone() for k, v in method.state_tensors().items()}

        def measure():
            gen = torch.Generator().manual_seed(1)
            labels = method.sample_labels(20, gen)
            real = method.real_batch(labels, gen)
            with torch.no_grad():
                _, x0_hat, _ = trainer.prior.training_loss(real, labels, gen, uncond_prob=0.0)
                return method.minimax_terms(x0_hat, labels)[1]

        before = measure()
        method.opts["uncond_prob"] = 0.0
        method.step(trainer, 1, torch.Generator().manual_seed(1))  # the measured batch, once
        method.load_state_tensors(saved)  # measure against the memories the step saw
        return before, measure()

    off_before, off = after_one_step(0.0, 0.0, "off")
    pull_before, pull = after_one_step(100.0, 0.0, "pull")
    push_before, push = after_one_step(0.0, 100.0, "push")
    assert off_before == pull_before == push_before  # one start
    assert pull["min_real_similarity"] > off["min_real_similarity"] + 0.02
    assert push["max_generated_similarity"] < off["max_generated_similarity"] - 0.01


# ---- DCGM -------------------------------------------------------------------------------

def test_dcgm_terms_measure_what_they_say():
    from genprior.generators.dcgm import inter_class_similarity, intra_class_similarity

    labels = torch.tensor([0, 0, 1, 1])
    same = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])  # each class one point, classes apart
    spread = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0], [0, 1.0]])  # each class spread, same centres
    assert float(intra_class_similarity(same, labels)) == pytest.approx(1.0)
    assert float(intra_class_similarity(spread, labels)) == pytest.approx(0.0)
    assert float(inter_class_similarity(same, labels)) == pytest.approx(0.0)
    assert float(inter_class_similarity(spread, labels)) == pytest.approx(1.0)


def test_dcgm_diversity_term_lowers_intra_class_similarity(tmp_path, tiny_prior):
    """Against the same run without it: with only the intra-class term (no adversary, no
    feature matching), the generated images of a class grow less alike on a fixed batch."""
    def trained(intra_weight, name):
        cfg = config(tiny_prior, method="dcgm", iterations=10, lr=0.01, ema=0.0,
                     method_options={"adversarial_weight": 0.0, "feature_weight": 0.0, "inter_weight": 0.0,
                                     "intra_weight": intra_weight, "pool_steps": 0, "pool_reset_every": 1000,
                                     "d_warmup": 0})
        trainer = GeneratorTrainer(cfg, tmp_path / name, progress=False)
        trainer.run()
        return trainer

    def intra_on_fixed_batch(trainer, net):
        from genprior.generators.dcgm import intra_class_similarity

        gen = torch.Generator().manual_seed(5)
        labels = torch.arange(10).repeat(4)
        with torch.no_grad():
            fake = trainer.method.generate(trainer, labels, gen)
            return float(intra_class_similarity(net.embed(fake), labels))

    on, off = trained(1.0, "on"), trained(0.0, "off")
    net = on.method.pool_net  # the same untrained network in both runs (same seed, never trained)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), off.method.pool_net.state_dict().values()))
    assert intra_on_fixed_batch(on, net) < intra_on_fixed_batch(off, net) - 0.01


def test_two_processes_train_one_generator(tmp_path, tiny_prior):
    """Under ``accelerate launch`` each process draws its own batches and the gradients are averaged
    (as DDP); every checkpoint first checks that both processes hold the same generator (a run
    whose processes diverge stops with an error), so the run finishes with one generator."""
    import os
    import subprocess

    args = ["train", "--dataset", "digits", "--prior", str(tiny_prior), "--method", "dim", "--iterations", "2",
            "--batch-size", "4", "--method-option", "pool=convnet", "--method-option", 'pool_net_options={"width": 8}',
            "--method-option", "pool_steps=1", "--method-option", "d_warmup=1", "--log-every", "1", "--no-evaluate"]
    cmd = accelerate_launch(2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd + args + ["--output-dir", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    logs = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in logs] == [2, 2]
    assert load_prior(str(tmp_path / "two" / "generator")).describe()["command"].startswith("genprior train")
    one = tmp_path / "one"
    assert subprocess.run([sys.executable, "-m", "genprior"] + args + ["--output-dir", str(one)], env=env,
                          capture_output=True, text=True, timeout=300).returncode == 0
    # the second process's batches reached the generator: one process alone ends elsewhere
    two_w = load_file(str(tmp_path / "two" / "generator" / "generator" / "diffusion_pytorch_model.safetensors"))
    one_w = load_file(str(one / "generator" / "generator" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(two_w[k], one_w[k]) for k in two_w)


def test_corrupted_checkpoint_and_another_methods_run_are_refused(tmp_path, tiny_prior):
    cfg = config(tiny_prior, iterations=2)
    train_generator(cfg, tmp_path / "run", progress=False)
    with pytest.raises(GenpriorError, match="other settings .*method"):
        train_generator(replace(cfg, method="dcgm", method_options={}, iterations=3), tmp_path / "run", resume="latest",
                        progress=False)
    (tmp_path / "run" / "checkpoints" / "step-000002" / "state.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(GenpriorError, match="cannot be read"):
        train_generator(replace(cfg, iterations=3), tmp_path / "run", resume="latest", progress=False)


def test_cli_train_resumes_with_resume_latest(tmp_path, tiny_prior):
    """The recorded command line differs on resume (it adds --resume): it is not a setting."""
    from genprior.cli import main

    args = ["train", "--dataset", "digits", "--prior", str(tiny_prior), "--method", "dim", "--batch-size", "4",
            "--method-option", "pool=convnet", "--method-option", 'pool_net_options={"width": 8}',
            "--method-option", "pool_steps=1", "--method-option", "d_warmup=1", "--checkpoint-every", "1",
            "--no-evaluate", "--output-dir", str(tmp_path / "run")]
    assert main(args + ["--iterations", "1"]) == 0
    assert main(args + ["--iterations", "2", "--resume", "latest"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step-000002").is_dir()
    assert main(args + ["--iterations", "3", "--resume", "latest", "--method-option", "pool_steps=2"]) == 2


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_minimax_centre_measures_similarity_between_centred_embeddings(tmp_path, tiny_diffusion, kind):
    """With ``centre`` the terms compare x̂₀ − mean real x₀ with memory entries less the same mean:
    the logged similarities equal a direct computation, and differ from the raw ones."""
    import torch.nn.functional as F

    from genprior.sampling.modes import encode_class

    trainer = GeneratorTrainer(minimax_config(tiny_diffusion / kind, method_options={"centre": True}),
                               tmp_path / "c", progress=False)
    method = trainer.method
    gen = torch.Generator().manual_seed(0)
    expected_centre = torch.cat([encode_class(trainer.prior, method.real, c, gen, max_images=4)
                                 for c in range(method.real.num_classes)]).flatten(1).mean(0)
    assert torch.allclose(method.centre, expected_centre)
    method.step(trainer, 0, torch.Generator().manual_seed(0))  # fills both memories
    dim = method.real_memory[int(method.real.labels[0])].shape[1]
    x0_hat, labels = torch.randn(4, dim, generator=gen), torch.tensor([0, 0, 1, 1])
    logs = method.minimax_terms(x0_hat, labels)[1]

    def cos(a, b):
        return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T

    emb, centre = x0_hat.flatten(1) - method.centre, method.centre
    present = [c for c in (0, 1) if method.gen_memory[c].numel()]
    lows = [cos(emb[labels == c], method.real_memory[c] - centre).min().item() for c in present]
    highs = [cos(emb[labels == c], method.gen_memory[c] - centre).max().item() for c in present]
    assert logs["min_real_similarity"] == pytest.approx(sum(lows) / len(lows), abs=1e-5)
    assert logs["max_generated_similarity"] == pytest.approx(sum(highs) / len(highs), abs=1e-5)
    method.centre = None
    raw = method.minimax_terms(x0_hat, labels)[1]
    assert raw["min_real_similarity"] != pytest.approx(logs["min_real_similarity"], abs=1e-3)


def test_minimax_options_are_checked(tmp_path, tiny_diffusion):
    for options, message in (({"scale_factors": "no"}, "scale_factors must be true or false"),
                             ({"centre": 1}, "centre must be true or false"),
                             ({"uncond_prob": "high"}, "uncond_prob must be a finite number"),
                             ({"memory": "lru"}, "memory must be one of fifo, adaptive")):
        with pytest.raises(GenpriorError, match=message):
            GeneratorTrainer(minimax_config(tiny_diffusion / "pixel", method_options=options), tmp_path / "x")


def test_a_latent_method_runs_on_a_trained_generator(tmp_path, tiny_prior):
    """GLaD-DM (latents of the trained generator, w+ space) on a DiM generator: the generator
    folder is a prior like any other."""
    from genprior.distill import DistillConfig, LatentDistiller, distill, load_latents

    generator = train_generator(config(tiny_prior, iterations=1), tmp_path / "dim", progress=False)
    cfg = DistillConfig(dataset="digits", prior=str(generator), space="w+", loss="dm", ipc=1, iterations=3,
                        init="random", optimizer="adam", lr=0.1, batch_real=8, log_every=1,
                        loss_options={"net_options": {"width": 8}, "dsa": False})
    synset = distill(cfg, tmp_path / "glad", progress=False)
    losses = [json.loads(l)["loss"] for l in (tmp_path / "glad" / "log.jsonl").read_text().splitlines()]
    assert synset.ipc == 1 and synset.prior == str(generator) and len(losses) == 3
    assert torch.isfinite(synset.images).all()
    start = LatentDistiller(cfg, tmp_path / "start")  # the same seeded start, before any step
    start.init_latents()
    final, _, _ = load_latents(tmp_path / "glad")
    assert set(final) == set(start.latents)
    assert not torch.allclose(final["w+"], start.latents["w+"].detach())  # the steps moved the latents
