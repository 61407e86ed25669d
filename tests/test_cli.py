import json
from pathlib import Path

from genprior.cli import main
from genprior.synset import load_synset


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("mnist5k", "digits", "convnet", "resnet18", "herding", "quick", "mnist5k-stylegan", "wasserstein", "recipes/glad.py"):
        assert word in out


def test_baseline_then_evaluate(tmp_path, capsys):
    out = tmp_path / "rand"
    assert main(["baseline", "random", str(out), "--ipc", "1", "--dataset", "digits"]) == 0
    assert load_synset(out).ipc == 1
    assert main(["evaluate", str(out), "--epochs", "2", "--models", "1", "--device", "cpu"]) == 0
    report = json.loads((out / "eval_quick-custom_convnet.json").read_text())
    assert report["protocol"]["epochs"] == 2 and report["dataset"] == "digits"
    assert "convnet" in capsys.readouterr().out


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genprior: error:") and "\n" not in err
    return err


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GENPRIOR_DATA", raising=False)
    assert "mnist5k" in _error(capsys, ["baseline", "random", str(tmp_path / "a"), "--ipc", "1", "--dataset", "imagenot"])
    assert "at least 1" in _error(capsys, ["baseline", "random", str(tmp_path / "b"), "--ipc", "0", "--dataset", "digits"])
    assert "kcenter" in _error(capsys, ["baseline", "best", str(tmp_path / "c"), "--ipc", "1"])
    assert "does not exist" in _error(capsys, ["evaluate", str(tmp_path / "missing")])
    assert "GENPRIOR_DATA" in _error(capsys, ["baseline", "random", str(tmp_path / "d"), "--ipc", "1", "--dataset", "cifar10"])


def test_evaluation_flags_without_an_evaluation_are_refused_not_dropped(tmp_path, capsys):
    err = _error(capsys, ["baseline", "random", str(tmp_path / "a"), "--ipc", "1", "--archs", "pool"])
    assert "--archs" in err and "--evaluate" in err
    err = _error(capsys, ["baseline", "random", str(tmp_path / "a"), "--ipc", "1", "--pgd", "0.1", "--no-diversity"])
    assert "--pgd --no-diversity set the evaluation" in err
    err = _error(capsys, ["distill", "--no-evaluate", "--device", "cpu", "--output-dir", str(tmp_path / "r")])
    assert "--device" in err and "--no-evaluate" in err
    err = _error(capsys, ["generate", "mnist5k-stylegan", str(tmp_path / "g"), "--ipc", "1", "--protocol", "paper"])
    assert "--protocol" in err
    assert not any((tmp_path / d).exists() for d in ("a", "r", "g"))


def test_the_whole_baseline_takes_no_ipc_and_the_others_need_one(tmp_path, capsys):
    assert "drop --ipc" in _error(capsys, ["baseline", "whole", str(tmp_path / "w"), "--ipc", "10", "--dataset", "digits"])
    assert "needs --ipc" in _error(capsys, ["baseline", "random", str(tmp_path / "r"), "--dataset", "digits"])
    assert main(["baseline", "whole", str(tmp_path / "w"), "--dataset", "digits"]) == 0
    assert "wrote whole IPC" in capsys.readouterr().out


def test_default_run_dirs_never_collide(tmp_path, monkeypatch):
    """distill and train share it: a new run never overwrites an old one, --resume latest takes the newest."""
    from genprior.cli import default_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = Path("runs/glad-dm-mnist5k-stylegan-mnist5k-ipc10")
    first = default_run_dir(cfg, resume=False)
    assert first == Path("runs/glad-dm-mnist5k-stylegan-mnist5k-ipc10")
    first.mkdir(parents=True)
    second = default_run_dir(cfg, resume=False)
    assert second.name.endswith("-ipc10-2")
    second.mkdir()
    assert default_run_dir(cfg, resume=True) == second
    assert default_run_dir(cfg, resume=False).name.endswith("-ipc10-3")


def test_train_picks_the_methods_shipped_prior_unless_one_is_named():
    from genprior.cli import build_parser, generator_config_from_args

    def prior(*flags):
        return generator_config_from_args(build_parser().parse_args(["train", *flags])).prior

    assert prior() == prior("--method", "dim") == prior("--method", "dcgm") == "mnist5k-stylegan"
    assert prior("--method", "minimax") == "mnist5k-diffusion"  # it trains diffusion priors only
    assert prior("--method", "minimax", "--prior", "mnist5k-dit") == "mnist5k-dit"


