import math

import pytest

from loop.config import FeedbackConfig
from loop.feedback import loss_softmax, next_weights, uniform


def test_loss_softmax_favours_higher_loss_and_sums_to_one():
    w = loss_softmax({"qa": 1.0, "sum": 2.0, "ext": 3.0}, temperature=1.0, floor=0.05)
    assert math.isclose(sum(w.values()), 1.0)
    assert w["ext"] > w["sum"] > w["qa"]
    # Exact values: floor + (1 - 3 * floor) * softmax.
    z = math.exp(1) + math.exp(2) + math.exp(3)
    assert math.isclose(w["ext"], 0.05 + 0.85 * math.exp(3) / z)


def test_floor_is_respected_even_for_extreme_losses():
    w = loss_softmax({"a": 0.0, "b": 50.0, "c": 0.1}, temperature=0.1, floor=0.05)
    assert min(w.values()) >= 0.05 - 1e-12 and math.isclose(sum(w.values()), 1.0)


def test_ties_stay_uniform_and_missing_losses_are_neutral():
    assert all(math.isclose(v, 0.25) for v in loss_softmax(dict.fromkeys("abcd", 2.0), 0.5, 0.05).values())
    w = loss_softmax({"a": 1.0, "b": 3.0, "c": math.nan}, 1.0, 0.0)
    assert w["b"] > w["c"] > w["a"]
    assert math.isclose(w["c"], math.exp(2) / (math.exp(1) + math.exp(2) + math.exp(3)))  # treated as the mean loss, 2.0


def test_temperature_sharpens():
    losses = {"a": 1.0, "b": 2.0}
    assert loss_softmax(losses, 0.2, 0.0)["b"] > loss_softmax(losses, 2.0, 0.0)["b"]


def test_floor_too_high_for_task_count():
    with pytest.raises(ValueError, match="feedback.floor=0.3 is too high for 4 tasks"):
        loss_softmax(dict.fromkeys("abcd", 1.0), 1.0, 0.3)


def test_uniform_control_ignores_losses():
    assert uniform({"a": 9.0, "b": 0.1}) == {"a": 0.5, "b": 0.5}
    assert next_weights({"a": 9.0, "b": 0.1}, FeedbackConfig(policy="uniform"))[0] == {"a": 0.5, "b": 0.5}
    assert next_weights({"a": 9.0, "b": 0.1}, FeedbackConfig())[0]["a"] > 0.9


def _check(w, floor):
    assert math.isclose(sum(w.values()), 1.0) and min(w.values()) >= floor - 1e-12


def test_learning_progress_favours_tasks_whose_loss_rose_or_fell_least():
    cfg = FeedbackConfig(policy="learning_progress", temperature=0.5, floor=0.05)
    history = [{"a": 3.0, "b": 3.0, "c": 3.0}, {"a": 2.0, "b": 2.9, "c": 3.0}]
    w, ev = next_weights({"a": 1.0, "b": 2.8, "c": 3.2}, cfg, history)
    _check(w, 0.05)
    assert w["c"] > w["b"] > w["a"]  # c rose, b fell a little, a fell fast
    assert math.isclose(ev["loss_trend"]["a"], -1.0) and math.isclose(ev["loss_trend"]["c"], 0.1)  # EMA 0.5 of the changes


def test_learning_progress_ties_and_first_round_stay_uniform():
    cfg = FeedbackConfig(policy="learning_progress", floor=0.05)
    w, _ = next_weights({"a": 2.0, "b": 1.0, "c": 5.0}, cfg, [])  # no change known yet
    assert all(math.isclose(v, 1 / 3) for v in w.values())
    w, _ = next_weights({"a": 1.5, "b": 0.5}, cfg, [{"a": 2.0, "b": 1.0}])  # equal changes
    assert all(math.isclose(v, 0.5) for v in w.values())


def test_ucb_tries_unvisited_tasks_then_balances_reward_and_visits():
    cfg = FeedbackConfig(policy="ucb", temperature=0.5, floor=0.05, ucb_c=1.0)
    w, ev = next_weights({"a": 2.0, "b": 2.0, "c": math.nan}, cfg, [{"a": 3.0, "b": 2.5}], {"a": 10, "b": 10, "c": 0})
    _check(w, 0.05)
    assert w["c"] == max(w.values()) and math.isclose(w["a"], 0.05) and ev["ucb_score"]["c"] is None
    w, ev = next_weights({"a": 2.0, "b": 2.0}, cfg, [{"a": 3.0, "b": 2.5}], {"a": 10, "b": 10})
    _check(w, 0.05)
    assert w["a"] > w["b"]  # same visits, a's loss moved more
    w, _ = next_weights({"a": 2.0, "b": 2.0}, cfg, [{"a": 3.0, "b": 3.0}], {"a": 50, "b": 2})
    assert w["b"] > w["a"]  # same reward, b visited far less


def test_policies_respect_the_floor_on_extreme_tables():
    for policy in ("loss_softmax", "learning_progress", "ucb"):
        cfg = FeedbackConfig(policy=policy, temperature=0.05, floor=0.1)
        w, _ = next_weights({"a": 0.0, "b": 100.0, "c": 1.0, "d": 2.0}, cfg, [{"a": 50.0, "b": 0.0, "c": 1.0, "d": 2.0}],
                            {"a": 1, "b": 100, "c": 5, "d": 5})
        _check(w, 0.1)
        with pytest.raises(ValueError, match="too high"):
            next_weights(dict.fromkeys("abcd", 1.0), FeedbackConfig(policy=policy, floor=0.25))


def test_plateau_rule_stops_only_when_the_recent_best_barely_beats_the_earlier_best():
    from loop.controller import plateau

    hist = [{"eval_loss": x} for x in (3.0, 2.5, 2.49, 2.495)]
    assert plateau(hist, 2, 0.05) == "plateau"  # best of the last 2 (2.49) beats 2.5 by 0.01 < 0.05
    assert plateau(hist, 2, 0.005) == ""  # 0.01 >= 0.005: still progress
    assert plateau(hist, 0, 0.05) == "" and plateau(hist[:2], 2, 0.05) == ""  # off, or not enough rounds yet
    assert plateau([{"eval_loss": None}, {"eval_loss": 2.0}, {"eval_loss": 2.0}], 1, 0.1) == "plateau"
