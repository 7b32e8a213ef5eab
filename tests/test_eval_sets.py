"""A user's own validation and test sets: read once, copied into the run folder, never trained on; decisions read
validation, test is only reported (loopback teacher, tiny real student, real training)."""
import json

import pytest

from eval.sets import EvalSetError
from generation.data.corpus import DataError
from loop.evalsets import load_benchmark, load_eval_set
from loop.controller import load_sets, run
from test_loop import _config

VALIDATION = [{"task": t, "instruction": f"{q} about the FC-200 controller?", "input": "", "output": a}
              for t, q, a in [("question_answering", "What voltage do the valves use", "24 V AC."),
                              ("question_answering", "How many zones does it drive", "Eight zones."),
                              ("summarization", "Summarize the reset steps", "Hold the button for ten seconds."),
                              ("summarization", "Summarize the winter advice", "Drain the lines before frost.")]]
TEST = [{"id": "t1", "task": "question_answering", "instruction": "Which app sets up the FC-200?", "input": "", "output": "Ferncast Home."},
        {"id": "t2", "task": "extraction", "instruction": "List the sensor terminals.", "input": "S1, S2, C", "output": "S1, S2"}]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_set_errors_name_the_file_every_bad_row_and_the_fix(tmp_path):
    bad = _write(tmp_path / "v.jsonl", [{"task": "qa", "instruction": "x"}, {"instruction": "y", "output": "z"}, {"task": "qa", "instruction": "q", "output": "a"}])
    with pytest.raises(EvalSetError, match=r"eval.validation_path=.*row 1 lacks output; row 2 lacks task.*non-empty task, instruction and output"):
        load_eval_set(str(bad), "eval.validation_path", "validation")
    with pytest.raises(DataError, match="does not exist"):
        load_eval_set(str(tmp_path / "none.jsonl"), "eval.test_path", "test")
    dup = _write(tmp_path / "d.jsonl", [{"id": "a", "task": "qa", "instruction": "q", "output": "a"}] * 2)
    with pytest.raises(EvalSetError, match="duplicate ids"):
        load_eval_set(str(dup), "eval.test_path", "test")
    import datasets
    datasets.Dataset.from_list(TEST).save_to_disk(str(tmp_path / "ds"))
    assert [r["id"] for r in load_eval_set(str(tmp_path / "ds"), "eval.test_path", "test")] == ["t1", "t2"]


def test_eval_sets_and_the_benchmark_read_csv_parquet_and_dataset_splits(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    pyarrow.csv.write_csv(pa.Table.from_pylist(TEST), tmp_path / "test.csv")
    assert load_eval_set(str(tmp_path / "test.csv"), "eval.test_path", "test") == load_eval_set(str(_write(tmp_path / "t.jsonl", TEST)), "eval.test_path", "test")
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(TEST[:1]), "test": datasets.Dataset.from_list(TEST)}).save_to_disk(str(tmp_path / "dd"))
    assert [r["id"] for r in load_eval_set(str(tmp_path / "dd"), "eval.validation_path", "validation")] == ["t1"]
    bench = [{"instruction": "Name the reset button.", "input": "", "output": "Mode"}, {"instruction": "Translate", "input": "hola", "output": "hello"}]
    pyarrow.parquet.write_table(pa.Table.from_pylist(bench), tmp_path / "bench.parquet")
    rows = load_benchmark(str(tmp_path / "bench.parquet"), 5)
    assert [(r["prompt"][0]["content"], r["completion"][0]["content"]) for r in rows] == [("Name the reset button.", "Mode"), ("Translate\n\nhola", "hello")]
    pyarrow.csv.write_csv(pa.Table.from_pylist([{"instruction": "x", "answer": "y"}]), tmp_path / "badbench.csv")
    with pytest.raises(EvalSetError, match="eval.benchmark_path row 1: needs an instruction and an output"):
        load_benchmark(str(tmp_path / "badbench.csv"), 5)


