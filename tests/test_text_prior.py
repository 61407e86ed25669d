"""The text-conditioned latent diffusion prior, on a tiny random pipeline in Stable Diffusion's
layout that the test builds offline (its tokenizer's files written here)."""
import json

import pytest
import torch

from genprior.errors import GenpriorError
from genprior.priors.load import load_prior

def _tokenizer(folder, context=16):
    from genprior.priors.text_diffusion import char_tokenizer

    tokenizer = char_tokenizer(folder, context)
    return tokenizer, len(tokenizer.get_vocab())


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    tokenizer, vocab = _tokenizer(root / "raw-tokenizer")
    tokenizer.save_pretrained(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         norm_num_groups=4, attention_head_dim=2).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=4, sample_size=8, layers_per_block=1).save_pretrained(root / "vae")
    DDIMScheduler(clip_sample=False).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}))
    return root


def _prior(folder, **kw):
    return load_prior(str(folder), dataset_classes=["zero", "one", "two"], num_inference_steps=3, **kw)


def test_a_stable_diffusion_folder_loads_with_prompts_from_the_class_names(sd_folder):
    from genprior.priors.text_diffusion import TextDiffusionPrior

    prior = _prior(sd_folder)
    assert isinstance(prior, TextDiffusionPrior) and prior.num_classes == 3
    assert prior.card["prompts"] == ["a photo of a zero", "a photo of a one", "a photo of a two"]
    assert prior.latent_spaces == ("x_T", "x_T+class") and prior.resolution == 8
    labels = torch.tensor([0, 2])
    gen = torch.Generator().manual_seed(0)
    plain = prior.init_latents(labels, space="x_T", generator=gen)
    both = {"x_T": plain["x_T"], "class_emb": prior.class_table()[labels].clone()}
    # the class's encoded prompt, as a latent, decodes exactly like the label
    assert torch.allclose(prior.decode(plain, labels), prior.decode(both, labels), atol=1e-6)
    other = _prior(sd_folder, template="a {name} digit")
    assert not torch.allclose(prior.decode(plain, labels), other.decode(plain, labels))  # the prompt conditions


def test_gradients_reach_the_noise_and_the_prompt_embedding(sd_folder):
    prior = _prior(sd_folder)
    labels = torch.tensor([1])
    latents = prior.init_latents(labels, space="x_T+class", generator=torch.Generator().manual_seed(0))
    latents = {k: v.requires_grad_(True) for k, v in latents.items()}
    prior.decode(latents, labels).square().sum().backward()
    assert latents["x_T"].grad.abs().sum() > 0 and latents["class_emb"].grad.abs().sum() > 0


def test_saved_and_loaded_back_it_decodes_the_same(sd_folder, tmp_path):
    prior = _prior(sd_folder, template="digit {name}", negative_prompt="blurry")
    prior.save_pretrained(tmp_path / "p")
    back = load_prior(str(tmp_path / "p"))
    assert back.card["template"] == "digit {name}" and back.card["negative_prompt"] == "blurry"
    labels = torch.tensor([0, 1, 2])
    latents = prior.init_latents(labels, space="x_T+class", generator=torch.Generator().manual_seed(1))
    assert torch.equal(prior.decode(latents, labels), back.decode(latents, labels))
    # under classifier-free guidance the negative prompt is what the samples are pushed away from
    x_T = {"x_T": latents["x_T"]}
    guided = _prior(sd_folder, guidance_scale=3.0, negative_prompt="blurry").decode(x_T, labels)
    assert not torch.allclose(guided, _prior(sd_folder, guidance_scale=3.0).decode(x_T, labels), atol=1e-4)
    assert not torch.allclose(guided, _prior(sd_folder, negative_prompt="blurry").decode(x_T, labels), atol=1e-4)


def test_bad_input_is_one_line(sd_folder, tmp_path):
    import shutil

    def refused(message, call):
        with pytest.raises(GenpriorError, match=message) as err:
            call()
        assert "\n" not in str(err.value)

    refused("must hold \\{name\\}", lambda: _prior(sd_folder, template="a photo of a digit"))
    refused("longer than the text encoder's context of 16",
            lambda: load_prior(str(sd_folder), dataset_classes=["a very long class name indeed"], num_inference_steps=3))
    refused("needs the class names", lambda: load_prior(str(sd_folder)))
    for part in ("tokenizer", "text_encoder"):
        broken = tmp_path / f"no-{part}"
        shutil.copytree(sd_folder, broken)
        shutil.rmtree(broken / part)
        refused(f"has no {part}/", lambda: load_prior(str(broken), dataset_classes=["zero"]))
    # a tokenizer that allows more tokens than the encoder has positions: the encoder's limit holds
    roomy = tmp_path / "roomy"
    shutil.copytree(sd_folder, roomy)
    shutil.rmtree(roomy / "tokenizer")
    _tokenizer(tmp_path / "raw", context=64)[0].save_pretrained(roomy / "tokenizer")
    refused("longer than the text encoder's context of 16",
            lambda: load_prior(str(roomy), dataset_classes=["a very long class name indeed"], num_inference_steps=3))


