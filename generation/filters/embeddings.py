"""Sentence embeddings for the SeDi batch filter, from a sentence-transformers folder, without sentence-transformers.

The packaged all-MiniLM-L6-v2 folder declares its pipeline in modules.json: Transformer -> Pooling (mean over the
attention mask, 1_Pooling/config.json) -> Normalize. We read those files, refuse any other pooling, and do the same
steps with transformers' AutoModel: tokenize with truncation at sentence_bert_config.json's max_seq_length, mean-pool
the last hidden state over real tokens, L2-normalise. So a dot product of two vectors is their cosine similarity.

An Embedder also keeps the vectors of a growing pool (seeds + everything kept so far): `pool_vectors(texts)` embeds
only the texts appended since the previous call, and `extend_pool` records vectors the caller already has, so each
batch costs its own candidates, not the whole pool. One Embedder per pool.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class EmbeddingError(RuntimeError):
    """The folder is not a mean-pooling sentence-transformers model; the message says what to do."""


def read_pipeline(model_path: str | Path) -> tuple[int, bool]:
    """(max_seq_length, normalize) from a sentence-transformers folder; raises unless the pooling is mean pooling."""
    folder = Path(model_path)
    field = "generation.novelty.embedding_model"
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError) as e:
        raise EmbeddingError(f"{field}={str(folder)!r}: no readable modules.json ({e}); use all-minilm-l6-v2 or a sentence-transformers folder") from e
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise EmbeddingError(f"{field}={str(folder)!r}: pipeline {kinds} is not Transformer -> Pooling [-> Normalize]; "
                             f"only that layout is supported")
    pooling_dir = folder / next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pooling = json.loads((pooling_dir / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise EmbeddingError(f"{field}={str(folder)!r}: pooling {modes} is not mean pooling, the only mode implemented")
    st_config = folder / "sentence_bert_config.json"
    max_len = json.loads(st_config.read_text()).get("max_seq_length", 512) if st_config.exists() else 512
    return int(max_len), "Normalize" in kinds


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings (float32, one row per text), batched, on `device` in `dtype`
    (pooling runs in float32 whatever the model's dtype)."""

    def __init__(self, model_path: str, num_threads: int = 1, batch_size: int = 64, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.max_len, self.normalize = read_pipeline(model_path)
        self.batch_size = batch_size
        if num_threads:
            torch.set_num_threads(num_threads)
        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device).eval()
        self.dim = self.model.config.hidden_size
        self._pool = np.zeros((0, self.dim), dtype=np.float32)  # vectors of the pool's first len(_pool) texts
        self._pool_last = ""  # the last pool text embedded: a cheap check that the pool only grew

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Longest first, so each batch pads little; rows go back to input order at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tok([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_len,
                               return_tensors="pt").to(self.model.device)
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                out[idx] = vec.cpu().numpy()
        return out

    def pool_vectors(self, pool_texts: list[str]) -> np.ndarray:
        """Vectors of an append-only pool, embedding only the texts added since the last call."""
        n = len(self._pool)
        if n > len(pool_texts) or (n and pool_texts[n - 1] != self._pool_last):
            n, self._pool = 0, self._pool[:0]  # not the pool we were tracking: start over
        if len(pool_texts) > n:
            self._pool = np.concatenate([self._pool, self.encode(list(pool_texts[n:]))])
            self._pool_last = pool_texts[-1]
        return self._pool

    def extend_pool(self, texts: list[str], vectors: np.ndarray, at: int) -> None:
        """Record vectors already computed for texts just appended to the pool at index `at` (skipped unless the
        tracked pool ends exactly there; pool_vectors then embeds them on its next call)."""
        if len(self._pool) == at and len(texts):
            self._pool = np.concatenate([self._pool, np.asarray(vectors, dtype=np.float32)])
            self._pool_last = texts[-1]