def test_own_sets_are_never_trained_on_and_only_validation_steers(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    val, test = _write(tmp_path / "val.jsonl", VALIDATION), _write(tmp_path / "test.jsonl", TEST)
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, f"eval.validation_path={val}", f"eval.test_path={test}")
    out = tmp_path / "run"
    history = run(cfg, out)

    saved = {n: [json.loads(x) for x in (out / "eval" / f"{n}.jsonl").read_text().splitlines()] for n in ("validation", "test")}
    assert [r["instruction"] for r in saved["validation"]] == [r["instruction"] for r in VALIDATION] and saved["test"][1]["input"] == "S1, S2, C"
    held_out = {r["instruction"] for rows in saved.values() for r in rows}
    for r in (1, 2):
        rows = [json.loads(x) for x in (out / "rounds" / str(r) / "data.jsonl").read_text().splitlines()]
        assert rows and {x["split"] for x in rows} == {"train"}  # every generated row trains
        assert not {x["instruction"] for x in rows} & held_out and not {x["id"] for x in rows} & {"t1", "t2"}
    for m in history:
        # Decisions read validation: its row counts, and only its tasks have a loss; test is reported beside them.
        assert m["eval_set"] == "validation" and m["n_eval"] == 0
        assert {t: n for t, n in m["task_eval_n"].items() if n} == {"question_answering": 2, "summarization": 2}
        assert {t for t, v in m["task_eval_loss"].items() if v is not None} == {"question_answering", "summarization"}
        assert m["test_task_n"] == {"extraction": 1, "question_answering": 1} and m["test_macro_loss"] > 0
    # A resumed run reads the copies in the run folder, whatever became of the files it was given.
    _write(val, VALIDATION[:1])
    assert load_sets(cfg, out)["validation"] == saved["validation"]


def test_daig_built_sets_come_from_held_out_chunks_and_are_shared_byte_for_byte(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    outs = []
    for policy, seed in (("uniform", 0), ("loss_softmax", 1)):  # two arms of an ablation: other policy, other seed
        cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "eval.validation_per_task=1", "eval.test_per_task=1",
                      "eval.heldout_chunks=0.6", "generation.chunk_words=25", f"feedback.policy={policy}", f"seed={seed}", "rounds=1")
        out = tmp_path / f"run-{policy}"
        history = run(cfg, out)
        outs.append(out)
        held = json.loads((out / "eval" / "heldout_chunks.json").read_text())["chunk_ids"]
        val = [json.loads(x) for x in (out / "eval" / "validation.jsonl").read_text().splitlines()]
        test = [json.loads(x) for x in (out / "eval" / "test.jsonl").read_text().splitlines()]
        assert held and val and test and all(r["context"] for r in val) and {r["chunk_id"] for r in val + test} <= set(held)
        assert not {r["chunk_id"] for r in val} & {r["chunk_id"] for r in test}  # disjoint halves of the held-out chunks
        assert max(sum(r["task"] == t for r in val) for t in {r["task"] for r in val}) == 1  # one row per task
        train = [json.loads(x) for x in (out / "rounds" / "1" / "data.jsonl").read_text().splitlines()]
        assert train and not {r["provenance"]["chunk_id"] for r in train} & set(held)  # no held-out chunk reaches training
        assert not {(r["instruction"], r["input"]) for r in train} & {(r["instruction"], r["input"]) for r in val + test}
        assert {r["split"] for r in train} == {"train"} and history[0]["eval_set"] == "validation"
        assert history[0]["eval_sets_from"] == "DAIG-built from held-out chunks (0.6 of the corpus)"
        assert sum(history[0]["task_eval_n"].values()) == len(val) and sum(history[0]["test_task_n"].values()) == len(test)
    for name in ("validation.jsonl", "test.jsonl", "heldout_chunks.json"):
        assert (outs[0] / "eval" / name).read_bytes() == (outs[1] / "eval" / name).read_bytes(), name


def test_validation_tasks_outside_the_pool_fail_before_any_teacher_call(tmp_path, tiny_corpus, fake_openai, tiny_model):
    from loop.config import ConfigError
    val = _write(tmp_path / "val.jsonl", [{"task": "trivia", "instruction": "Who?", "output": "Me."}])
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, f"eval.validation_path={val}")
    with pytest.raises(ConfigError, match=r"tasks \['trivia'\] are not pool tasks"):
        run(cfg, tmp_path / "run")
    assert not fake_openai.requests


