"""The methods' teacher prompts are Jinja2 templates (generation/methods/templates/<method>/<name>.jinja): with the
packaged ones every prompt is byte for byte what the code sent before the move, and so is every cache key; a
config names a user's own template per prompt, and a bad one fails at config load in one line naming the file.

tests/fixtures/prompts/prompts.json was captured with the code before the move (generation/methods/*.py at c3eb18b,
the prompts then Python strings): 130 cases, every prompt of every method on fixed awkward inputs (Jinja and
str.format syntax, CR/LF, tabs, trailing spaces, non-ASCII, empty strings, no examples), each stored as the SHA-256
of its JSON (the whole text too for each prompt's first case), and one DAIG instruction request's cache key.
"""
import hashlib
import json
import re
import shutil
import textwrap
import tomllib
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
from openai_server import FakeOpenAI

from conftest import REPO
from generation.config import AlpacaConfig, DaigConfig, DynosaurConfig, EvolConfig, GenerationConfig, SelfInstructConfig
from generation.data.corpus import Chunk
from generation.data.pool import PoolItem
from generation.data.seeds import SeedTask
from generation.methods import alpaca, daig, dynosaur, evol, self_instruct, templates
from generation.methods.templates import VARIABLES, TemplateError, render
from generation.rows import request_seed
from generation.teacher.backends import OpenAITeacher, TeacherRequest
from loop.config import ConfigError, load_config

FIXTURE = json.loads((REPO / "tests" / "fixtures" / "prompts" / "prompts.json").read_text(encoding="utf-8"))
CASES = FIXTURE["cases"]
CONFIGS = {"daig": DaigConfig, "self_instruct": SelfInstructConfig, "alpaca": AlpacaConfig, "evol": EvolConfig, "dynosaur": DynosaurConfig}


def prompt_of(prompt: str, a: dict, t: dict | None = None):
    """The prompt (or messages, as lists) a fixture case names, through today's functions; t: a templates mapping."""
    msgs = lambda messages: [list(m) for m in messages]  # noqa: E731
    if prompt == "daig.instruction":
        return msgs(daig.instruction_messages(a["task"], [PoolItem(**e) for e in a["examples"]], Chunk(**a["chunk"]), a["shown"], t))
    if prompt == "daig.answer":
        return msgs(daig.answer_messages(a["instruction"], Chunk(**a["chunk"]), a["input_text"], t))
    if prompt == "daig.directive":
        return daig.directive(a["task"], t)
    if prompt == "daig.judge_instruction":
        return daig.judge_instruction_prompt(a["chunk"]["text"], a["instruction"], a["input"], t)
    if prompt == "daig.judge_answer":
        return daig.judge_answer_prompt(a["chunk"]["text"], a["instruction"], a["input"], a["answer"], t)
    if prompt == "self_instruct.instructions":
        return self_instruct.encode_prompt(a["instructions"], a["classification"], t)
    if prompt == "self_instruct.classify":
        return self_instruct.classify_prompt(a["instruction"], t)
    if prompt == "self_instruct.instances":
        return self_instruct.instance_prompt(a["instruction"], a["classification"], t)
    if prompt == "alpaca.prompt":
        return alpaca.encode_prompt(a["examples"], t)
    if prompt == "evol.evolve":
        return msgs(evol.messages(evol.evolve_prompt(a["operator"], a["instruction"], a["input_format"], t), t))
    if prompt == "evol.equality":
        return msgs(evol.messages(evol.equality_prompt(a["first"], a["second"], t), t))
    if prompt == "evol.answer":  # the answer request: the system message, then the evolved instruction itself
        return msgs(evol.messages(a["instruction"], t))
    if prompt == "dynosaur.tasks":
        return msgs(dynosaur.task_messages(dynosaur.DatasetMeta(**a["meta"]), a["rows"], t))
    raise KeyError(prompt)


