"""genprior generate: any IPC from a prior, seeded, nested, chunked; bad input fails first."""
import pytest
import torch

from genprior.cli import main
from genprior.data import load_dataset
from genprior.errors import GenpriorError
from genprior.generate import generate_set
from genprior.priors.load import load_prior
from genprior.synset import load_synset


@pytest.fixture(scope="module")
def train():
    return load_dataset("mnist5k", "train")


@pytest.fixture(scope="module")
def stylegan():
    return load_prior("mnist5k-stylegan")


def _per_class(images, ipc, k):
    """The first k images of every class of a set with ``ipc`` images per class."""
    return torch.cat([images[c * ipc:c * ipc + k] for c in range(images.shape[0] // ipc)])


def test_sets_are_seeded_and_nested(stylegan, train):
    small = generate_set(stylegan, train, 2, seed=3)
    big = generate_set(stylegan, train, 5, seed=3)
    again = generate_set(stylegan, train, 5, seed=3)
    other = generate_set(stylegan, train, 2, seed=4)
    assert torch.equal(big.images, again.images)
    # IPC 2 is the first two images per class of IPC 5, to float rounding of the batched decode
    torch.testing.assert_close(small.images, _per_class(big.images, 5, 2), rtol=0, atol=1e-5)
    assert small.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert (small.images - other.images).abs().amax() > 0.1
    assert small.method == "prior-samples" and small.config["generate"]["seed"] == 3


def test_chunking_does_not_change_the_set(stylegan, train):
    whole = generate_set(stylegan, train, 3, chunk_size=100)
    chunked = generate_set(stylegan, train, 3, chunk_size=7)
    torch.testing.assert_close(chunked.images, whole.images, rtol=0, atol=1e-5)


def test_bf16_decodes_close_to_fp32(stylegan, train):
    fp32 = generate_set(load_prior("mnist5k-stylegan"), train, 1)
    bf16 = generate_set(load_prior("mnist5k-stylegan"), train, 1, mixed_precision="bf16")
    assert bf16.images.dtype == torch.float32
    assert (bf16.images - fp32.images).abs().mean() < 0.1 * fp32.images.abs().mean()
    assert not torch.equal(bf16.images, fp32.images)  # bf16 did run


def test_bad_input_is_refused(stylegan, train):
    with pytest.raises(GenpriorError, match="IPC must be at least 1"):
        generate_set(stylegan, train, 0)
    with pytest.raises(GenpriorError, match="chunk size"):
        generate_set(stylegan, train, 1, chunk_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(GenpriorError, match="fp16"):
            generate_set(stylegan, train, 1, mixed_precision="fp16")
    digits = load_dataset("digits", "train")
    with pytest.raises(GenpriorError, match="resize"):
        generate_set(stylegan, digits.__class__(**{**digits.__dict__, "images": digits.images[:, :, :8, :8]}), 1)


def test_class_map_picks_the_prior_classes(stylegan, train):
    mapped = generate_set(stylegan, train, 2, class_map=[0] * 10)
    plain = generate_set(stylegan, train, 2)
    # every class now draws digit 0; class 0 itself is unchanged
    torch.testing.assert_close(mapped.images[:2], plain.images[:2], rtol=0, atol=1e-5)
    assert (mapped.images[2:4] - plain.images[2:4]).abs().amax() > 0.1
    with pytest.raises(GenpriorError, match="class_map needs 10 entries"):
        generate_set(stylegan, train, 1, class_map=[0, 1])


def test_cli_generate_and_its_old_name(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["generate", "mnist5k-stylegan", str(out), "--ipc", "2", "--chunk-size", "3"]) == 0
    synset = load_synset(out)
    assert synset.ipc == 2 and (out / "grid.png").is_file()
    assert main(["sample", "mnist5k-stylegan", str(tmp_path / "s"), "--ipc", "2"]) == 0
    torch.testing.assert_close(load_synset(tmp_path / "s").images, synset.images, rtol=0, atol=1e-5)
    for argv, message in (
        (["--ipc", "0"], "--ipc 1 or more"),
        (["--ipc", "1", "--chunk-size", "0"], "--chunk-size"),
        (["--ipc", "1", "--class-map", "a,b"], "comma-separated integers"),
        (["--ipc", "1", "--mixed-precision", "fp8"], "unknown mixed precision"),
    ):
        assert main(["generate", "mnist5k-stylegan", str(tmp_path / "bad"), *argv]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_guidance_scale_reaches_a_diffusion_prior(tmp_path):
    out = tmp_path / "d"
    assert main(["generate", "mnist5k-diffusion", str(out), "--ipc", "1", "--guidance-scale", "2",
                 "--prior-option", "num_inference_steps=2"]) == 0
    assert load_synset(out).config["prior_card"]["guidance_scale"] == 2.0
    assert main(["generate", "mnist5k-diffusion", str(tmp_path / "one"), "--ipc", "1", "--guidance-scale", "1",
                 "--prior-option", "num_inference_steps=2"]) == 0
    assert not torch.allclose(load_synset(out).images, load_synset(tmp_path / "one").images, atol=1e-3)  # it guides


# ---- on-the-fly evaluation (DiM's deployment protocol) ----------------------------------------

def test_on_the_fly_draws_fresh_sets_of_the_same_labels(tmp_path):
    from genprior.generate import class_labels, on_the_fly

    out = tmp_path / "g"
    assert main(["generate", "mnist5k-diffusion", str(out), "--ipc", "1", "--guidance-scale", "2",
                 "--prior-option", "num_inference_steps=2"]) == 0
    synset = load_synset(out)
    assert synset.config["generate"]["prior_options"] == {"num_inference_steps": 2, "guidance_scale": 2.0}
    test = load_dataset("mnist5k", "test")
    draw = on_the_fly(synset, test, eval_seed=0)
    one, again, two = draw(1), draw(1), draw(2)
    assert one.shape == synset.images.shape and torch.equal(one, again)  # seeded by the epoch
    assert not torch.allclose(one, two, atol=1e-3) and not torch.allclose(one, synset.images, atol=1e-3)
    assert not torch.allclose(on_the_fly(synset, test, eval_seed=1)(1), one, atol=1e-3)  # and by the model
    # drawn with the prior options the set was written with (2 DDIM steps, guidance 2)
    prior = load_prior("mnist5k-diffusion", num_inference_steps=2, guidance_scale=2.0)
    from genprior.distill.common import derive_seed

    expected = generate_set(prior, test, 1, seed=derive_seed("on-the-fly", 0, 0, 1)).images
    torch.testing.assert_close(one, expected)
    assert torch.equal(synset.labels, class_labels(10, 1))
    # a set written before the options were recorded: drawn only where its card shows the defaults
    del synset.config["generate"]["prior_options"]
    with pytest.raises(GenpriorError, match="write it again"):
        on_the_fly(synset, test, eval_seed=0)
    plain = generate_set(load_prior("mnist5k-stylegan"), test, 1, prior_ref="mnist5k-stylegan")
    assert "prior_options" not in plain.config["generate"]
    assert on_the_fly(plain, test, eval_seed=0)(1).shape == plain.images.shape


def test_on_the_fly_evaluation_trains_on_fresh_draws_and_resumes(tmp_path):
    """Against the fixed set, on-the-fly training differs; each epoch after the first asks for its
    own draw; a killed evaluation resumes to the same network (the draws are seeded by epoch)."""
    from dataclasses import replace

    from genprior.evaluate import evaluate_synset, get_protocol, train_net
    from genprior.nets import create_net

    out = tmp_path / "g"
    assert main(["generate", "mnist5k-stylegan", str(out), "--ipc", "1"]) == 0
    synset = load_synset(out)
    test = load_dataset("mnist5k", "test")
    proto = replace(get_protocol("quick"), epochs=4, num_models=1, lr_drop_epoch=2)
    states = tmp_path / "states"  # one state folder for both: their files must not collide
    fixed = evaluate_synset(synset, protocol=proto, test=test, progress=False, state_dir=states)
    fly = evaluate_synset(synset, protocol=proto, test=test, progress=False, on_the_fly=True, state_dir=states)
    assert "fresh draw" in fly["on_the_fly"] and "on_the_fly" not in fixed
    assert sorted(p.name for p in states.glob("done-*")) == ["done-convnet-seed0-quick-on-the-fly.json",
                                                           "done-convnet-seed0-quick.json"]
    assert fly["results"]["convnet"]["accs"] != fixed["results"]["convnet"]["accs"]

    asked = []

    def fresh(epoch):
        asked.append(epoch)
        return synset.images + 0.01 * epoch

    torch.manual_seed(0)
    net = create_net("convnet", 1, 10, 28)
    train_net(net, synset.images, synset.labels, proto, None, torch.Generator().manual_seed(0), fresh=fresh)
    assert asked == [1, 2, 3]

    def trained(path):
        torch.manual_seed(0)
        net = create_net("convnet", 1, 10, 28)
        train_net(net, synset.images, synset.labels, proto, None, torch.Generator().manual_seed(0), fresh=fresh,
                  state_path=path, save_every=1)
        return net

    straight = trained(None)
    state = tmp_path / "state.safetensors"

    class Stop(Exception):
        pass

    def stop_after_two(epoch):
        if epoch == 3:
            raise Stop
        return fresh(epoch)

    torch.manual_seed(0)
    killed = create_net("convnet", 1, 10, 28)
    with pytest.raises(Stop):
        train_net(killed, synset.images, synset.labels, proto, None, torch.Generator().manual_seed(0),
                  fresh=stop_after_two, state_path=state, save_every=1)
    assert state.exists()
    resumed = trained(state)  # picks up the state saved after epoch 2
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_on_the_fly_refuses_a_set_no_generator_made(tmp_path, capsys):
    assert main(["baseline", "random", str(tmp_path / "r"), "--ipc", "1"]) == 0
    assert main(["evaluate", str(tmp_path / "r"), "--on-the-fly", "--epochs", "1", "--models", "1"]) == 2
    assert "was not written by `genprior generate`" in capsys.readouterr().err
    assert not list((tmp_path / "r").glob("eval_*"))
    assert main(["generate", "mnist5k-stylegan", str(tmp_path / "s"), "--ipc", "1"]) == 0
    assert main(["evaluate", str(tmp_path / "s"), "--on-the-fly", "--soft-labels", "--epochs", "1"]) == 2
    assert "on-the-fly draws come without soft labels" in capsys.readouterr().err
    assert main(["generate", "mnist5k-stylegan", str(tmp_path / "g"), "--ipc", "1", "--on-the-fly"]) == 2
    assert "--on-the-fly sets the evaluation" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    # a training-free method's set: refused before anything is loaded or written
    assert main(["generate", "mnist5k-diffusion", str(tmp_path / "m"), "--ipc", "1", "--method", "d4m",
                 "--evaluate", "--on-the-fly"]) == 2
    assert "evaluate its set as a fixed set (drop --on-the-fly)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_on_the_fly_refusals_name_the_fix(tmp_path):
    """A set a training-free method made, an fp16 set on a CPU, and reordered labels: one line each."""
    from genprior.generate import generator_of

    assert main(["generate", "mnist5k-stylegan", str(tmp_path / "s"), "--ipc", "1"]) == 0
    test = load_dataset("mnist5k", "test")
    synset = load_synset(tmp_path / "s")
    made = synset.config.pop("generate")
    synset.config["method"] = "d4m"
    with pytest.raises(GenpriorError, match="training-free method 'd4m'.*drop --on-the-fly"):
        generator_of(synset, test)
    synset.config["generate"] = {**made, "mixed_precision": "fp16"}
    with pytest.raises(GenpriorError, match=r"fp16.*--device cuda"):
        generator_of(synset, test, "cpu")
    synset.config["generate"] = {**made, "prior_options": {"noise_mode": "random"}}
    with pytest.raises(GenpriorError, match="noise_mode=const"):
        generator_of(synset, test)
    synset.config["generate"] = made
    synset.labels = synset.labels.flip(0)
    with pytest.raises(GenpriorError, match="write it again with `genprior generate`"):
        generator_of(synset, test)
