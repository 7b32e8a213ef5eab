"""The statistics behind decisions and ablation verdicts, on inputs whose answers are known."""
import math

import numpy as np
import pytest

from eval.stats import detectable_effect, paired_bootstrap_ci, paired_t_ci, ratio_se, shrink
from loop.ablate import paired_table


def test_ratio_se_matches_the_delta_method_and_the_plain_se_for_equal_lengths():
    # Equal token counts: the ratio is the mean of per-example means, and its SE is the ordinary standard error.
    means = [1.0, 2.0, 3.0, 6.0]
    se = ratio_se([m * 4 for m in means], [4] * 4)
    assert se == pytest.approx(np.std(means, ddof=1) / math.sqrt(4))
    # Unequal lengths, worked by hand: ratio = 12 / 6 = 2, residuals 2-2*1, 4-2*2, 6-2*3 = 0 -> SE 0.
    assert ratio_se([2.0, 4.0, 6.0], [1, 2, 3]) == 0.0
    assert math.isnan(ratio_se([3.0], [2]))  # one example: no spread to measure


def test_shrink_pulls_noisy_losses_to_the_mean_and_keeps_well_measured_spread():
    losses = {"a": 1.0, "b": 3.0, "c": 7.92}
    # c comes from one row (no SE): it counts as the mean until it has evidence.
    shrunk, w = shrink(losses, {"a": 0.01, "b": 0.01, "c": math.nan})
    mean = 2.0  # over the tasks with evidence: c's one row does not move the target either
    assert w["c"] == 0 and shrunk["c"] == pytest.approx(mean)
    assert w["a"] > 0.99 and shrunk["a"] == pytest.approx(mean + w["a"] * (1.0 - mean))
    # Noise far larger than the spread: everything is the mean, so a policy sees no reason to move.
    flat, w = shrink({"a": 1.0, "b": 1.2}, {"a": 5.0, "b": 5.0})
    assert flat == {"a": pytest.approx(1.1), "b": pytest.approx(1.1)} and w == {"a": 0.0, "b": 0.0}
    # tau^2 worked by hand: var(1, 3) = 2, mean se^2 = 1 -> tau^2 = 1, weight 1 / (1 + 1) = 0.5.
    half, w = shrink({"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 1.0})
    assert w == {"a": 0.5, "b": 0.5} and half == {"a": 1.5, "b": 2.5}


def test_paired_bootstrap_interval_on_known_inputs():
    mean, low, high = paired_bootstrap_ci([-0.2, -0.2, -0.2])
    assert (mean, low, high) == pytest.approx((-0.2, -0.2, -0.2))
    mean, low, high = paired_bootstrap_ci([-1.0, 1.0, -1.0, 1.0], n_boot=20_000, seed=1)
    assert mean == 0 and low < 0 < high
    # Normal differences: the percentile interval of the mean is close to mean +- 1.96 sd / sqrt(n).
    d = np.random.default_rng(0).normal(0.5, 1.0, 200)
    mean, low, high = paired_bootstrap_ci(list(d), seed=2)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert low == pytest.approx(mean - half, abs=0.03) and high == pytest.approx(mean + half, abs=0.03)
    assert paired_bootstrap_ci(list(d), seed=2) == (mean, low, high)  # seeded


def test_paired_t_interval_on_known_inputs():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 -+ 4.303 / sqrt(3)
    mean, low, high = paired_t_ci([1.0, 2.0, 3.0])
    assert (mean, low, high) == pytest.approx((2.0, 2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    # Two seeds of the same sign: the bootstrap says [min, max] and excludes 0; the t interval does not.
    assert paired_bootstrap_ci([-0.1, -0.3])[2] < 0 and paired_t_ci([-0.1, -0.3])[2] > 0
    assert math.isnan(paired_t_ci([0.5])[1])


def test_detectable_effect_on_known_inputs():
    # [1, 2, 3]: sd 1, n 3, df 2: (t_0.975 + t_0.80) / sqrt(3) = (4.303 + 1.061) / sqrt(3)
    assert detectable_effect([1.0, 2.0, 3.0]) == pytest.approx((4.303 + 1.061) / math.sqrt(3))
    # 40 pairs of sd 2: the normal quantiles, (1.96 + 0.842) * 2 / sqrt(40)
    d = [1.0, -1.0] * 20
    assert detectable_effect(d) == pytest.approx((1.96 + 0.842) * np.std(d, ddof=1) / math.sqrt(40))
    assert math.isnan(detectable_effect([0.3]))


def test_paired_table_says_in_words_when_the_interval_contains_zero():
    rows = [{"arm": a, "seed": s, "status": "done", "final_eval_loss": v}
            for a, s, v in [("uniform", 0, 2.0), ("uniform", 1, 2.5), ("uniform", 2, 3.0),
                            ("better", 0, 1.5), ("better", 1, 2.0), ("better", 2, 2.4),
                            ("same", 0, 2.2), ("same", 1, 2.3), ("same", 2, 3.0)]]
    table = paired_table(rows, "uniform")
    better = next(line for line in table.splitlines() if line.startswith("| better"))
    same = next(line for line in table.splitlines() if line.startswith("| same"))
    assert "lower than uniform" in better and "| 3 |" in better and "-0.5333" in better
    assert "contains 0" in same and not any(line.startswith("| uniform |") for line in table.splitlines())
    assert f"±{detectable_effect([0.2, -0.2, 0.0]):.4f}" in same and "would likely go unseen" in table


def test_ablation_control_must_be_an_arm(tmp_path):
    from loop.ablate import load_ablation
    from loop.config import ConfigError
    (tmp_path / "base.yaml").write_text("rounds: 1\ngeneration:\n  domain_path: x\n")
    abl = tmp_path / "a.yaml"
    abl.write_text("base: base.yaml\ncontrol: nope\narms:\n  uniform: [feedback.policy=uniform]\n")
    with pytest.raises(ConfigError, match="control 'nope' is not an arm"):
        load_ablation(abl)


def test_paired_measure_warns_when_arms_were_scored_on_different_test_sets():
    from loop.paired import paired_measure
    rows = [{"arm": a, "seed": 0, "status": "done", "final_test_loss": 1.0, "test_set_sha256": h} for a, h in (("uniform", "a"), ("x", "a"))]
    assert paired_measure(rows)[2].startswith("Every arm is scored on the same test rows")
    rows[1]["test_set_sha256"] = "b"
    assert paired_measure(rows)[2].startswith("WARNING: the arms were scored on different test sets")
