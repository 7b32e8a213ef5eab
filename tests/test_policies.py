"""The active_uncertainty and sedi_prune feedback policies on hand-made tables, pools, rows and loss histories."""
import math

import pytest

from generation.data.pool import PoolItem
from loop.config import FeedbackConfig
from loop.feedback import active_uncertainty, next_weights, sedi_prune


def _check(w: dict[str, float], floor: float) -> None:
    assert math.isclose(sum(w.values()), 1.0) and min(w.values()) >= floor - 1e-12


# ---------------------------------------------------------------- active_uncertainty

def test_most_uncertain_task_gets_the_most_weight():
    w, ev = active_uncertainty({"qa": 0.01, "sum": 0.05, "ext": 0.20}, temperature=0.5, floor=0.05)
    _check(w, 0.05)
    assert w["ext"] > w["sum"] > w["qa"]
    assert ev["prompt_uncertainty"] == {"qa": 0.01, "sum": 0.05, "ext": 0.20}
    # Centred on the mean (0.0867) and scaled by the largest distance from it, then floor + (1 - 3 floor) * softmax(/0.5).
    mean = (0.01 + 0.05 + 0.20) / 3
    scaled = {t: (u - mean) / (0.20 - mean) for t, u in {"qa": 0.01, "sum": 0.05, "ext": 0.20}.items()}
    z = sum(math.exp(v / 0.5) for v in scaled.values())
    assert math.isclose(w["ext"], 0.05 + 0.85 * math.exp(scaled["ext"] / 0.5) / z)


def test_uncertainty_scale_does_not_matter():
    a, _ = active_uncertainty({"a": 0.001, "b": 0.002, "c": 0.004}, 0.5, 0.05)
    b, _ = active_uncertainty({"a": 0.1, "b": 0.2, "c": 0.4}, 0.5, 0.05)
    assert all(math.isclose(a[t], b[t]) for t in a)


def test_uncertainty_ties_stay_uniform_and_missing_tasks_are_neutral():
    w, _ = active_uncertainty(dict.fromkeys("abcd", 0.07), 0.5, 0.05)
    assert all(math.isclose(v, 0.25) for v in w.values())
    w, _ = active_uncertainty({"a": 0.1, "b": 0.3, "c": None, "d": math.nan}, 0.5, 0.05)
    _check(w, 0.05)
    assert w["b"] > w["c"] > w["a"] and math.isclose(w["c"], w["d"])  # c, d take the mean, 0.2
    w, _ = active_uncertainty({"a": None, "b": math.nan}, 0.5, 0.05)  # nothing measured yet
    assert w == {"a": 0.5, "b": 0.5}


def test_active_uncertainty_through_next_weights():
    cfg = FeedbackConfig(policy="active_uncertainty", temperature=0.5, floor=0.1)
    losses = {"a": 5.0, "b": 1.0, "c": 2.0}  # loss does not steer this policy
    w, ev = next_weights(losses, cfg, [], {}, uncertainty={"a": 0.01, "b": 0.3})  # c was not measured
    _check(w, 0.1)
    assert w["b"] > w["c"] > w["a"] and ev["prompt_uncertainty"]["c"] is None
    with pytest.raises(ValueError, match="no prompt uncertainty was given"):
        next_weights(losses, cfg)
    with pytest.raises(ValueError, match="too high"):
        next_weights(losses, FeedbackConfig(policy="active_uncertainty", floor=0.34), uncertainty={})


def test_policies_respect_the_floor_on_extreme_tables():
    for policy in ("active_uncertainty", "sedi_prune"):
        cfg = FeedbackConfig(policy=policy, temperature=0.05, floor=0.1)
        w, _ = next_weights({"a": 0.0, "b": 100.0, "c": 1.0, "d": 2.0}, cfg, [], {}, {"a": 0.0, "b": 5.0, "c": 0.001, "d": 0.0})
        _check(w, 0.1)


def test_sedi_prune_weights_tasks_like_loss_softmax():
    losses = {"a": 1.0, "b": 3.0, "c": math.nan}
    w, ev = next_weights(losses, FeedbackConfig(policy="sedi_prune", temperature=0.7, floor=0.05))
    assert w == next_weights(losses, FeedbackConfig(policy="loss_softmax", temperature=0.7, floor=0.05))[0]
    assert w["b"] > w["c"] > w["a"] and ev == {"loss": losses}


def test_new_config_fields_are_validated():
    from loop.config import ConfigError, build

    with pytest.raises(ConfigError) as e:  # every problem at once
        build(FeedbackConfig, {"uncertainty_drop": 1.0, "uncertainty_target": "label", "uncertainty_perturbations": 0, "sedi_min_per_task": -1})
    assert [p.split(":")[0] for p in e.value.problems] == ["uncertainty_perturbations", "uncertainty_drop", "uncertainty_target", "sedi_min_per_task"]


# ---------------------------------------------------------------- sedi_prune

def _item(i: str, task: str) -> PoolItem:
    return PoolItem(id=i, task=task, instruction=f"instruction {i}", input="", output="", kind="general")


def _pool() -> dict[str, list[PoolItem]]:
    return {"qa": [_item(f"qa-{n}", "qa") for n in range(5)], "sum": [_item(f"sum-{n}", "sum") for n in range(4)]}


