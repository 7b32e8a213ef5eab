import dataclasses
import json
import random

import pytest

from generation.data.corpus import DataError, chunk_text, load_corpus
from generation.data.pool import build_pool, load_pool, sample_examples, sample_task


def test_folder_corpus_chunks_have_stable_ids(tiny_corpus):
    chunks = load_corpus(str(tiny_corpus), chunk_words=20)
    again = load_corpus(str(tiny_corpus), chunk_words=20)
    assert [c.id for c in chunks] == [c.id for c in again]
    assert {c.source for c in chunks} == {"a.md", "b.txt"}
    assert chunks[0].id == "a.md#0" and all(c.text for c in chunks)
    assert len({c.id for c in chunks}) == len(chunks)


def test_chunking_packs_paragraphs_and_splits_long_ones():
    text = "one two three\n\nfour five\n\n" + " ".join(f"w{i}" for i in range(25))
    chunks = chunk_text(text, chunk_words=10)
    assert chunks[0] == "one two three\n\nfour five"  # paragraphs keep their blank line
    assert all(len(c.split()) <= 10 for c in chunks)
    assert sum(len(c.split()) for c in chunks) == 30


def test_jsonl_and_datasets_corpora(tmp_path):
    from datasets import Dataset

    rows = [{"body": "Alpha beta gamma. " * 5}, {"body": "Delta epsilon. " * 5}]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    assert len(load_corpus(str(jsonl), 50, text_field="body")) == 2
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    chunks = load_corpus(str(tmp_path / "ds"), 50, text_field="body")
    assert [c.text.split()[0] for c in chunks] == ["Alpha", "Delta"]
    with pytest.raises(DataError, match="no field 'text'.*domain_text_field"):
        load_corpus(str(tmp_path / "ds"), 50)


def test_bad_domain_data_gets_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="does not exist|not a local path"):
        load_corpus(str(tmp_path / "missing"), 50)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n\n ")
    with pytest.raises(DataError, match="has no text"):
        load_corpus(str(tmp_path / "empty"), 50)
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no .txt, .md, .pdf or .html files"):
        load_corpus(str(tmp_path / "none"), 50)
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "a.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(DataError, match=r"a.txt is not UTF-8.*iconv"):
        load_corpus(str(tmp_path / "latin"), 50)


def test_builtin_pool_covers_several_tasks():
    pool = load_pool("builtin", "general")
    tasks = {i.task for i in pool}
    assert len(pool) >= 30 and len(tasks) >= 4
    assert all(i.kind == "general" and i.instruction for i in pool)


def test_pool_validation_and_task_restriction(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "no task here"}) + "\n")
    with pytest.raises(DataError, match=r"the domain pool has no column task='task' \(columns: instruction\); set generation.domain_pool_fields"):
        load_pool(str(bad), "domain")
    bad.write_text(json.dumps({"task": "qa", "instruction": " "}) + "\n")
    with pytest.raises(DataError, match="row 1: needs a non-empty task .'task'. and instruction"):
        load_pool(str(bad), "domain")
    with pytest.raises(DataError, match="generation.tasks names"):
        build_pool(load_pool("builtin", "general"), [], ["no_such_task"])


