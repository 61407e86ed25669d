"""DD-Ranking's label- and augmentation-robust scores: the published formulas, on fractions."""
import math

import pytest

from genprior.errors import GenpriorError
from genprior.scores import augmentation_robust_score, label_robust_score

E_1 = math.exp(-1)


def test_lrs_follows_the_published_formula():
    s = label_robust_score(full_hard=0.98, set_hard=0.90, set_own=0.93, random_own=0.85)
    hlr, ior = 0.98 - 0.90, 0.93 - 0.85
    alpha = 0.5 * ior - 0.5 * hlr
    assert s["hlr"] == pytest.approx(hlr) and s["ior"] == pytest.approx(ior)
    assert s["lrs"] == pytest.approx((math.exp(alpha) - E_1) / (math.e - E_1))
    # the ends of the scale: a set that needs nothing of the full data and beats random by all (1), the reverse (0)
    assert label_robust_score(1.0, 1.0, 1.0, 0.0, weight=1.0)["lrs"] == pytest.approx(1.0)
    assert label_robust_score(1.0, 0.0, 0.0, 0.0, weight=0.0)["lrs"] == pytest.approx(0.0)


def test_a_soft_label_lift_that_random_images_share_scores_nothing():
    """Soft labels that lift the set and random images alike leave IOR, hence the score, where it was."""
    hard = label_robust_score(0.98, 0.60, set_own=0.60, random_own=0.55)
    soft = label_robust_score(0.98, 0.60, set_own=0.80, random_own=0.75)
    assert soft["lrs"] == pytest.approx(hard["lrs"])


def test_scores_pair_runs_and_average_them():
    s = label_robust_score(full_hard=0.98, set_hard=[0.90, 0.92], set_own=[0.90, 0.92], random_own=[0.80, 0.86])
    per_run = [(math.exp(0.5 * (o - r) - 0.5 * (0.98 - h)) - E_1) / (math.e - E_1)
               for h, o, r in ((0.90, 0.90, 0.80), (0.92, 0.92, 0.86))]
    assert s["runs"] == 2 and s["lrs"] == pytest.approx(sum(per_run) / 2)
    assert s["lrs_std"] == pytest.approx(abs(per_run[0] - per_run[1]) / 2)


def test_ars_follows_the_published_formula():
    s = augmentation_robust_score(set_aug=0.95, random_aug=0.93, set_plain=0.90, random_plain=0.80)
    beta = 0.5 * 0.02 + 0.5 * 0.10
    assert s["ars"] == pytest.approx((math.exp(beta) - E_1) / (math.e - E_1))
    assert s["gain_aug"] == pytest.approx(0.02) and s["gain_plain"] == pytest.approx(0.10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(full_hard=98.0, set_hard=0.9, set_own=0.9, random_own=0.8), "fractions in \\[0, 1\\] \\(not percent\\)"),
    (dict(full_hard=0.98, set_hard=[0.9, 0.9], set_own=[0.9, 0.9, 0.9], random_own=0.8), "pair the runs"),
    (dict(full_hard=0.98, set_hard=0.9, set_own=0.9, random_own=0.8, weight=2), "weight must be in"),
    (dict(full_hard=0.98, set_hard=[], set_own=0.9, random_own=0.8), "no accuracy"),
])
def test_bad_inputs(kwargs, message):
    with pytest.raises(GenpriorError, match=message):
        label_robust_score(**kwargs)
