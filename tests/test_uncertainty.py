"""Prompt uncertainty (eval/uncertainty.py) on the tiny config-built Llama: word dropping, determinism, batching,
and the value itself checked against task_losses on hand-built perturbed rows."""
import math
import random

import pytest

from eval.evaluate import encode, task_losses
from eval.uncertainty import drop_words, perturbed_prompt, pick_rows, prompt_uncertainty

TASKS = {
    "qa": [("What is the capital of France?", "", "Paris is the capital of France."),
           ("Answer using only the passage.", "The controller waters eight zones.", "Eight zones."),
           ("Explain why the sky is blue.", "", "Blue light is scattered more.")],
    "summarize": [("Summarize the passage.", "Hold the Mode button for ten seconds to reset it.", "Hold Mode to reset."),
                  ("Rewrite the sentence politely.", "Reset the controller.", "Please reset the controller.")],
}


def _row(task: str, n: int, instruction: str, inp: str, output: str, context: str = "") -> dict:
    """What the controller builds: student_row(x) plus the instruction to perturb."""
    prompt = "\n\n".join(p for p in (context, instruction, inp) if p)
    return {"id": f"{task}-{n}", "task": task, "instruction": instruction,
            "prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": output}]}


@pytest.fixture(scope="module")
def student(tiny_model):
    """The tiny model after 40 full-batch steps on these rows (~2 s). With random weights every answer token has
    p ~ 1/400 and the uncertainties are ~1e-6, all cancellation; a student that learned the answers gives ~0.05."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), AutoTokenizer.from_pretrained(tiny_model)
    data = [encode(tok, r["prompt"], r["completion"], 256) for t, xs in TASKS.items() for r in (_row(t, n, *x) for n, x in enumerate(xs))]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = sum(model(input_ids=torch.tensor([x]), labels=torch.tensor([y])).loss for x, y in data) / len(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5
    return model.eval(), tok


@pytest.fixture
def rows_by_task() -> dict[str, list[dict]]:
    return {t: [_row(t, n, *x) for n, x in enumerate(xs)] for t, xs in TASKS.items()}


def test_drop_words_keeps_whitespace_and_is_seeded():
    text = "  Hold the Mode\nbutton  for ten seconds."
    assert drop_words(text, 0.0, random.Random(0)) == text
    assert drop_words(text, 1.0, random.Random(0)) == "  "
    a, b = drop_words(text, 0.5, random.Random(3)), drop_words(text, 0.5, random.Random(3))
    assert a == b and a != text and set(a.split()) < set(text.split())


def test_only_the_instruction_is_perturbed():
    row = _row("qa", 0, "Answer the question about the passage below.", "What resets it?", "Mode.", context="CONTEXT CHUNK")
    out = perturbed_prompt(row, 1.0, random.Random(0))[0]["content"]
    assert out == "CONTEXT CHUNK\n\n\n\nWhat resets it?"  # every instruction word gone, context and input intact
    half = perturbed_prompt(row, 0.5, random.Random(1))[0]["content"]
    assert half.startswith("CONTEXT CHUNK\n\n") and half.endswith("\n\nWhat resets it?") and half != row["prompt"][0]["content"]
    no_instruction = {k: v for k, v in row.items() if k != "instruction"}  # falls back to the whole message
    assert perturbed_prompt(no_instruction, 1.0, random.Random(0))[0]["content"] == ""
    assert row["prompt"][0]["content"] == "CONTEXT CHUNK\n\nAnswer the question about the passage below.\n\nWhat resets it?"


def test_zero_without_perturbation_positive_with_it(student, rows_by_task):
    model, tok = student
    zero = prompt_uncertainty(model, tok, rows_by_task, n_perturb=3, p_drop=0.0, max_length=256, seed=0, batch_size=4)
    assert set(zero) == {"qa", "summarize"} and all(abs(v) < 1e-6 for v in zero.values())
    some = prompt_uncertainty(model, tok, rows_by_task, n_perturb=3, p_drop=0.2, max_length=256, seed=0, batch_size=4)
    assert all(v > 0.005 for v in some.values())


def test_deterministic_for_a_seed_and_batching_does_not_matter(student, rows_by_task):
    model, tok = student
    args = dict(n_perturb=4, p_drop=0.3, max_length=256, seed=7)
    a = prompt_uncertainty(model, tok, rows_by_task, batch_size=5, **args)
    assert prompt_uncertainty(model, tok, rows_by_task, batch_size=5, **args) == a
    one = prompt_uncertainty(model, tok, rows_by_task, batch_size=1, **args)
    assert all(math.isclose(a[t], one[t], rel_tol=1e-5, abs_tol=1e-8) for t in a)
    # A row's perturbations depend on (seed, task, id) only: measuring one task alone gives the same number.
    alone = prompt_uncertainty(model, tok, {"qa": rows_by_task["qa"]}, batch_size=5, **args)
    assert math.isclose(alone["qa"], a["qa"], rel_tol=1e-5)
    other = prompt_uncertainty(model, tok, rows_by_task, batch_size=5, **{**args, "seed": 8})
    assert other != a


def test_value_is_mean_abs_change_of_answer_likelihood(student, rows_by_task):
    """Recompute one row's uncertainty from task_losses: |exp(-loss perturbed) - exp(-loss original)|, averaged."""
    model, tok = student
    row = rows_by_task["summarize"][0]
    got = prompt_uncertainty(model, tok, {"summarize": [row]}, n_perturb=2, p_drop=0.4, max_length=256, seed=1, batch_size=4)
    rng = random.Random(f"1:summarize:{row['id']}")  # the per-row seeding prompt_uncertainty documents
    variants = [row] + [{**row, "id": f"p{j}", "task": f"p{j}", "prompt": perturbed_prompt(row, 0.4, rng)} for j in range(2)]
    losses = task_losses(model, tok, [{**v, "task": v["id"]} for v in variants], batch_size=1, max_length=256)
    p = [math.exp(-losses[v["id"]]["loss"]) for v in variants]
    assert got["summarize"] > 0.005 and math.isclose(got["summarize"], (abs(p[1] - p[0]) + abs(p[2] - p[0])) / 2, rel_tol=1e-4)


