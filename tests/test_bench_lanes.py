"""The benchmark units' bookkeeping: resumable, shared between processes, dependencies honoured."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from lanes import locked, mean_std, run_lane  # noqa: E402


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
    path.write_text(json.dumps({"units": {}, "claims": {"dead": dead, "live": os.getppid()}}))
    ran = []
    run_lane(path, _initial, ["dead", "live"], lambda k: [], lambda k: ran.append(k) or {}, max_units=1)
    assert ran == ["dead"]
    with locked(path, _initial) as results:
        assert results["claims"] == {"live": os.getppid()}


def test_a_failed_unit_releases_its_claim(tmp_path):
    path = tmp_path / "r.json"

    def boom(key):
        raise RuntimeError("unit failed")
    try:
        run_lane(path, _initial, ["x"], lambda k: [], boom)
    except RuntimeError:
        pass
    saved = json.loads(path.read_text())
    assert saved["claims"] == {} and saved["units"] == {}


def test_mean_std_is_the_population_std():
    mean, std = mean_std([0.5, 0.7])
    assert abs(mean - 0.6) < 1e-12 and abs(std - 0.1) < 1e-12
