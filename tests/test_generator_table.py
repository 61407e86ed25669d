"""benchmarks/generator_table.py: its units form a runnable plan, and its table reads partial results."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import generator_table as gt  # noqa: E402


def test_every_dependency_is_a_unit_that_comes_first():
    order = gt.order()
    assert len(order) == len(set(order))
    for i, key in enumerate(order):
        for dep in gt.deps(key):
            assert dep in order[:i], (key, dep)
    # every method's sets come from its one trained generator
    assert gt.deps("set|dim|50") == ["train|dim"] and gt.deps("eval|dim|50|convnet|0") == ["set|dim|50"]


def test_the_table_is_written_from_partial_results(tmp_path, monkeypatch):
    monkeypatch.setattr(gt, "TABLE", tmp_path / "t.md")
    monkeypatch.setattr(gt, "DISTILL_TABLE", tmp_path / "missing.json")
    units = {"set|dim|10": {"time_s": 5.0, "seconds_per_100_images": 5.0, "peak_rss_mib": 1000.0},
             "eval|dim|10|convnet|0": {"acc": 0.9}, "eval|dim|10|convnet|1": {"acc": 0.92},
             "eval|dim|10|alexnet|0": {"acc": 0.8}}
    gt.write_table({"units": units, "machine": "test"})
    row = next(l for l in (tmp_path / "t.md").read_text().splitlines() if l.startswith("| dim | 10 |"))
    assert "91.00 ± 1.00" in row and "85.50 (2/7)" in row and "| 5.0 | 1000 |" in row
