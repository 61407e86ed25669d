"""The ``genprior`` command: thin parsing over the library."""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import GenpriorError
from .runtime import memory_setting

POOL_ALIAS = "pool"


def _archs(values: List[str]) -> List[str]:
    from .nets import CROSS_ARCH_POOL

    out: List[str] = []
    for v in values:
        for name in v.split(","):
            out.extend(CROSS_ARCH_POOL if name == POOL_ALIAS else [name])
    return out


#: the flags that only an evaluation reads, with their defaults: (dest, flag, default)
EVAL_ONLY_FLAGS = (("archs", "--archs", ["convnet"]), ("protocol", "--protocol", "quick"), ("teacher", "--teacher", None),
                   ("epochs", "--epochs", None), ("models", "--models", None), ("soft_labels", "--soft-labels", False),
                   ("state_dir", "--state-dir", None), ("pgd", "--pgd", None), ("pgd_steps", "--pgd-steps", 10),
                   ("diversity", "--no-diversity", True), ("on_the_fly", "--on-the-fly", False))


def _refuse_eval_flags(args, why: str, fix: str, device: bool = False) -> None:
    """Evaluation flags on a command that will not evaluate would be dropped without a word:
    refuse them instead (``device``: ``--device`` too, where only the evaluation reads it)."""
    flags = EVAL_ONLY_FLAGS + ((("device", "--device", "auto"),) if device else ())
    given = [flag for dest, flag, default in flags if getattr(args, dest, default) != default]
    if given:
        raise GenpriorError(f"{' '.join(given)} {'sets' if len(given) == 1 else 'set'} the evaluation, which {why}: "
                            f"{fix}")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archs", nargs="+", default=["convnet"],
                   help=f"networks to train on the set; '{POOL_ALIAS}' = the cross-architecture pool")
    p.add_argument("--protocol", default="quick", help="quick (300 epochs, 3 models), paper (1000 epochs, 5 models), "
                   "soft (SRe2L/RDED's soft labels from a teacher: --teacher), minimax or minimax-imagenet "
                   "(Minimax Diffusion's hard-label protocol; `genprior list protocols`)")
    p.add_argument("--teacher", help="the teacher folder of the soft protocol (`genprior teacher`)")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs (the result is then labelled custom)")
    p.add_argument("--models", type=int, help="override the protocol's number of models per architecture")
    p.add_argument("--soft-labels", action="store_true", help="train on the set's soft labels")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]: where the evaluation runs (and where "
                   "generate samples); distillation and generator training place themselves through accelerate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-dir", help="save each network's training state here every 10 epochs; "
                   "running the same command again resumes a killed evaluation")
    p.add_argument("--pgd", type=pixel_budget, metavar="EPS",
                   help="also report accuracy under an L-inf PGD attack of this budget in pixel units "
                        "(images in [0, 1]; e.g. 0.1 or 8/255)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (default 10; step size EPS/4)")
    p.add_argument("--diversity", action=argparse.BooleanOptionalAction, default=True,
                   help="report the mean pairwise LPIPS distance within each class beside accuracy (default; AlexNet "
                        "backbone, a random one, said so, where its ImageNet weights are not in the torch cache)")
    p.add_argument("--no-lpips-fallback", action="store_true",
                   help="LPIPS (the diversity, an inversion's --invert-lpips) must be the published metric: stop "
                        "with an error where its backbone's ImageNet weights are not in the torch cache")


def _add_on_the_fly(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-the-fly", action="store_true",
                   help="DiM's deployment protocol, for a set `genprior generate` wrote: every epoch after the first "
                        "trains on a fresh draw of the same size from the generator that made it (reported as such; "
                        "not a fixed-set result)")


