"""The benchmark units' bookkeeping: resumable, shared between processes, dependencies honoured."""
import json

from genprior.evaluate import mean_std
from genprior.lanes import _start_time, locked, redo, run_lane


def _initial():
    return {"units": {}, "claims": {}}


def test_units_run_in_dependency_order_and_are_saved(tmp_path):
    path = tmp_path / "r.json"
    ran = []
    deps = {"eval|a": ["build|a"], "build|a": []}
    n = run_lane(path, _initial, ["eval|a", "build|a"], lambda k: deps[k], lambda k: ran.append(k) or {"k": k},
                 poll_s=0.01)
    assert n == 2 and ran == ["build|a", "eval|a"]
    saved = json.loads(path.read_text())
    assert set(saved["units"]) == {"build|a", "eval|a"} and saved["claims"] == {}
    assert run_lane(path, _initial, ["eval|a", "build|a"], lambda k: deps[k], lambda k: 1 / 0) == 0  # nothing left


def test_a_dead_lanes_claim_is_taken_over_and_a_live_one_is_not(tmp_path):
    import os

    path = tmp_path / "r.json"
    dead = 2**22 + 12345  # above Linux's largest pid_max: no process has it
    parent = f"{os.getppid()}:{_start_time(os.getppid())}"
    reused = f"{os.getppid()}:1"  # the parent's pid, but a process that started at another time
    path.write_text(json.dumps({"units": {}, "claims": {"dead": dead, "reused": reused, "live": parent}}))
    ran = []
    run_lane(path, _initial, ["dead", "reused", "live"], lambda k: [], lambda k: ran.append(k) or {}, max_units=2)
    assert ran == ["dead", "reused"]
    with locked(path, _initial) as results:
        assert results["claims"] == {"live": parent}


def test_a_lane_stops_when_dependencies_are_excluded(tmp_path, capsys):
    path = tmp_path / "r.json"
    n = run_lane(path, _initial, ["build", "eval"], lambda k: ["build"] if k == "eval" else [],
                 lambda k: {}, only=lambda k: k == "eval", poll_s=0.01)
    assert n == 0 and "build" in capsys.readouterr().out


def test_a_failed_unit_releases_its_claim_and_the_lane_goes_on(tmp_path):
    path = tmp_path / "r.json"

    def work(key):
        if key == "x":
            raise RuntimeError("unit failed")
        return {}
    assert run_lane(path, _initial, ["x", "y", "z"], lambda k: ["x"] if k == "z" else [], work) == 1
    saved = json.loads(path.read_text())
    assert saved["claims"] == {} and list(saved["units"]) == ["y"]


def test_mean_std_is_the_population_std():
    mean, std = mean_std([0.5, 0.7])
    assert abs(mean - 0.6) < 1e-12 and abs(std - 0.1) < 1e-12


def test_redo_forgets_units_and_their_files_but_not_a_live_lanes(tmp_path):
    import os

    import pytest

    path = tmp_path / "r.json"
    run_dir = tmp_path / "run-a"
    (run_dir / "checkpoints").mkdir(parents=True)
    live = f"{os.getppid()}:{_start_time(os.getppid())}"
    path.write_text(json.dumps({"units": {"build|a": 1, "eval|a": 2, "build|b": 3}, "claims": {"eval|b": live}}))
    gone = redo(path, _initial, ["build|a", "eval|a"], lambda k: [run_dir] if k == "build|a" else [])
    assert gone == ["build|a", "eval|a"] and not run_dir.exists()
    ran = []
    run_lane(path, _initial, ["build|a", "eval|a", "build|b"], lambda k: [], lambda k: ran.append(k) or {})
    assert ran == ["build|a", "eval|a"]  # run again; build|b was kept
    with pytest.raises(SystemExit, match="running lane"):
        redo(path, _initial, ["eval|b"])