def test_the_main_job_starts_from_inverted_real_images_and_other_runs_keep_the_loops_defaults():
    from genprior.cli import build_parser, distill_config_from_args, distill_defaults

    def config(*flags):
        args = build_parser().parse_args(["distill", *flags])
        return distill_config_from_args(args, distill_defaults(args))

    main_job = config()
    assert (main_job.method, main_job.prior, main_job.init, main_job.invert_steps, main_job.optimizer,
            main_job.lr, main_job.ipc) == ("glad-dm", "mnist5k-stylegan", "invert", 200, "adam", 0.01, 10)
    assert main_job.space is None  # the prior's own: w+ for the StyleGAN
    assert config("--ipc", "1", "--init", "random").init == "random"  # flags still win
    pixel = config("--prior", "pixel")
    assert (pixel.init, pixel.optimizer) == ("random", "sgd")
    assert config("--freeze", "x_T", "--freeze", "x_T").frozen_latents == ["x_T"]


def test_distill_bad_inputs_fail_before_any_work(tmp_path, capsys, monkeypatch):
    """Each distill mistake is one line, and none of them leaves a run directory behind."""
    monkeypatch.chdir(tmp_path)
    base = ["distill", "--dataset", "digits", "--prior", "pixel", "--ipc", "1", "--iterations", "1",
            "--output-dir", str(tmp_path / "run")]
    assert "comma-separated integers" in _error(capsys, base + ["--class-map", "1,x"])
    assert "--ipc instead" in _error(capsys, base + ["--loss-option", "ipc=5"])
    assert "--batch-real instead" in _error(capsys, base + ["--loss-option", "batch_real=5"])
    assert "paper" in _error(capsys, base + ["--protocol", "nope"])
    assert "resnet18" in _error(capsys, base + ["--archs", "resnet19"])
    assert "--epochs" in _error(capsys, base + ["--epochs", "0"])
    assert "eval_every" in _error(capsys, base + ["--eval-every", "-1"])
    assert "eval_epochs" in _error(capsys, base + ["--eval-epochs", "0"])
    assert "resolution" in _error(capsys, base + ["--resolution", "0"])
    assert "unknown device 'gpu'" in _error(capsys, base + ["--device", "gpu"])
    assert "must be numbers" in _error(capsys, base + ["--latent-lr", "x=abc"])
    assert "'nan' is not a finite number" in _error(capsys, base + ["--lr", "nan"])
    assert "latent_lrs.x=inf" in _error(capsys, base + ["--latent-lr", "x=Infinity"])
    assert "which space 'x' does not have" in _error(capsys, base + ["--freeze", "x_T"])
    assert "loss_options.lr_lr=nan" in _error(capsys, base + ["--loss", "mtt", "--loss-option", "lr_lr=NaN"])
    assert "known losses" in _error(capsys, base + ["--loss", "nope"])
    assert "nothing to resume" in _error(capsys, base + ["--resume", "latest"])
    assert "not a checkpoint folder" in _error(capsys, base + ["--resume", str(tmp_path / "nowhere")])
    assert not (tmp_path / "run").exists()
    (tmp_path / "afile").write_text("")
    assert "is a file" in _error(capsys, base[:-1] + [str(tmp_path / "afile")])
    assert "is a file" in _error(capsys, base + ["--state-dir", str(tmp_path / "afile")])


def test_other_commands_check_their_flags_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert "known networks" in _error(capsys, ["experts", "--dataset", "digits", "--net", "nope"])
    assert "--num-experts" in _error(capsys, ["experts", "--dataset", "digits", "--num-experts", "0"])
    assert "is a file" in _error(capsys, ["experts", "--dataset", "digits", "--out-dir", "afile"])
    assert "unknown device" in _error(capsys, ["experts", "--dataset", "digits", "--device", "gpu"])
    assert not (tmp_path / "runs").exists()
    assert "--ipc 1 or more" in _error(capsys, ["sample", "mnist5k-stylegan", "s", "--ipc", "0"])
    assert "not a folder" in _error(capsys, ["export", str(tmp_path / "nowhere")])
    out = tmp_path / "rand"
    assert main(["baseline", "random", str(out), "--ipc", "1", "--dataset", "digits"]) == 0
    assert "is a folder" in _error(capsys, ["evaluate", str(out), "--out", str(tmp_path)])
    assert "unknown device" in _error(capsys, ["evaluate", str(out), "--device", "gpu"])


