"""The training scripts of the shipped priors: the shared loop resumes exactly, and a latent
DiT prior trained on the VAE loads as a genprior prior and as a diffusers DiT pipeline."""
import shutil

import pytest
import torch
from safetensors.torch import load_file

from genprior.pretrained import train_diffusion, train_vae
from genprior.priors.load import load_prior


def _vae(tmp_path, name, steps, resume=False):
    args = train_vae.parse_args(["--output_dir", str(tmp_path / name), "--checkpoint_dir", str(tmp_path / "ck"),
                                 "--max_steps", str(steps), "--batch_size", "8", "--checkpointing_steps", "2",
                                 "--measure_images", "64",  # the whole splits' encoding is the cost
                                 *(["--resume_from_checkpoint", "latest"] if resume else [])])
    train_vae.main(args)
    return load_file(str(tmp_path / name / "diffusion_pytorch_model.safetensors"))


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    straight = _vae(tmp_path / "a", "vae", 4)
    _vae(tmp_path / "b", "half", 2)  # leaves checkpoint-2
    resumed = _vae(tmp_path / "b", "vae", 4, resume=True)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    _vae(root, "vae", 2)
    return root / "vae"


def test_latent_dit_prior_loads_as_a_prior_and_as_a_dit_pipeline(tmp_path, vae_dir):
    train_diffusion.main(train_diffusion.parse_args([
        "--arch", "dit", "--vae", str(vae_dir), "--output_dir", str(tmp_path / "dit"),
        "--checkpoint_dir", str(tmp_path / "dit-ck"), "--max_steps", "2", "--batch_size", "8",
        "--num_inference_steps", "2"]))
    prior = load_prior(str(tmp_path / "dit"))
    assert type(prior).__name__ == "LatentDiffusionPrior" and prior.resolution == 28 and prior.num_classes == 10
    shutil.copytree(tmp_path / "dit", tmp_path / "pipe")
    (tmp_path / "pipe" / "prior.json").unlink()  # what a hub DiT snapshot has: model_index.json and the parts
    pipe = load_prior(str(tmp_path / "pipe"), num_inference_steps=2,
                      guidance_scale=prior.card["guidance_scale"])  # the card's sampler
    labels = torch.tensor([0, 9])
    x_T = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(0))
    prior.configure(num_inference_steps=2)
    a = prior.decode({"x_T": x_T}, labels)
    b = pipe.decode({"x_T": x_T}, labels)
    assert a.shape == (2, 1, 28, 28) and torch.allclose(prior.to_m11(a), pipe.to_m11(b), atol=1e-5)
    with pytest.raises(SystemExit):
        train_diffusion.parse_args(["--arch", "dit"])


def test_text_prior_has_stable_diffusions_layout_and_its_own_tokenizer(tmp_path, vae_dir):
    from genprior.priors.text_diffusion import TextDiffusionPrior

    train_diffusion.main(train_diffusion.parse_args([
        "--arch", "text", "--vae", str(vae_dir), "--output_dir", str(tmp_path / "text"),
        "--checkpoint_dir", str(tmp_path / "text-ck"), "--max_steps", "2", "--batch_size", "8",
        "--num_inference_steps", "2"]))
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert (tmp_path / "text" / part).exists()
    prior = load_prior(str(tmp_path / "text"))
    assert isinstance(prior, TextDiffusionPrior) and prior.card["prompts"][7] == "a handwritten digit 7"
    images = prior.decode(prior.init_latents(torch.tensor([3]), generator=torch.Generator().manual_seed(0)),
                          torch.tensor([3]))
    assert images.shape == (1, 1, 28, 28) and torch.isfinite(images).all()
