"""``genprior bench``: methods x IPCs x architectures x seeds on one dataset under a named protocol.

A benchmark is a JSON config (``DEFAULT_CONFIG`` when none is given)::

    {"name": "mnist5k-ipc1", "dataset": "mnist5k", "protocol": "quick", "ipcs": [1, 10], "seeds": [0],
     "archs": ["convnet"], "models": 3, "attack": {"eps": 0.1, "steps": 10},
     "methods": {"random": {"baseline": "random"},
                 "dm": {"distill": ["--prior", "pixel", "--loss", "dm", "--init", "invert", "--lr", "1"]},
                 "glad-dm": {"recipe": "glad", "args": ["--variant", "dm"]}}}

``protocol`` is a protocol name or ``{"name": "quick", "epochs": 30}`` (other counts, labelled
custom; ``soft`` needs ``"teacher": "DIR"``, a ``genprior teacher`` folder); ``device`` (default ``cpu``;
``auto``, ``cuda``) is where evaluation networks train; ``archs`` may name ``pool`` (the cross-architecture pool); ``attack`` (optional) adds
robust accuracy under an L-inf PGD attack; ``"diversity": true`` the mean pairwise LPIPS
distance within each class of every set (``genprior.perceptual``); ``"scores": true`` adds DD-Ranking's LRS and ARS
(``genprior.scores``), which need a ``{"baseline": "random"}`` method, the first network trained
without any augmentation (``plain`` cells: no DSA, crops nor CutMix) and the whole train split on it
(the ``whole`` cells); under a protocol that distils from a teacher, the first network also trains
on the sets' hard labels without it (``hard`` cells), and the whole train split does too, since
DD-Ranking's HLR compares hard-label accuracies; ``"whole": true`` trains the whole train
split on the first network without the scores (the full-data line of the report), and
``"whole": N`` trains it N times (with or without scores; e.g. 1 where one network on the
whole split costs hours), where otherwise it takes the first network's model count. A method is a
baseline (``random``, ``herding``, ``kcenter``, ``whole``), ``genprior distill`` flags, a recipe
with flags, or ``genprior generate`` from a prior or trained generator (``"generate": PRIOR``);
the benchmark adds the dataset, IPC, seed and output folder. A method may also say at which of
the config's IPCs it runs (``"ipcs": [10]``), add flags at one IPC only (``"args_by_ipc":
{"10": [...]}``, e.g. a cheaper setting where the paper's would not fit a CPU) and be built
without evaluation (``"evaluate": false``: its time and peak memory only, e.g. a generator at
IPC 1,000); a ``generate`` method may be evaluated on the fly (``"on_the_fly": true``: DiM's
deployment protocol, a fresh draw from the generator every epoch), so the project's tables
are configs of this command (``benchmarks/configs/``).

Every cell is a unit of ``genprior.lanes``: ``build|method|ipc|seed`` makes a set in its own
process (time and peak memory measured; a distillation resumes from its checkpoints), and
``eval|method|ipc|seed|arch|model`` trains one evaluation network (resuming mid-training).
Each finished cell is written at once to ``OUT/cells/<cell>.json`` with the resolved config
and versions, so a killed benchmark resumes where it stopped, several processes share the
work without running a cell twice, and a finished cell is never recomputed (``--redo TEXT``
forgets the matching cells; ``--reuse DIR`` takes the cells another benchmark folder computed
identically; ``OUT/protocols.json`` keeps the protocols the cells were computed
under, settings and code revision, and a folder computed under others is refused rather than
mixed). ``OUT/leaderboard.md`` ranks the methods per IPC (mean ± std
per network, cross-architecture mean, robust accuracy, build time and memory) and
``OUT/plots/`` holds accuracy against IPC, cross-architecture bars and build time against
accuracy.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .errors import GenpriorError
from .evaluate import mean_std
from .lanes import eval_unit, locked, redo, run_lane, run_process, run_recipe_unit
from .synset import library_versions, write_json_atomic, write_text_atomic

#: what ``genprior bench`` runs with no config: random real images, pixel DM and GLaD-DM at IPC 1
#: on mnist5k, ConvNet under ``quick``; a few minutes of distillation, about half an hour of training
#: evaluation networks on 2 CPU cores
DEFAULT_CONFIG: Dict[str, Any] = {
    "name": "default",
    "dataset": "mnist5k",
    "protocol": "quick",
    "ipcs": [1],
    "seeds": [0],
    "archs": ["convnet"],
    "methods": {
        "random": {"baseline": "random"},
        "dm": {"recipe": "dm", "args": ["--iterations", "100"]},
        "glad-dm": {"recipe": "glad", "args": ["--variant", "dm", "--iterations", "100"]},
    },
}
CONFIG_KEYS = {"name", "dataset", "protocol", "ipcs", "seeds", "archs", "models", "attack", "scores", "diversity",
               "whole", "setup", "methods", "data_root", "device", "teacher"}
#: what a method entry may hold beside its kind: flags, a setup step it waits on, the IPCs it runs
#: at (some of the config's), flags added at one IPC only, and whether its sets are evaluated
#: (``"evaluate": false``: build only, for time and memory, e.g. a generator at IPC 1,000), and
#: whether a ``generate`` method's evaluations draw a fresh set every epoch (``"on_the_fly": true``)
METHOD_KEYS = {"args", "after", "ipcs", "args_by_ipc", "evaluate", "on_the_fly"}
#: the pseudo-method of the full-data reference (DD-Ranking's scores): the whole train split (its
#: largest class-balanced part where the classes differ in size; all of mnist5k)
WHOLE = "whole"
METHOD_KINDS = ("baseline", "distill", "recipe", "generate")
#: ``genprior`` commands a setup step may run once for the methods that name it in ``after``;
#: ``recipe NAME`` runs a generator recipe (``recipes/dim.py``: its paper's defaults, then the flags)
SETUP_COMMANDS = ("experts", "train", "teacher", "recipe")
#: setup commands that train a generator into ``--output-dir`` (checkpointed there; a killed one resumes)
TRAINING_SETUPS = ("train", "recipe")


def load_config(path: Optional[str]) -> Dict[str, Any]:
    """The config at ``path`` (JSON), or the default; checked before any work."""
    if path is None:
        return check_config(json.loads(json.dumps(DEFAULT_CONFIG)))
    p = Path(path)
    if not p.is_file():
        raise GenpriorError(f"no benchmark config at {p}; pass a JSON file (see `genprior bench --help`)")
    try:
        config = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise GenpriorError(f"{p} is not valid JSON ({e}); fix it there (benchmarks/configs/ holds working "
                            "examples)") from None
    return check_config(config)


def check_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Fill the defaults and refuse what would fail later: unknown keys, datasets, networks,
    baselines, recipes, protocols, IPCs below 1, a bad attack."""
    from .baselines import BASELINES
    from .data import DATASETS
    from .evaluate import PGDAttack
    from .nets import CROSS_ARCH_POOL, NETS
    from .priors.load import package_folder

    if not isinstance(config, dict):
        raise GenpriorError("a benchmark config is a JSON object")
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise GenpriorError(f"unknown benchmark config key(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(sorted(CONFIG_KEYS))}")
    config = {"name": "bench", "dataset": "mnist5k", "protocol": "quick", "ipcs": [1], "seeds": [0],
              "archs": ["convnet"], "device": "cpu", **config}
    from .evaluate import resolve_device

    resolve_device(config["device"])  # an unknown device, or cuda without a GPU, fails here
    DATASETS.entry(config["dataset"])
    for key in ("ipcs", "seeds"):
        values = config[key]
        if not isinstance(values, list) or not values or any(isinstance(v, bool) or not isinstance(v, int)
                                                             for v in values):
            raise GenpriorError(f"{key} must be a non-empty list of integers, got {values!r}")
    if min(config["ipcs"]) < 1:
        raise GenpriorError(f"IPCs must be at least 1, got {config['ipcs']}")
    archs = []
    for arch in config["archs"]:
        archs += list(CROSS_ARCH_POOL) if arch == "pool" else [arch]
    for arch in archs:
        NETS.entry(arch)
    config["archs"] = list(dict.fromkeys(archs))
    spec = config["protocol"]
    if not (isinstance(spec, str) or (isinstance(spec, dict) and set(spec) <= {"name", "epochs"})):
        raise GenpriorError(f'protocol is a name or {{"name": ..., "epochs": ...}}, got {spec!r}')
    proto = protocol(config)  # an unknown protocol or bad counts fail here
    if proto.temperature > 0 and not isinstance(config.get("teacher"), str):
        raise GenpriorError(f"protocol {proto.name!r} distils from a teacher: give the config a \"teacher\" folder "
                            f"(made by `genprior teacher --dataset {config['dataset']}`)")
    if config.get("teacher") is not None and proto.temperature == 0:
        raise GenpriorError(f"a teacher only serves a protocol that distils from one (soft), not {proto.name!r}")
    models = config.get("models")
    counts = list(models.values()) if isinstance(models, dict) else [models] if models is not None else []
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in counts):
        raise GenpriorError(f"models is a positive integer, or one per network ({{\"convnet\": 3, \"*\": 1}}), got {models!r}")
    attack = config.get("attack")
    if attack is not None:
        if not isinstance(attack, dict) or not set(attack) <= {"eps", "steps", "step_size"} or "eps" not in attack:
            raise GenpriorError(f'attack is {{"eps": ..., "steps": ..., "step_size": ...}} (eps required), got {attack!r}')
        PGDAttack(**attack)
    setup = config.setdefault("setup", {})
    if not isinstance(setup, dict):
        raise GenpriorError("setup maps a step name to the genprior command it runs, e.g. "
                            '{"experts": ["experts", "--num-experts", "5", "--out-dir", "{out}/experts"]}')
    for name, argv in setup.items():
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) \
                or argv[0] not in SETUP_COMMANDS:
            raise GenpriorError(f"setup step {name!r} must be a genprior command ({', '.join(SETUP_COMMANDS)}) and "
                                f"its flags as a list of strings, got {argv!r}")
        if argv[0] == "teacher" and "--out" not in argv:
            raise GenpriorError(f"setup step {name!r} trains a teacher: give it --out (e.g. {{out}}/{name}) so that "
                                "the methods can read it and --redo can forget it")
        if argv[0] == "recipe" and (len(argv) < 2 or not is_generator_recipe(argv[1])):
            raise GenpriorError(f"setup step {name!r}: 'recipe' runs a generator recipe ({', '.join(generator_recipes())}) "
                                f"and its flags, got {argv!r}")
        if argv[0] in TRAINING_SETUPS and "--output-dir" not in argv:
            raise GenpriorError(f"setup step {name!r} trains a generator: give it --output-dir (e.g. {{out}}/{name}) so "
                                "that the methods can generate from it and a killed run resumes")
    methods = config.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise GenpriorError("methods must name at least one method, e.g. {\"random\": {\"baseline\": \"random\"}}")
    recipes = package_folder("genprior.recipes", "recipes")
    for name, spec in methods.items():
        if "|" in name or "/" in name or not name:
            raise GenpriorError(f"method names cannot be empty or hold '|' or '/', got {name!r}")
        kinds = [k for k in METHOD_KINDS if k in spec] if isinstance(spec, dict) else []
        if len(kinds) != 1:
            raise GenpriorError(f"method {name!r} needs exactly one of {', '.join(METHOD_KINDS)}, got {spec!r}")
        if kinds[0] == "baseline":
            BASELINES.entry(spec["baseline"])
        elif kinds[0] == "recipe" and not (recipes / f"{spec['recipe']}.py").is_file():
            known = ", ".join(sorted(p.stem for p in recipes.glob("*.py") if p.stem != "__init__"))
            raise GenpriorError(f"method {name!r}: no recipe {spec['recipe']!r}; known recipes: {known}")
        args = spec.get("distill", spec.get("args", []))
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise GenpriorError(f"method {name!r}: flags are a list of strings, got {args!r}")
        if not isinstance(spec.get("after", ""), str) or not isinstance(spec.get("generate", ""), str):
            raise GenpriorError(f"method {name!r}: after and generate name one setup step / prior each, got {spec!r}")
        unknown = set(spec) - set(METHOD_KINDS) - METHOD_KEYS
        if unknown:
            raise GenpriorError(f"method {name!r}: unknown key(s) {', '.join(sorted(unknown))}; a method holds one of "
                                f"{', '.join(METHOD_KINDS)} and any of {', '.join(sorted(METHOD_KEYS))}")
        ignored = [k for k in ("args", "args_by_ipc") if k in spec and kinds[0] == "baseline"] + \
            (["args"] if "args" in spec and kinds[0] == "distill" else [])
        if ignored:
            raise GenpriorError(f"method {name!r}: a {kinds[0]} takes no {' or '.join(ignored)}"
                                + (" (its flags are the list of \"distill\")" if kinds[0] == "distill" else ""))
        ipcs = spec.get("ipcs", config["ipcs"])
        if not isinstance(ipcs, list) or not ipcs or any(isinstance(v, bool) or not isinstance(v, int) for v in ipcs) \
                or not set(ipcs) <= set(config["ipcs"]):
            raise GenpriorError(f"method {name!r}: ipcs must be a non-empty list of the config's IPCs "
                                f"{config['ipcs']}, got {ipcs!r}")
        by_ipc = spec.get("args_by_ipc", {})
        if not isinstance(by_ipc, dict) or any(k not in {str(i) for i in ipcs} for k in by_ipc) \
                or not all(isinstance(v, list) and all(isinstance(a, str) for a in v) for v in by_ipc.values()):
            raise GenpriorError(f"method {name!r}: args_by_ipc maps one of its IPCs (as a string, e.g. \"10\") to a "
                                f"list of flags, got {by_ipc!r}")
        if not isinstance(spec.get("evaluate", True), bool):
            raise GenpriorError(f"method {name!r}: evaluate is true or false, got {spec['evaluate']!r}")
        if not isinstance(spec.get("on_the_fly", False), bool):
            raise GenpriorError(f"method {name!r}: on_the_fly is true or false, got {spec['on_the_fly']!r}")
        if spec.get("on_the_fly") and "generate" not in spec:
            raise GenpriorError(f"method {name!r}: on_the_fly draws from the generator of a \"generate\" method; "
                                "drop it or make the method {\"generate\": PRIOR}")
        if spec.get("on_the_fly") and "--method" in spec.get("args", []) + sum(by_ipc.values(), []):
            raise GenpriorError(f"method {name!r}: on_the_fly draws plain samples from the prior, but its args name a "
                                "training-free --method, whose draws need the real data: drop on_the_fly")
        if "after" in spec and spec["after"] not in setup:
            raise GenpriorError(f"method {name!r} runs after setup step {spec['after']!r}, which the config does not "
                                f"define (its steps: {', '.join(setup) or 'none'})")
    if WHOLE in methods:
        raise GenpriorError(f"{WHOLE!r} names the full-data reference of the scores; call the method otherwise")
    for key in ("scores", "diversity"):
        if not isinstance(config.get(key, False), bool):
            raise GenpriorError(f"{key} is true or false, got {config[key]!r}")
    whole = config.get("whole", False)
    if not isinstance(whole, bool) and not (isinstance(whole, int) and whole >= 1):
        raise GenpriorError(f"whole is true, false or a number of networks (at least 1), got {whole!r}")
    if config.get("scores"):
        random_method(config)  # scores need random real images to compare with
    return config


