"""ROUGE-L F1 as an `evaluate` metric kept in the project (evaluate.load("rouge") fetches from the Hub).

Same numbers as rouge_score's RougeScorer(["rougeL"], use_stemmer=False): its tokenizer (lower-case,
non-alphanumerics dropped) and its LCS F-measure, averaged over the pairs.
"""
import datasets
import evaluate
from rouge_score import rouge_scorer


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean ROUGE-L F1 over prediction/reference pairs (rouge_score, no stemming).",
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0}
