"""The evaluate metric scripts kept in eval/metrics: parity with rouge_score, sacrebleu's BLEU by hand, exact match."""
import json
import math

import evaluate
import pytest
from rouge_score import rouge_scorer

from eval.evaluate import METRICS_DIR, generation_metrics


def test_rouge_l_metric_matches_rouge_score_on_real_pairs():
    from conftest import TEST_DATA

    rows = [json.loads(x) for x in (TEST_DATA / "self_instruct_user_oriented_instructions.jsonl").read_text().splitlines()[:60]]
    preds = [r["instruction"] for r in rows]
    refs = [r["instances"][0]["output"] for r in rows]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)) / len(rows)
    got = evaluate.load(str(METRICS_DIR / "rouge_l")).compute(predictions=preds, references=refs)["rouge_l"]
    assert got == pytest.approx(expected, abs=1e-12)


def test_bleu_is_sacrebleus_and_checks_by_hand():
    """sacrebleu's corpus BLEU on its 0-100 scale (what papers report), with its signature."""
    bleu = evaluate.load(str(METRICS_DIR / "bleu"))
    out = bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    assert out["bleu"] == pytest.approx(100.0) and out["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    # 5 tokens vs reference of 6: every n-gram matches (precisions 100), brevity penalty exp(1 - 6/5).
    out = bleu.compute(predictions=["the cat sat on the"], references=["the cat sat on the mat"])
    assert out["precisions"] == [100.0] * 4 and out["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 5))
    # Clipping: "the the the" against "the cat" has unigram precision 1/3; a 3-token output has no 4-gram, and
    # corpus BLEU does not shorten its order (sacrebleu's default), so the score is 0.
    out = bleu.compute(predictions=["the the the"], references=["the cat"])
    assert out["precisions"][0] == pytest.approx(100 / 3) and out["bleu"] == 0.0
    # 13a tokenization splits punctuation: "mat." matches "mat ." exactly
    assert bleu.compute(predictions=["the cat sat on the mat."], references=["the cat sat on the mat ."])["bleu"] == pytest.approx(100.0)


def test_exact_match_and_generation_metrics():
    em = evaluate.load(str(METRICS_DIR / "exact_match"))
    assert em.compute(predictions=["Positive.", "neg"], references=["positive", "negative"])["exact_match"] == 0.5
    samples = [{"task": "classification", "student": "Network problem.", "reference": "network problem"},
               {"task": "qa", "student": "Hold Mode for ten seconds", "reference": "Hold the Mode button for ten seconds."}]
    m = generation_metrics(samples)
    assert m["exact_match_classification"] == 1.0 and 0 < m["rouge_l"] < 1 and 0 <= m["bleu"] <= 100