def pixel_budget(text: str) -> float:
    """argparse type: a number or a fraction such as 8/255."""
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction such as 8/255") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _check_folder_arg(path, flag: str) -> None:
    """A folder flag may name a folder or a path not yet made, never an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise GenpriorError(f"{flag} {path} is a file; pass a folder (it is created if missing)")


def _check_ipc(ipc: int) -> None:
    if ipc < 1:
        raise GenpriorError(f"IPC must be at least 1, got {ipc}; pass --ipc 1 or more")


class OneLineParser(argparse.ArgumentParser):
    """A parser whose mistakes are one line, like every other genprior error: the message
    and where the usage is, instead of the whole usage before it."""

    def error(self, message: str):
        raise GenpriorError(f"{message} (see `{self.prog} --help`)")


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` are refused before any work starts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _check_eval_args(args) -> None:
    """The evaluation flags, checked before any work: protocol, counts, network names,
    device and where the results go."""
    from .evaluate import resolve_device, with_counts
    from .nets import NETS

    proto = with_counts(args.protocol, args.epochs, args.models)
    teacher = getattr(args, "teacher", None)
    if proto.temperature > 0 and not teacher:
        raise GenpriorError(f"protocol {args.protocol!r} distils from a teacher: pass --teacher DIR (train one with "
                            "`genprior teacher --dataset DATASET`)")
    if teacher and proto.temperature == 0:
        raise GenpriorError(f"--teacher serves a protocol that distils from it (soft), not {args.protocol!r}; "
                            "drop --teacher or pass --protocol soft")
    if teacher and not (Path(teacher) / "teacher.json").is_file():
        raise GenpriorError(f"--teacher {teacher} is not a teacher folder; train one with `genprior teacher`")
    for arch in _archs(args.archs):
        NETS.entry(arch)  # unknown name: the error lists the known ones
    resolve_device(args.device)
    _attack(args)  # a bad PGD budget fails before any training
    _check_folder_arg(args.state_dir, "--state-dir")
    out = getattr(args, "out", None)
    if out is not None and Path(out).is_dir():
        raise GenpriorError(f"--out {out} is a folder; pass the path of the JSON report to write")


def _attack(args):
    """The PGD attack the evaluation flags ask for, or None."""
    from .evaluate import PGDAttack

    return PGDAttack(eps=args.pgd, steps=args.pgd_steps) if getattr(args, "pgd", None) is not None else None


def _run_evaluation(synset, out_dir: Path, args, compare: bool = False) -> dict:
    from .evaluate import evaluate_synset, with_counts
    from .synset import write_json_atomic

    archs = _archs(args.archs)
    proto = with_counts(args.protocol, args.epochs, args.models)
    attack = _attack(args)
    metric = None
    if getattr(args, "diversity", True):  # the metric first: a missing backbone stops before the training
        from .perceptual import class_diversity, lpips_metric

        metric, info = lpips_metric("alex", allow_fallback=not getattr(args, "no_lpips_fallback", False))
    report = evaluate_synset(synset, archs=archs, protocol=proto, data_root=args.data_root, seed=args.seed,
                             device=args.device, soft_labels=args.soft_labels, state_dir=args.state_dir,
                             attack=attack, teacher=getattr(args, "teacher", None),
                             on_the_fly=getattr(args, "on_the_fly", False))
    if metric is not None:
        report["diversity"] = class_diversity(synset, metric, info)
    tag = POOL_ALIAS if len(archs) > 1 and set(archs) == set(_archs([POOL_ALIAS])) else "+".join(archs)
    tag += "_on-the-fly" if report.get("on_the_fly") else ""
    out = Path(args.out) if getattr(args, "out", None) else out_dir / f"eval_{proto.name}_{tag}.json"
    report["synset"] = str(out_dir)
    write_json_atomic(report, out)  # before the comparison, which may evaluate for minutes
    under = f" at PGD L-inf eps {attack.eps:.4g}, {attack.steps} steps" if attack is not None else ""
    for arch, r in report["results"].items():
        robust = f", robust {100 * r['robust_mean']:.2f} ± {100 * r['robust_std']:.2f} %{under}" if attack else ""
        print(f"{arch:>12}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f} %{robust}  ({r['time_s']:.0f} s)")
    if "cross_arch_mean" in report:
        robust = f", robust {100 * report['cross_arch_robust_mean']:.2f} %" if attack else ""
        print(f"{'cross-arch':>12}: {100 * report['cross_arch_mean']:.2f} %{robust}")
    if "diversity" in report:
        d = report["diversity"]
        value = f"{d['mean']:.4f}" if d["mean"] is not None else "undefined at IPC 1 (no pair in a class)"
        print(f"{'diversity':>12}: {value} (mean pairwise LPIPS within classes; {d['backbone']}, {d['weights']})")
    if compare:
        comparison = compare_with_random(report, synset, args)
        if comparison is not None:
            report["random_real_comparison"] = comparison
            write_json_atomic(report, out)
    print(f"report: {out}")
    return report


def random_real_report(synset, args, report: dict) -> Tuple[dict, Path, bool]:
    """The evaluation of random real images of the set's dataset, IPC and size under the same
    protocol, networks, seed, device, data and teacher: read from runs/baselines/ when an
    earlier run evaluated them, otherwise evaluated now and kept there (one file per such
    setting). Returns (report, its path, whether computed now)."""
    from dataclasses import asdict

    from .baselines import random_real
    from .data import load_dataset
    from .evaluate import evaluate_synset, protocol_revision, with_counts
    from .synset import save_synset, write_json_atomic

    proto = with_counts(args.protocol, args.epochs, args.models).for_set(synset.ipc, synset.num_classes)
    archs = list(report["results"])
    teacher = getattr(args, "teacher", None)
    key = {"protocol": json.loads(json.dumps(asdict(proto))), "archs": archs, "device": report.get("device"),
           "data_root": str(Path(args.data_root).resolve()) if args.data_root else None,
           "teacher": (report.get("teacher") or {}).get("weights_fingerprint")}
    if protocol_revision(proto):  # results of the protocol's earlier code are not read back
        key["revision"] = protocol_revision(proto)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", synset.dataset)
    if name != synset.dataset:  # a dataset named by its folder: a readable part and a digest of the whole
        name = f"{name[-40:]}-{hashlib.sha256(synset.dataset.encode()).hexdigest()[:8]}"
    folder = Path("runs") / "baselines" / f"{name}-{synset.resolution}px-random-ipc{synset.ipc}-seed{args.seed}"
    path = folder / f"eval_{proto.name}_{'+'.join(archs)}_{digest}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("baseline_key") == key:
            return saved, path, False
    train = load_dataset(synset.dataset, "train", root=args.data_root, resolution=synset.resolution)
    real = random_real(train, synset.ipc, seed=args.seed)
    if not (folder / "meta.json").is_file():
        save_synset(real, folder, overwrite=True)
    print(f"evaluating {synset.ipc} random real images per class under the same protocol, once: {folder}")
    base = evaluate_synset(real, archs=archs, protocol=proto, data_root=args.data_root, seed=args.seed,
                           device=args.device, progress=True, teacher=teacher)
    base["baseline_key"] = key
    write_json_atomic(base, path)
    return base, path, True


def compare_with_random(report: dict, synset, args) -> Optional[dict]:
    """Print how the set compares with random real images of the same IPC under the same
    protocol: per network and across networks, the gain and whether it exceeds the spread
    over models (the larger of the two standard deviations). Returns what it printed (None,
    with a note, where random real images of that IPC cannot be drawn)."""
    try:
        base, path, computed = random_real_report(synset, args, report)
    except GenpriorError as e:
        print(f"no comparison with random real images: {e}")
        return None
    source = "evaluated now" if computed else "read from an earlier evaluation"
    print(f"random real, IPC {synset.ipc}, same protocol and seeds ({source}: {path}):")
    out = {"baseline": str(path), "networks": {}}
    for arch, r in report["results"].items():
        b = base["results"][arch]
        gain, spread = 100 * (r["mean"] - b["mean"]), 100 * max(r["std"], b["std"])
        verdict = "beats it by more than the spread" if gain > spread else (
            "ahead, within the spread" if gain > 0 else "does not beat it")
        print(f"{arch:>12}: {100 * b['mean']:.2f} ± {100 * b['std']:.2f} %; this set {gain:+.2f} points "
              f"(spread {spread:.2f}): {verdict}")
        out["networks"][arch] = {"random_mean": b["mean"], "random_std": b["std"], "gain_points": gain,
                                 "spread_points": spread, "beats_by_more_than_spread": gain > spread}
    if "cross_arch_mean" in report and "cross_arch_mean" in base:
        gain = 100 * (report["cross_arch_mean"] - base["cross_arch_mean"])
        print(f"{'cross-arch':>12}: {100 * base['cross_arch_mean']:.2f} %; this set {gain:+.2f} points")
        out.update(random_cross_arch_mean=base["cross_arch_mean"], cross_arch_gain_points=gain)
    return out


def _describe_protocol(p) -> str:
    if p.schedule == "step":
        schedule = f"lr drop at {p.lr_drop_epoch}"
    elif p.schedule == "multistep":
        schedule = f"lr x{p.gamma:g} at " + " and ".join(f"{n}/{d}" for n, d in p.milestones) + " of the epochs"
    else:
        schedule = f"{p.schedule} schedule"
    epochs = (", ".join(f"IPC <= {b}: {e}" if b < 10 ** 9 else f"more: {e}" for b, e in p.epochs_by_ipc) + " epochs"
              if p.epochs_by_ipc else f"{p.epochs} epochs")
    text = f"{epochs}, {p.optimizer} lr {p.lr:g} ({schedule}), batch {p.batch_size}, {p.num_models} models"
    if p.augment != "dsa":
        text += f", {p.augment} augmentation"
    if p.temperature:
        text += f"; soft labels from a teacher at T={p.temperature:g}"
    if p.cutmix:
        text += ", CutMix" + (f" on {p.cutmix_p:.0%} of the batches" if p.cutmix_p < 1 else "")
    if p.dsa_drop:
        text += f", DSA without {', '.join(p.dsa_drop)}"
    if p.tests:
        text += f"; the best of {p.tests} tests over the run reported too"
    return text


def cmd_list(args) -> None:
    from .baselines import BASELINES
    from .data import DATASETS
    from .evaluate import PROTOCOLS
    from .generators import GENERATOR_METHODS
    from .matching import MATCHERS
    from .sampling import GUIDANCE, SAMPLING_METHODS
    from .nets import CROSS_ARCH_POOL, NETS
    from .priors.load import package_folder, registry

    recipes = sorted(p for p in package_folder("genprior.recipes", "recipes").glob("*.py") if p.stem != "__init__")
    sections = {
        "datasets": [(e.name, e.summary) for e in DATASETS],
        "networks": [(e.name, e.summary + ("  [pool]" if e.name in CROSS_ARCH_POOL else "")) for e in NETS],
        "baselines": [(e.name, e.summary) for e in BASELINES],
        "priors": [(name, f"{e.get('family')}: {e.get('summary', '')}") for name, e in sorted(registry().items())],
        "losses": [(e.name, e.summary) for e in MATCHERS],
        "generators": [(e.name, e.summary) for e in GENERATOR_METHODS],
        "guidance": [(e.name, e.summary) for e in GUIDANCE],
        "sampling": [(e.name, e.summary) for e in SAMPLING_METHODS],
        "recipes": [(f"recipes/{p.name}", (ast.get_docstring(ast.parse(p.read_text())) or "").split("\n")[0])
                    for p in recipes],
        "protocols": [(p.name, _describe_protocol(p)) for p in PROTOCOLS.values()],
    }
    wanted = [args.what] if args.what else list(sections)
    for key in wanted:
        print(f"{key}:")
        for name, summary in sections[key]:
            print(f"  {name:<22} {summary}")


def cmd_evaluate(args) -> None:
    from .synset import load_synset

    _check_eval_args(args)
    synset = load_synset(args.synset_dir)
    _run_evaluation(synset, Path(args.synset_dir), args)


def cmd_baseline(args) -> None:
    from .baselines import BASELINES, make_baseline
    from .data import load_dataset
    from .synset import save_synset

    BASELINES.entry(args.method)
    if args.method == "whole":
        if args.ipc is not None:
            raise GenpriorError("the whole baseline takes every train image (the largest class-balanced part): "
                                "drop --ipc")
    elif args.ipc is None:
        raise GenpriorError(f"the {args.method} baseline needs --ipc N (images per class)")
    else:
        _check_ipc(args.ipc)
    if args.evaluate:
        _check_eval_args(args)
    else:
        _refuse_eval_flags(args, "runs only with --evaluate", "pass --evaluate or drop them")
    out = Path(args.out_dir)
    if out.exists() and not args.overwrite:
        raise GenpriorError(f"{out} already exists; choose another directory or pass --overwrite")
    train = load_dataset(args.dataset, "train", root=args.data_root, resolution=args.resolution)
    synset = make_baseline(args.method, train, args.ipc or 0, seed=args.seed)
    save_synset(synset, out, overwrite=args.overwrite)
    print(f"wrote {args.method} IPC {synset.ipc} on {args.dataset}: {out} (preview: {out / 'grid.png'})")
    if args.evaluate:
        _run_evaluation(synset, out, args)


def _class_map(text: Optional[str]) -> Optional[List[int]]:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise GenpriorError(f"--class-map takes comma-separated integers (one prior class per dataset class), "
                            f"got {text!r}") from None


def cmd_generate(args) -> None:
    from .data import load_dataset
    from .evaluate import resolve_device
    from .generate import check_generate_options, generate_set
    from .priors.load import load_prior
    from .synset import save_synset

    _check_ipc(args.ipc)
    class_map = _class_map(args.class_map)
    device = resolve_device(args.device)
    check_generate_options(args.ipc, args.chunk_size, args.mixed_precision, device)
    if args.method:
        from .sampling import SAMPLING_METHODS

        SAMPLING_METHODS.entry(args.method)
        for flag, value in (("--space", args.space), ("--class-map", args.class_map)):
            if value is not None:
                raise GenpriorError(f"{flag} is for plain samples; --method {args.method} draws in the prior's noise "
                                    "space with the dataset's own classes: drop it")
        if getattr(args, "on_the_fly", False):
            raise GenpriorError(f"--on-the-fly draws plain samples from the prior; --method {args.method}'s draws need "
                                "the real data and its selection: evaluate its set as a fixed set (drop --on-the-fly)")
    elif args.option:
        raise GenpriorError("--option sets an option of a training-free method: pass --method too")
    if args.evaluate:
        _check_eval_args(args)
    else:
        _refuse_eval_flags(args, "runs only with --evaluate (a recipe: without --no-evaluate)",
                           "ask for the evaluation or drop them")
    out = Path(args.out_dir)
    if out.exists() and not args.overwrite:
        raise GenpriorError(f"{out} already exists; choose another directory or pass --overwrite")
    options = _key_values(args.prior_option, "--prior-option")
    if args.guidance_scale is not None:
        options["guidance_scale"] = args.guidance_scale
    classes = load_dataset(args.dataset, "train", root=args.data_root, resolution=args.resolution).class_names \
        if args.dataset else None  # the prompts of a text-conditioned prior that has no class names of its own
    prior = load_prior(args.prior, allow_pickle=args.allow_pickle, dataset_classes=classes, **options)
    dataset = args.dataset or prior.card.get("dataset")
    if not dataset:
        raise GenpriorError(f"prior {args.prior!r} does not say which dataset it models; pass --dataset")
    train = load_dataset(dataset, "train", root=args.data_root, resolution=args.resolution)
    if args.method:
        from .sampling import synthesize

        synset = synthesize(args.method, prior, train, args.ipc, seed=args.seed, chunk_size=args.chunk_size,
                            options=_key_values(args.option, "--option"), prior_ref=args.prior, resize=args.resize,
                            mixed_precision=args.mixed_precision, device=str(device))
    else:
        synset = generate_set(prior, train, args.ipc, seed=args.seed, space=args.space, chunk_size=args.chunk_size,
                              mixed_precision=args.mixed_precision, class_map=class_map, resize=args.resize,
                              device=str(device), prior_ref=args.prior, progress=True)
        synset.config["generate"]["prior_options"] = options  # what an on-the-fly evaluation loads it with
    save_synset(synset, out, overwrite=args.overwrite)
    made = f" by {args.method}" if args.method else ""
    print(f"wrote {args.ipc} images per class of {args.prior}{made}: {out} (preview: {out / 'grid.png'})")
    if args.evaluate:
        _run_evaluation(synset, out, args)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(pairs: List[str], flag: str) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise GenpriorError(f"{flag} takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.replace("-", "_")] = _parse_value(value)
    return out


DISTILL_FLAGS = ("dataset", "prior", "space", "loss", "ipc", "iterations", "init", "init_from", "invert_steps",
                 "invert_lpips", "lr", "optimizer", "batch_real", "chunk_size", "mixed_precision", "seed",
                 "checkpoint_every", "keep_checkpoints", "log_every", "eval_every", "eval_epochs",
                 "resize", "resolution", "method")


def _config_values(args, defaults: Optional[dict], flags: tuple) -> dict:
    """Recipe defaults, then the flags the user gave, plus what the distillation and generator
    commands share: data root, class map, prior options."""
    values = dict(defaults or {})
    for name in flags:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            values[name] = value
    if args.data_root:
        values["data_root"] = args.data_root
    if args.class_map:
        values["class_map"] = _class_map(args.class_map)
    values["prior_options"] = {**values.get("prior_options", {}), **_key_values(args.prior_option, "--prior-option")}
    if args.allow_pickle:
        values["prior_options"]["allow_pickle"] = True
    return values


def distill_config_from_args(args, defaults: Optional[dict] = None, command: str = ""):
    """A DistillConfig: recipe defaults, then the flags the user gave."""
    from .distill import DistillConfig

    values = _config_values(args, defaults, DISTILL_FLAGS)
    if getattr(args, "no_lpips_fallback", False):
        values["invert_lpips_fallback"] = False
    values["loss_options"] = {**values.get("loss_options", {}), **_key_values(args.loss_option, "--loss-option")}
    values["latent_lrs"] = {**values.get("latent_lrs", {}), **_key_values(args.latent_lr, "--latent-lr")}
    values["frozen_latents"] = sorted(set(values.get("frozen_latents", [])) | set(args.freeze or []))
    values["command"] = command
    return DistillConfig.from_dict(values)


def recipe_command(argv=None) -> str:
    """The command line of a recipe script, as a user would type it again."""
    script = Path(sys.argv[0])
    shown = script.relative_to(Path.cwd()) if script.is_absolute() and Path.cwd() in script.parents else script
    return " ".join(["python", str(shown), *(sys.argv[1:] if argv is None else argv)])


def default_run_dir(base: Path, resume: bool) -> Path:
    """``base`` (``runs/<method>-<prior>-<dataset>[-ipc<N>]``) or, for a new run, its first free
    ``-K`` suffix, so that re-running a command never collides; ``resume`` continues the newest."""
    taken = [base] + sorted(base.parent.glob(base.name + "-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])
                            if p.name.rsplit("-", 1)[1].isdigit() else -1)
    taken = [p for p in taken if p.exists()]
    if resume:
        return taken[-1] if taken else base
    k = 1
    while (base if k == 1 else base.with_name(f"{base.name}-{k}")).exists():
        k += 1
    return base if k == 1 else base.with_name(f"{base.name}-{k}")


def run_distill(args, defaults: Optional[dict] = None, command: str = "") -> None:
    """Distill (or resume), then evaluate the final set under the chosen protocol; ``command``
    (the command line) goes into the run's config and the set's meta.json."""
    from .distill import LatentDistiller
    from .distill.common import resolve_resume
    from .distill.latent import check_config

    cfg = distill_config_from_args(args, defaults, command)
    check_config(cfg)
    if not args.no_evaluate:
        _check_eval_args(args)  # a typo in --protocol or --archs fails now, not after the distillation
    else:
        _refuse_eval_flags(args, "--no-evaluate skips", "drop them or --no-evaluate", device=True)
    if args.output_dir:
        out = Path(args.output_dir)
    elif args.resume and args.resume != "latest":
        out = Path(args.resume).parent.parent  # RUN/checkpoints/step-N continues in RUN
    else:
        out = default_run_dir(Path("runs") / f"{cfg.method or cfg.loss}-{Path(cfg.prior).name}-{cfg.dataset}"
                                             f"-ipc{cfg.ipc}", resume=bool(args.resume))
    resolve_resume(out, args.resume)  # before the data and the prior are loaded
    distiller = LatentDistiller(cfg, out)
    synset = distiller.run(resume=args.resume)
    if not distiller.acc.is_main_process:
        return
    print(f"synthetic set: {out / 'synset'} (preview: {out / 'synset' / 'grid.png'})")
    if not args.no_evaluate:
        _run_evaluation(synset, out / "synset", args, compare=not getattr(args, "no_compare", False))


def distill_defaults(args) -> dict:
    """``genprior distill``'s defaults for these flags: the main job's data, prior, loss and IPC;
    with neither --prior nor --loss, its start and optimiser too (GLaD's DM from inverted real images)."""
    defaults = dict(MAIN_JOB)
    if args.prior is None and args.loss is None:
        defaults.update(MAIN_JOB_START)
    return defaults


def cmd_distill(args) -> None:
    run_distill(args, distill_defaults(args), command=" ".join(["genprior", *args.argv]))


def cmd_export(args) -> None:
    from .distill import export_run

    synset = export_run(args.run_dir, args.out, chunk_size=args.chunk_size, overwrite=args.overwrite,
                        mixed_precision=args.mixed_precision)
    print(f"decoded {len(synset)} images: {args.out or Path(args.run_dir) / 'export'}")


def cmd_synthesize(args) -> None:
    """``genprior synthesize METHOD PRIOR OUT_DIR`` is ``genprior generate PRIOR OUT_DIR --method
    METHOD``, with the generate flags it does not take at their defaults."""
    for name, value in (("space", None), ("resolution", None), ("mixed_precision", "no"), ("guidance_scale", None),
                        ("class_map", None), ("allow_pickle", False)):
        setattr(args, name, value)
    cmd_generate(args)


def cmd_teacher(args) -> None:
    from .evaluate import resolve_device
    from .nets import NETS
    from .teacher import train_teacher

    NETS.entry(args.arch)
    resolve_device(args.device)
    if args.epochs < 1:
        raise GenpriorError(f"--epochs must be at least 1, got {args.epochs}")
    out = Path(args.out) if args.out else Path("runs") / "teachers" / f"{args.dataset}-{args.arch}"
    _check_folder_arg(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / "teacher.json").is_file():
        raise GenpriorError(f"--out {out} is a folder that holds something else; the teacher replaces its folder, "
                            "so give it a new or a teacher folder")
    folder = train_teacher(args.dataset, out, arch=args.arch, epochs=args.epochs, seed=args.seed, device=args.device,
                           data_root=args.data_root, snapshots=args.snapshots)
    card = json.loads((folder / "teacher.json").read_text())
    print(f"teacher {args.arch} on {card['dataset']}: test accuracy {100 * card['test_accuracy']:.2f} %; {folder}")


def cmd_bench(args) -> None:
    from .bench import empty_results, forget, load_config, remeasure_diversity, reuse, run_bench, write_outputs
    from .lanes import locked

    config = load_config(args.config)
    out = Path(args.out) if args.out else Path("runs") / "bench" / config["name"]
    _check_folder_arg(out, "--out")
    if args.threads < 1:
        raise GenpriorError(f"--threads must be at least 1, got {args.threads}")
    if args.redo:
        gone = forget(config, out, args.redo)
        print(f"forgot {len(gone)} finished cell(s) matching {args.redo!r}: {', '.join(gone) or 'none'}")
        return
    if args.diversity:
        measured = remeasure_diversity(config, out)
        print(f"measured the diversity of {len(measured)} finished set(s) again; {out / 'leaderboard.md'} rewritten")
        return
    for source in args.reuse or []:
        taken = reuse(config, out, Path(source))
        print(f"took {len(taken)} finished cell(s) from {source}" + (f": {', '.join(taken)}" if taken else ""))
    if args.table:
        with locked(out / "bench.json", empty_results) as results:
            write_outputs(config, out, results)
    else:
        failures: List[str] = []
        ran = run_bench(config, out, threads=args.threads, max_units=args.max_units, only=args.only, failures=failures)
        print(f"ran {ran} cell(s) in this process")
        print((out / "leaderboard.md").read_text())
        if failures:
            raise GenpriorError(f"{len(failures)} cell(s) failed ({', '.join(failures[:5])}"
                                f"{', ...' if len(failures) > 5 else ''}); their errors are above; fix and run again")
        return
    print((out / "leaderboard.md").read_text())


def cmd_push(args) -> None:
    from .hub import push

    done = push(args.folder, args.repo_id, license=args.license, private=args.private, token=args.token,
                dry_run=args.dry_run, stage_dir=args.stage_dir)
    where = f"pushed to {done['url']}" if "url" in done else "not pushed (--dry-run)"
    staged = f"; upload folder and card: {done['staged']}" if done["staged"] else ""
    print(f"{done['kind']} as a hub {done['repo_type']} {done['repo_id']}: {where}{staged}")


def cmd_experts(args) -> None:
    from .data import load_dataset
    from .evaluate import resolve_device
    from .matching.experts import train_experts
    from .nets import NETS

    NETS.entry(args.net)  # all flags are checked before the data is loaded
    for flag, value in (("--num-experts", args.num_experts), ("--epochs", args.epochs)):
        if value < 1:
            raise GenpriorError(f"{flag} must be at least 1, got {value}")
    if not args.lr > 0:
        raise GenpriorError(f"--lr must be positive, got {args.lr}")
    device = resolve_device(args.device)
    out = Path(args.out_dir or f"runs/experts-{args.dataset}-{args.net}")
    _check_folder_arg(out, "--out-dir")
    train = load_dataset(args.dataset, "train", root=args.data_root)
    train_experts(train, args.net, args.num_experts, args.epochs, out, lr=args.lr, seed=args.seed, device=str(device))
    print(f"expert trajectories: {out}")


GENERATOR_FLAGS = ("dataset", "prior", "method", "iterations", "batch_size", "lr", "ema", "mixed_precision", "seed",
                   "checkpoint_every", "keep_checkpoints", "log_every", "resize", "resolution")


def generator_config_from_args(args, defaults: Optional[dict] = None, command: str = ""):
    """A GeneratorConfig: recipe defaults, then the flags the user gave."""
    from .generators.train import GeneratorConfig

    values = _config_values(args, defaults, GENERATOR_FLAGS)
    if "prior" not in values and values.get("method"):  # the method's shipped prior (minimax: the diffusion one)
        from .generators import GENERATOR_METHODS

        values["prior"] = GENERATOR_METHODS.get(values["method"]).default_prior
    values["method_options"] = {**values.get("method_options", {}),
                                **_key_values(args.method_option, "--method-option")}
    values["command"] = command
    return GeneratorConfig.from_dict(values)


def run_train(args, defaults: Optional[dict] = None, command: str = "") -> None:
    """Train a generator (or resume), then generate a set at --ipc and evaluate it; ``command``
    (the command line) goes into the generator's card."""
    from .data import load_dataset
    from .distill.common import resolve_resume
    from .generate import generate_set
    from .generators.train import GeneratorTrainer, check_generator_config
    from .priors.load import load_prior
    from .synset import save_synset

    cfg = generator_config_from_args(args, defaults, command)
    check_generator_config(cfg)
    _check_ipc(args.ipc)
    if not args.no_evaluate:
        _check_eval_args(args)
    else:
        _refuse_eval_flags(args, "--no-evaluate skips", "drop them or --no-evaluate", device=True)
    if args.output_dir:
        out = Path(args.output_dir)
    elif args.resume and args.resume != "latest":
        out = Path(args.resume).parent.parent
    else:
        out = default_run_dir(Path("runs") / f"{cfg.method}-{Path(cfg.prior).name}-{cfg.dataset}", bool(args.resume))
    resolve_resume(out, args.resume)
    trainer = GeneratorTrainer(cfg, out)
    generator_dir = trainer.run(resume=args.resume)
    if not trainer.acc.is_main_process:
        return
    print(f"trained generator: {generator_dir} (samples: {out / 'samples.png'}); "
          f"draw any IPC with: genprior generate {generator_dir} OUT_DIR --ipc N")
    if args.no_evaluate:
        return
    real = load_dataset(cfg.dataset, "train", root=cfg.data_root, resolution=cfg.resolution)
    synset = generate_set(load_prior(str(generator_dir)), real, args.ipc, seed=cfg.seed, class_map=cfg.class_map,
                          resize=cfg.resize, prior_ref=str(generator_dir))
    set_dir = out / f"synset-ipc{args.ipc}"
    save_synset(synset, set_dir, overwrite=True)
    _run_evaluation(synset, set_dir, args)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``genprior train``; the generator recipes reuse them with their own defaults."""
    g = p.add_argument_group("generator training")
    g.add_argument("--dataset")
    g.add_argument("--prior", help="the GAN or diffusion prior to train: registered name, local folder or hub id "
                   "(default: the method's shipped prior, mnist5k-stylegan for dim and dcgm, mnist5k-diffusion for "
                   "minimax)")
    g.add_argument("--method", help="generator method (see `genprior list generators`)")
    g.add_argument("--method-option", action="append", metavar="KEY=VALUE", help="a method option (repeatable)")
    g.add_argument("--prior-option", action="append", metavar="KEY=VALUE", help="a prior option (repeatable)")
    g.add_argument("--iterations", type=int)
    g.add_argument("--batch-size", type=int, help="generated (and real) images per step")
    g.add_argument("--lr", type=finite_float, help="generator learning rate (default: the method's)")
    g.add_argument("--ema", type=finite_float, help="EMA decay of the exported weights (0: the trained weights)")
    g.add_argument("--mixed-precision", help="no, bf16 or fp16 (fp16 needs a GPU)")
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--keep-checkpoints", type=int, metavar="N",
                   help="keep only the N newest checkpoints on disk (default 0: keep all)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--class-map", help="comma-separated prior class for each dataset class")
    g.add_argument("--resize", action="store_true", default=None, help="resize generated images to the dataset size")
    g.add_argument("--resolution", type=int, help="image size for datasets that take one")
    g.add_argument("--allow-pickle", action="store_true", help="allow loading a StyleGAN .pkl prior (runs code from the file)")
    g.add_argument("--ipc", type=int, default=10, help="IPC of the set generated and evaluated after training")
    g.add_argument("--output-dir")
    g.add_argument("--resume", help="'latest' or a checkpoint directory")
    g.add_argument("--no-evaluate", action="store_true", help="skip generating and evaluating a set after training")
    _add_eval_args(p)


def cmd_train(args) -> None:
    run_train(args, command=" ".join(["genprior", *args.argv]))


def add_generate_args(p: argparse.ArgumentParser, recipe: bool = False) -> None:
    """The flags of ``genprior generate``; the training-free recipes reuse them (prior and
    output folder are flags there: the recipe names its prior, the folder follows the method)."""
    prior_help = "registered prior name, local folder (a trained generator too), hub id, or .pkl (with --allow-pickle)"
    if recipe:
        p.add_argument("--prior", help=prior_help)
        p.add_argument("--out-dir", help="the set folder (default: runs/<method>-<dataset>-ipc<N>)")
    else:
        p.add_argument("prior", help=prior_help)
        p.add_argument("out_dir", help="the set folder")
    p.add_argument("--ipc", type=int, required=not recipe, help="images per class")
    p.add_argument("--dataset", help="dataset whose normalisation and classes the set uses (default: the prior's)")
    p.add_argument("--space", help="latent space to sample in (default: the prior's)")
    p.add_argument("--resolution", type=int)
    p.add_argument("--chunk-size", type=int, default=100, help="images decoded at a time (memory is flat in the IPC)")
    p.add_argument("--mixed-precision", default="no", help="no, bf16, or fp16 (GPU only)")
    p.add_argument("--guidance-scale", type=finite_float,
                   help="classifier-free guidance scale of a class-conditional diffusion prior (1 = none)")
    p.add_argument("--class-map", help="comma-separated prior class for each dataset class")
    p.add_argument("--resize", action="store_true", help="resize generated images to the dataset size")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading a StyleGAN .pkl (runs code from the file)")
    p.add_argument("--prior-option", action="append", metavar="KEY=VALUE",
                   help="a prior option, e.g. num_inference_steps=5 (repeatable)")
    p.add_argument("--method", help="a training-free method of a diffusion prior (d4m, mgd3, igd, d3hr, cao2; "
                   "`genprior list`) instead of plain samples")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="an option of --method, e.g. strength=0.5 or classifier=DIR (repeatable)")
    p.add_argument("--overwrite", action="store_true")
    if recipe:
        p.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="only write the set")
    else:
        p.add_argument("--evaluate", action="store_true")
        _add_on_the_fly(p)
    _add_eval_args(p)


def run_sampling_recipe(description: str, defaults: dict, setup=None, argv=None) -> None:
    """What a training-free recipe (recipes/d4m.py, ...) runs: ``genprior generate --method``
    with its paper's defaults (flags given on the command line win; ``--option`` and
    ``--prior-option`` add to the recipe's), then the evaluation. ``setup(args, options)``
    prepares what the method needs and the options do not give, and returns the options it
    adds (e.g. trains the surrogate IGD reads)."""
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    add_generate_args(parser, recipe=True)
    defaults = dict(defaults)
    lists = {key: [f"{k}={json.dumps(v)}" for k, v in defaults.pop(key, {}).items()]
             for key in ("option", "prior_option")}
    parser.set_defaults(**defaults)
    try:
        args = parser.parse_args(argv)
        for key, given in lists.items():
            setattr(args, key, given + [v for v in (getattr(args, key) or []) if v not in given])
        if args.out_dir is None:
            args.out_dir = str(Path("runs") / f"{args.method}-{args.dataset}-ipc{args.ipc}")
        if setup is not None:
            args.option += [f"{k}={json.dumps(v)}" for k, v in setup(args, _key_values(args.option, "--option")).items()]
        memory_setting()
        cmd_generate(args)
    except GenpriorError as e:
        print(f"genprior: error: {e}", file=sys.stderr)
        sys.exit(2)


def recipe_teacher(args, snapshots=(), epochs: int = 50) -> str:
    """The network of the real data a training-free recipe selects or guides with: trained once
    per dataset (``genprior teacher``, 50 epochs) into runs/teachers/, then reused."""
    from .teacher import CARD, train_teacher

    name = f"{args.dataset}-convnet" + (f"-snapshots{'-'.join(str(e) for e in snapshots)}" if snapshots else "")
    folder = Path("runs") / "teachers" / name
    if not (folder / CARD).is_file():
        print(f"training the ConvNet it needs on {args.dataset} once ({epochs} epochs): {folder}")
        train_teacher(args.dataset, folder, epochs=epochs, snapshots=list(snapshots), data_root=args.data_root,
                      device=args.device)
    return str(folder)


def run_generator_recipe(description: str, defaults: dict, argv=None) -> None:
    """What a generator recipe (recipes/dim.py, ...) runs: its paper's defaults under the flags
    of ``genprior train`` (flags given on the command line win)."""
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    add_train_args(parser)
    try:
        args = parser.parse_args(argv)
        memory_setting()
        run_train(args, defaults, command=recipe_command(argv))
    except GenpriorError as e:
        print(f"genprior: error: {e}", file=sys.stderr)
        sys.exit(2)


#: ``genprior distill`` with no flags: GLaD-DM on the shipped StyleGAN prior, mnist5k, IPC 10.
MAIN_JOB = {"dataset": "mnist5k", "prior": "mnist5k-stylegan", "loss": "dm", "ipc": 10, "iterations": 100}
#: ... and, when neither --prior nor --loss is given, how it starts and moves: w+ inverted from
#: real images (200 steps, as IT-GAN's start) and Adam at 0.01. From GLaD's random start with SGD
#: it ends below 10 random real images per class (94.6 against 95.7 %, README "Results so far").
MAIN_JOB_START = {"method": "glad-dm", "init": "invert", "invert_steps": 200, "optimizer": "adam", "lr": 0.01}


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``genprior distill``; recipes reuse them with their own defaults."""
    g = p.add_argument_group("distillation")
    g.add_argument("--dataset")
    g.add_argument("--prior", help="registered prior, local folder, hub id, or 'pixel' for pixel space")
    g.add_argument("--space", help="latent space (default: the prior's)")
    g.add_argument("--loss", help="matching loss: dm, mmd, wasserstein, dc, mtt, cafe")
    g.add_argument("--loss-option", action="append", metavar="KEY=VALUE", help="a matching-loss option (repeatable)")
    g.add_argument("--prior-option", action="append", metavar="KEY=VALUE", help="a prior option (repeatable)")
    g.add_argument("--ipc", type=int, help="images per class")
    g.add_argument("--iterations", type=int)
    g.add_argument("--init", help="random, mean (class means) or invert (real images)")
    g.add_argument("--init-from", metavar="SET_DIR",
                   help="with --init invert: start from this set's images (a baseline such as herding, or another run's start)")
    g.add_argument("--invert-steps", type=int)
    g.add_argument("--invert-lpips", type=finite_float, metavar="WEIGHT",
                   help="GAN inversion (--init invert): add WEIGHT x LPIPS to the pixel MSE (default 0: pixels only)")
    g.add_argument("--lr", type=finite_float, help="latent learning rate")
    g.add_argument("--latent-lr", action="append", metavar="KEY=LR", help="learning rate for one latent, e.g. F=10 (repeatable)")
    g.add_argument("--freeze", action="append", metavar="KEY",
                   help="a latent that keeps its start, e.g. x_T: only the others move (repeatable)")
    g.add_argument("--optimizer", help="adam or sgd")
    g.add_argument("--batch-real", type=int, help="real images per class per step")
    g.add_argument("--chunk-size", type=int, help="images decoded at once; bounds memory per step")
    g.add_argument("--mixed-precision", help="no, bf16 or fp16 (fp16 needs a GPU)")
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--keep-checkpoints", type=int, metavar="N",
                   help="keep only the N newest checkpoints on disk (default 0: keep all)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--eval-every", type=int, help="quick evaluation every N iterations, best set kept in best/")
    g.add_argument("--eval-epochs", type=int)
    g.add_argument("--class-map", help="comma-separated prior class for each dataset class")
    g.add_argument("--resize", action="store_true", default=None, help="resize decoded images to the dataset size")
    g.add_argument("--resolution", type=int, help="image size for datasets that take one (imagefolder, ImageNet subsets)")
    g.add_argument("--allow-pickle", action="store_true", help="allow loading a StyleGAN .pkl prior (runs code from the file)")
    g.add_argument("--method", help="name recorded in the set's meta.json")
    g.add_argument("--output-dir")
    g.add_argument("--resume", help="'latest' or a checkpoint directory")
    g.add_argument("--no-evaluate", action="store_true", help="skip the evaluation after distillation")
    g.add_argument("--no-compare", action="store_true",
                   help="skip the comparison with random real images of the same IPC under the same protocol "
                        "(evaluated once into runs/baselines/, then read from there)")
    _add_eval_args(p)