def test_sampling_follows_weights_and_domain_share(tmp_path):
    rows = [{"id": f"d{i}", "task": "qa", "instruction": f"domain q {i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    general = [i for i in load_pool("builtin", "general") if i.task == "question_answering"]
    domain = [dataclasses.replace(i, task="question_answering") for i in load_pool(str(tmp_path / "d.jsonl"), "domain")]
    pool = build_pool(general, domain, [])
    rng = random.Random(0)
    picks = [e for _ in range(300) for e in sample_examples(pool["question_answering"], 3, 0.8, rng)]
    share = sum(e.kind == "domain" for e in picks) / len(picks)
    assert 0.7 < share < 0.9
    ex = sample_examples(pool["question_answering"], 3, 0.5, rng)
    assert len({e.id for e in ex}) == 3
    counts = {"a": 0, "b": 0}
    for _ in range(2000):
        counts[sample_task({"a": 0.9, "b": 0.1}, rng)] += 1
    assert 0.85 < counts["a"] / 2000 < 0.95


def test_pools_seeds_and_corpora_read_csv_parquet_and_json_like_jsonl(tmp_path):
    """A Dolly-style export as CSV or Parquet serves as it is, with empty cells as empty inputs."""
    import json

    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    from generation.data.seeds import load_seed_tasks

    rows = [{"id": "a1", "task": "qa", "instruction": "What is E07?", "input": "", "output": "The rain sensor."},
            {"id": "a2", "task": "summarization", "instruction": "Summarize the reset steps.", "input": "Hold Mode.", "output": "Hold it."}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    table = pa.Table.from_pylist(rows)
    pyarrow.csv.write_csv(table, tmp_path / "p.csv")
    pyarrow.parquet.write_table(table, tmp_path / "p.parquet")
    want = load_pool(str(tmp_path / "p.jsonl"), "domain")
    for suffix in ("json", "csv", "parquet"):
        assert load_pool(str(tmp_path / f"p.{suffix}"), "domain") == want, suffix
        assert [s.instruction for s in load_seed_tasks(str(tmp_path / f"p.{suffix}"))] == [r["instruction"] for r in rows]
    docs = pa.Table.from_pylist([{"text": "Hold the Mode button for ten seconds to reset."}, {"text": "Error E07: rain sensor."}])
    pyarrow.parquet.write_table(docs, tmp_path / "docs.parquet")
    assert [c.text for c in load_corpus(str(tmp_path / "docs.parquet"), 50)] == ["Hold the Mode button for ten seconds to reset.",
                                                                                 "Error E07: rain sensor."]
    with pytest.raises(DataError, match=r"no field 'body' \(fields: text\); set generation.domain_text_field"):
        load_corpus(str(tmp_path / "docs.parquet"), 50, text_field="body")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"bad.parquet could not be read as .parquet"):
        load_pool(str(tmp_path / "bad.parquet"), "general")
    (tmp_path / "p.tsv").write_text("task\tinstruction\n")
    with pytest.raises(DataError, match=r"unsupported file type '.tsv'; use .jsonl, .json, .csv, .parquet"):
        load_pool(str(tmp_path / "p.tsv"), "general")


def test_dolly_and_orca_style_pools_serve_as_they_are_through_field_mapping(tmp_path):
    """Dolly (instruction, context, response, category) and OpenOrca (id, system_prompt, question, response; no task
    column) need no rewriting; a mapping naming a column the set lacks is one line listing its columns."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    from generation.config import GenerationConfig, PoolFields
    from generation.data.pool import load_pools

    dolly = [{"instruction": "When did Virgin Australia start operating?", "context": "Virgin Australia commenced services on 31 August 2000.",
              "response": "On 31 August 2000.", "category": "closed_qa"},
             {"instruction": "Which is a species of fish? Tope or Rope", "context": "", "response": "Tope", "category": "classification"}]
    pyarrow.csv.write_csv(pa.Table.from_pylist(dolly), tmp_path / "dolly.csv")
    orca = [{"id": "niv.242684", "system_prompt": "You are a helpful assistant.", "question": "Translate 'hello' to French.", "response": "Bonjour."}]
    pyarrow.parquet.write_table(pa.Table.from_pylist(orca), tmp_path / "orca.parquet")
    g = GenerationConfig(general_pool=str(tmp_path / "orca.parquet"), domain_pool=str(tmp_path / "dolly.csv"),
                         general_pool_fields=PoolFields(task="", instruction="question", output="response", default_task="open_qa"),
                         domain_pool_fields=PoolFields(task="category", input="context", output="response"))
    pool = load_pools(g)
    assert sorted(pool) == ["classification", "closed_qa", "open_qa"]
    closed = pool["closed_qa"][0]
    assert (closed.kind, closed.id, closed.instruction, closed.input, closed.output) == \
        ("domain", "domain-1", dolly[0]["instruction"], dolly[0]["context"], "On 31 August 2000.")
    orca_item = pool["open_qa"][0]
    assert (orca_item.kind, orca_item.id, orca_item.instruction, orca_item.input, orca_item.output) == \
        ("general", "niv.242684", "Translate 'hello' to French.", "", "Bonjour.")
    with pytest.raises(DataError, match=r"dolly.csv: the domain pool has no column task='task', output='answer' "
                                        r"\(columns: instruction, context, response, category\); set generation.domain_pool_fields"):
        load_pool(str(tmp_path / "dolly.csv"), "domain", fields={"output": "answer", "input": "context"})


def test_hub_options_reach_datasets_and_an_unreachable_id_is_one_line(tmp_path):
    """generation.datasets gives load_dataset its config and data_files (a folder laid out like a Hub dataset repo,
    with configs in its README, loads offline the way the Hub id would); an id the Hub cannot serve is one line."""
    from generation.config import GenerationConfig
    from generation.data.pool import load_pools
    from loop.config import ConfigError, load_config

    repo = tmp_path / "org-tasks"
    repo.mkdir()
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: qa\n  data_files: qa.csv\n- config_name: summaries\n  data_files: sum.csv\n---\n")
    (repo / "qa.csv").write_text("task,instruction\nqa,What does E07 mean?\n")
    (repo / "sum.csv").write_text("task,instruction\nsummarization,Summarize the reset steps.\nsummarization,Summarize the wiring.\n")
    for options, want in (({"config": "summaries"}, ["Summarize the reset steps.", "Summarize the wiring."]),
                          ({"data_files": ["qa.csv"]}, ["What does E07 mean?"])):
        g = GenerationConfig(general_pool=str(repo), datasets={str(repo): options})
        assert [i.instruction for items in load_pools(g).values() for i in items] == want
    with pytest.raises(DataError) as e:
        load_pool("nobody-here/no-such-dataset", "general")  # HF_HUB_OFFLINE=1 in the tests, as on a machine without the Hub
    assert "'nobody-here/no-such-dataset' is not a local path and could not be loaded with datasets" in str(e.value)
    assert "\n" not in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    with pytest.raises(ConfigError, match=r"generation.datasets.org/x: unknown options \['revison'\]; use config, revision, data_files"):
        load_config(None, ["generation.domain_path=x", "generation.datasets={'org/x': {'revison': 'main'}}"])
