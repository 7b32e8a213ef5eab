"""Exact match (after stripping whitespace and a final period, case-insensitive) as an `evaluate` metric,
for classification tasks whose answer is a label."""
import datasets
import evaluate


def normalize(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions equal to their reference after light normalization.",
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        hits = [normalize(p) == normalize(r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(hits) / len(hits) if hits else 0.0}