def random_method(config: Dict[str, Any]) -> str:
    """The method that draws random real images at every IPC of the config, evaluated: the
    reference of DD-Ranking's scores."""
    for name, spec in config["methods"].items():
        if spec.get("baseline") == "random" and method_ipcs(config, name) == config["ipcs"] and evaluated(config, name):
            return name
    raise GenpriorError('scores compare every set with random real images of the same size: add a method '
                        '{"baseline": "random"} that runs at every IPC of the config and is evaluated')


def protocol(config: Dict[str, Any]):
    """The evaluation protocol a config names (its epochs; the model counts are ``models_for``'s)."""
    from .evaluate import with_counts

    spec = config["protocol"]
    name, epochs = (spec, None) if isinstance(spec, str) else (spec.get("name", "quick"), spec.get("epochs"))
    return with_counts(name, epochs)


def method_ipcs(config: Dict[str, Any], method: str) -> List[int]:
    """The IPCs a method runs at: its own ``ipcs`` (some of the config's), else the config's."""
    return config["methods"][method].get("ipcs", config["ipcs"])


def evaluated(config: Dict[str, Any], method: str) -> bool:
    """Whether a method's sets are evaluated (``"evaluate": false`` builds them only)."""
    return config["methods"][method].get("evaluate", True)


def has_whole(config: Dict[str, Any]) -> bool:
    """Whether the whole train split is trained on the first network: the full-data reference of
    the scores, or asked for itself (``"whole": true``)."""
    return bool(config.get("scores") or config.get("whole"))