def _row(rid: str, task: str, round_idx: int, example_ids=None, parent_id=None) -> dict:
    row = {"id": rid, "task": task, "round": round_idx, "instruction": "x", "output": "y", "provenance": {}}
    if example_ids is not None:
        row["provenance"] = {"example_ids": example_ids}
    if parent_id is not None:
        row["provenance"] = {"parent_id": parent_id}
    return row


HISTORY = [{"qa": 2.0, "sum": 2.0}, {"qa": 1.5, "sum": 2.4}]  # round 2: qa's loss fell, sum's rose


def test_helped_examples_are_kept_and_unhelpful_ones_pruned():
    pool = _pool()
    rows = [_row("r2-00000", "qa", 2, ["qa-0", "qa-1"]), _row("r2-00001", "sum", 2, ["sum-0", "sum-1"]),
            _row("r2-00002", "qa", 2, ["qa-1", "qa-2"])]
    new, ev = sedi_prune(pool, rows, HISTORY, min_per_task=2)
    assert [i.id for i in new["qa"]] == [f"qa-{n}" for n in range(5)]
    assert [i.id for i in new["sum"]] == ["sum-2", "sum-3"]
    assert {e["id"]: e["children"] for e in ev["helped"]} == {"qa-0": 1, "qa-1": 2, "qa-2": 1}
    assert all(math.isclose(e["loss_change"], -0.5) for e in ev["helped"])
    assert [(e["id"], e["task"]) for e in ev["pruned"]] == [("sum-0", "sum"), ("sum-1", "sum")]
    assert all(math.isclose(e["loss_change"], 0.4) for e in ev["pruned"])
    assert ev["pool_size"] == {"qa": [5, 5], "sum": [4, 2]} and ev["kept_min"] == []
    assert len(pool["sum"]) == 4  # the input pool is not changed


def test_min_per_task_is_respected_worst_first():
    pool = _pool()
    history = [{"qa": 2.0, "sum": 2.0, "cls": 1.0}, {"qa": 2.1, "sum": 2.4, "cls": 1.2}]
    # Every qa example had a child; qa's loss rose, so all are unhelpful, but 3 must stay for the prompt.
    rows = [_row(f"r2-{n:05d}", "qa", 2, [f"qa-{n}"]) for n in range(5)]
    new, ev = sedi_prune(pool, rows, history, min_per_task=3)
    assert len(new["qa"]) == 3 and ev["pool_size"]["qa"] == [5, 3]
    assert [e["id"] for e in ev["pruned"]] == ["qa-0", "qa-1"]  # equal loss change: by id
    assert [e["id"] for e in ev["kept_min"]] == ["qa-2", "qa-3", "qa-4"]
    new, _ = sedi_prune(pool, rows, history, min_per_task=10)  # more than the task has: nothing goes
    assert len(new["qa"]) == 5


def test_loss_change_is_the_mean_over_an_examples_children():
    pool = {"qa": [_item("shared", "qa"), _item("other", "qa")], "sum": [_item("s", "sum")]}
    history = [{"qa": 2.0, "sum": 2.0}, {"qa": 2.3, "sum": 1.0}]  # qa +0.3, sum -1.0
    rows = [_row("r2-00000", "qa", 2, ["shared"]), _row("r2-00001", "sum", 2, ["shared"])]  # a child in each task
    new, ev = sedi_prune(pool, rows, history, min_per_task=0)
    assert [e["id"] for e in ev["helped"]] == ["shared"] and math.isclose(ev["helped"][0]["loss_change"], -0.35)
    assert [i.id for i in new["qa"]] == ["shared", "other"]  # 'other' had no child: not judged, kept


def test_rows_without_pool_ids_or_a_loss_change_are_skipped():
    pool = _pool()
    rows = [_row("r2-00000", "sum", 2),  # self-instruct style: no pool ids
            _row("r2-00001", "sum", 2, parent_id="r1-00007"),  # evolved parent that left the pool
            _row("r2-00002", "sum", 2, parent_id="sum-3"),  # evol-instruct parent in the pool
            _row("r2-00003", "cls", 2, ["qa-0"])]  # its task has no loss in either round
    new, ev = sedi_prune(pool, rows, HISTORY, min_per_task=1)
    assert ev["skipped"] == {"no_pool_ids": ["r2-00000"], "not_in_pool": ["r1-00007"], "no_loss_change": ["r2-00003"]}
    assert [e["id"] for e in ev["pruned"]] == ["sum-3"] and ev["helped"] == []
    assert [i.id for i in new["qa"]] == [i.id for i in pool["qa"]]


def test_first_round_children_are_not_judged_and_missing_losses_are_an_error():
    pool = _pool()
    new, ev = sedi_prune(pool, [_row("r1-00000", "qa", 1, ["qa-0"])], HISTORY[:1], min_per_task=0)
    assert new == pool and ev["skipped"]["no_loss_change"] == ["r1-00000"] and ev["pruned"] == []
    history = [{"qa": 2.0}, {"qa": math.nan}]  # no held-out qa rows this round
    _, ev = sedi_prune(pool, [_row("r2-00000", "qa", 2, ["qa-0"])], history, min_per_task=0)
    assert ev["skipped"]["no_loss_change"] == ["r2-00000"]
    with pytest.raises(ValueError, match="rows of round 3 but losses for only 2 rounds"):
        sedi_prune(pool, [_row("r3-00000", "qa", 3, ["qa-0"])], HISTORY, min_per_task=0)
