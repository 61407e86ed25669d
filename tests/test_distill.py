import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from genprior.distill import DistillConfig, LatentDistiller, distill, export_run, load_latents
from genprior.distill.common import latest_checkpoint
from genprior.errors import GenpriorError, UnknownNameError
from genprior.synset import load_synset
from conftest import accelerate_launch

TINY = DistillConfig(dataset="digits", prior="pixel", loss="dm", ipc=2, iterations=4, init="random", lr=1.0,
                     batch_real=16, checkpoint_every=2, log_every=1,
                     loss_options={"net_options": {"width": 8}})


def run(cfg, tmp_path, name="run", resume=None):
    return distill(cfg, tmp_path / name, resume=resume, progress=False)


def test_loss_decreases_and_outputs_are_written(tmp_path):
    cfg = replace(TINY, iterations=8, loss_options={"net_options": {"width": 8}, "dsa": False})
    synset = run(cfg, tmp_path)
    out = tmp_path / "run"
    records = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    # every loss line says what its time was measured under
    assert all(r["threads"] == 1 and r["keep_freed_memory"] in ("on", "off", "environment", "partial", "unsupported")
               for r in records if "loss" in r)
    assert json.loads((out / "config.json").read_text())["loss"] == "dm"
    loaded = load_synset(out / "synset")
    assert torch.equal(loaded.images, synset.images) and loaded.ipc == 2
    assert loaded.method == "dm" and loaded.config["distill"]["prior"] == "pixel"


