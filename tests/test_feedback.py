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
    assert next_weights({"a": 9.0, "b": 0.1}, FeedbackConfig(policy="uniform")) == {"a": 0.5, "b": 0.5}
    assert next_weights({"a": 9.0, "b": 0.1}, FeedbackConfig())["a"] > 0.9
