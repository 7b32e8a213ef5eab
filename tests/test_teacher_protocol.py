"""Teacher options (generation.teacher.system_prompt, extra_body, response_format, token_limit_param,
sampling_params): what reaches the endpoint, counted by the loopback server itself; what they do to the cache
key (nothing, when unset); the local backend's system prompt; and the one-line errors for bad values.

python -m pytest -q tests/test_teacher_protocol.py
"""
import pytest

from generation.config import TeacherConfig
from generation.teacher.backends import LocalTeacher, OpenAITeacher, TeacherOptions, TeacherRequest
from generation.teacher.cache import Budget, CachedTeacher, TeacherCache
from loop.config import ConfigError, build, load_config
from openai_server import ServerProcess, body_key

PLAIN = TeacherRequest((("user", "hi"),), 8, 0.7, 0.5, 1)
FULL = TeacherRequest((("system", "Be brief."), ("user", "hi")), 8, 0.7, 0.5, 1, stop=("\n\n",), presence_penalty=2.0)
# Both computed by the code before teacher options existed: a warm cache and the resume tests depend on them.
PLAIN_KEY = "63a107071dc7b91f9b7043e38387be3aac159604dc278922d9126a55e0ce04ec"
FULL_KEY = "c4b55b91c4d4bd45a70016a09670beb1a48e0f52c5b22d99b0de48170a43959f"
REASONING = TeacherOptions(system_prompt="Reply in JSON.", extra_body={"chat_template_kwargs": {"enable_thinking": False}, "top_k": 20},
                           response_format={"type": "json_object"}, token_limit_param="max_completion_tokens", sampling_params="omit")


def openai_teacher(base_url, options=None, **kw):
    return OpenAITeacher("fake-teacher", base_url, "", **{"max_concurrency": 2, "timeout_s": 10.0, "max_retries": 0, **kw}, options=options)


def test_default_options_leave_every_cache_key_as_it_was():
    for r, key in ((PLAIN, PLAIN_KEY), (FULL, FULL_KEY)):
        assert r.key("fake-teacher") == r.key("fake-teacher", TeacherOptions()) == key
        assert openai_teacher("http://127.0.0.1:9/v1").key(r) == key
        assert openai_teacher("http://127.0.0.1:9/v1", max_concurrency=32).key(r) == key  # never concurrency


def test_each_option_that_is_set_changes_the_key():
    variants = [TeacherOptions(system_prompt="Be terse."), TeacherOptions(system_prompt="Be kind."),
                TeacherOptions(extra_body={"top_k": 20}), TeacherOptions(extra_body={"top_k": 40}),
                TeacherOptions(response_format={"type": "json_object"}), TeacherOptions(token_limit_param="max_completion_tokens"),
                TeacherOptions(sampling_params="omit"), REASONING]
    keys = {PLAIN.key("fake-teacher", o) for o in variants}
    assert len(keys) == len(variants) and PLAIN_KEY not in keys
    # the same options, spelt in another order, are the same key
    assert PLAIN.key("m", TeacherOptions(extra_body={"a": 1, "b": {"c": 2, "d": 3}})) == \
        PLAIN.key("m", TeacherOptions(extra_body={"b": {"d": 3, "c": 2}, "a": 1}))


def test_options_reach_the_endpoint_as_the_body_it_receives(tmp_path):
    """The server process logs a hash of every body it receives: each expected body, whole, is among them."""
    server = ServerProcess(tmp_path)
    try:
        own_system = TeacherRequest((("system", "You design tasks."), ("user", "Say: alpha beta. Then more.")), 64, 0.0, 1.0, 7,
                                    stop=("beta",), presence_penalty=2.0)
        replies = openai_teacher(server.base_url, REASONING).generate([PLAIN, own_system])
        openai_teacher(server.base_url).generate([PLAIN])  # default options: today's body
        received = [e["key"] for e in server.events("received")]
    finally:
        server.stop()
    thinking_off = {"chat_template_kwargs": {"enable_thinking": False}, "top_k": 20}  # extra_body's keys at the top level
    expected = [
        {"model": "fake-teacher", "messages": [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "hi"}],
         "max_completion_tokens": 8, "seed": 1, "response_format": {"type": "json_object"}, **thinking_off},
        {"model": "fake-teacher", "messages": [{"role": "system", "content": "Reply in JSON.\n\nYou design tasks."},
                                               {"role": "user", "content": "Say: alpha beta. Then more."}],
         "max_completion_tokens": 64, "seed": 7, "response_format": {"type": "json_object"}, **thinking_off},
        {"model": "fake-teacher", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "seed": 1, "temperature": 0.7, "top_p": 0.5},
    ]
    assert sorted(received) == sorted(body_key(b) for b in expected), expected
    # stop was not sent, so it is applied to the reply ("Say: alpha beta." from the server) as the endpoint would have
    assert (replies[1].text, replies[1].finish_reason) == ("Say: alpha ", "stop")


def test_fields_of_the_body_one_by_one(fake_openai):
    """The same at the in-process server, field by field, so a failure says which field went wrong."""
    openai_teacher(fake_openai.base_url, REASONING).generate([FULL])
    (body,) = fake_openai.requests
    assert body["messages"][0] == {"role": "system", "content": "Reply in JSON.\n\nBe brief."} and len(body["messages"]) == 2
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["top_k"] == 20 and "extra_body" not in body
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_completion_tokens"] == 8 and "max_tokens" not in body
    assert not {"temperature", "top_p", "presence_penalty", "stop"} & set(body)


