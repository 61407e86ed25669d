"""LPIPS: the real metric where its backbone's weights are cached, a stated fallback elsewhere,
and the within-class diversity of a set."""
import pytest
import torch

from genprior.errors import GenpriorError
from genprior.perceptual import backbone_weights_file, class_diversity, lpips_metric, to_lpips_input
from genprior.synset import SyntheticSet


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def _set(images01, labels):
    return SyntheticSet(images=(images01 - 0.5) / 0.5, labels=labels, mean=(0.5,), std=(0.5,), dataset="digits",
                        class_names=[str(c) for c in range(10)], method="test")


def test_without_cached_weights_the_fallback_is_stated_or_refused(no_cached_weights, capsys, monkeypatch):
    import genprior.perceptual as perceptual

    monkeypatch.setattr(perceptual, "_ANNOUNCED", set())
    metric, info = lpips_metric("alex")
    assert info["backbone"] == "alex" and info["weights"].startswith("random, seed 0 (pnet_rand=True")
    assert "alexnet-owt-7be5be79.pth" in info["weights"]
    lpips_metric("alex")
    said = capsys.readouterr().err.strip().splitlines()  # said in one line, once per process
    assert len(said) == 1 and "random backbone" in said[0] and "alexnet-owt-7be5be79.pth" in said[0]
    with pytest.raises(GenpriorError, match="needs its ImageNet backbone weights at .*alexnet-owt-7be5be79.pth") as err:
        lpips_metric("alex", allow_fallback=False)
    assert "\n" not in str(err.value) and "--no-lpips-fallback" in str(err.value)
    with pytest.raises(GenpriorError, match="unknown LPIPS backbone"):
        backbone_weights_file("resnet")


