"""Corpus BLEU-4 (Papineni et al., 2002) as an `evaluate` metric kept in the project.

The computation of tensorflow/nmt's compute_bleu, which the Hub's "bleu" metric uses: clipped n-gram
precisions for n = 1..4, geometric mean, brevity penalty exp(1 - r/c) when the candidate is shorter.
Tokens: words and single punctuation marks, case kept (like the 13a tokenizer, simplified).
"""
import collections
import math
import re

import datasets
import evaluate

_TOKEN = re.compile(r"\w+|[^\w\s]")


def ngrams(tokens, n):
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def compute_bleu(references, predictions, max_order=4, smooth=False):
    matches, possible = [0] * max_order, [0] * max_order
    ref_len = pred_len = 0
    for refs, pred in zip(references, predictions):
        ref_len += min(len(r) for r in refs)
        pred_len += len(pred)
        merged = collections.Counter()
        for r in refs:
            for n in range(1, max_order + 1):
                merged |= ngrams(r, n)
        for n in range(1, max_order + 1):
            overlap = ngrams(pred, n) & merged
            matches[n - 1] += sum(overlap.values())
            possible[n - 1] += max(len(pred) - n + 1, 0)
    precisions = [((matches[i] + 1.0) / (possible[i] + 1.0)) if smooth else (matches[i] / possible[i] if possible[i] else 0.0)
                  for i in range(max_order)]
    geo = math.exp(sum(math.log(p) for p in precisions) / max_order) if min(precisions) > 0 else 0.0
    ratio = pred_len / ref_len if ref_len else 0.0
    bp = 1.0 if ratio > 1.0 else (math.exp(1 - 1.0 / ratio) if ratio > 0 else 0.0)
    return {"bleu": geo * bp, "precisions": precisions, "brevity_penalty": bp, "length_ratio": ratio,
            "translation_length": pred_len, "reference_length": ref_len}


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus BLEU-4 with brevity penalty (tensorflow/nmt compute_bleu).",
            citation="Papineni et al., 2002. BLEU: a Method for Automatic Evaluation of Machine Translation.",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, max_order=4, smooth=False):
        return compute_bleu([[_TOKEN.findall(r)] for r in references], [_TOKEN.findall(p) for p in predictions], max_order, smooth)