def _merged(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``; dict values (loss options, latent lrs) are merged one level deep."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def recipe_defaults(defaults: dict, variants: Optional[dict], args) -> dict:
    """A recipe's defaults for these flags: the base, then ``--variant``'s, then those of the
    latent space in use (a ``by_space`` entry, e.g. GLaD's learning rate for ``F``)."""
    merged = _merged(defaults, variants[args.variant]) if variants else dict(defaults)
    by_space = merged.pop("by_space", {})
    return _merged(merged, by_space.get(args.space or merged.get("space"), {}))


def recipe_parser(description: str, variants: Optional[dict] = None) -> argparse.ArgumentParser:
    # the recipe's docstring keeps its paragraphs and line breaks in --help
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    if variants:
        parser.add_argument("--variant", default=next(iter(variants)), choices=list(variants))
    add_distill_args(parser)
    return parser


def run_recipe(description: str, defaults: dict, variants: Optional[dict] = None, argv=None) -> None:
    """What every script in recipes/ runs: its paper's defaults under the flags of
    ``genprior distill`` (flags given on the command line win). ``variants`` maps a
    ``--variant`` name to extra defaults (e.g. GLaD's DM / DC / MTT settings)."""
    try:
        args = recipe_parser(description, variants).parse_args(argv)
        memory_setting()
        run_distill(args, recipe_defaults(defaults, variants, args), command=recipe_command(argv))
    except GenpriorError as e:
        print(f"genprior: error: {e}", file=sys.stderr)
        sys.exit(2)


DATA_ROOT_HELP = "root of local datasets (default: $GENPRIOR_DATA)"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="genprior", description="Dataset condensation with generative priors.")
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list datasets, networks, baselines, priors, losses, generator methods, recipes "
                       "and protocols")
    p.add_argument("what", nargs="?", choices=["datasets", "networks", "baselines", "priors", "losses", "generators",
                                               "guidance", "sampling", "recipes", "protocols"])
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("evaluate", help="train fresh networks on a synthetic set and test them")
    p.add_argument("synset_dir")
    p.add_argument("--out", help="report path (default: SYNSET_DIR/eval_<protocol>_<archs>.json)")
    _add_eval_args(p)
    _add_on_the_fly(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("baseline", help="write a baseline set (random, herding, kcenter)")
    p.add_argument("method")
    p.add_argument("out_dir")
    p.add_argument("--ipc", type=int, help="images per class (not for whole, which takes the whole train split)")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--resolution", type=int, help="image size for datasets that take one (imagefolder, ImageNet subsets)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--evaluate", action="store_true", help="evaluate the set right after writing it")
    _add_eval_args(p)
    p.set_defaults(fn=cmd_baseline)

    p = sub.add_parser("generate", aliases=["sample"],
                       help="write a set of any IPC from a prior or trained generator, no distillation "
                            "(nested: IPC 10 is the first 10 per class of IPC 50; 'sample' is its older name)")
    add_generate_args(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("distill", help="optimise latents of a prior against a matching loss (default: GLaD-DM, mnist5k, IPC 10)")
    add_distill_args(p)
    p.set_defaults(fn=cmd_distill)

    p = sub.add_parser("train", help="train a generator into a dataset (DiM, DCGM, Minimax); then "
                       "`genprior generate RUN/generator OUT --ipc N` draws a set of any IPC")
    add_train_args(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("export", help="decode a distillation run's latents into a synthetic-set directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="set directory (default: RUN_DIR/export)")
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"),
                   help="decode in this precision (default: the run's own, which re-makes its synset/)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("experts", help="train expert trajectories for MTT (resumable)")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--net", default="convnet")
    p.add_argument("--num-experts", type=int, default=10)
    p.add_argument("--epochs", type=int, default=50, help="epochs per expert (MTT: 50)")
    p.add_argument("--lr", type=finite_float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.set_defaults(fn=cmd_experts)

    p = sub.add_parser("synthesize", help="a set from a diffusion prior by a training-free method (d4m, mgd3, igd, d3hr, cao2)")
    p.add_argument("method")
    p.add_argument("prior")
    p.add_argument("out_dir")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a method option, e.g. strength=0.5")
    p.add_argument("--prior-option", action="append", metavar="KEY=VALUE",
                   help="a prior option, e.g. num_inference_steps=50 or guidance_scale=4")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--resize", action="store_true", help="resize the prior's images to the dataset size")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--evaluate", action="store_true", help="evaluate the set right after writing it")
    _add_eval_args(p)
    p.set_defaults(fn=cmd_synthesize)

    p = sub.add_parser("teacher", help="train the teacher of the soft-label protocol on a dataset's whole train split")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--arch", default="convnet")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="the teacher folder (default: runs/teachers/<dataset>-<arch>)")
    p.add_argument("--snapshots", type=int, nargs="*", default=[], metavar="EPOCH",
                   help="also save the weights after these epochs (IGD's surrogate checkpoints)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.set_defaults(fn=cmd_teacher)

    p = sub.add_parser("bench", help="methods x IPCs x networks x seeds under one protocol: resumable cells, "
                                     "a leaderboard and plots")
    p.add_argument("config", nargs="?", help="a JSON benchmark config (default: random real, pixel DM and GLaD-DM "
                                             "at IPC 1 on mnist5k, ConvNet, quick)")
    p.add_argument("--out", help="the benchmark folder (default: runs/bench/<config name>)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of this process; on a 2-core machine run two 1-thread processes side by side")
    p.add_argument("--max-units", type=int, help="stop after this many new cells")
    p.add_argument("--only", metavar="TEXT", action="append",
                   help="run only the cells whose key holds TEXT, e.g. 'build|' or '|dm|'; repeatable (any of them), "
                        "e.g. --only 'build|' --only '|convnet|' for every set and its ConvNet cells first")
    p.add_argument("--redo", metavar="TEXT", help="forget the finished cells whose key holds TEXT (results and files), "
                                                  "and the cells computed from them (a set's evaluations, a setup "
                                                  "step's builds), so that the next run computes them again; then stop")
    p.add_argument("--reuse", metavar="DIR", action="append",
                   help="first take the finished cells another benchmark folder computed identically (same command, "
                        "data, network, model and protocol; e.g. random real or pixel DM rows), copying their sets; "
                        "repeatable. Its builds are trusted to come from today's code and priors: --redo a row "
                        "whose method or prior changed since")
    p.add_argument("--table", action="store_true", help="only rewrite the leaderboard and plots")
    p.add_argument("--diversity", action="store_true",
                   help="measure the LPIPS diversity of every finished set again with today's metric (the sets "
                        "are not rebuilt), rewrite the leaderboard, then stop")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("push", help="upload a synthetic set, a prior or a trained generator to the Hugging Face hub, "
                                    "with a card")
    p.add_argument("folder", help="a set folder (RUN/synset), a prior folder, or RUN/generator of `genprior train`")
    p.add_argument("repo_id", help="owner/name on the hub (sets become datasets, priors and generators models)")
    p.add_argument("--license", default="apache-2.0", help="the card's license id (default: apache-2.0)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", help="a hub token with write access (default: the logged-in one, or $HF_TOKEN)")
    p.add_argument("--dry-run", action="store_true", help="write the upload folder and its card, push nothing")
    p.add_argument("--stage-dir", help="where the upload folder is written (default: a new temporary folder)")
    p.set_defaults(fn=cmd_push)
    for name in ("evaluate", "baseline", "generate", "distill", "train", "experts", "teacher",
                 "synthesize"):  # also after the command
        sub.choices[name].add_argument("--data-root", default=argparse.SUPPRESS, help=DATA_ROOT_HELP)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        memory_setting()  # a bad GENPRIOR_KEEP_MEMORY fails here, in one line
        args.fn(args)
    except GenpriorError as e:
        print(f"genprior: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
