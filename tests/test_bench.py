"""genprior bench: resumable cells shared between processes, a leaderboard and plots."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genprior.bench import cells, check_config, forget, run_bench
from genprior.errors import GenpriorError, UnknownNameError

TINY = {"name": "tiny", "dataset": "digits", "protocol": {"name": "quick", "epochs": 1}, "models": 1, "ipcs": [1],
        "seeds": [0], "archs": ["convnet"],
        "methods": {"random": {"baseline": "random"}, "all": {"baseline": "whole"}}}  # two quick builds


def _files(out):
    return {p.name: p.read_text() for p in sorted((out / "cells").glob("*.json"))}


def test_a_killed_bench_resumes_and_never_recomputes_a_cell(tmp_path):
    config, out = check_config(dict(TINY)), tmp_path / "b"
    assert cells(config) == ["build|random|1|0", "eval|random|1|0|convnet|0",
                             "build|all|1|0", "eval|all|1|0|convnet|0"]
    assert run_bench(config, out, max_units=2, progress=False) == 2  # killed after two cells
    first = _files(out)
    assert sorted(first) == ["build-random-1-0.json", "eval-random-1-0-convnet-0.json"]
    assert run_bench(config, out, progress=False) == 2  # only the two unfinished cells
    after = _files(out)
    assert {k: after[k] for k in first} == first  # the finished cells were not touched
    cell = json.loads(after["eval-all-1-0-convnet-0.json"])
    assert 0 <= cell["acc"] <= 1 and cell["config"]["dataset"] == "digits" and "torch" in cell["versions"]
    board = (out / "leaderboard.md").read_text()
    assert "## IPC 1" in board and "| random |" in board and "| all |" in board and "| 1 |" in board
    for plot in ("accuracy_vs_ipc.png", "cross_arch.png", "time_vs_accuracy.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    assert run_bench(config, out, progress=False) == 0  # nothing left
    # --redo forgets one cell and its files; the next run computes that one only
    assert forget(config, out, "eval|all") == ["eval|all|1|0|convnet|0"]
    assert "eval-all-1-0-convnet-0.json" not in _files(out)
    assert run_bench(config, out, progress=False) == 1
    # a rebuilt set takes its evaluations with it: none of the old set's results stays
    assert forget(config, out, "build|random") == ["build|random|1|0", "eval|random|1|0|convnet|0"]
    assert sorted(_files(out)) == ["build-all-1-0.json", "eval-all-1-0-convnet-0.json"]


KILLER = """
import os, sys
import genprior.bench as bench
from genprior.bench import check_config, run_bench

compute = bench._compute
def dies_on_the_third(config, out, key, threads, cache):
    if key == "build|all|1|0":
        os._exit(9)  # as a SIGKILL: no cleanup, its claim stays behind under a dead pid
    return compute(config, out, key, threads, cache)
bench._compute = dies_on_the_third
run_bench(check_config(CONFIG), bench.Path(sys.argv[1]), progress=False)
"""


def test_a_process_killed_mid_cell_leaves_only_that_cell_to_compute(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = "CONFIG = " + repr(TINY) + KILLER
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "b")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 9, proc.stderr
    first = _files(tmp_path / "b")
    assert sorted(first) == ["build-random-1-0.json", "eval-random-1-0-convnet-0.json"]
    assert run_bench(check_config(dict(TINY)), tmp_path / "b", progress=False) == 2  # the dead claim is taken over
    after = _files(tmp_path / "b")
    assert {k: after[k] for k in first} == first and len(after) == 4


def test_a_cell_written_but_not_yet_recorded_is_not_computed_again(tmp_path):
    """A kill between a cell's file and bench.json: the next run takes the file."""
    import genprior.bench as bench

    config, out = check_config(dict(TINY)), tmp_path / "b"
    run_bench(config, out, max_units=1, progress=False)
    results = json.loads((out / "bench.json").read_text())
    del results["units"]["build|random|1|0"]
    (out / "bench.json").write_text(json.dumps(results))
    before = _files(out)
    computed = []
    original = bench._compute
    try:
        bench._compute = lambda *a: computed.append(a[2]) or original(*a)
        run_bench(config, out, max_units=2, progress=False)
    finally:
        bench._compute = original
    assert computed == ["eval|random|1|0|convnet|0"]
    assert _files(out)["build-random-1-0.json"] == before["build-random-1-0.json"]
    assert "build|random|1|0" in json.loads((out / "bench.json").read_text())["units"]