def test_the_random_backbone_is_the_same_in_every_process_and_leaves_the_callers_stream(no_cached_weights):
    """The fallback is one fixed distance: whatever ran before (the caller's random state), the
    same backbone, so diversity figures of a table's rows, made in different processes, compare."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    distances = []
    for state in (0, 123):
        torch.manual_seed(state)
        metric, _ = lpips_metric("alex")
        after = torch.rand(1)
        torch.manual_seed(state)
        assert torch.equal(after, torch.rand(1))  # the caller's stream is where it was
        distances.append(metric(x[:1], x[1:]))
    assert torch.equal(distances[0], distances[1])


def test_diversity_is_zero_for_copies_and_grows_with_differences(no_cached_weights):
    torch.manual_seed(0)
    base = torch.rand(10, 1, 28, 28)
    labels = torch.arange(10).repeat_interleave(3)
    copies = _set(base.repeat_interleave(3, dim=0), labels)
    noisy = _set((base.repeat_interleave(3, dim=0) + 0.3 * torch.randn(30, 1, 28, 28)).clamp(0, 1), labels)
    metric, info = lpips_metric("alex")
    same, diverse = class_diversity(copies, metric, info), class_diversity(noisy, metric, info)
    assert same["mean"] == pytest.approx(0.0, abs=1e-6) and diverse["mean"] > 0.01
    assert len(diverse["per_class"]) == 10 and diverse["input_size"] == [64, 64] and diverse["backbone"] == "alex"
    one = _set(base, torch.arange(10))
    assert class_diversity(one, metric, info)["mean"] is None  # IPC 1: no pair in a class


def test_lpips_input_is_three_channels_in_minus_one_one():
    x = to_lpips_input(torch.ones(2, 1, 8, 8))
    assert x.shape == (2, 3, 64, 64) and torch.allclose(x, torch.ones_like(x))
    with pytest.raises(GenpriorError, match="1- or 3-channel"):
        to_lpips_input(torch.zeros(1, 2, 8, 8))


def test_evaluate_reports_diversity_beside_accuracy(tmp_path, no_cached_weights, capsys):
    import json

    from genprior.cli import main

    out = tmp_path / "set"
    assert main(["baseline", "random", str(out), "--ipc", "2", "--dataset", "digits"]) == 0
    assert main(["evaluate", str(out), "--epochs", "1", "--models", "1"]) == 0  # by default
    report = json.loads(next(out.glob("eval_*.json")).read_text())
    d = report["diversity"]
    assert d["metric"] == "lpips" and d["weights"].startswith("random") and d["mean"] > 0
    assert "mean pairwise LPIPS within classes; alex, random" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--epochs", "1", "--models", "1", "--no-diversity", "--out",
                 str(tmp_path / "plain.json")]) == 0
    assert "diversity" not in json.loads((tmp_path / "plain.json").read_text())
    # the published metric required and absent: a one-line error before any network trains
    capsys.readouterr()
    assert main(["evaluate", str(out), "--epochs", "1", "--models", "1", "--no-lpips-fallback", "--out",
                 str(tmp_path / "strict.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs its ImageNet backbone weights" in err and "\n" not in err and not (tmp_path / "strict.json").exists()


def test_gan_inversion_takes_an_lpips_term_and_the_run_records_which_metric(tmp_path, no_cached_weights):
    import json

    from genprior.data import load_dataset
    from genprior.distill import DistillConfig, LatentDistiller
    from genprior.priors.load import load_prior

    prior = load_prior("mnist5k-stylegan")
    train = load_dataset("mnist5k", "train")
    images, labels = train.images[:2], train.labels[:2]
    metric, _ = lpips_metric("alex")
    kw = dict(steps=10, generator=torch.Generator().manual_seed(0))
    plain = prior.invert(images, labels, **kw)["w+"]
    with_lpips = prior.invert(images, labels, lpips=metric, lpips_weight=10.0, **kw)["w+"]

    def perceptual_distance(w):
        with torch.no_grad():
            decoded = prior.decode({"w+": w}, labels)
            return float(metric(to_lpips_input((decoded * prior.out_std + prior.out_mean).clamp(0, 1)),
                                to_lpips_input((images * prior.out_std + prior.out_mean).clamp(0, 1))).mean())

    # the same inversion with the perceptual term ends perceptually nearer its images
    assert perceptual_distance(with_lpips) < perceptual_distance(plain)
    assert torch.equal(plain, prior.invert(images, labels, lpips=metric, lpips_weight=0.0, **kw)["w+"])
    with pytest.raises(GenpriorError, match="needs an LPIPS module"):
        prior.invert(images, labels, lpips_weight=1.0, **kw)

    cfg = DistillConfig(dataset="mnist5k", prior="mnist5k-stylegan", ipc=1, iterations=1, init="invert",
                        invert_steps=2, invert_lpips=1.0)
    synset = LatentDistiller(cfg, tmp_path / "run", progress=False).run()
    recorded = json.loads((tmp_path / "run" / "inversion.json").read_text())
    assert recorded["lpips_weight"] == 1.0 and recorded["weights"].startswith("random, seed 0 (pnet_rand=True")
    assert recorded["reconstruction"]["mse"] > 0 and recorded["reconstruction"]["lpips"] > 0
    assert synset.config["inversion"] == recorded
    assert json.loads((tmp_path / "run" / "synset" / "meta.json").read_text())["config"]["inversion"] == recorded
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lpips_metric"]["weights"] == recorded["weights"]
    with pytest.raises(GenpriorError, match="needs its ImageNet backbone weights"):  # before any inversion runs
        LatentDistiller(DistillConfig(**{**cfg.__dict__, "invert_lpips_fallback": False}), tmp_path / "strict",
                        progress=False).run()
    assert not (tmp_path / "strict" / "inversion.json").exists()
    with pytest.raises(GenpriorError, match="invert_lpips is the weight"):
        LatentDistiller(DistillConfig(**{**cfg.__dict__, "invert_lpips": -1.0}), tmp_path / "bad", progress=False)
    with pytest.raises(GenpriorError, match="this run starts with --init random"):
        LatentDistiller(DistillConfig(**{**cfg.__dict__, "init": "random"}), tmp_path / "bad2", progress=False)