def sha(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode("utf-8")).hexdigest()


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Every packaged template copied byte for byte to a user's folder, as each method's `templates` mapping."""
    folder = tmp_path_factory.mktemp("copies")
    out = {}
    for method, names in VARIABLES.items():
        for name in names:
            (folder / method).mkdir(exist_ok=True)
            shutil.copyfile(templates.packaged(method, name), folder / method / f"{name}.jinja")
        out[method] = CONFIGS[method](templates={n: str(folder / method / f"{n}.jinja") for n in names}).templates
    return out


@pytest.mark.parametrize("source", ["packaged", "user_copy"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c['prompt']}-{i}" for i, c in enumerate(CASES)])
def test_every_prompt_is_byte_for_byte_what_the_code_sent_before_the_move(case, source, copies):
    c = CASES[case]
    t = copies[c["prompt"].split(".")[0]] if source == "user_copy" else None
    got = prompt_of(c["prompt"], c["inputs"], t)
    if "expected" in c:
        assert got == c["expected"]
    assert sha(got) == c["sha256"], got


def test_the_fixture_covers_every_prompt_of_every_method():
    covered = {c["prompt"] for c in CASES}
    assert covered == {"daig.instruction", "daig.directive", "daig.answer", "daig.judge_instruction", "daig.judge_answer",
                       "self_instruct.instructions", "self_instruct.classify", "self_instruct.instances", "alpaca.prompt",
                       "evol.evolve", "evol.equality", "evol.answer", "dynosaur.tasks"}
    assert {c["inputs"]["operator"] for c in CASES if c["prompt"] == "evol.evolve"} == set(evol.EVOL_DEPTH) | {"complicate_input", "breadth"}
    assert {(c["prompt"], c["inputs"].get("classification")) for c in CASES if c["prompt"].startswith("self_instruct")} >= {
        ("self_instruct.instances", True), ("self_instruct.instances", False), ("self_instruct.instructions", True)}


def test_a_daig_instruction_requests_cache_key_is_unchanged():
    ref = FIXTURE["daig_instruction_request_key"]
    a, dc = CASES[ref["case"]]["inputs"], DaigConfig()
    req = TeacherRequest(daig.instruction_messages(a["task"], [PoolItem(**e) for e in a["examples"]], Chunk(**a["chunk"]), a["shown"],
                                                   dc.templates), dc.instruction_max_tokens, dc.temperature, dc.top_p, ref["seed"])
    assert req.key(ref["model"]) == ref["key"] == "b749fc8940a31dae232be21566d212ee1a54551714d1280b14515f751b6ec0b5"


# ---- the packaged templates ------------------------------------------------------------------------------------------

def packaged_files() -> set[tuple[str, str]]:
    return {(p.parent.name, p.stem) for p in templates.FOLDER.glob("*/*.jinja")}


def test_every_packaged_template_is_declared_and_uses_exactly_its_variables():
    assert packaged_files() == {(m, n) for m, names in VARIABLES.items() for n in names}
    for method, names in VARIABLES.items():
        for name, variables in names.items():
            path = templates.packaged(method, name)
            text = path.read_bytes().decode("utf-8")
            env = jinja2.Environment(newline_sequence="\r\n" if "\r\n" in text else "\n")
            assert jinja2.meta.find_undeclared_variables(env.parse(text)) == set(variables), path
            header = text[:text.index("-#}")]
            assert text.startswith("{# ") and all(v in header for v in variables), f"{path}: its opening comment names its variables"


def test_the_package_ships_every_template():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "generation.methods.templates" in setuptools["packages"]
    globs = setuptools["package-data"]["generation.methods.templates"]
    shipped = {p for g in globs for p in templates.FOLDER.glob(g)}
    assert shipped == set(templates.FOLDER.glob("*/*.jinja")) and shipped
    assert any(d.startswith("jinja2") for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def test_each_method_sections_help_names_its_prompts():
    import dataclasses

    for method, cls in CONFIGS.items():
        help_text = next(f for f in dataclasses.fields(cls) if f.name == "templates").metadata["help"]
        assert f"({', '.join(VARIABLES[method])})" in help_text, method
        assert cls().templates == {}


def test_evols_depth_and_breadth_templates_keep_crlf_and_the_others_lf():
    for method, names in VARIABLES.items():
        for name in names:
            text = templates.packaged(method, name).read_bytes().decode("utf-8")
            crlf = method == "evol" and name in (*evol.EVOL_DEPTH, "breadth")
            assert text.count("\r\n") == (text.count("\n") if crlf else 0), (method, name)
    assert "\r\n \t\t\t\t\t" in evol.evolve_prompt("deepen", "x\r\n")


def test_templates_are_compiled_once():
    templates.compiled.cache_clear()
    for _ in range(3):
        daig.directive("question_answering")
    info = templates.compiled.cache_info()
    assert (info.misses, info.hits) == (1, 2)


# ---- a user's templates ----------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def yaml_config(folder: Path, section: str, mapping: str) -> Path:
    return write(folder / "run.yaml", f"generation:\n  domain_path: docs\n  {section}:\n    templates: {mapping}\n")


def test_a_yaml_config_names_a_template_relative_to_its_own_folder(tmp_path, monkeypatch):
    write(tmp_path / "cfg" / "prompts" / "directive.jinja", "Write a {{ task }} task on this text.")
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    cfg = load_config(yaml_config(tmp_path / "cfg", "daig", "{directive: prompts/directive.jinja}"))
    assert cfg.generation.daig.templates == {"directive": str(tmp_path / "cfg" / "prompts" / "directive.jinja")}
    assert daig.directive("open_qa", cfg.generation.daig.templates) == "Write a open qa task on this text."
    assert daig.directive("open_qa") == daig.directive("open_qa", {})  # other prompts, and other configs, keep the packaged one


def test_an_override_names_a_template_relative_to_the_current_folder(tmp_path, monkeypatch):
    write(tmp_path / "mine.jinja", "Is {{ first }} the same as {{ second }}?")
    monkeypatch.chdir(tmp_path)
    for override in ("generation.evol.templates.equality=mine.jinja", "generation.evol.templates={equality: mine.jinja}"):
        t = load_config(None, ["generation.domain_path=docs", override]).generation.evol.templates
        assert t == {"equality": str(tmp_path / "mine.jinja")}
        assert evol.equality_prompt("A", "B", t) == "Is A the same as B?"


@pytest.mark.parametrize("mapping, message", [
    ("{instructon: x.jinja}", "generation.daig.templates: unknown prompt name 'instructon'; valid names: instruction, directive, directive_json, "
                              "answer_system, answer, judge_instruction, judge_answer"),
    ("{instruction: missing.jinja}", "generation.daig.templates.instruction: missing.jinja not found"),
    ("{instruction: ''}", "generation.daig.templates.instruction: expected the path of a .jinja file"),
    ("{instruction: bad_syntax.jinja}", "generation.daig.templates.instruction: {dir}/bad_syntax.jinja, line 2: "),
    ("{instruction: bad_variable.jinja}", "generation.daig.templates.instruction: {dir}/bad_variable.jinja uses passage, which the instruction "
                                          "prompt is not given; its variables: task, examples, heading, chunk, directive"),
    ("{directive: mixed.jinja}", "generation.daig.templates.directive: {dir}/mixed.jinja: mixes CRLF and LF line breaks"),
])
def test_a_bad_template_fails_at_config_load_in_one_line(tmp_path, mapping, message):
    write(tmp_path / "bad_syntax.jinja", "Examples:\n{{ examples }\n")
    write(tmp_path / "bad_variable.jinja", "{{ examples }}\n{{ passage }}")
    write(tmp_path / "mixed.jinja", "Write a {{ task }} task.\r\nReply with\nthe task only.")
    with pytest.raises(ConfigError) as e:
        load_config(yaml_config(tmp_path, "daig", mapping))
    text = str(e.value)
    assert message.replace("{dir}", str(tmp_path)) in text and "\n" not in text.strip(), text


def test_a_template_error_at_render_is_one_line_naming_the_file(tmp_path):
    typo = write(tmp_path / "typo.jinja", "{% for e in examples %}{{ e.instrucion }}{% endfor %}")
    t = AlpacaConfig(templates={"prompt": str(typo)}).templates  # a missing attribute passes the config check...
    message = f"{typo}: 'dict object' has no attribute 'instrucion'; the alpaca prompt 'prompt' is given: examples"
    with pytest.raises(TemplateError, match=f"^{re.escape(message)}$"):
        alpaca.encode_prompt([{"instruction": "a", "input": "", "output": "b"}], t)  # ...and StrictUndefined stops it at render
    broken = write(tmp_path / "broken.jinja", "{{ 1 / 0 }}")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(broken))}: ZeroDivisionError"):
        render("evol", "system", {"system": str(broken)})
    with pytest.raises(TemplateError, match="prompt template not found"):
        render("evol", "system", {"system": str(tmp_path / "gone.jinja")})


def test_a_users_templates_reach_every_methods_requests(tmp_path):
    si = SelfInstructConfig(templates={"instructions": str(write(tmp_path / "si.jinja", "{% for i in instructions %}- {{ i }}\n{% endfor %}-")),
                                       "instances_generation": str(write(tmp_path / "gen.jinja", "Examples for: {{ instruction }}\n"))})
    assert self_instruct.instruction_request([("A: ", ""), ("B", "s1")], si, 0).messages == (("user", "- A\n- B\n-"),)
    assert self_instruct.instance_request(" Sort. ", False, si, 0).messages == (("user", "Examples for: Sort.\n"),)
    assert self_instruct.instance_request("Sort.", True, si, 0).messages == (("user", self_instruct.instance_prompt("Sort.", True)),)
    ac = AlpacaConfig(templates={"prompt": str(write(tmp_path / "al.jinja", "{{ examples|length }} {{ examples[0].input }}"))})
    seed = SeedTask("s", "s", "Add.", [{"input": "", "output": "2"}], False)
    assert alpaca.alpaca_request([seed], ac, 0).messages == (("user", "1 <noinput>"),)
    dc = DynosaurConfig(dataset="x", templates={"system": str(write(tmp_path / "sys.jinja", "Design tasks."))})
    meta = dynosaur.DatasetMeta("d", "desc", ["q", "a"], [{"q": "1", "a": "2"}])
    assert dynosaur.task_messages(meta, meta.rows, dc.templates)[0] == ("system", "Design tasks.")


def test_a_daig_round_sends_the_users_templates(tmp_path):
    mine = write(tmp_path / "instruction.jinja", textwrap.dedent('''\
        Passage{% if heading %} from {{ heading }}{% endif %}:
        """
        {{ chunk }}
        """
        Shown: {{ examples }}
        {{ directive }}'''))
    system = write(tmp_path / "answer_system.jinja", "Answer from the passage only; else say {{ decline }}.")
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=1, templates={"instruction": str(mine), "answer_system": str(system)}))
    chunk = Chunk("a.md#0", "a.md", "The controller resets when Hold Mode is pressed for ten seconds.", "Controller")
    item = PoolItem("g1", "open_qa", "What is the capital of France?", "", "Paris.", "general")
    with FakeOpenAI() as server:
        teacher = OpenAITeacher("fake-teacher", server.base_url, "", 1, 10, 0)
        kept, rejected, _ = daig.run_daig_round(teacher, [("open_qa", [item], chunk)], cfg, 1, 0)
        sent = [b["messages"] for b in server.requests]
    assert sent[0][-1]["content"].startswith('Passage from Controller:\n"""\nThe controller resets') and "Shown: 1. What is" in sent[0][-1]["content"]
    assert sent[1][0] == {"role": "system", "content": "Answer from the passage only; else say NOT IN PASSAGE."}
    assert sent[1][1]["content"].startswith('Passage (from Controller):\n"""')  # the answer prompt is still the packaged one
    dc, seed = cfg.daig, request_seed(0, 1)
    mine_req, packaged_req = (TeacherRequest(daig.instruction_messages("open_qa", [item], chunk, "instruction", t), dc.instruction_max_tokens,
                                             dc.temperature, dc.top_p, seed) for t in (dc.templates, {}))
    # The prompt is part of the request, so of its cache key: another template is another request.
    assert (kept + rejected)[0]["requests"]["instruction"] == teacher.key(mine_req) != teacher.key(packaged_req)