def test_resume_is_bit_identical(tmp_path):
    full = run(TINY, tmp_path, "full")
    half = replace(TINY, iterations=2)
    run(half, tmp_path, "split")
    assert latest_checkpoint(tmp_path / "split").name == "step-000002"
    with open(tmp_path / "split" / "log.jsonl", "a") as f:  # an interrupted part got one step further, then died mid-line
        f.write(json.dumps({"iteration": 2, "loss": 1.0, "time_s": 9.9}) + "\n" + '{"iteration": 3, "lo')
    d = LatentDistiller(TINY, tmp_path / "split", progress=False)
    done, step = [], d.iteration
    d.iteration = lambda it: done.append(it) or step(it)
    resumed = d.run(resume="latest")
    assert done == [2, 3]  # continued from the checkpoint, not started again
    assert torch.equal(full.images, resumed.images)
    a, _, _ = load_latents(tmp_path / "full")
    b, _, _ = load_latents(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log's time is the loop's time summed over both parts, not restarted at the resume
    ckpt_time = json.loads((tmp_path / "split" / "checkpoints" / "step-000002" / "state.json").read_text())["elapsed_s"]
    times = [json.loads(l)["time_s"] for l in (tmp_path / "split" / "log.jsonl").read_text().splitlines() if "time_s" in l]
    assert ckpt_time > 0 and times == sorted(times) and times[2] >= ckpt_time
    # the log reads as one run: each iteration once, no torn line
    logged = [json.loads(l)["iteration"] for l in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 3]


def test_keep_checkpoints_prunes_old_ones_and_the_run_still_resumes(tmp_path):
    full = run(replace(TINY, iterations=6), tmp_path, "full")
    cfg = replace(TINY, iterations=4, checkpoint_every=1, keep_checkpoints=2)
    run(cfg, tmp_path, "kept")
    assert sorted(p.name for p in (tmp_path / "kept" / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    # a resumed run may change how many it keeps, and continues exactly from the newest
    resumed = run(replace(cfg, iterations=6, keep_checkpoints=1), tmp_path, "kept", resume="latest")
    assert [p.name for p in (tmp_path / "kept" / "checkpoints").iterdir()] == ["step-000006"]
    assert torch.equal(full.images, resumed.images)
    with pytest.raises(GenpriorError, match="keep_checkpoints must be an integer of at least 0"):
        run(replace(TINY, keep_checkpoints=-1), tmp_path, "bad")
    assert not (tmp_path / "bad").exists()


def test_existing_run_needs_resume_and_mismatched_resume_is_refused(tmp_path):
    run(replace(TINY, iterations=2), tmp_path)
    with pytest.raises(GenpriorError, match="--resume latest"):
        run(TINY, tmp_path)
    with pytest.raises(GenpriorError, match="other settings"):
        run(replace(TINY, lr=0.5), tmp_path, resume="latest")
    with pytest.raises(GenpriorError, match="no checkpoint"):
        run(TINY, tmp_path, "fresh", resume="latest")
    # a checkpoint another loop made (a generator run, say) is refused by name
    state_path = tmp_path / "run" / "checkpoints" / "step-000002" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["kind"] == "latent"
    state_path.write_text(json.dumps({**state, "kind": "generator"}))
    with pytest.raises(GenpriorError, match="made by a 'generator' run, not a 'latent' one"):
        run(replace(TINY, iterations=3), tmp_path, resume="latest")
    # a checkpoint from before a setting existed ran at its default: today's run resumes it at the
    # default, and is refused, by name, when the setting is given another value
    older = {k: v for k, v in state["config"].items() if k not in ("momentum", "frozen_latents")}
    state_path.write_text(json.dumps({**state, "config": older}))
    with pytest.raises(GenpriorError, match=r"other settings \(momentum=0.5; now momentum=0.9\)"):
        run(replace(TINY, iterations=3, momentum=0.9), tmp_path, resume="latest")
    run(replace(TINY, iterations=3), tmp_path, resume="latest")


def test_export_round_trip(tmp_path):
    synset = run(TINY, tmp_path)
    exported = export_run(tmp_path / "run", chunk_size=3)
    assert torch.equal(exported.images, synset.images)
    assert torch.equal(load_synset(tmp_path / "run" / "export").images, synset.images)


def test_corrupted_run_files_fail_with_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    run(replace(TINY, iterations=2), tmp_path)
    out = tmp_path / "run"
    with pytest.raises(GenpriorError, match="already exists"):  # checked before anything is decoded
        export_run(out, tmp_path / "run" / "synset")
    tensors = load_file(str(out / "latents.safetensors"))
    save_file({k: v for k, v in tensors.items() if k != "labels"}, str(out / "latents.safetensors"))
    with pytest.raises(GenpriorError, match="lack labels") as err:
        export_run(out)
    assert "\n" not in str(err.value)
    state = out / "checkpoints" / "step-000002" / "state.json"
    state.write_text("{}")
    with pytest.raises(GenpriorError, match="state.json lacks config"):
        run(replace(TINY, iterations=4), tmp_path, resume="latest")


def test_bf16_runs_on_cpu(tmp_path):
    conv_dtypes = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d):
            conv_dtypes.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        synset = run(replace(TINY, iterations=2, mixed_precision="bf16"), tmp_path)
    finally:
        hook.remove()
    assert conv_dtypes == {torch.bfloat16}  # the matching networks really ran in bf16
    assert synset.images.dtype == torch.float32 and torch.isfinite(synset.images).all()
    fp32 = run(replace(TINY, iterations=2), tmp_path, "fp32")
    assert not torch.equal(synset.images, fp32.images)


def test_fp16_on_cpu_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(GenpriorError, match="fp16 mixed precision needs a GPU"):
        run(replace(TINY, mixed_precision="fp16"), tmp_path)


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path):
    cfg = replace(TINY, iterations=6, lr=1e30, optimizer="sgd", momentum=0.0, checkpoint_every=1)
    with pytest.raises(GenpriorError, match=r"at iteration 1 .*last good checkpoint is .*step-000001"):
        run(cfg, tmp_path)
    from safetensors.torch import load_file

    kept = load_file(str(tmp_path / "run" / "checkpoints" / "step-000001" / "state.safetensors"))
    assert torch.isfinite(kept["latent.x"]).all()
    assert latest_checkpoint(tmp_path / "run").name == "step-000001"


@pytest.mark.parametrize("change, error, message", [
    (dict(ipc=0), GenpriorError, "IPC must be at least 1"),
    (dict(loss="lossy"), UnknownNameError, "dm"),
    (dict(prior="no-such-prior"), UnknownNameError, "registered name"),
    (dict(dataset="cifar11"), UnknownNameError, "mnist5k"),
    (dict(init="zeros"), GenpriorError, "random, mean, invert"),
    (dict(loss_options={"temperature": 2}), GenpriorError, "takes no option temperature"),
    (dict(latent_lrs={"w+": 1.0}), GenpriorError, "does not have"),
    (dict(class_map=[0, 1]), GenpriorError, "class_map needs 10"),
    (dict(loss="mtt", ipc=1, loss_options={"buffer": "/nonexistent"}), GenpriorError, "genprior experts"),
    (dict(lr=float("nan")), GenpriorError, "must be finite numbers, got lr=nan"),
    (dict(momentum=float("inf")), GenpriorError, "got momentum=inf"),
    (dict(loss_options={"weights": [1.0, float("-inf")]}), GenpriorError, r"loss_options\.weights\[1\]=-inf"),
])
def test_bad_inputs_fail_before_work(tmp_path, change, error, message):
    with pytest.raises(error, match=message) as err:
        run(replace(TINY, **change), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_unknown_option_in_config_dict():
    with pytest.raises(GenpriorError, match="unknown distillation option colour"):
        DistillConfig.from_dict({"colour": "red"})


def test_prior_that_does_not_fit_the_dataset(tmp_path):
    from genprior.priors import PixelPrior

    PixelPrior(10, 3, 32, (0.5,) * 3, (0.5,) * 3).save_pretrained(tmp_path / "rgb32")
    PixelPrior(10, 1, 32).save_pretrained(tmp_path / "px32")
    PixelPrior(5, 1, 28).save_pretrained(tmp_path / "five")
    for prior, message in [("rgb32", "3-channel"), ("px32", "--resize"), ("five", "--class-map")]:
        with pytest.raises(GenpriorError, match=message) as err:
            run(replace(TINY, prior=str(tmp_path / prior)), tmp_path)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "run").exists()
    with pytest.raises(GenpriorError, match=r"must lie in \[0, 5\)"):
        run(replace(TINY, prior=str(tmp_path / "five"), class_map=[c % 6 for c in range(10)]), tmp_path)


def test_class_map_and_resize_let_a_mismatched_prior_run(tmp_path):
    """The fixes the errors above name must work: a 5-class prior serves 10 classes through a
    class map, and a 16-px prior's images are resized to the dataset's 28 px."""
    from genprior.priors import PixelPrior

    PixelPrior(5, 1, 28).save_pretrained(tmp_path / "five")
    mapped = run(replace(TINY, prior=str(tmp_path / "five"), class_map=[c % 5 for c in range(10)], iterations=1),
                 tmp_path, "mapped")
    assert mapped.images.shape == (20, 1, 28, 28) and mapped.labels.tolist() == sorted(list(range(10)) * 2)
    PixelPrior(10, 1, 16).save_pretrained(tmp_path / "px16")
    resized = run(replace(TINY, prior=str(tmp_path / "px16"), resize=True, iterations=1), tmp_path, "resized")
    assert resized.images.shape == (20, 1, 28, 28) and torch.isfinite(resized.images).all()


@pytest.mark.parametrize("loss", ["dm", "cafe"])  # per-class, and over the whole set
def test_two_processes_write_one_set_equal_to_one_process(tmp_path, loss):
    pytest.importorskip("accelerate")
    args = ["distill", "--dataset", "digits", "--prior", "pixel", "--loss", loss, "--ipc", "1", "--iterations", "2",
            "--init", "random", "--lr", "1", "--batch-real", "8", "--loss-option", 'net_options={"width": 8}',
            "--no-evaluate"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = accelerate_launch(2)
    done = subprocess.run(cmd + args + ["--output-dir", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "genprior"] + args + ["--output-dir", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    two, one = load_synset(tmp_path / "two" / "synset"), load_synset(tmp_path / "one" / "synset")
    assert torch.allclose(two.images, one.images, atol=1e-5)
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("two", "one")]
    assert [r["processes"] for r in logs[0]] == [2] and [r["processes"] for r in logs[1]] == [1]
    assert logs[0][0]["loss"] == pytest.approx(logs[1][0]["loss"], rel=1e-5)  # every class's loss, summed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_fp16_loss_scaling_reaches_the_latents_and_is_undone_exactly(tmp_path):
    """The fp16 path scales the loss, pushes the scaled image gradients through the prior,
    and unscales the latents' gradients before the step. Run with a scaler on fp32 (a power-
    of-two scale is exact there), it must give the unscaled run's latents bit for bit; a
    scale that overflows makes the scaler skip the step and back off, as in fp16."""
    cfg = replace(TINY, iterations=3)
    plain = run(cfg, tmp_path, "plain")
    scaled = LatentDistiller(cfg, tmp_path / "scaled", progress=False)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    assert torch.equal(scaled.run().images, plain.images)
    assert scaled.scaler.get_scale() == 2.0 ** 12  # no overflow: the scale stayed

    overflow = LatentDistiller(replace(cfg, iterations=1), tmp_path / "overflow", progress=False)
    overflow.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1)
    overflow.init_latents()
    before = {k: v.detach().clone() for k, v in overflow.latents.items()}
    overflow.iteration(0)
    assert all(torch.equal(before[k], overflow.latents[k]) for k in before)  # the inf step was skipped
    assert overflow.scaler.get_scale() < 2.0 ** 127


def test_init_from_a_set_starts_from_its_images(tmp_path):
    from genprior.baselines import make_baseline
    from genprior.data import load_dataset
    from genprior.synset import save_synset

    train = load_dataset("digits", "train")
    start = make_baseline("random", train, 2, seed=3)
    save_synset(start, tmp_path / "start")
    cfg = replace(TINY, init="invert", init_from=str(tmp_path / "start"), iterations=1)
    d = LatentDistiller(cfg, tmp_path / "run", progress=False)
    d.init_latents()
    assert torch.equal(d.latents["x"].detach(), start.images)  # the pixel prior inverts exactly
    with pytest.raises(GenpriorError, match="pass --init invert"):
        LatentDistiller(replace(cfg, init="random"), tmp_path / "r2", progress=False)
    wrong = LatentDistiller(replace(cfg, ipc=1), tmp_path / "r3", progress=False)
    with pytest.raises(GenpriorError, match="holds 2 images for each of 10 classes, this run needs 1"):
        wrong.init_latents()