def test_prediction_target_scores_the_students_own_answer(student, rows_by_task):
    model, tok = student
    args = dict(n_perturb=2, max_length=256, seed=0, batch_size=4, target="prediction", max_new_tokens=4)
    assert all(abs(v) < 1e-6 for v in prompt_uncertainty(model, tok, rows_by_task, p_drop=0.0, **args).values())
    pred = prompt_uncertainty(model, tok, rows_by_task, p_drop=0.3, **args)
    assert all(v > 0.005 for v in pred.values())
    assert pred != prompt_uncertainty(model, tok, rows_by_task, p_drop=0.3, **{**args, "target": "reference"})


def test_rows_per_task_sample_truncation_and_bad_arguments(student, rows_by_task):
    model, tok = student
    picked = pick_rows(rows_by_task, 2, seed=0)
    assert [r["task"] for r in picked] == ["qa", "qa", "summarize", "summarize"] and picked == pick_rows(rows_by_task, 2, seed=0)
    assert len(pick_rows(rows_by_task, 0, seed=0)) == 5
    # The chat template alone fills 4 tokens: no answer token is left, so no measure (NaN, neutral for the policy).
    out = prompt_uncertainty(model, tok, rows_by_task, n_perturb=2, p_drop=0.2, max_length=4, seed=0, batch_size=4)
    assert all(math.isnan(v) for v in out.values())
    with pytest.raises(ValueError, match="target"):
        prompt_uncertainty(model, tok, rows_by_task, 2, 0.2, 64, 0, 4, target="label")
    with pytest.raises(ValueError, match="n_perturb"):
        prompt_uncertainty(model, tok, rows_by_task, 0, 0.2, 64, 0, 4)
