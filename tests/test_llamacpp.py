"""The llama.cpp backend: a clear error without the extra; a real server round when it is installed."""
import importlib.util

import pytest

from generation.llamacpp import LlamaCppServer
from generation.teachers import TeacherError

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.skipif(HAVE_LLAMA_CPP, reason="llama-cpp-python is installed; the missing-extra message cannot show")
def test_missing_extra_is_one_clear_line():
    with pytest.raises(TeacherError, match=r"pip install 'daig-loop\[llamacpp\]'"):
        LlamaCppServer("/nonexistent.gguf", "m", 1)


@pytest.mark.integration
@pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="needs the llamacpp extra (pip install 'daig-loop[llamacpp]', a 9-minute build)")
def test_packaged_smollm2_served_by_llama_cpp(tmp_path):
    from generation.cache import Budget, CachedTeacher
    from generation.teachers import OpenAITeacher, TeacherRequest
    from loop.models import gguf_path

    server = LlamaCppServer(gguf_path("smollm2-135m-instruct", "~/.cache/daig"), "smol", n_threads=2, n_ctx=1024)
    teacher = CachedTeacher(OpenAITeacher("smol", server.base_url, "", 2, 120.0, 1, on_close=server.stop), None, Budget())
    try:
        replies = teacher.generate([TeacherRequest((("user", f"Name a colour. ({i})"),), 16, 0.0, 1.0, i) for i in range(3)])
        assert all(r.text.strip() and not r.error and r.completion_tokens > 0 for r in replies)
    finally:
        teacher.close()
    assert server.proc.poll() is not None, "closing the teacher stops the server"