def test_two_processes_share_a_bench_without_running_a_cell_twice(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "genprior", "bench", "tiny.json", "--out", "shared"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ran = [int(next(line for line in o.splitlines() if line.startswith("ran ")).split()[1]) for o in outputs]
    assert sum(ran) == 4  # every cell once, between the two
    assert len(list((tmp_path / "shared" / "cells").glob("*.json"))) == 4


@pytest.mark.parametrize("change, error, message", [
    ({"colour": 1}, GenpriorError, "unknown benchmark config key"),
    ({"dataset": "cifar11"}, UnknownNameError, "mnist5k"),
    ({"ipcs": [0]}, GenpriorError, "at least 1"),
    ({"archs": ["resnet99"]}, UnknownNameError, "convnet"),
    ({"protocol": "slow"}, UnknownNameError, "quick"),
    ({"attack": {"eps": 3}}, GenpriorError, "pixel units"),
    ({"methods": {"x": {"baseline": "nope"}}}, UnknownNameError, "random"),
    ({"methods": {"x": {"recipe": "nope"}}}, GenpriorError, "no recipe 'nope'; known recipes: cao2, d3hr, d4m, dc"),
    ({"methods": {"x": {"recipe": "glad", "baseline": "random"}}}, GenpriorError, "exactly one of"),
    ({"methods": {"x|y": {"baseline": "random"}}}, GenpriorError, "cannot be empty or hold"),
    ({"models": {"convnet": 0}}, GenpriorError, "models is a positive integer"),
    ({"setup": {"t": ["teacher", "--dataset", "mnist5k"]}}, GenpriorError, "give it --out"),
    ({"setup": {"g": ["recipe", "glad", "--output-dir", "x"]}}, GenpriorError, "runs a generator recipe \\(dcgm, dim, minimax\\)"),
    ({"setup": {"g": ["recipe", "dim"]}}, GenpriorError, "give it --output-dir"),
    ({"methods": {"x": {"baseline": "random", "on_the_fly": True}}}, GenpriorError, "draws from the generator of"),
    ({"methods": {"x": {"generate": "mnist5k-stylegan", "on_the_fly": "yes"}}}, GenpriorError,
     "on_the_fly is true or false"),
    ({"methods": {"x": {"generate": "mnist5k-diffusion", "args": ["--method", "d4m"], "on_the_fly": True}}},
     GenpriorError, "training-free --method"),
    ({"whole": 0}, GenpriorError, "a number of networks \\(at least 1\\)"),
    ({"whole": "yes"}, GenpriorError, "whole is true, false or a number"),
    ({"scores": True, "ipcs": [1, 2], "methods": {"random": {"baseline": "random", "ipcs": [1]}}}, GenpriorError,
     "runs at every IPC of the config"),
])
def test_bad_configs_fail_before_any_work(change, error, message):
    with pytest.raises(error, match=message):
        check_config({**TINY, **change})


def test_another_config_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "b"
    run_bench(check_config(dict(TINY)), out, max_units=0, progress=False)
    with pytest.raises(GenpriorError, match="another config"):
        run_bench(check_config({**TINY, "seeds": [1]}), out, progress=False)


def test_scores_add_the_full_data_and_no_augmentation_cells_and_rank_with_lrs_and_ars(tmp_path):
    from genprior.lanes import locked
    from genprior.scores import augmentation_robust_score, label_robust_score

    config, out = check_config({**TINY, "scores": True}), tmp_path / "s"
    assert cells(config) == ["build|random|1|0", "eval|random|1|0|convnet|0", "plain|random|1|0|convnet|0",
                             "build|all|1|0", "eval|all|1|0|convnet|0", "plain|all|1|0|convnet|0",
                             "build|whole|0|0", "eval|whole|0|0|convnet|0"]
    run_bench(config, out, progress=False)
    with locked(out / "bench.json", dict) as results:
        units = results["units"]
    acc = {k: u["acc"] for k, u in units.items() if "acc" in u}
    whole = json.loads((out / "sets" / "whole-ipc0-s0" / "meta.json").read_text())
    assert whole["method"] == "whole" and whole["ipc"] == 140  # digits: its smallest class, for every class
    lrs = label_robust_score(acc["eval|whole|0|0|convnet|0"], acc["eval|all|1|0|convnet|0"],
                             acc["eval|all|1|0|convnet|0"], acc["eval|random|1|0|convnet|0"])["lrs"]
    ars = augmentation_robust_score(acc["eval|all|1|0|convnet|0"], acc["eval|random|1|0|convnet|0"],
                                    acc["plain|all|1|0|convnet|0"], acc["plain|random|1|0|convnet|0"])["ars"]
    row = next(line for line in (out / "leaderboard.md").read_text().splitlines() if "| all |" in line)
    assert f"| {lrs:.3f} ± 0.000 | {ars:.3f} ± 0.000 |" in row
    assert "Full data (the whole train split, class-balanced, hard labels, convnet, 1 model(s)):" in \
        (out / "leaderboard.md").read_text()


def test_scores_under_a_soft_label_protocol_take_hlr_from_hard_label_cells():
    """DD-Ranking's HLR compares hard-label accuracies even when the protocol distils from a
    teacher; the no-augmentation cells drop crops and CutMix as well as DSA."""
    from genprior.bench import cell_protocol

    config = check_config({**TINY, "protocol": {"name": "soft", "epochs": 1}, "teacher": "t", "scores": True,
                           "methods": {"random": {"baseline": "random"}}})
    assert cells(config) == ["build|random|1|0", "eval|random|1|0|convnet|0", "plain|random|1|0|convnet|0",
                             "hard|random|1|0|convnet|0", "build|whole|0|0", "hard|whole|0|0|convnet|0"]
    hard, plain, own = (cell_protocol(config, kind) for kind in ("hard", "plain", "eval"))
    assert own.temperature == 20.0 and hard.temperature == 0.0 and own.augment == "crop"
    # as DD-Ranking's hard-label runs (use_aug_for_hard=False): no augmentation either
    assert (hard.dsa, hard.augment, hard.cutmix) == (plain.dsa, plain.augment, plain.cutmix)
    assert (plain.dsa, plain.augment, plain.cutmix) == (False, "dsa", 0.0)
    # HLR reads the hard-label cells: full 0.9 and set 0.5 there, though the soft cells say otherwise
    from genprior.bench import scores
    from genprior.scores import label_robust_score

    units = {"hard|whole|0|0|convnet|0": {"acc": 0.9}, "hard|random|1|0|convnet|0": {"acc": 0.5},
             "eval|random|1|0|convnet|0": {"acc": 0.6}}
    expected = label_robust_score(full_hard=0.9, set_hard=[0.5], set_own=[0.6], random_own=[0.6])["lrs"]
    assert scores(config, units, "random", 1)["lrs"]["lrs"] == expected
    assert expected != label_robust_score(full_hard=0.6, set_hard=[0.6], set_own=[0.6], random_own=[0.6])["lrs"]


def test_diversity_is_measured_on_every_built_set(tmp_path):
    config = check_config({**TINY, "ipcs": [2], "diversity": True, "methods": {"random": {"baseline": "random"}}})
    out = tmp_path / "d"
    run_bench(config, out, progress=False)
    div = json.loads((out / "cells" / "build-random-2-0.json").read_text())["diversity"]
    board = (out / "leaderboard.md").read_text()
    row = next(line for line in board.splitlines() if "| random |" in line)
    assert div["metric"] == "lpips" and div["mean"] > 0 and len(div["per_class"]) == 10
    assert "| LPIPS diversity |" in board and f"| {div['mean']:.4f} |" in row and "backbone alex, weights" in board
    # --diversity measures the finished sets again with today's metric, in the results and the cells
    from genprior.bench import remeasure_diversity
    from genprior.lanes import locked

    stale = {**div, "mean": 9.0, "weights": "an older metric"}
    with locked(out / "bench.json", dict) as results:
        results["units"]["build|random|2|0"]["diversity"] = stale
    cell = json.loads((out / "cells" / "build-random-2-0.json").read_text())
    (out / "cells" / "build-random-2-0.json").write_text(json.dumps({**cell, "diversity": stale}))
    assert remeasure_diversity(config, out) == ["build|random|2|0"]
    again = json.loads((out / "cells" / "build-random-2-0.json").read_text())
    assert again["diversity"] == div and again["synset"] == cell["synset"]
    assert f"| {div['mean']:.4f} |" in (out / "leaderboard.md").read_text()
    with pytest.raises(GenpriorError, match="does not measure diversity"):
        remeasure_diversity({**config, "diversity": False}, out)


def test_scores_need_random_real_images():
    with pytest.raises(GenpriorError, match="add a method"):
        check_config({**TINY, "scores": True, "methods": {"all": {"baseline": "whole"}}})


def test_setup_steps_run_once_before_the_methods_that_need_them(tmp_path):
    from genprior.bench import dependencies

    config = check_config({**TINY, "setup": {
        "experts": ["experts", "--dataset", "digits", "--num-experts", "1", "--epochs", "1", "--out-dir", "{out}/experts"]},
        "methods": {"random": {"baseline": "random"},
                    "mtt": {"distill": ["--prior", "pixel", "--loss", "mtt", "--init", "invert", "--iterations", "1",
                                        "--loss-option", "buffer={out}/experts", "--loss-option", "syn_steps=2",
                                        "--loss-option", "expert_epochs=1", "--loss-option", "max_start_epoch=1"],
                            "after": "experts"},
                    "samples": {"generate": "mnist5k-stylegan", "args": ["--resize"]}}})
    out = tmp_path / "b"
    keys = cells(config)
    assert keys[0] == "setup|experts" and dependencies(config)("build|mtt|1|0") == ["setup|experts"]
    assert dependencies(config)("build|samples|1|0") == []
    assert run_bench(config, out, progress=False) == len(keys)
    board = (out / "leaderboard.md").read_text()
    assert "| mtt |" in board and "| samples |" in board
    assert f"buffer={out}/experts" in board  # {out} is the benchmark folder
    assert json.loads((out / "cells" / "setup-experts.json").read_text())["command"].startswith("genprior experts")
    meta = json.loads((out / "sets" / "samples-ipc1-s0" / "meta.json").read_text())
    assert meta["prior"] == "mnist5k-stylegan" and meta["dataset"] == "digits"


def test_a_generate_method_evaluates_on_the_fly_when_asked(tmp_path):
    """``"on_the_fly": true``: the same build, evaluations that draw from the generator every epoch
    (their own cells: another identity, so never taken for fixed-set ones)."""
    from genprior.bench import cell_identity, resolved_protocols

    samples = {"generate": "mnist5k-stylegan", "args": ["--resize"]}
    config = check_config({**TINY, "protocol": {"name": "quick", "epochs": 2},
                           "methods": {"samples": samples, "fly": {**samples, "on_the_fly": True}}})
    same = resolved_protocols(config)
    assert cell_identity(config, "build|fly|1|0", same) == cell_identity(config, "build|samples|1|0", same)
    assert cell_identity(config, "eval|fly|1|0|convnet|0", same) != cell_identity(config, "eval|samples|1|0|convnet|0",
                                                                                   same)
    out = tmp_path / "b"
    assert run_bench(config, out, progress=False) == 4
    fly = json.loads((out / "cells" / "eval-fly-1-0-convnet-0.json").read_text())
    fixed = json.loads((out / "cells" / "eval-samples-1-0-convnet-0.json").read_text())
    assert fly["on_the_fly"] is True and "on_the_fly" not in fixed


def test_a_method_after_an_undefined_setup_step_is_refused():
    with pytest.raises(GenpriorError, match="does not define"):
        check_config({**TINY, "methods": {"x": {"recipe": "mtt", "after": "experts"}}})
    with pytest.raises(GenpriorError, match="give it --output-dir"):
        check_config({**TINY, "setup": {"g": ["train", "--method", "dim"]}})


def test_models_per_network():
    config = check_config({**TINY, "archs": ["convnet", "alexnet"], "models": {"convnet": 2, "*": 1}})
    assert [k for k in cells(config) if k.startswith("eval|random")] == [
        "eval|random|1|0|convnet|0", "eval|random|1|0|convnet|1", "eval|random|1|0|alexnet|0"]


def test_the_gpu_config_is_refused_at_once_without_a_gpu():
    import torch

    from genprior.bench import load_config

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(GenpriorError, match="no CUDA device"):
        load_config(str(Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "gpu_paper_mnist5k.json"))
    assert len(cells(load_config(str(Path(__file__).resolve().parent.parent / "benchmarks" / "configs" /
                                     "leaderboard_mnist5k.json")))) == 6 + 28 * 2 * (1 + 9 + 3) + 2
    # (setup steps; 28 methods x 2 IPCs x (build, 3 ConvNets + 6 pool networks, 3 no-augmentation ConvNets);
    # the whole split, on one ConvNet ("whole": 1: 2.4 h of one CPU thread each), for the scores)
    # the training-free methods' benchmark: 11 methods x 3 IPCs x (3 ConvNet + 6 pool networks) + 2 setup steps
    sampling = load_config(str(Path(__file__).resolve().parent.parent / "benchmarks" / "configs" /
                                "sampling_mnist5k.json"))
    assert len(cells(sampling)) == 11 * 3 * (1 + 9) + 2
    # the text prior's table (issue: text-conditioned priors): 8 methods x 2 IPCs x (build + 9 networks)
    text = load_config(str(Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / "text_prior_mnist5k.json"))
    assert len(cells(text)) == 8 * 2 * 10


@pytest.mark.parametrize("change, message", [
    ({"attack": {"epsilon": 0.1}}, "eps required"),
    ({"attack": 0.1}, "eps required"),
    ({"protocol": 5}, "protocol is a name"),
    ({"protocol": {"name": "quick", "epoch": 3}}, "protocol is a name"),
    ({"methods": {"x": {"recipe": "mtt", "after": ["a"]}}}, "name one setup step"),
    ({"protocol": "soft"}, 'give the config a "teacher"'),
    ({"teacher": "t"}, "only serves a protocol"),
])
def test_malformed_configs_are_one_line_errors(change, message):
    with pytest.raises(GenpriorError, match=message):
        check_config({**TINY, **change})


def test_a_bench_with_failed_cells_exits_with_an_error(tmp_path, capsys):
    from genprior.cli import main

    broken = {**TINY, "methods": {"dm": {"distill": ["--prior", "pixel", "--loss", "dm", "--iterations", "1",
                                                     "--loss-option", "no_such_option=1"]}}}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert main(["bench", str(tmp_path / "broken.json"), "--out", str(tmp_path / "b")]) == 2
    assert "1 cell(s) failed (build|dm|1|0)" in capsys.readouterr().err


def test_a_training_free_recipe_writes_its_set_folder_itself(tmp_path):
    import argparse

    from genprior.bench import build_command
    from genprior.cli import add_generate_args

    config = {"dataset": "mnist5k", "methods": {"d4m": {"recipe": "d4m", "args": ["--option", "strength=0.5"]}}}
    cmd, folder = build_command(config, "d4m", 10, 0, tmp_path)
    assert cmd[:2] == ["-m", "genprior.recipes.d4m"] and folder.name == "d4m-ipc10-s0"
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root")
    add_generate_args(parser, recipe=True)
    args = parser.parse_args(cmd[2:])  # the recipe takes every flag the benchmark gives it
    assert args.out_dir == str(folder) and args.ipc == 10 and not args.evaluate and args.option == ["strength=0.5"]


def test_methods_choose_their_ipcs_add_flags_at_one_and_may_be_build_only(tmp_path):
    """Per-method IPCs, flags at one IPC, build-only rows and the whole-split line: what lets the
    project's own tables be configs of ``genprior bench``."""
    from genprior.bench import build_command

    config = check_config({**TINY, "ipcs": [1, 2], "whole": True, "methods": {
        "random": {"baseline": "random"},
        "herding": {"baseline": "herding", "ipcs": [2]},
        "dm": {"recipe": "dm", "args": ["--iterations", "1"], "args_by_ipc": {"2": ["--lr", "5"]}, "ipcs": [1, 2],
               "evaluate": False}}})
    assert cells(config) == ["build|random|1|0", "eval|random|1|0|convnet|0", "build|dm|1|0",
                             "build|random|2|0", "eval|random|2|0|convnet|0", "build|herding|2|0",
                             "eval|herding|2|0|convnet|0", "build|dm|2|0",
                             "build|whole|0|0", "eval|whole|0|0|convnet|0"]
    at1, _ = build_command(config, "dm", 1, 0, tmp_path)
    at2, _ = build_command(config, "dm", 2, 0, tmp_path)
    assert "--lr" not in at1 and at2[at2.index("--lr") + 1] == "5" and at2[at2.index("--ipc") + 1] == "2"
    small = check_config({**TINY, "whole": True, "methods": {"random": {"baseline": "random"},
                                                             "again": {"baseline": "random", "evaluate": False}}})
    out = tmp_path / "w"
    run_bench(small, out, progress=False)
    board = (out / "leaderboard.md").read_text()
    assert "Full data (the whole train split, class-balanced, convnet, 1 model(s)):" in board and "not yet" not in board
    # "whole": N trains the whole split on N networks, whatever the first network's count
    twice = check_config({**TINY, "models": 2, "whole": 1, "methods": {"random": {"baseline": "random"}}})
    assert cells(twice)[-2:] == ["build|whole|0|0", "eval|whole|0|0|convnet|0"]
    assert cells(twice)[:3] == ["build|random|1|0", "eval|random|1|0|convnet|0", "eval|random|1|0|convnet|1"]
    row = next(line for line in board.splitlines() if "| again |" in line)
    assert row.startswith("| – | again | – | – |")  # built (time, memory), not evaluated, not ranked
    assert not (out / "cells" / "eval-again-1-0-convnet-0.json").exists()


@pytest.mark.parametrize("method, message", [
    ({"baseline": "random", "ipcs": [3]}, "ipcs must be a non-empty list of the config's IPCs"),
    ({"recipe": "dm", "args_by_ipc": {"5": ["--x"]}}, "args_by_ipc maps one of its IPCs"),
    ({"baseline": "random", "evaluate": "no"}, "evaluate is true or false"),
    ({"baseline": "random", "ipc": [1]}, "unknown key"),
    ({"baseline": "random", "ipcs": [[1]]}, "ipcs must be a non-empty list"),
    ({"baseline": "random", "args": ["--x"]}, "a baseline takes no args"),
    ({"distill": [], "args": ["--lr", "5"]}, "its flags are the list"),
])
def test_bad_method_entries_are_one_line(method, message):
    with pytest.raises(GenpriorError, match=message) as err:
        check_config({**TINY, "methods": {"x": method}})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, count", [
    # random at IPC 1/10/50, herding and k-center at 10, 3 ConvNets each; the whole split on 3 ConvNets
    ("foundation_mnist5k.json", 5 * 4 + 1 + 3),
    # 11 rows at IPC 1 and 10 (the invert-start ablation at 10, pixel MTT at 1): builds, 3 ConvNets,
    # 1 model of each of the 6 other pool networks; the expert buffer
    ("distill_table_mnist5k.json", 20 * (1 + 3 + 6) + 1),
    # the generator table: 3 generators (Minimax twice: raw and centred embeddings) + 2 prior-sample rows +
    # random + pixel DM + the main job, IPC 1/10/50, with pool; 4 trainings; build-only generate at IPC 10
    # and 1,000 for the flat-memory check
    ("generator_table_mnist5k.json", 9 * 3 * (1 + 3 + 6) + 4 + 2),
    # the training-free selections relaxed toward diversity on the DiT: 7 rows x (build + 3 ConvNets) + the surrogate
    ("sampling_dit_relaxed_mnist5k_ipc10_convnet.json", 7 * (1 + 3) + 1),
    # IT-GAN with and without LPIPS in its inversion, beside random real and pixel DM: 3 seeds x (build + 3 ConvNets)
    ("itgan_lpips_mnist5k.json", 4 * 3 * (1 + 3)),
    # MGD3 and D3HR as genprior applies them and as their public code does, beside random real,
    # pixel DM and plain samples: build + 3 ConvNets a row
    ("mgd3_forms_mnist5k_ipc10_convnet.json", 7 * (1 + 3)),
    ("d3hr_forms_mnist5k_ipc10_convnet.json", 7 * (1 + 3)),
    # IGD and CaO2 with DDIM steps (their recipes' default) and ancestral steps (their code's): the surrogate
    ("sampling_eta_mnist5k_ipc10_convnet.json", 7 * (1 + 3) + 1),
    # generate's time and peak memory from the shipped StyleGAN and the leaderboard's DiM and Minimax
    # generators at IPC 10 and 1,000: builds only
    ("generate_memory_mnist5k.json", 3 * 2),
    # DiM's deployment protocol (a fresh draw every epoch) for the GAN generators, beside random real,
    # pixel DM and the StyleGAN's fixed samples: 6 rows x 2 IPCs x (build + 3 ConvNets)
    ("on_the_fly_mnist5k.json", 6 * 2 * (1 + 3)),
    # Minimax's terms one at a time, raw and centred, beside random real and the base prior's samples
    ("minimax_terms_mnist5k_ipc10_convnet.json", 5 + 7 * (1 + 3)),
])
def test_the_projects_tables_are_configs_of_bench(name, count):
    from genprior.bench import load_config

    config = load_config(str(Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / name))
    assert len(cells(config)) == count


