"""Scores that see through soft labels and augmentation: DD-Ranking's LRS and ARS.

Li et al., DD-Ranking: Rethinking the Evaluation of Dataset Distillation (2025; code
NUS-HPC-AI-Lab/DD-Ranking, ``ddranking/metrics``). A set's accuracy mixes what its images
carry with what the evaluation adds: a teacher's soft labels lift random real images
too, and so does heavy augmentation. Both scores compare the set with random real
images of the same size under the same protocol:

- **label-robust score**: HLR = Acc(full data, hard) - Acc(set, hard) is what the set
  still lacks with plain labels; IOR = Acc(set, its labels) - Acc(random, the same
  labels) is what it adds over random images under its own label protocol;
  alpha = w * IOR - (1 - w) * HLR and LRS = (e^alpha - e^-1) / (e - e^-1).
- **augmentation-robust score**: beta = w * (Acc(set, aug) - Acc(random, aug))
  + (1 - w) * (Acc(set, no aug) - Acc(random, no aug)), ARS = (e^beta - e^-1) / (e - e^-1).

w = 0.5 as on DD-Ranking's leaderboard. The normalisation maps alpha, beta in [-1, 1]
onto [0, 1], which holds for accuracies given as fractions; DD-Ranking's code passes
percentages (its ``validate`` returns top-1 in percent), which takes the score out of
that range, so genprior takes fractions and refuses numbers above 1. Like DD-Ranking,
scores are computed per evaluation run (model i of each evaluation, paired by seed)
and then averaged. Each accuracy is the network's after its last epoch, as every genprior
table reports; DD-Ranking keeps the best test accuracy over its periodic tests (and searches
the learning rate of the hard-label and random runs), which a protocol with ``tests`` records
beside (``best_acc``) but the scores do not take.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Union

from .errors import GenpriorError

Accuracy = Union[float, Sequence[float]]
DEFAULT_WEIGHT = 0.5
PAPER = "Li et al., DD-Ranking: Rethinking the Evaluation of Dataset Distillation, 2025"


def _normalised_exp(x: float) -> float:
    return (math.exp(x) - math.exp(-1)) / (math.e - math.exp(-1))


def _runs(name: str, value: Accuracy) -> list:
    values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else list(value)
    if not values:
        raise GenpriorError(f"{name}: no accuracy given")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise GenpriorError(f"{name} must be accuracies as fractions in [0, 1] (not percent), got {v!r}")
    return values


def _paired(**accuracies: Accuracy) -> Dict[str, list]:
    """Accuracies per run; a single number (e.g. the full-data accuracy) serves every run."""
    runs = {k: _runs(k, v) for k, v in accuracies.items()}
    n = max(len(v) for v in runs.values())
    bad = {k: len(v) for k, v in runs.items() if len(v) not in (1, n)}
    if bad:
        raise GenpriorError(f"scores pair the runs of each evaluation: got {n} runs and {bad}")
    return {k: v * n if len(v) == 1 else v for k, v in runs.items()}


def _check_weight(weight: float) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise GenpriorError(f"the score weight must be in [0, 1], got {weight!r}")
    return float(weight)


def _summary(per_run: Dict[str, list]) -> Dict[str, float]:
    from .evaluate import mean_std

    out: Dict[str, float] = {}
    for key, values in per_run.items():
        out[key], out[f"{key}_std"] = mean_std(values)
    return out


def label_robust_score(full_hard: Accuracy, set_hard: Accuracy, set_own: Accuracy, random_own: Accuracy,
                       weight: float = DEFAULT_WEIGHT) -> Dict[str, float]:
    """LRS with its parts (HLR, IOR), mean and std over runs. ``set_own`` / ``random_own``:
    the set and random real images under the set's own label protocol (soft labels for a
    soft-label set; for a hard-label set the hard-label accuracies again)."""
    w = _check_weight(weight)
    runs = _paired(full_hard=full_hard, set_hard=set_hard, set_own=set_own, random_own=random_own)
    per_run: Dict[str, list] = {"hlr": [], "ior": [], "lrs": []}
    for full, hard, own, rnd in zip(runs["full_hard"], runs["set_hard"], runs["set_own"], runs["random_own"]):
        hlr, ior = full - hard, own - rnd
        per_run["hlr"].append(hlr)
        per_run["ior"].append(ior)
        per_run["lrs"].append(_normalised_exp(w * ior - (1 - w) * hlr))
    return {**_summary(per_run), "weight": w, "runs": len(per_run["lrs"])}


def augmentation_robust_score(set_aug: Accuracy, random_aug: Accuracy, set_plain: Accuracy, random_plain: Accuracy,
                              weight: float = DEFAULT_WEIGHT) -> Dict[str, float]:
    """ARS, mean and std over runs: the set's gain over random real images with the
    protocol's augmentation (``*_aug``) and without it (``*_plain``)."""
    w = _check_weight(weight)
    runs = _paired(set_aug=set_aug, random_aug=random_aug, set_plain=set_plain, random_plain=random_plain)
    per_run: Dict[str, list] = {"gain_aug": [], "gain_plain": [], "ars": []}
    for sa, ra, sp, rp in zip(runs["set_aug"], runs["random_aug"], runs["set_plain"], runs["random_plain"]):
        per_run["gain_aug"].append(sa - ra)
        per_run["gain_plain"].append(sp - rp)
        per_run["ars"].append(_normalised_exp(w * (sa - ra) + (1 - w) * (sp - rp)))
    return {**_summary(per_run), "weight": w, "runs": len(per_run["ars"])}
