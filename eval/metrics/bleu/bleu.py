"""Corpus BLEU through sacrebleu (Post, 2018) as an `evaluate` metric kept in the project.

sacrebleu's defaults: the 13a tokenizer, case kept, exponential smoothing, brevity penalty; so a score here is the
number papers report (0-100) and comes with sacrebleu's signature. Kept as a local script because
evaluate.load("sacrebleu") fetches its script from the Hub, which fails offline.
"""
import datasets
import evaluate
import sacrebleu


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus BLEU-4 by sacrebleu (13a tokens, exp smoothing), on its 0-100 scale.",
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores. WMT.",
            inputs_description="predictions: list of str; references: list of str (one reference each)",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        metric = sacrebleu.BLEU()
        out = metric.corpus_score(list(predictions), [list(references)])
        return {"bleu": out.score, "precisions": list(out.precisions), "brevity_penalty": out.bp, "length_ratio": out.ratio,
                "translation_length": out.sys_len, "reference_length": out.ref_len, "signature": str(metric.get_signature())}