def test_a_setup_step_trains_a_generator_with_its_recipes_defaults(tmp_path, monkeypatch):
    """``["recipe", "minimax", ...]`` runs recipes/minimax.py (its paper's prior, iterations and batch),
    not ``genprior train``'s generic defaults."""
    import genprior.bench as bench

    seen = {}
    monkeypatch.setattr(bench, "_run_command", lambda cmd, run_dir, threads: seen.update(cmd=cmd, run_dir=run_dir) or {})
    config = check_config({**TINY, "setup": {"mm": ["recipe", "minimax", "--no-evaluate", "--output-dir", "{out}/mm"]}})
    bench._compute(config, tmp_path, "setup|mm", 1, {})
    assert seen["cmd"] == ["-m", "genprior.recipes.minimax", "--no-evaluate", "--output-dir", f"{tmp_path}/mm"]
    assert seen["run_dir"] == tmp_path / "mm"  # checkpointed there: a killed training resumes


def test_reuse_takes_identically_computed_cells_from_another_benchmark(tmp_path):
    from genprior.bench import reuse

    first, a = check_config(dict(TINY)), tmp_path / "a"
    run_bench(first, a, progress=False)
    # another table: random real under another name, diversity asked, and a method the first lacks
    second = check_config({**TINY, "name": "second", "diversity": True, "ipcs": [1, 2],
                           "methods": {"real": {"baseline": "random"}, "kc": {"baseline": "kcenter"}}})
    b = tmp_path / "b"
    taken = reuse(second, b, a)
    assert taken == ["build|real|1|0", "eval|real|1|0|convnet|0"]  # not IPC 2, not k-center
    cell = json.loads((b / "cells" / "eval-real-1-0-convnet-0.json").read_text())
    theirs = json.loads((a / "cells" / "eval-random-1-0-convnet-0.json").read_text())
    assert cell["acc"] == theirs["acc"] and cell["reused_from"].endswith("a/cells/eval-random-1-0-convnet-0.json")
    built = json.loads((b / "cells" / "build-real-1-0.json").read_text())
    assert Path(built["synset"]).resolve().is_relative_to(b.resolve()) and Path(built["synset"]).is_dir()
    assert "diversity" in built  # measured on the taken set, which the first table did not do
    # only the rest is computed: random real at IPC 2 (k-center, which takes a while, is left out)
    assert run_bench(second, b, only=["|real|"], progress=False) == 2
    assert "taken from other benchmark folders" in (b / "leaderboard.md").read_text()
    assert reuse(second, b, a) == []  # nothing twice
    # under another protocol the sets are shared but not their evaluations
    third = check_config({**TINY, "name": "third", "protocol": {"name": "quick", "epochs": 2}})
    assert reuse(third, tmp_path / "c", a) == ["build|random|1|0", "build|all|1|0"]
    with pytest.raises(GenpriorError, match="benchmark folder itself"):
        reuse(first, a, a)
    with pytest.raises(GenpriorError, match="not a genprior bench folder"):
        reuse(first, tmp_path / "d", tmp_path)