def whole_models(config: Dict[str, Any]) -> int:
    """Networks trained on the whole train split: ``"whole": N``, else the first network's count."""
    whole = config.get("whole")
    return whole if isinstance(whole, int) and not isinstance(whole, bool) else models_for(config, config["archs"][0])


def whole_kind(config: Dict[str, Any]) -> str:
    """The cell kind the whole train split (and, under ``scores``, each set's hard-label run) trains
    as: ``hard`` under scores with a protocol that distils from a teacher (DD-Ranking's HLR compares
    hard labels), else ``eval``."""
    return "hard" if config.get("scores") and protocol(config).temperature > 0 else "eval"


def models_for(config: Dict[str, Any], arch: str) -> int:
    """Evaluation networks of ``arch`` per set: ``models`` as a number, or per network
    (``{"convnet": 3, "*": 1}``: ``*`` for the others), else the protocol's count."""
    models = config.get("models")
    if isinstance(models, dict):
        models = models.get(arch, models.get("*"))
    return protocol(config).num_models if models is None else models


# -- cells ---------------------------------------------------------------------------------

def cells(config: Dict[str, Any]) -> List[str]:
    """Every cell, method by method at each of its IPCs: the build, then (unless the method is
    build-only) its evaluation networks; with ``scores``, the first network trained without
    augmentation too (``plain``), under a protocol that distils from a teacher the first network
    trained on the hard labels too (``hard``), and, last, with ``scores`` or ``whole``, the whole
    train split on the first network (the full-data accuracy, with hard labels)."""
    first = config["archs"][0]
    hard = whole_kind(config)
    keys = [f"setup|{name}" for name in config.get("setup", {})]
    for ipc in config["ipcs"]:
        for method in config["methods"]:
            if ipc not in method_ipcs(config, method):
                continue
            for seed in config["seeds"]:
                keys.append(f"build|{method}|{ipc}|{seed}")
                if not evaluated(config, method):
                    continue
                keys += [f"eval|{method}|{ipc}|{seed}|{arch}|{i}" for arch in config["archs"]
                         for i in range(models_for(config, arch))]
                if config.get("scores"):
                    keys += [f"plain|{method}|{ipc}|{seed}|{first}|{i}" for i in range(models_for(config, first))]
                    if hard == "hard":
                        keys += [f"hard|{method}|{ipc}|{seed}|{first}|{i}" for i in range(models_for(config, first))]
    if has_whole(config):
        keys += [f"build|{WHOLE}|0|0", *[f"{hard}|{WHOLE}|0|0|{first}|{i}" for i in range(whole_models(config))]]
    return keys


def dependencies(config: Dict[str, Any]):
    """A cell's dependencies: an evaluation waits on its set, a build on its method's setup step."""
    def deps(key: str) -> List[str]:
        parts = key.split("|")
        if parts[0] in ("eval", "plain", "hard"):
            return [f"build|{'|'.join(parts[1:4])}"]
        after = config["methods"].get(parts[1], {}).get("after") if parts[0] == "build" else None
        return [f"setup|{after}"] if after else []
    return deps


def expand(args: List[str], out: Path) -> List[str]:
    """``{out}`` in a flag is the benchmark folder."""
    return [a.replace("{out}", str(out)) for a in args]


def set_dir(out: Path, method: str, ipc: int, seed: int) -> Path:
    return out / "sets" / f"{method}-ipc{ipc}-s{seed}"


def cell_file(out: Path, key: str) -> Path:
    return out / "cells" / f"{key.replace('|', '-')}.json"