def test_a_few_distillation_steps_through_the_prompt_embeddings(sd_folder, tmp_path):
    from genprior.distill import DistillConfig, LatentDistiller

    cfg = DistillConfig(dataset="digits", prior=str(sd_folder), space="x_T+class", loss="dm", ipc=1, iterations=2,
                        init="invert", lr=0.01, prior_options={"num_inference_steps": 2},
                        loss_options={"net_options": {"width": 8}}, batch_real=16, resize=True)
    d = LatentDistiller(cfg, tmp_path / "run", progress=False)
    synset = d.run()
    start = d.prior.class_table()[torch.arange(10)]
    assert synset.images.shape == (10, 1, 28, 28) and torch.isfinite(synset.images).all()
    assert not torch.allclose(d.latents["class_emb"].detach(), start)  # the prompts' embeddings moved
    assert d.prior.card["prompts"][3] == "a photo of a 3"  # digits' class names made the prompts


def test_freezing_x_T_moves_only_the_prompt_embeddings_and_survives_a_resume(sd_folder, tmp_path):
    """The prompt-embedding space on its own: ``--freeze x_T`` keeps the inverted noise bit-identical
    through the run and through a checkpoint round trip, while the prompts' embeddings move."""
    from genprior.distill import DistillConfig, LatentDistiller

    cfg = DistillConfig(dataset="digits", prior=str(sd_folder), space="x_T+class", loss="dm", ipc=1, iterations=2,
                        init="invert", lr=0.01, prior_options={"num_inference_steps": 2}, frozen_latents=["x_T"],
                        loss_options={"net_options": {"width": 8}}, batch_real=16, resize=True, checkpoint_every=1)
    start = LatentDistiller(cfg, tmp_path / "start", progress=False)
    start.initialize()
    x_T, emb = start.latents["x_T"].detach().clone(), start.latents["class_emb"].detach().clone()
    assert not start.latents["x_T"].requires_grad and len(start.opt.param_groups) == 1
    d = LatentDistiller(cfg, tmp_path / "run", progress=False)
    d.run()
    assert torch.equal(d.latents["x_T"], x_T) and not torch.allclose(d.latents["class_emb"].detach(), emb)
    again = LatentDistiller(cfg, tmp_path / "run", progress=False)
    again.run(resume=str(tmp_path / "run" / "checkpoints" / "step-000001"))
    assert torch.equal(again.latents["x_T"], x_T) and not again.latents["x_T"].requires_grad
    assert torch.equal(again.latents["class_emb"], d.latents["class_emb"])  # the resumed run ends where the first did


@pytest.mark.parametrize("change, message", [
    (dict(frozen_latents=["z"]), "does not have"),
    (dict(frozen_latents=["x_T", "class_emb"]), "nothing to optimise"),
    (dict(frozen_latents=["x_T"], latent_lrs={"x_T": 1.0}), "frozen and given a learning rate"),
])
def test_bad_freezes_are_one_line(sd_folder, tmp_path, change, message):
    from genprior.distill import DistillConfig, LatentDistiller

    cfg = DistillConfig(dataset="digits", prior=str(sd_folder), space="x_T+class", ipc=1, iterations=1,
                        prior_options={"num_inference_steps": 2}, resize=True, **change)
    with pytest.raises(GenpriorError, match=message) as err:
        LatentDistiller(cfg, tmp_path / "run", progress=False).run()
    assert "\n" not in str(err.value)