def test_reuse_leaves_a_set_whose_recipe_settings_changed_since(tmp_path, monkeypatch):
    """A recipe's DEFAULTS are part of what its sets are, though its command line does not show
    them: a build records them, and ``--reuse`` takes the set (and its evaluations) only while
    they still hold."""
    import genprior.recipes.dm as dm_recipe
    from genprior.bench import reuse

    config = check_config({**TINY, "methods": {"dm": {"recipe": "dm", "args": ["--iterations", "1",
                                                                                "--batch-real", "8"]}}})
    run_bench(config, tmp_path / "a", progress=False)
    built = json.loads((tmp_path / "a" / "cells" / "build-dm-1-0.json").read_text())
    assert built["recipe_defaults"] == json.loads(json.dumps(dm_recipe.DEFAULTS, default=str))
    assert reuse(check_config({**config, "name": "same"}), tmp_path / "b", tmp_path / "a") == [
        "build|dm|1|0", "eval|dm|1|0|convnet|0"]
    monkeypatch.setitem(dm_recipe.DEFAULTS, "lr", 123.0)  # the recipe's paper setting changed
    assert reuse(check_config({**config, "name": "changed"}), tmp_path / "c", tmp_path / "a") == []


def test_reuse_takes_attacked_evaluations_for_a_table_without_the_attack_not_back(tmp_path):
    """An evaluation under PGD measured clean accuracy first, on the same network: a table without
    the attack takes it; a table asking for the attack cannot take an evaluation that ran none."""
    from genprior.bench import reuse

    plain = {**TINY, "methods": {"random": {"baseline": "random"}}}
    attacked, a = check_config({**plain, "attack": {"eps": 0.1, "steps": 1}}), tmp_path / "a"
    run_bench(attacked, a, progress=False)
    assert reuse(check_config({**plain, "name": "clean"}), tmp_path / "b", a) == ["build|random|1|0",
                                                                                  "eval|random|1|0|convnet|0"]
    clean = json.loads((tmp_path / "b" / "cells" / "eval-random-1-0-convnet-0.json").read_text())
    assert clean["acc"] == json.loads((a / "cells" / "eval-random-1-0-convnet-0.json").read_text())["acc"]
    # back the other way: the set is shared, its evaluation is not
    assert reuse(check_config({**attacked, "name": "again"}), tmp_path / "c", tmp_path / "b") == ["build|random|1|0"]