def build_command(config: Dict[str, Any], method: str, ipc: int, seed: int, out: Path) -> Tuple[List[str], Path]:
    """The command that makes a method's set (after the interpreter), and the set folder it writes
    (``RUN/synset`` for a distillation, which is checkpointed in ``RUN``)."""
    spec = {"baseline": "whole"} if method == WHOLE else config["methods"][method]
    folder = set_dir(out, method, ipc, seed)
    whole = spec.get("baseline") == "whole"  # takes every train image: no --ipc
    common = ["--dataset", config["dataset"], *([] if whole else ["--ipc", str(ipc)]), "--seed", str(seed)]
    if config.get("data_root"):
        common += ["--data-root", config["data_root"]]
    if "baseline" in spec:
        return ["-m", "genprior", "baseline", spec["baseline"], str(folder), *common, "--overwrite"], folder
    extra = spec.get("args_by_ipc", {}).get(str(ipc), [])
    if "generate" in spec:  # a set drawn from a prior or a trained generator, no distillation
        return ["-m", "genprior", "generate", *expand([spec["generate"]], out), str(folder), *common,
                *expand([*spec.get("args", []), *extra], out), "--overwrite"], folder
    head = ["-m", "genprior", "distill", *spec["distill"], *extra] if "distill" in spec else \
        ["-m", f"genprior.recipes.{spec['recipe']}", *spec.get("args", []), *extra]
    if "recipe" in spec and is_sampling_recipe(spec["recipe"]):  # training-free: writes the set folder itself
        return [*expand(head, out), *common, "--no-evaluate", "--out-dir", str(folder), "--overwrite"], folder
    return [*expand(head, out), *common, "--no-evaluate", "--output-dir", str(folder)], folder / "synset"


def _recipe_runs(name: str, runner: str) -> bool:
    """Whether recipe ``name`` exists and hands its defaults to ``genprior.cli``'s ``runner``."""
    from .priors.load import package_folder

    path = package_folder("genprior.recipes", "recipes") / f"{name}.py"
    return path.is_file() and runner in path.read_text()


def generator_recipes() -> List[str]:
    from .priors.load import package_folder

    return sorted(p.stem for p in package_folder("genprior.recipes", "recipes").glob("*.py") if is_generator_recipe(p.stem))


def is_generator_recipe(name: str) -> bool:
    """A recipe that trains a generator (``genprior train`` with its paper's defaults)."""
    return _recipe_runs(name, "run_generator_recipe")


def is_sampling_recipe(name: str) -> bool:
    """A recipe of a training-free method (``genprior generate --method``) rather than a distillation."""
    return _recipe_runs(name, "run_sampling_recipe")


CELL_FILE_KEYS = ("cell", "config", "versions", "machine")  # what a cell file holds beside the value


