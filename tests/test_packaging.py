"""The wheel carries the shipped priors, their registry and the recipes, and runs outside a checkout."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_library_folder():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "genprior").rglob("__init__.py")}
    assert set(packages) == found | {"genprior.pretrained", "genprior.recipes"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                           str(out), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(out.glob("genprior-*.whl"))


def test_the_wheel_carries_the_registry_the_priors_and_the_recipes(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "genprior/pretrained/registry.json" in names
    for prior in ("mnist5k-stylegan/generator", "mnist5k-diffusion/unet"):
        assert f"genprior/pretrained/{prior}/diffusion_pytorch_model.safetensors" in names
        assert f"genprior/pretrained/{prior}/config.json" in names
    assert "genprior/pretrained/mnist5k-vae/diffusion_pytorch_model.safetensors" in names  # a prior of one model
    for part in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "model_index.json", "prior.json"):  # DiTPipeline's layout
        assert f"genprior/pretrained/mnist5k-dit/{part}" in names
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json",
                 "model_index.json", "prior.json"):  # Stable Diffusion's layout
        assert f"genprior/pretrained/mnist5k-text/{part}" in names
    for recipe in (ROOT / "recipes").glob("*.py"):
        assert f"genprior/recipes/{recipe.name}" in names


def test_an_installed_wheel_samples_from_any_folder(wheel, tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("GENPRIOR_PRETRAINED", None)
    where = subprocess.run([sys.executable, "-c", "import genprior, genprior.priors.load as L; "
                            "print(genprior.__file__); print(L.pretrained_dir())"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-2000:]
    library, pretrained = where.stdout.split()
    assert Path(library).is_relative_to(site) and Path(pretrained).is_relative_to(site)
    done = subprocess.run([sys.executable, "-m", "genprior", "sample", "mnist5k-stylegan", "out", "--ipc", "1"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "out" / "grid.png").is_file()
