"""Every recipe and variant runs with its own defaults (one short iteration here), so
`python recipes/<name>.py` never fails on its built-in configuration."""
import importlib.util
import json
from pathlib import Path

import pytest

from genprior.cli import recipe_defaults, recipe_parser, run_recipe
from genprior.data import load_dataset
from genprior.matching.experts import train_experts
from genprior.synset import load_synset

from conftest import subset

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_generator_recipe(module) -> bool:
    """Recipes that train the generator itself run ``run_generator_recipe``."""
    return hasattr(module, "run_generator_recipe")


def _is_sampling_recipe(module) -> bool:
    """Training-free recipes run ``run_sampling_recipe`` (``genprior generate --method``)."""
    return hasattr(module, "run_sampling_recipe")


def _cases():
    for path in sorted(p for p in RECIPES.glob("*.py") if p.stem != "__init__"):
        module = _load(path.stem)
        if _is_generator_recipe(module) or _is_sampling_recipe(module):
            continue
        for variant in getattr(module, "VARIANTS", None) or [None]:
            yield path.stem, variant


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    """A tiny mnist5k expert buffer (one expert, two epochs on 10 images per class)."""
    train = subset(load_dataset("mnist5k", "train"), 10)
    return train_experts(train, "convnet", 1, 2, tmp_path_factory.mktemp("experts") / "buffer", progress=False)


def _generator_cases():
    return [p.stem for p in sorted(RECIPES.glob("*.py")) if p.stem != "__init__" and _is_generator_recipe(_load(p.stem))]


def _sampling_cases():
    return [p.stem for p in sorted(RECIPES.glob("*.py")) if p.stem != "__init__" and _is_sampling_recipe(_load(p.stem))]


def test_every_recipe_is_covered():
    assert {name for name, _ in _cases()} == {"glad", "itgan", "ld3m", "dm", "dc", "mtt"}
    assert set(_generator_cases()) == {"dim", "dcgm", "minimax"}
    assert set(_sampling_cases()) == {"d4m", "mgd3", "igd", "d3hr", "cao2"}


@pytest.fixture(scope="module")
def mnist5k_teacher(tmp_path_factory):
    """A 1-epoch ConvNet of mnist5k with its start and end saved: IGD's surrogate, CaO2's classifier."""
    from genprior.teacher import train_teacher

    return train_teacher("mnist5k", tmp_path_factory.mktemp("teacher") / "t", epochs=1, snapshots=[0, 1],
                         progress=False)


@pytest.mark.parametrize("name", _sampling_cases())
def test_sampling_recipe_runs_with_its_defaults(tmp_path, mnist5k_teacher, name):
    from genprior.cli import run_sampling_recipe

    module = _load(name)
    tiny = {"igd": ["--option", f"surrogate={mnist5k_teacher}", "--option", "snapshots=[0,1]",
                    "--option", "grad_images=8"],
            "cao2": ["--option", f"classifier={mnist5k_teacher}", "--option", "refine_steps=2",
                     "--option", "ratio=2"],
            "d3hr": ["--option", "candidates=50"]}.get(name, [])
    steps = 3 if name == "igd" else 2  # IGD's window 0.08-0.4 holds a step of 3 (at 1/3), none of 2
    argv = ["--ipc", "1", "--prior-option", f"num_inference_steps={steps}", *tiny, "--no-evaluate", "--out-dir",
            str(tmp_path / "set")]
    run_sampling_recipe(module.__doc__, module.DEFAULTS, setup=getattr(module, "setup", None), argv=argv)
    synset = load_synset(tmp_path / "set")
    assert synset.ipc == 1 and synset.num_classes == 10 and synset.method == name
    options = synset.config["options"]
    for key, value in module.DEFAULTS["option"].items():  # the paper's settings, except where the test cut them
        assert options[key] == value or f"{key}=" in " ".join(tiny)