def run_cell(config: Dict[str, Any], out: Path, key: str, threads: int, cache: Dict[str, Any]) -> Dict[str, Any]:
    """Compute one cell and write its file (the value, the resolved config, versions, machine).
    A cell whose file a killed process wrote, for this config, before ``bench.json`` recorded
    it is taken from that file, not computed again."""
    try:
        saved = json.loads(cell_file(out, key).read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("cell") == key and saved.get("config") == json.loads(json.dumps(config, default=str)):
        return {k: v for k, v in saved.items() if k not in CELL_FILE_KEYS}
    value = _compute(config, out, key, threads, cache)
    write_json_atomic({"cell": key, **value, "config": config, "versions": library_versions(), "machine": machine()},
                      cell_file(out, key))
    return value


def _run_command(cmd: List[str], run_dir: Optional[Path], threads: int) -> Dict[str, Any]:
    """A genprior command in its own process (``cmd`` after the interpreter); one that writes a run
    folder (a distillation, a generator training) is checkpointed and resumes from it."""
    if run_dir is not None:
        return run_recipe_unit(cmd, run_dir, threads)
    value = run_process([sys.executable, *cmd], threads)
    value["command"] = " ".join(["genprior", *cmd[2:]] if cmd[:2] == ["-m", "genprior"] else ["python", *cmd])
    return value


def _compute(config: Dict[str, Any], out: Path, key: str, threads: int, cache: Dict[str, Any]) -> Dict[str, Any]:
    from .data import load_dataset
    from .evaluate import PGDAttack
    from .synset import load_synset

    parts = key.split("|")
    if parts[0] == "setup":
        argv = expand(config["setup"][parts[1]], out)
        run_dir = Path(argv[argv.index("--output-dir") + 1]) if argv[0] in TRAINING_SETUPS else None
        cmd = ["-m", f"genprior.recipes.{argv[1]}", *argv[2:]] if argv[0] == "recipe" else ["-m", "genprior", *argv]
        return _run_command(cmd, run_dir, threads)
    method, ipc, seed = parts[1], int(parts[2]), int(parts[3])
    if parts[0] == "build":
        cmd, synset = build_command(config, method, ipc, seed, out)
        defaults = recipe_defaults(cmd)  # as they were when the set was made (``--reuse`` compares)
        value = _run_command(cmd, synset.parent if synset.name == "synset" else None, threads)
        value["synset"] = str(synset)
        if defaults is not None:
            value["recipe_defaults"] = defaults
        if config.get("diversity") and method != WHOLE and evaluated(config, method):
            from .perceptual import class_diversity

            value["diversity"] = class_diversity(load_synset(synset))
        return value
    arch, model = parts[4], int(parts[5])
    if "test" not in cache:
        cache["test"] = load_dataset(config["dataset"], "test", root=config.get("data_root"))
    attack = PGDAttack(**config["attack"]) if config.get("attack") and parts[0] == "eval" else None
    proto = cell_protocol(config, parts[0])
    synset = load_synset(json.loads(cell_file(out, f"build|{method}|{ipc}|{seed}").read_text())["synset"])
    teacher = expand([config["teacher"]], out)[0] if config.get("teacher") and proto.temperature > 0 else None
    return eval_unit(synset, cache["test"], arch, model, proto, threads,
                     state_dir=out / "state" / key.replace("|", "-"), attack=attack, device=config["device"],
                     teacher=teacher, on_the_fly=config["methods"].get(method, {}).get("on_the_fly", False))


def recipe_defaults(cmd: List[str]) -> Optional[Dict[str, Any]]:
    """The ``DEFAULTS`` of the recipe a build command runs (``-m genprior.recipes.NAME``), as
    JSON, or None for a command that runs no recipe: a recipe's paper settings are part of what
    its sets are, though its command line does not show them."""
    import importlib

    if len(cmd) < 2 or cmd[0] != "-m" or not cmd[1].startswith("genprior.recipes."):
        return None
    defaults = getattr(importlib.import_module(cmd[1]), "DEFAULTS", None)
    return json.loads(json.dumps(defaults, default=str)) if isinstance(defaults, dict) else None


def cell_protocol(config: Dict[str, Any], kind: str):
    """The protocol an evaluation cell trains under: the config's (``eval``), the same without
    any augmentation (``plain``, DD-Ranking's ARS: no DSA, crops nor CutMix), or the same on the
    set's hard labels without a teacher and without augmentation (``hard``, DD-Ranking's HLR
    under a soft-label protocol: its hard-label runs, of the set and of the whole train split,
    take no augmentation by default, ``use_aug_for_hard=False``)."""
    proto = protocol(config)
    if kind == "plain":
        return replace(proto, name=f"{proto.name}-noaug", dsa=False, augment="dsa", cutmix=0.0)
    if kind == "hard":
        return replace(proto, name=f"{proto.name}-hard-noaug", temperature=0.0, dsa=False, augment="dsa", cutmix=0.0)
    return proto


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


# -- the leaderboard -------------------------------------------------------------------------

def summarize(config: Dict[str, Any], units: Dict[str, Any]) -> Dict[int, List[Dict[str, Any]]]:
    """Per IPC, one row per method: accuracy per network (mean ± std over seeds x models),
    cross-architecture mean, robust accuracy, build time and peak memory; ranked."""
    table: Dict[int, List[Dict[str, Any]]] = {}
    for ipc in config["ipcs"]:
        rows = []
        for method in config["methods"]:
            if ipc not in method_ipcs(config, method):
                continue
            row: Dict[str, Any] = {"method": method, "archs": {}, "robust": {}}
            builds = [units[k] for k in (f"build|{method}|{ipc}|{s}" for s in config["seeds"]) if k in units]
            for arch in config["archs"]:
                found = [units[f"eval|{method}|{ipc}|{s}|{arch}|{i}"] for s in config["seeds"]
                         for i in range(models_for(config, arch)) if f"eval|{method}|{ipc}|{s}|{arch}|{i}" in units]
                if found:
                    row["archs"][arch] = (*mean_std([u["acc"] for u in found]), len(found))
                    if all("robust_acc" in u for u in found):
                        row["robust"][arch] = mean_std([u["robust_acc"] for u in found])[0]
            complete = len(row["archs"]) == len(config["archs"])
            row["cross"] = sum(m for m, _, _ in row["archs"].values()) / len(row["archs"]) if complete else None
            row["robust_cross"] = (sum(row["robust"].values()) / len(row["robust"])
                                   if complete and len(row["robust"]) == len(config["archs"]) else None)
            divs = [b["diversity"]["mean"] for b in builds if b.get("diversity", {}).get("mean") is not None]
            row["diversity"] = sum(divs) / len(divs) if divs else None
            # a resumed distillation's process timed only its last part: its iterations' time over all parts
            times = [b["loop_time_s"] if b.get("resumed") else b["time_s"] for b in builds]
            row["build_s"] = sum(times) / len(times) if builds else None
            row["resumed"] = any(b.get("resumed") for b in builds)
            row["peak_mib"] = max(b["peak_rss_mib"] for b in builds) if builds else None
            if config.get("scores"):
                row.update(scores(config, units, method, ipc))
            rows.append(row)
        ranked = sorted((r for r in rows if r["cross"] is not None), key=lambda r: -r["cross"])
        for rank, r in enumerate(ranked, 1):
            r["rank"] = rank
        table[ipc] = ranked + [r for r in rows if r["cross"] is None]
    return table


def _accs(config: Dict[str, Any], units: Dict[str, Any], kind: str, method: str, ipc: int) -> Optional[List[float]]:
    """The first network's accuracies of a method at an IPC, seeds x models in order; None until all are in."""
    first = config["archs"][0]
    seeds = [0] if method == WHOLE else config["seeds"]
    models = whole_models(config) if method == WHOLE else models_for(config, first)
    keys = [f"{kind}|{method}|{ipc}|{s}|{first}|{i}" for s in seeds for i in range(models)]
    return [units[k]["acc"] for k in keys] if all(k in units for k in keys) else None


def scores(config: Dict[str, Any], units: Dict[str, Any], method: str, ipc: int) -> Dict[str, Any]:
    """DD-Ranking's label- and augmentation-robust scores of a method at an IPC on the first
    network, against random real images of the same size under the same protocol. HLR always
    compares hard-label accuracies (the whole train split and the set, trained on their labels);
    IOR compares the set and random real images under the protocol itself: hard labels under a
    hard-label protocol, the teacher's soft labels under one that distils from a teacher."""
    from .scores import augmentation_robust_score, label_robust_score

    rnd = random_method(config)
    hard = "hard" if protocol(config).temperature > 0 else "eval"
    full = _accs(config, units, hard, WHOLE, 0)
    own, rnd_own = _accs(config, units, "eval", method, ipc), _accs(config, units, "eval", rnd, ipc)
    own_hard = _accs(config, units, hard, method, ipc)
    plain, rnd_plain = _accs(config, units, "plain", method, ipc), _accs(config, units, "plain", rnd, ipc)
    out: Dict[str, Any] = {"lrs": None, "ars": None, "full": None if full is None else mean_std(full)}
    if full is not None and own is not None and rnd_own is not None and own_hard is not None:
        out["lrs"] = label_robust_score(full_hard=mean_std(full)[0], set_hard=own_hard, set_own=own,
                                        random_own=rnd_own)
    if own is not None and rnd_own is not None and plain is not None and rnd_plain is not None:
        out["ars"] = augmentation_robust_score(set_aug=own, random_aug=rnd_own, set_plain=plain,
                                               random_plain=rnd_plain)
    return out


def write_outputs(config: Dict[str, Any], out: Path, results: Dict[str, Any]) -> None:
    """The leaderboard (Markdown) and the plots, from every finished cell."""
    table = summarize(config, results["units"])
    proto = protocol(config)
    archs = config["archs"]
    attack = config.get("attack")
    lines = [f"# Benchmark {config['name']}: {config['dataset']}, protocol `{proto.name}`", "",
             f"{proto.epochs} epochs; models per network and distillation seed: "
             + ", ".join(f"{a} {models_for(config, a)}" for a in archs) + f"; seeds "
             f"{config['seeds']}. Accuracy in %: mean ± std over seeds x models; cross-arch: the mean over "
             f"{', '.join(archs)}. Rank by the cross-arch mean. Build: seconds and peak resident memory of the "
             "process that made the set (mean over seeds)."
             + (f" Robust: accuracy under L-inf PGD, eps {attack['eps']:.4g} in pixel units, "
                f"{attack.get('steps', 10)} steps." if attack else ""),
             f"Machine: {results.get('machine', machine())}. Written by `genprior bench`; cells in `cells/`.", ""]
    if proto.tests > 0:
        lines[-1:-1] = [f"Accuracies are the last epoch's; the protocol also tests {proto.tests} times during training "
                        "and each cell keeps the best of those (`best_acc`), the number its papers report."]
    scored = bool(config.get("scores"))
    if scored:
        full = scores(config, results["units"], random_method(config), config["ipcs"][0])["full"]
        labels = ("IOR and ARS on the teacher's soft labels, HLR on hard labels (the same protocol, no teacher)"
                  if proto.temperature > 0 else "hard labels")
        lines[-1:-1] = [f"Scores (DD-Ranking, Li et al. 2025; {labels}, {archs[0]}, against `{random_method(config)}` "
                        "under the same protocol, w = 0.5, accuracies as fractions, so scores lie in [0, 1]; DD-Ranking's "
                        "tables print them × 100): LRS from HLR = full-data minus set "
                        "accuracy and IOR = set minus random accuracy; ARS from the gains over random with the "
                        "protocol's augmentation and without it (no DSA, crops nor CutMix). Full data (the whole "
                        f"train split, class-balanced, hard labels, {archs[0]}, {whole_models(config)} "
                        "model(s)): " + (f"{100 * full[0]:.2f} ± {100 * full[1]:.2f} %." if full else "not yet.")]
    if config.get("whole") and not scored:
        full = _accs(config, results["units"], whole_kind(config), WHOLE, 0)
        lines[-1:-1] = [f"Full data (the whole train split, class-balanced, {archs[0]}, "
                        f"{whole_models(config)} model(s)): "
                        + (f"{100 * mean_std(full)[0]:.2f} ± {100 * mean_std(full)[1]:.2f} %." if full else "not yet.")]
    reused = sorted({Path(u["reused_from"]).parent.parent.name for u in results["units"].values() if "reused_from" in u})
    if reused:
        lines[-1:-1] = [f"{sum('reused_from' in u for u in results['units'].values())} cell(s) were taken from other "
                        f"benchmark folders that computed them identically ({', '.join(reused)}; `--reuse`); each cell "
                        "file names its source."]
    diverse = bool(config.get("diversity"))
    if diverse:
        described = next((b["diversity"] for b in results["units"].values() if "diversity" in b), None)
        lines[-1:-1] = ["Diversity: the mean pairwise LPIPS distance within each class, averaged over classes "
                        "(undefined at IPC 1)" + (f"; backbone {described['backbone']}, weights {described['weights']}."
                                                  if described else ".")]
    head = ["rank", "method", *archs, "cross-arch", *(["robust cross-arch"] if attack else []),
            *(["LRS", "ARS"] if scored else []), *(["LPIPS diversity"] if diverse else []), "build s", "peak MiB"]
    for ipc, rows in table.items():
        lines += [f"## IPC {ipc}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cols = [str(r.get("rank", "–")), r["method"]]
            cols += [f"{100 * r['archs'][a][0]:.2f} ± {100 * r['archs'][a][1]:.2f}" if a in r["archs"] else "–"
                     for a in archs]
            cols.append(f"{100 * r['cross']:.2f}" if r["cross"] is not None else "–")
            if attack:
                cols.append(f"{100 * r['robust_cross']:.2f}" if r["robust_cross"] is not None else "–")
            if scored:
                for name in ("lrs", "ars"):
                    cols.append(f"{r[name][name]:.3f} ± {r[name][name + '_std']:.3f}" if r.get(name) else "–")
            if diverse:
                cols.append(f"{r['diversity']:.4f}" if r["diversity"] is not None else "–")
            cols.append(f"{r['build_s']:.0f}{'*' if r['resumed'] else ''}" if r["build_s"] is not None else "–")
            cols.append(f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "–")
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")
    if any(r.get("resumed") for rows in table.values() for r in rows):
        lines += ["\\* resumed after a kill: the build time is its iterations' over every part (set-up not counted).",
                  ""]
    commands = sorted({f"- {k.split('|')[1]}: `{u['command']}`" for k, u in results["units"].items()
                       if k.startswith("build|") and "command" in u})
    if commands:
        lines += ["Commands:", *commands, ""]
    write_text_atomic("\n".join(lines), out / "leaderboard.md")
    plot(config, table, out / "plots")


def plot(config: Dict[str, Any], table: Dict[int, List[Dict[str, Any]]], folder: Path) -> None:
    """Accuracy against IPC per method, cross-architecture bars per IPC, build time against accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    first = config["archs"][0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in config["methods"]:
        points = [(ipc, r["archs"][first][0] * 100) for ipc, rows in table.items() for r in rows
                  if r["method"] == method and first in r["archs"]]
        if points:
            ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xticks(config["ipcs"], [str(ipc) for ipc in config["ipcs"]])
    ax.minorticks_off()
    ax.set(xlabel="images per class (IPC)", ylabel=f"{first} test accuracy (%)",
           title=f"{config['dataset']}: accuracy against IPC")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "accuracy_vs_ipc.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(table), figsize=(4 * len(table), 4), squeeze=False)
    for ax, (ipc, rows) in zip(axes[0], table.items()):
        done = [r for r in rows if r["cross"] is not None]
        ax.bar([r["method"] for r in done], [100 * r["cross"] for r in done])
        ax.set(title=f"IPC {ipc}", ylabel="cross-architecture mean accuracy (%)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    fig.tight_layout()
    fig.savefig(folder / "cross_arch.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for ipc, rows in table.items():
        done = [r for r in rows if r["cross"] is not None and r["build_s"] is not None]
        ax.scatter([r["build_s"] for r in done], [100 * r["cross"] for r in done], label=f"IPC {ipc}")
        for r in done:
            ax.annotate(r["method"], (r["build_s"], 100 * r["cross"]), fontsize=7)
    ax.set(xlabel="build time (s)", ylabel="cross-architecture mean accuracy (%)", title="build time against accuracy")
    if ax.collections:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "time_vs_accuracy.png", dpi=120)
    plt.close(fig)


# -- running ---------------------------------------------------------------------------------

def run_bench(config: Dict[str, Any], out: Path, threads: int = 1, max_units: Optional[int] = None,
              only: Optional[List[str]] = None, progress: bool = True, failures: Optional[List[str]] = None) -> int:
    """Run (or resume) this process's share of the cells; return how many it ran (the keys of
    cells that failed go to ``failures``)."""
    from .progress import progress_bar

    _prepare(config, out)
    results_path = out / "bench.json"
    order = cells(config)

    def initial() -> dict:
        return {"name": config["name"], "machine": machine(), "units": {}, "claims": {}}

    with locked(results_path, initial) as results:
        finished = sum(k in results["units"] for k in order)
    bar = progress_bar(total=len(order), initial=finished, desc=f"bench {config['name']}", unit="cell",
                       disable=not progress)
    torch.set_num_threads(threads)
    cache: Dict[str, Any] = {}

    def on_change(results: dict) -> None:
        bar.update(sum(k in results["units"] for k in order) - bar.n)
        write_outputs(config, out, results)

    ran = run_lane(results_path, initial, order, dependencies(config),
                   lambda key: run_cell(config, out, key, threads, cache),
                   on_change=on_change, max_units=max_units, only=(lambda k: any(t in k for t in only)) if only else None,
                   poll_s=2.0, failures=failures)
    bar.close()
    with locked(results_path, initial) as results:
        write_outputs(config, out, results)
    return ran


def _prepare(config: Dict[str, Any], out: Path) -> None:
    """The benchmark folder, holding this config and its protocols (another one's is refused)."""
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != config:
        raise GenpriorError(f"{out} holds a benchmark with another config ({saved}); use another --out, or "
                            "--redo the cells a change concerns after editing that file")
    write_json_atomic(config, saved)
    _check_protocols(config, out)


def resolved_protocols(config: Dict[str, Any]) -> Dict[str, Any]:
    """The protocols the cells train under, resolved: settings and code revision per cell kind
    the config has (``plain`` with the scores, ``hard`` with the scores under a soft protocol)."""
    from dataclasses import asdict

    from .evaluate import protocol_revision

    kinds = ["eval"] + (["plain"] if config.get("scores") else []) + (["hard"] if whole_kind(config) == "hard" else [])
    return {kind: {**json.loads(json.dumps(asdict(p))), "revision": protocol_revision(p)}
            for kind, p in ((k, cell_protocol(config, k)) for k in kinds)}


def _check_protocols(config: Dict[str, Any], out: Path) -> None:
    """The protocols the cells train under, resolved (settings and code revision), kept beside the
    config: a folder whose cells were computed under another resolution of the same names (a
    protocol whose settings or code changed since) is refused rather than mixed."""
    resolved = resolved_protocols(config)
    path = out / "protocols.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if any(kind in saved and saved[kind] != p for kind, p in resolved.items()):
        raise GenpriorError(f"{out} holds cells computed under other settings or code of protocol "
                            f"{protocol(config).name!r} ({path}); use another --out, or --redo 'eval|' (and 'plain|', "
                            f"'hard|') and delete {path.name}")
    write_json_atomic(resolved, path)


# -- reusing another benchmark's cells ---------------------------------------------------------

#: where ``cell_identity`` writes a benchmark folder and a set folder, so that two benchmarks compare
_OUT, _SET = "{out}", "{set}"


def _steps_read(config: Dict[str, Any], args: List[str]) -> List[List[str]]:
    """The setup steps whose output folder one of ``args`` reads (``{out}/surrogate`` in a flag):
    part of what a build or an evaluation computes, since their settings change its result."""
    steps = []
    for name in sorted(config.get("setup", {})):
        folder = _output_folder(config["setup"][name])
        if folder and any(a == folder or folder + "/" in a or a.endswith("=" + folder) or ("=" + folder + "/") in a
                          for a in args):
            steps.append(config["setup"][name])
    return steps


def cell_identity(config: Dict[str, Any], key: str, protocols: Dict[str, Any]) -> Optional[str]:
    """What a cell computes, independent of the benchmark folder and the method's name: the command
    of a setup step or a build, with the setup steps it reads, and for an evaluation the build's
    identity, the network, the model index, the resolved protocol (``protocols``, by cell kind),
    device, attack and teacher (with the step that trains it). Two cells with the same identity
    compute the same thing; None for a cell not to be shared (the full-data cells; an evaluation
    of a kind ``protocols`` lacks)."""
    parts = key.split("|")
    common = {"dataset": config["dataset"], "data_root": config.get("data_root")}
    if parts[0] == "setup":
        step = config.get("setup", {}).get(parts[1])
        return json.dumps({**common, "setup": step}) if step is not None else None
    method, ipc, seed = parts[1], int(parts[2]), int(parts[3])
    if method == WHOLE or method not in config["methods"] or (parts[0] != "build" and parts[0] not in protocols):
        return None
    cmd, _ = build_command(config, method, ipc, seed, Path(_OUT))
    folder = str(set_dir(Path(_OUT), method, ipc, seed))
    cmd = [_SET if a == folder else a.replace(folder + "/", _SET + "/") for a in cmd]
    after = config["methods"][method].get("after")
    build = {**common, "build": cmd, "reads": _steps_read(config, cmd + ([_output_folder(config["setup"][after])
                                                                           or ""] if after else []))}
    if parts[0] == "build":
        return json.dumps(build)
    teacher = config.get("teacher") if cell_protocol(config, parts[0]).temperature > 0 else None
    return json.dumps({"of": build, "kind": parts[0], "arch": parts[4], "model": int(parts[5]),
                       "protocol": protocols[parts[0]], "device": config["device"],
                       "attack": config.get("attack") if parts[0] == "eval" else None,
                       "teacher": [teacher, _steps_read(config, [teacher])] if teacher else None,
                       **({"on_the_fly": True} if config["methods"][method].get("on_the_fly") else {})})


def _output_folder(argv: List[str]) -> Optional[str]:
    """The folder a setup step writes (its ``--output-dir``, ``--out-dir`` or ``--out``), unexpanded."""
    flag = next((f for f in ("--output-dir", "--out-dir", "--out") if f in argv), None)
    return argv[argv.index(flag) + 1] if flag else None


def _moved(value: Any, moves: List[Tuple[Path, Path]]) -> Any:
    """``value`` (a unit) with every path under a moved folder rewritten to its new place: a path
    string, a word of a command line or a ``key=path`` option, written absolute or relative to the
    working folder as the source wrote it."""
    if isinstance(value, dict):
        return {k: _moved(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, moves) for v in value]
    if not isinstance(value, str):
        return value
    forms = []
    for src, dst in moves:  # the most specific folder first
        forms.append((str(src), str(dst)))
        rel = os.path.relpath(src)
        if not rel.startswith(".."):
            forms.append((rel, os.path.relpath(dst)))

    def word(w: str) -> str:
        head, eq, tail = w.partition("=")
        if eq and not tail.startswith("="):
            return head + eq + word(tail) if "/" in tail else w
        for s, d in forms:
            if w == s or w.startswith(s + "/"):
                return d + w[len(s):]
        return w

    return " ".join(word(w) for w in value.split(" "))


def _digest(value: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def reuse(config: Dict[str, Any], out: Path, source: Path) -> List[str]:
    """``--reuse SOURCE``: take the finished cells of another benchmark folder that computed what a
    cell of this one would (same command, data, network, model, resolved protocol, and the setup
    steps they read; see ``cell_identity``), so that rows two tables share (random real, pixel DM)
    are computed once. A setup step's output folder and a build's set folder are copied (a folder
    outside the benchmark folder is shared as it is); an evaluation is taken only with the very set
    it evaluated. Each taken cell's file names the cell it came from (``reused_from``) and keeps
    that cell's versions and machine. Cells are claimed while they are copied, as lanes claim
    theirs, so a lane running on this folder meanwhile does not compute them too. Builds match on
    their command only: a source whose recipe or prior changed since it ran is the caller's to
    leave out (or ``--redo`` the row), except a recipe's ``DEFAULTS``, which a build cell records
    and which must still hold. An evaluation under a PGD attack also serves a table without one
    (its clean accuracy came first, from the same network). Returns the keys taken."""
    import shutil

    from .lanes import _alive, _claim_id

    out, source = out.resolve(), source.resolve()
    if source == out:
        raise GenpriorError(f"--reuse {source} is the benchmark folder itself; name another benchmark's folder")
    if not (source / "config.json").is_file() or not (source / "bench.json").is_file():
        raise GenpriorError(f"--reuse {source}: not a genprior bench folder (no config.json and bench.json); "
                            "name the --out folder of another benchmark")
    _prepare(config, out)
    other = json.loads((source / "config.json").read_text())
    theirs = json.loads((source / "bench.json").read_text())
    ours = resolved_protocols(config)
    saved = json.loads((source / "protocols.json").read_text()) if (source / "protocols.json").is_file() else {}
    same = {kind: p for kind, p in ours.items() if saved.get(kind) == p}  # evaluations under the same protocol only
    index: Dict[str, str] = {}
    for k in theirs["units"]:
        ident = cell_identity(other, k, same)
        if ident is not None:
            index.setdefault(ident, k)
        if other.get("attack") and k.startswith("eval|"):
            # an evaluation under attack measured clean accuracy first, on the same network, as one
            # without: it also serves a table that asks no robust accuracy (not the other way)
            weaker = cell_identity({**other, "attack": None}, k, same)
            if weaker is not None:
                index.setdefault(weaker, k)

    def folders(key: str, found: str) -> Optional[Tuple[Path, Path]]:
        """The folder a taken cell brings (theirs, ours), or None."""
        parts, f = key.split("|"), found.split("|")
        if parts[0] == "build":
            return set_dir(source, f[1], int(f[2]), int(f[3])), set_dir(out, parts[1], int(parts[2]), int(parts[3]))
        folder = _output_folder(config["setup"][parts[1]]) if parts[0] == "setup" else None
        return (Path(expand([folder], source)[0]).resolve(), Path(expand([folder], out)[0]).resolve()) if folder \
            else None

    def initial() -> dict:
        return {"name": config["name"], "machine": machine(), "units": {}, "claims": {}}

    me, plan, planned = _claim_id(), [], {}
    with locked(out / "bench.json", initial) as results:
        claims = results["claims"]
        for k, owner in list(claims.items()):
            if not _alive(owner):
                del claims[k]
        units = results["units"]
        for key in cells(config):
            ident = None if key in units or key in claims else cell_identity(config, key, same)
            found = index.get(ident) if ident is not None else None
            if found is None or any(d not in units and d not in planned for d in dependencies(config)(key)):
                continue
            kind, parts = key.split("|")[0], key.split("|")
            if kind == "build" and "recipe_defaults" in theirs["units"][found] and \
                    theirs["units"][found]["recipe_defaults"] != recipe_defaults(
                        build_command(config, parts[1], int(parts[2]), int(parts[3]), out)[0]):
                continue  # its recipe's settings changed since: computed here instead
            if kind not in ("setup", "build"):  # evaluated on the very set that was taken
                ours_build, their_build = f"build|{'|'.join(parts[1:4])}", f"build|{'|'.join(found.split('|')[1:4])}"
                taken_from = planned.get(ours_build) or units[ours_build].get("reused_from")
                if taken_from != str(cell_file(source, their_build)) or \
                        units.get(ours_build, {}).get("reused_digest", _digest(theirs["units"][their_build])) != \
                        _digest(theirs["units"][their_build]):
                    continue
            move = folders(key, found)
            if move is not None and move[0] != move[1]:
                if not move[0].is_dir() or move[1] == out or out not in move[1].parents:
                    continue  # nothing to copy, or a place outside this benchmark's folder: computed here instead
            claims[key] = me
            plan.append((key, found, move))
            planned[key] = str(cell_file(source, found))

    taken: List[str] = []
    try:
        for key, found, move in plan:
            value = json.loads(json.dumps(theirs["units"][found]))
            moves = [(source, out)]
            if move is not None and move[0] != move[1]:
                if move[1].exists():
                    shutil.rmtree(move[1])
                partial = move[1].with_name(move[1].name + ".copying")  # a crash mid-copy leaves no half a set
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(move[0], partial)
                partial.rename(move[1])
                moves.insert(0, move)
            value = _moved(value, moves)
            kind, parts = key.split("|")[0], key.split("|")
            if kind == "build" and config.get("diversity") and evaluated(config, parts[1]) and "diversity" not in value:
                from .perceptual import class_diversity
                from .synset import load_synset

                value["diversity"] = class_diversity(load_synset(value["synset"]))
            value["reused_from"] = str(cell_file(source, found))
            if kind == "build":
                value["reused_digest"] = _digest(theirs["units"][found])
            cell = json.loads(cell_file(source, found).read_text()) if cell_file(source, found).is_file() else {}
            write_json_atomic({"cell": key, **value, "config": config,
                               "versions": cell.get("versions", library_versions()),
                               "machine": cell.get("machine", theirs.get("machine", machine()))}, cell_file(out, key))
            with locked(out / "bench.json", initial) as results:
                results["units"][key] = value
                results["claims"].pop(key, None)
            taken.append(key)
    finally:
        with locked(out / "bench.json", initial) as results:
            for key, _, _ in plan:
                if results["claims"].get(key) == me:
                    del results["claims"][key]
            write_outputs(config, out, results)
    return taken


def empty_results() -> dict:
    """What a benchmark folder's ``bench.json`` holds before its first cell."""
    return {"units": {}, "claims": {}}


def remeasure_diversity(config: Dict[str, Any], out: Path) -> List[str]:
    """``--diversity``: measure the LPIPS diversity of every finished set again, with today's
    metric (after it changed, e.g. the random-backbone fallback became seeded), in the results
    and the cell files; the sets themselves are not rebuilt. Returns the builds measured."""
    from .perceptual import class_diversity, lpips_metric
    from .synset import load_synset

    if not config.get("diversity"):
        raise GenpriorError(f"config {config['name']!r} does not measure diversity; add \"diversity\": true")
    metric, info = lpips_metric("alex")
    with locked(out / "bench.json", empty_results) as results:
        sets = {k: u["synset"] for k, u in results["units"].items() if k.startswith("build|") and "diversity" in u}
    # measured outside the lock (a lane may be running beside) and written under it again
    measured = {k: class_diversity(load_synset(path), metric, info) for k, path in sets.items()}
    with locked(out / "bench.json", empty_results) as results:
        for k, value in measured.items():
            if k in results["units"]:
                results["units"][k]["diversity"] = value
                cell = json.loads(cell_file(out, k).read_text())
                write_json_atomic({**cell, "diversity": value}, cell_file(out, k))
        write_outputs(config, out, results)
    return sorted(measured)


def forget(config: Dict[str, Any], out: Path, text: str) -> List[str]:
    """``--redo``: forget the finished cells whose key holds ``text``, with their files, and
    every cell computed from them (a rebuilt set's evaluations, a redone setup step's builds),
    so that no result of the old set stays beside the new one."""
    order, deps = cells(config), dependencies(config)
    gone = {k for k in order if text in k}
    for key in order:  # dependencies come first in the order, so one pass closes the set
        if any(d in gone for d in deps(key)):
            gone.add(key)
    keys = [k for k in order if k in gone]

    def artifacts(key: str) -> List[Path]:
        parts = key.split("|")
        paths = [cell_file(out, key)]
        if parts[0] == "setup":
            folder = _output_folder(config["setup"][parts[1]])
            if folder:
                paths.append(Path(expand([folder], out)[0]))
        elif parts[0] == "build":
            paths.append(set_dir(out, parts[1], int(parts[2]), int(parts[3])))
        else:
            paths.append(out / "state" / key.replace("|", "-"))
        return paths

    return redo(out / "bench.json", empty_results, keys, artifacts)