def test_near_copies_of_eval_instructions_are_rejected_with_score_and_nearest():
    from generation.methods.daig import RoundStats
    from loop.controller import decontaminate
    sets = {"validation": [{"instruction": "What voltage do the FC-200 valves use?"}], "test": [{"instruction": "Which app sets up the FC-200?"}]}
    kept = [{"id": "r1-0", "instruction": "What voltage do the FC-200 zone valves use?", "filters": []},
            {"id": "r1-1", "instruction": "How do I winterize the irrigation lines before frost?", "filters": []}]
    rejected, stats = [], RoundStats()
    clean = decontaminate(kept, rejected, stats, sets, 0.7)
    assert [r["id"] for r in clean] == ["r1-1"] and clean[0]["filters"][-1]["kept"]
    assert rejected[0]["reason"] == "close_to_eval" and rejected[0]["filters"][-1]["score"] > 0.7
    assert rejected[0]["filters"][-1]["nearest_eval"] == "What voltage do the FC-200 valves use?" and stats.rejected == {"close_to_eval": 1}
    assert decontaminate(kept, [], RoundStats(), sets, 1.0) == kept and decontaminate(kept, [], RoundStats(), {}, 0.7) == kept


def test_without_a_validation_set_nothing_is_held_out_and_steering_fails_before_any_teacher_call(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    from loop.config import ConfigError
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "eval.rolling_heldout=false", "feedback.policy=loss_softmax")
    with pytest.raises(ConfigError, match="feedback.policy=loss_softmax reads validation losses but there is no validation set"):
        run(cfg, tmp_path / "steered")
    assert not fake_openai.requests
    # Unsteered, with the rolling split off (the default): every generated row trains, and no eval set is claimed.
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "eval.rolling_heldout=false", "feedback.policy=uniform", "rounds=1")
    (m,) = run(cfg, tmp_path / "uniform")
    rows = [json.loads(x) for x in (tmp_path / "uniform" / "rounds" / "1" / "data.jsonl").read_text().splitlines()]
    assert rows and {r["split"] for r in rows} == {"train"} and m["n_eval"] == 0 and m["eval_set"] is None


def test_sets_are_on_by_default_and_the_rolling_split_is_off():
    from eval.config import EvalConfig
    cfg = EvalConfig()
    assert cfg.validation_per_task > 0 and cfg.test_per_task > 0 and not cfg.rolling_heldout and cfg.heldout_chunks > 0


def test_a_resumed_run_keeps_its_built_sets_and_asks_for_them_once(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    import yaml
    from loop.controller import resume
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "eval.validation_per_task=1", "eval.test_per_task=1",
                  "eval.heldout_chunks=0.6", "generation.chunk_words=25", "rounds=1")
    out = tmp_path / "run"
    run(cfg, out)
    files = {n: (out / "eval" / n).read_bytes() for n in ("validation.jsonl", "test.jsonl", "heldout_chunks.json")}
    sent = len(fake_openai.requests)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved["rounds"] = 2  # the run goes on for one more round
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    history = resume(out)
    assert {n: (out / "eval" / n).read_bytes() for n in files} == files
    assert len(fake_openai.requests) - sent == history[-1]["teacher_calls"] > 0  # round 2's own calls, no set rebuilt
    assert history[0]["task_eval_n"] == history[1]["task_eval_n"] and history[0]["test_task_n"] == history[1]["test_task_n"]


@pytest.mark.parametrize("method", ["self_instruct", "evol_instruct"])
def test_unsteered_methods_are_scored_on_the_same_daig_built_sets(method, tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    sets = ["eval.validation_per_task=1", "eval.test_per_task=1", "eval.heldout_chunks=0.6", "generation.chunk_words=25", "rounds=1"]
    daig = run(_config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, *sets), tmp_path / "daig")
    other = run(_config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, *sets, f"generation.method={method}",
                        "feedback.policy=uniform"), tmp_path / method)
    for name in ("validation.jsonl", "test.jsonl", "heldout_chunks.json"):
        assert (tmp_path / "daig" / "eval" / name).read_bytes() == (tmp_path / method / "eval" / name).read_bytes(), name
    assert other[0]["eval_set"] == "validation" and other[0]["test_task_n"] == daig[0]["test_task_n"] and other[0]["test_macro_loss"] > 0


def test_a_run_from_before_fixed_sets_resumes_with_its_rolling_split(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    import yaml
    from loop.controller import resume
    monkeypatch.setenv("DAIG_TEST_KEY", "k")
    out = tmp_path / "run"
    run(_config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "rounds=1"), out)  # the rolling split, as before
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("rolling_heldout", "validation_per_task", "test_per_task"):  # the keys an old config.yaml lacks
        del saved["eval"][key]
    saved["rounds"] = 2
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    history = resume(out)
    rows = [json.loads(x) for x in (out / "rounds" / "2" / "data.jsonl").read_text().splitlines()]
    assert "eval" in {r["split"] for r in rows} and history[-1]["eval_set"] == "heldout" and not (out / "eval").exists()
