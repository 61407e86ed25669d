"""benchmarks/speed.py: its floors replay the step's own calls, and the GPU check runs on a CPU at tiny sizes."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import speed  # noqa: E402


def test_recorder_replays_exactly_the_calls_of_the_step():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 1, 8, 8))
    rec = speed.Recorder()
    rec.hook_net(net)
    rec.hook_net(net)  # hooked once, whatever the calls
    seen = []
    rec.wrap_prior(type("P", (), {"decode": lambda self, x: seen.append(x.shape[0]) or x,
                                  "backward_chunked": lambda self, g: None})())
    net(torch.zeros(3, 1, 8, 8))  # not recording yet
    rec.on = True
    with torch.no_grad():
        net(torch.zeros(5, 1, 8, 8))
    net(torch.zeros(2, 1, 8, 8))
    rec.on = False
    assert [(x.shape[0], grad) for _, x, grad, *_ in rec.net_calls] == [(5, False), (2, True)]
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append((a[0].shape[0], torch.is_grad_enabled())))
    assert rec.replay() > 0
    assert calls == [(5, False), (2, True)]
    assert all(p.grad is None for p in net.parameters())  # the replayed backward leaves nothing behind


def test_gpu_check_runs_on_a_cpu_at_tiny_sizes(tmp_path):
    speed.main(["--gpu-check", "--tiny", "--threads", "1", "--results", str(tmp_path / "speed.json")])
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["family"], r["precision"]) for r in rows] == [("stylegan", "no"), ("stylegan", "bf16"),
                                                             ("diffusion", "no"), ("diffusion", "bf16")]
    for r in rows:
        assert r["kind"] == "gpu-check" and r["device"] == "cpu" and r["memory"]
        assert r["net_calls"] > 0 and r["prior_calls"] > 0  # the floor replayed the network and the prior
        # timings only as numbers: their order is the benchmark's to report, not the test's
        assert r["throughput_vs_prior_floor"] == pytest.approx(r["prior_floor_s"] / r["step_s"])
        assert r["ratio"] == pytest.approx(r["step_s"] / r["floor_s"])
    for fp32, bf16 in (rows[0:2], rows[2:4]):  # each bf16 row is timed against its own fp32 row
        assert "bf16_speedup" not in fp32 and bf16["bf16_speedup"] == pytest.approx(fp32["step_s"] / bf16["step_s"])
    table = (tmp_path / "speed.md").read_text()
    assert "gpu-check-dm-stylegan16-ipc2-fp32" in table and "gpu-check-dm-diffusion16-ipc2-bf16" in table