@pytest.mark.parametrize("name", _generator_cases())
def test_generator_recipe_runs_with_its_defaults(tmp_path, name):
    from genprior.cli import run_generator_recipe
    from genprior.priors.load import load_prior

    module = _load(name)
    gan = ["--method-option", "d_warmup=1", "--method-option", "pool_steps=1"]
    tiny = {"dim": gan, "dcgm": gan,
            "minimax": ["--prior-option", "num_inference_steps=2"]}[module.DEFAULTS["method"]]
    argv = ["--iterations", "1", "--batch-size", "4", *tiny, "--no-evaluate", "--output-dir", str(tmp_path / "run")]
    run_generator_recipe(module.__doc__, module.DEFAULTS, argv=argv)
    prior = load_prior(str(tmp_path / "run" / "generator"))
    card = prior.describe()
    assert card["method"] == module.DEFAULTS["method"] and card["base_prior"] == module.DEFAULTS["prior"]
    assert card["command"].startswith("python ") and "--iterations 1" in card["command"]


@pytest.mark.parametrize("name, variant", list(_cases()))
def test_recipe_runs_with_its_defaults(tmp_path, buffer, name, variant):
    module = _load(name)
    argv = ["--ipc", "1", "--iterations", "1", "--batch-real", "8", "--invert-steps", "2", "--no-evaluate",
            "--output-dir", str(tmp_path / "run")]
    if variant is not None:
        argv += ["--variant", variant]
    defaults = recipe_defaults(module.DEFAULTS, getattr(module, "VARIANTS", None),
                               recipe_parser("", getattr(module, "VARIANTS", None)).parse_args(argv))
    if defaults["loss"] == "mtt":  # the tiny buffer has 2 epochs
        argv += ["--loss-option", f"buffer={buffer}", "--loss-option", "max_start_epoch=1",
                 "--loss-option", "expert_epochs=1", "--loss-option", "syn_steps=2"]
    run_recipe(module.__doc__, module.DEFAULTS, getattr(module, "VARIANTS", None), argv=argv)
    synset = load_synset(tmp_path / "run" / "synset")
    assert synset.ipc == 1 and synset.num_classes == 10
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["loss"] == defaults["loss"] and config["prior"] == defaults["prior"]


def test_glad_learning_rate_of_F_applies_in_the_F_space_only():
    glad = _load("glad")
    parser = recipe_parser("", glad.VARIANTS)
    assert recipe_defaults(glad.DEFAULTS, glad.VARIANTS, parser.parse_args([])).get("latent_lrs", {}) == {}
    f = recipe_defaults(glad.DEFAULTS, glad.VARIANTS, parser.parse_args(["--space", "F", "--variant", "mtt"]))
    assert f["latent_lrs"] == {"F": 10000.0} and f["lr"] == 10.0 and "by_space" not in f


@pytest.mark.parametrize("name, variant", [("mtt", None), ("glad", "mtt")])
def test_documented_expert_buffer_covers_the_default_schedule(name, variant):
    """The `genprior experts` command a recipe documents (or the command's default length)
    trains enough epochs for the MTT schedule the recipe runs at its default IPC."""
    import re

    from genprior.cli import build_parser
    from genprior.matching.mtt import MTT_SCHEDULES

    module = _load(name)
    argv = [] if variant is None else ["--variant", variant]
    defaults = recipe_defaults(module.DEFAULTS, getattr(module, "VARIANTS", None),
                               recipe_parser("", getattr(module, "VARIANTS", None)).parse_args(argv))
    assert defaults["loss"] == "mtt"
    schedule = {**MTT_SCHEDULES[defaults["ipc"]], **defaults.get("loss_options", {})}
    needed = schedule["max_start_epoch"] - 1 + schedule["expert_epochs"]
    command = re.search(r"genprior experts[^\n]*", module.__doc__)
    given = re.search(r"--epochs (\d+)", command.group(0)) if command else None
    epochs = int(given.group(1)) if given else build_parser().parse_args(["experts"]).epochs
    assert epochs >= needed, f"{name} {variant}: experts of {epochs} epochs, the schedule needs {needed}"