def test_d4m_runs_through_the_text_prior_with_vae_prototypes(sd_folder):
    """D4M as its paper runs it: k-means prototypes in the VAE latent space, img2img with each
    class's prompt."""
    import torch.nn.functional as F

    from genprior.data import load_dataset
    from genprior.sampling import synthesize

    real = load_dataset("digits", "train")
    keep = real.labels < 3
    images = F.interpolate(real.images[keep], size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    small = type(real)(**{**real.__dict__, "images": images, "labels": real.labels[keep],
                          "class_names": ["zero", "one", "two"]})
    from genprior.sampling import guided_sample
    from genprior.sampling.methods import decode_x0
    from genprior.sampling.modes import class_modes
    from genprior.sampling.sampler import noise_seeds

    prior = _prior(sd_folder)
    prior.set_normalization(small.mean, small.std)
    s = synthesize("d4m", prior, small, ipc=2, seed=0, options={"strength": 0.5}, progress=False)
    assert s.images.shape == (6, 1, 8, 8) and torch.isfinite(s.images).all()
    assert s.config["prior_card"]["family"] == "text_diffusion"
    # the prototypes are k-means centres of the VAE's latents (4 x 4 x 4 here), and strength 0 decodes them
    protos = class_modes(prior, small, 2, seed=0)
    assert protos.shape == (6,) + tuple(prior.latent_shape) == (6, 4, 4, 4)
    still = synthesize("d4m", prior, small, ipc=2, seed=0, options={"strength": 0.0}, progress=False)
    assert torch.allclose(still.images, decode_x0(prior, protos, 8), atol=1e-5)
    # img2img from each prototype with its own class's prompt: another class's prompt makes other images
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    seeds = noise_seeds(0, labels, [0, 1] * 3)
    own = guided_sample(prior, labels, x0=protos, strength=0.5, noise_seeds=seeds)
    assert torch.allclose(s.images, own, atol=1e-5)
    assert not torch.allclose(own, guided_sample(prior, labels.roll(2), x0=protos, strength=0.5, noise_seeds=seeds),
                              atol=1e-4)


def test_the_shipped_text_prior_loads_like_a_stable_diffusion_folder():
    """``mnist5k-text`` is a Stable Diffusion folder (with genprior's ``prior.json`` card naming its
    class names and sampler): it loads as the tiny pipeline's class, at its measured default
    sampler, with prompts from its class names, and decodes seeded digits that differ by prompt."""
    from genprior.priors.text_diffusion import TextDiffusionPrior

    prior = load_prior("mnist5k-text")
    assert isinstance(prior, TextDiffusionPrior)
    assert (prior.num_classes, prior.resolution, prior.latent_spaces) == (10, 28, ("x_T", "x_T+class"))
    assert prior.card["guidance_scale"] == 1.25 and prior.card["prompts"][3] == "a handwritten digit 3"
    latents = prior.init_latents(torch.tensor([3, 3]), space="x_T", method="random",
                                 generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = prior.decode(latents, torch.tensor([3, 7]))
        b = prior.decode(latents, torch.tensor([3, 7]))
    assert a.shape == (2, 1, 28, 28) and torch.equal(a, b) and a.std() > 0.1
    assert (a[0] - a[1]).abs().mean() > 0.05  # the same noise, another prompt: another digit


def test_a_stable_diffusion_repository_downloads_only_what_loads_and_loads_by_its_id(sd_folder, tmp_path,
                                                                                       monkeypatch):
    """The hub's file list of a Stable Diffusion repository: genprior fetches each part's configs,
    tokenizer files and safetensors weights, not the root single-file checkpoints, the fp16 and
    non-EMA variants or the safety checker; those files, in the hub cache, load by the id offline."""
    import shutil

    import huggingface_hub.constants
    from huggingface_hub.utils import filter_repo_objects

    from genprior.priors.load import HUB_PATTERNS
    from genprior.priors.text_diffusion import TextDiffusionPrior

    listing = ["model_index.json", "README.md", "v1-5-pruned.safetensors", "v1-5-pruned-emaonly.safetensors",
               "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
               "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.non_ema.safetensors",
               "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
               "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors", "tokenizer/vocab.json",
               "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json",
               "safety_checker/config.json", "safety_checker/model.safetensors"]
    fetched = set(filter_repo_objects(listing, allow_patterns=HUB_PATTERNS))
    weights = {f for f in fetched if f.endswith(".safetensors")}
    assert weights == {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                       "text_encoder/model.safetensors"}
    assert {"tokenizer/vocab.json", "tokenizer/merges.txt", "model_index.json"} <= fetched
    # the tiny pipeline's files, as a download would lay them in the cache, load by id offline
    cache = tmp_path / "cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--someone--tiny-sd"
    snapshot = repo / "snapshots" / ("2" * 40)
    files = [p.relative_to(sd_folder).as_posix() for p in sd_folder.rglob("*") if p.is_file()]
    for name in filter_repo_objects(files, allow_patterns=HUB_PATTERNS):
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sd_folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("2" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_id, local = _prior("someone/tiny-sd"), _prior(sd_folder)
    assert isinstance(by_id, TextDiffusionPrior)
    labels = torch.tensor([0, 2])
    latents = local.init_latents(labels, space="x_T", generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_id.decode(latents, labels), local.decode(latents, labels))