def test_resume_from_a_checkpoint_path_continues_in_its_run(tmp_path, monkeypatch):
    """``--resume RUN/checkpoints/step-N`` without --output-dir continues RUN, not the newest run."""
    monkeypatch.chdir(tmp_path)
    argv = ["distill", "--dataset", "digits", "--prior", "pixel", "--loss", "dm", "--ipc", "1", "--batch-real", "8",
            "--no-evaluate", "--checkpoint-every", "1"]
    assert main(argv + ["--iterations", "1"]) == 0
    assert main(argv + ["--iterations", "1"]) == 0  # a second run: runs/<name>-2
    first, second = sorted(Path("runs").iterdir())
    assert second.name == first.name + "-2"
    assert main(argv + ["--iterations", "2", "--resume", str(first / "checkpoints" / "step-000001")]) == 0
    assert (first / "checkpoints" / "step-000002").is_dir()
    assert not (second / "checkpoints" / "step-000002").exists()


def test_data_root_is_taken_after_the_command_too(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GENPRIOR_DATA", raising=False)
    missing = tmp_path / "nowhere"
    for argv in (["--data-root", str(missing), "baseline", "random", str(tmp_path / "a"), "--ipc", "1", "--dataset", "cifar10"],
                 ["baseline", "random", str(tmp_path / "b"), "--ipc", "1", "--dataset", "cifar10", "--data-root", str(missing)]):
        assert str(missing) in _error(capsys, argv)


def test_baseline_at_another_resolution_evaluates(tmp_path):
    out = tmp_path / "rand32"
    assert main(["baseline", "random", str(out), "--ipc", "1", "--dataset", "digits", "--resolution", "32"]) == 0
    assert load_synset(out).resolution == 32
    assert main(["evaluate", str(out), "--epochs", "1", "--models", "1", "--device", "cpu"]) == 0
    from genprior.data import load_dataset

    report = json.loads((out / "eval_quick-custom_convnet.json").read_text())
    assert report["test_images"] == [len(load_dataset("digits", "test")), 32]  # the test split read at the set's size
    assert 0 <= report["results"]["convnet"]["mean"] <= 1


def test_distill_at_a_chosen_resolution_then_evaluates(tmp_path, monkeypatch, capsys):
    """Datasets that take a size (ImageFolders, ImageNet subsets) distill and evaluate at --resolution,
    and compare with random real images of theirs (evaluated once, then read back)."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    out = tmp_path / "run"
    assert main(["distill", "--dataset", f"imagefolder:{tmp_path / 'data'}", "--resolution", "28", "--prior", "pixel",
                 "--loss", "dm", "--ipc", "1", "--iterations", "1", "--batch-real", "2", "--init", "invert",
                 "--epochs", "1", "--models", "1", "--device", "cpu", "--output-dir", str(out)]) == 0
    assert load_synset(out / "synset").resolution == 28
    assert json.loads((out / "synset" / "eval_quick-custom_convnet.json").read_text())["dataset"].startswith("imagefolder")
    printed = capsys.readouterr().out
    assert "random real, IPC 1, same protocol and seeds (evaluated now" in printed and "this set" in printed
    (baseline,) = Path("runs/baselines").iterdir()
    assert "_data-" in baseline.name and baseline.name.endswith("-28px-random-ipc1-seed0")  # one folder, named safely
    assert load_synset(baseline).method == "random"
    saved = json.loads((out / "synset" / "eval_quick-custom_convnet.json").read_text())["random_real_comparison"]
    assert saved["baseline"].startswith(str(Path("runs/baselines"))) and "gain_points" in saved["networks"]["convnet"]
    assert main(["distill", "--dataset", f"imagefolder:{tmp_path / 'data'}", "--resolution", "28", "--prior", "pixel",
                 "--loss", "dm", "--ipc", "1", "--iterations", "1", "--batch-real", "2", "--init", "invert",
                 "--epochs", "1", "--models", "1", "--device", "cpu", "--output-dir", str(tmp_path / "run2")]) == 0
    assert "(read from an earlier evaluation" in capsys.readouterr().out


def test_sample_takes_prior_options(tmp_path):
    out = tmp_path / "s"
    assert main(["sample", "mnist5k-stylegan", str(out), "--ipc", "1", "--prior-option", "truncation_psi=0.5"]) == 0
    assert load_synset(out).config["prior_card"]["truncation_psi"] == 0.5