def test_only_runs_the_cells_matching_any_of_its_texts(tmp_path):
    config, out = check_config(dict(TINY)), tmp_path / "o"
    assert run_bench(config, out, only=["build|random", "eval|random"], progress=False) == 2
    assert sorted(_files(out)) == ["build-random-1-0.json", "eval-random-1-0-convnet-0.json"]


def test_reuse_copies_setup_outputs_and_rewrites_relative_paths(tmp_path, monkeypatch):
    from genprior.bench import reuse

    monkeypatch.chdir(tmp_path)
    teacher = ["teacher", "--dataset", "digits", "--epochs", "1"]
    first = check_config({**TINY, "setup": {"t": [*teacher, "--out", "{out}/t"], "shared": [*teacher, "--out", "common"]},
                          "methods": {"random": {"baseline": "random"}}})
    run_bench(first, Path("a"), progress=False)
    second = check_config({**first, "name": "second"})
    assert reuse(second, Path("b"), Path("a")) == cells(second)  # every cell, the setup steps too
    assert (tmp_path / "b" / "t" / "teacher.json").is_file() and (tmp_path / "a" / "t" / "teacher.json").is_file()
    assert (tmp_path / "common" / "teacher.json").is_file()  # a folder outside both is shared, not copied away
    built = json.loads((tmp_path / "b" / "cells" / "build-random-1-0.json").read_text())
    assert built["synset"].startswith("b/sets/random-ipc1-s0") and " b/sets/random-ipc1-s0 " in built["command"]
    # a setup step with other settings is another step: neither it nor what reads it is taken
    third = check_config({**first, "name": "third", "setup": {"t": [*teacher[:-1], "2", "--out", "{out}/t"],
                                                             "shared": first["setup"]["shared"]}})
    assert "setup|t" not in reuse(third, Path("c"), Path("a"))