def test_a_teacher_with_options_keeps_its_own_cache_entries(fake_openai, tmp_path):
    cache = TeacherCache(tmp_path / "cache.sqlite")
    try:
        with_options = CachedTeacher(openai_teacher(fake_openai.base_url, TeacherOptions(system_prompt="Be terse.")), cache, Budget())
        plain = CachedTeacher(openai_teacher(fake_openai.base_url), cache, Budget())
        with_options.generate([PLAIN])
        assert with_options.key(PLAIN) != PLAIN_KEY and cache.get_many([with_options.key(PLAIN)])
        assert not plain.generate([PLAIN])[0].cached and len(fake_openai.requests) == 2  # not served the other's reply
        assert with_options.generate([PLAIN])[0].cached and plain.generate([PLAIN])[0].cached and len(fake_openai.requests) == 2
    finally:
        cache.close()


def test_local_teacher_sends_the_system_prompt_through_the_chat_template(tiny_model):
    teacher = LocalTeacher(tiny_model, "tiny", batch_size=2, num_threads=1, system_prompt="You are terse.")
    plain = LocalTeacher(tiny_model, "tiny", batch_size=2, num_threads=1)
    r = TeacherRequest((("user", "Summarize the passage."),), 4, 0.0, 1.0, 0)
    (reply,) = teacher.generate([r])
    chat = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Summarize the passage."}]
    prompt = teacher.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert reply.prompt_tokens == len(teacher.tok(prompt, add_special_tokens=False).input_ids) > plain.generate([r])[0].prompt_tokens
    assert teacher.key(r) != plain.key(r) == r.key("tiny")


def teacher_error(values: dict) -> str:
    with pytest.raises(ConfigError) as e:
        build(TeacherConfig, values, "generation.teacher.")
    return str(e.value)


@pytest.mark.parametrize("values, message", [
    ({"backend": "openai", "response_format": {"type": "bogus"}},
     "generation.teacher.response_format: type 'bogus' is not one of text, json_object, json_schema; e.g. {type: json_object}"),
    ({"backend": "openai", "response_format": {"type": "json_schema", "json_schema": {"name": "task"}}},
     "generation.teacher.response_format: type json_schema needs json_schema: {name: ..., schema: {...}} (a JSON Schema mapping)"),
    ({"backend": "openai", "response_format": "json_object"}, "generation.teacher.response_format: expected dict, got 'json_object' (str)"),
    ({"backend": "openai", "token_limit_param": "foo"}, "generation.teacher.token_limit_param: 'foo' is not one of max_tokens, max_completion_tokens"),
    ({"backend": "openai", "sampling_params": "never"}, "generation.teacher.sampling_params: 'never' is not one of send, omit"),
    ({"backend": "openai", "extra_body": {"temperature": 1}},
     "generation.teacher.extra_body: 'temperature' is set by each request (the method's settings; sampling_params: omit leaves it out); remove it from extra_body"),
    ({"backend": "local", "response_format": {"type": "json_object"}},
     "generation.teacher.response_format: the local backend runs the model in process and cannot honour it; remove it, or use backend openai or llamacpp"),
    ({"backend": "local", "sampling_params": "omit"},
     "generation.teacher.sampling_params: the local backend runs the model in process and cannot honour it; remove it, or use backend openai or llamacpp"),
])
def test_bad_option_values_are_one_line_naming_the_field(values, message):
    assert teacher_error(values) == message


def test_options_from_yaml_and_from_dotted_overrides(tmp_path):
    """The README's examples load as written; a mapping can be given whole, or one key at a time, on the command line."""
    examples = {
        "vllm_qwen3.yaml": "generation:\n  teacher:\n    backend: openai\n    base_url: http://127.0.0.1:8000/v1\n    model: Qwen/Qwen3-8B\n"
                           "    api_key_env: ''\n    extra_body:\n      chat_template_kwargs: {enable_thinking: false}\n",
        "o_series.yaml": "generation:\n  teacher:\n    backend: openai\n    model: o4-mini\n    token_limit_param: max_completion_tokens\n"
                         "    sampling_params: omit\n    extra_body: {reasoning_effort: low}\n",
        "json_mode.yaml": "generation:\n  teacher:\n    backend: openai\n    model: gpt-4o-mini\n    response_format: {type: json_object}\n"
                          "    system_prompt: Reply with one JSON object.\n",
    }
    loaded = {}
    for name, text in examples.items():
        (tmp_path / name).write_text(text)
        loaded[name] = load_config(tmp_path / name, ["generation.domain_path=docs"]).generation.teacher
    assert loaded["vllm_qwen3.yaml"].extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
    assert (loaded["o_series.yaml"].token_limit_param, loaded["o_series.yaml"].sampling_params) == ("max_completion_tokens", "omit")
    assert loaded["json_mode.yaml"].response_format == {"type": "json_object"}
    t = load_config(None, ["generation.domain_path=docs", "generation.teacher.backend=openai",
                           "generation.teacher.extra_body.chat_template_kwargs.enable_thinking=false",
                           "generation.teacher.extra_body.top_k=20", "generation.teacher.response_format={type: json_object}"]).generation.teacher
    assert t.extra_body == {"chat_template_kwargs": {"enable_thinking": False}, "top_k": 20} and t.response_format == {"type": "json_object"}
    with pytest.raises(ConfigError, match=r"^generation.teacher.response_format: type 'bogus' is not one of"):
        load_config(None, ["generation.domain_path=docs", "generation.teacher.backend=openai", "generation.teacher.response_format={type: bogus}"])
