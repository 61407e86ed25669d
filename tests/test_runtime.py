"""The allocator setting every genprior process starts with (genprior/runtime.py)."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from genprior.runtime import ENV, GLIBC_ENV

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
ROOT = Path(__file__).resolve().parents[1]

# Touch a 256 MiB tensor, free it, and report the resident size before, while and after.
PROBE = """
import json, os, torch, genprior
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20
base = rss()
x = torch.ones(64 << 20)
held = rss()
del x
print(json.dumps({"setting": genprior.memory_setting(), "base": base, "held": held, "after": rss()}))
"""


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in GLIBC_ENV + (ENV, "GLIBC_TUNABLES", "LD_PRELOAD")}
    env.update(extra)
    return env


def probe(**extra) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(**extra), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the allocator setting applies to glibc's malloc")
def test_freed_buffers_are_kept_by_default_and_returned_when_switched_off():
    on, off = probe(), probe(**{ENV: "0"})
    assert on["setting"]["keep_freed_memory"] == "on" and off["setting"]["keep_freed_memory"] == "off"
    for r in (on, off):
        assert r["held"] - r["base"] >= 250  # the tensor was really resident
    assert on["after"] - on["base"] >= 250  # kept for the next step
    assert off["after"] - off["base"] < 50  # handed back to the system at once


@pytest.mark.skipif(not GLIBC, reason="the allocator setting applies to glibc's malloc")
def test_the_users_own_glibc_settings_win():
    r = probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert r["setting"]["keep_freed_memory"] == "environment" and "MALLOC_MMAP_THRESHOLD_" in r["setting"]["how"]
    assert r["after"] - r["base"] < 50  # the user's threshold is in force: freed memory goes back


def test_a_bad_switch_fails_in_one_line_naming_the_values():
    done = subprocess.run([sys.executable, "-m", "genprior", "list", "protocols"], env=clean_env(**{ENV: "maybe"}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"genprior: error: {ENV}='maybe' is not understood; set it to 1 (keep freed memory, the default) or 0 (off)"]


DISTILL = """
import sys, torch
from genprior.distill import DistillConfig, distill
torch.set_num_threads(1)
cfg = DistillConfig(dataset="digits", prior="pixel", loss="dm", ipc=2, iterations=3, init="random", lr=1.0,
                    batch_real=32, checkpoint_every=10, loss_options={"net_options": {"width": 16}})
s = distill(cfg, sys.argv[1], progress=False)
torch.save(s.images, sys.argv[1] + ".pt")
"""


def test_every_setting_is_applied_or_reported_when_glibc_refuses_one():
    from genprior.runtime import M_MMAP_MAX, M_MMAP_THRESHOLD, _apply

    assert _apply(lambda p, v: 1)["keep_freed_memory"] == "on"
    old_glibc = _apply(lambda p, v: 0 if p == M_MMAP_THRESHOLD else 1)  # glibc < 2.35 caps the threshold
    assert old_glibc["keep_freed_memory"] == "on" and "no mmap" in old_glibc["how"]
    partial = _apply(lambda p, v: 0 if p in (M_MMAP_THRESHOLD, M_MMAP_MAX) else 1)
    assert partial["keep_freed_memory"] == "partial" and "trim threshold" in partial["how"]
    assert _apply(lambda p, v: 0)["keep_freed_memory"] == "unsupported"
    assert _apply(None)["keep_freed_memory"] == "unsupported"


@pytest.mark.skipif(not GLIBC, reason="compares the kept and the returned setting, which needs glibc")
def test_the_setting_does_not_change_results(tmp_path):
    """Only where freed memory goes changes: the same seed gives the same set bit for bit."""
    import torch

    assert probe()["setting"]["keep_freed_memory"] == "on"  # the child below really runs with buffers kept
    for name, value in (("on", "1"), ("off", "0")):
        done = subprocess.run([sys.executable, "-c", DISTILL, str(tmp_path / name)], env=clean_env(**{ENV: value}),
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "on.pt"), torch.load(tmp_path / "off.pt"))
