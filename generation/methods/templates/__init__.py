"""The methods' teacher prompts, as Jinja2 templates shipped with the package: <method>/<prompt name>.jinja here.

render(method, name, user, **variables) renders the packaged template, or the file that `user` (the method's config
field `templates`: {prompt name: path}) names for that prompt, with the same variables. What a template holds is
what the teacher is sent, byte for byte: no autoescape, no block trimming, its final newline kept (or its absence);
a file whose line breaks are CRLF (Evol-Instruct's depth and breadth prompts, as WizardLM's code sends them) is sent
with CRLF. Each file is read and compiled once per process. A bad template is one line naming its file: a syntax
error, or a variable the prompt is not given (found at config load by `checked`, else at render: StrictUndefined).
Each packaged file opens with a Jinja comment naming its variables; the comment ends in '-#}', so the line break
after it is not sent.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jinja2
import jinja2.meta

FOLDER = Path(__file__).parent
EVOL_DEPTH = ("add_constraints", "deepen", "concretize", "increase_reasoning")  # depth.py's four rewrites

# Every prompt of every method (by config section) and the variables its template is rendered with.
VARIABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "daig": {"instruction": ("task", "examples", "heading", "chunk", "directive"), "directive": ("task",), "directive_json": ("task",),
             "answer_system": ("decline",), "answer": ("heading", "chunk", "instruction", "input"),
             "judge_instruction": ("chunk", "instruction"), "judge_answer": ("chunk", "instruction", "answer")},
    "self_instruct": {"instructions": ("instructions", "classification"), "classify": ("instruction",),
                      "instances_classification": ("instruction",), "instances_generation": ("instruction",)},
    "alpaca": {"prompt": ("examples",)},
    "evol": {"system": (), **{op: ("instruction",) for op in EVOL_DEPTH}, "complicate_input": ("instruction", "input_format"),
             "breadth": ("instruction",), "equality": ("first", "second")},
    "dynosaur": {"system": (), "tasks": ("metadata", "fields"), "json_note": ()},
}


class TemplateError(ValueError):
    """A prompt template that cannot be read, compiled or rendered; the message is one line naming the file."""


def _environment(newline: str) -> jinja2.Environment:
    return jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                              newline_sequence=newline)


_ENVIRONMENTS = {"\n": _environment("\n"), "\r\n": _environment("\r\n")}


def packaged(method: str, name: str) -> Path:
    return FOLDER / method / f"{name}.jinja"


def _source(path: str) -> tuple[str, jinja2.Environment]:
    """The file's text, untranslated (Path.read_text would turn CRLF into LF), and the environment for its line breaks."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{path}: prompt template not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"{path}: cannot read the prompt template ({e})") from None
    crlf = text.count("\r\n")
    if crlf and crlf != text.count("\n"):
        raise TemplateError(f"{path}: mixes CRLF and LF line breaks; use one kind throughout (the prompt is sent with the file's)")
    return text, _ENVIRONMENTS["\r\n" if crlf else "\n"]


def _parsed(path: str):
    text, env = _source(path)
    try:
        return env, env.parse(text), text
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{path}, line {e.lineno}: {e.message}") from None


@functools.cache
def compiled(path: str) -> jinja2.Template:
    """The template of one file, compiled once per process."""
    env, _, text = _parsed(path)
    return env.from_string(text)


def render(method: str, name: str, user: dict | None = None, **variables) -> str:
    """The prompt `name` of `method`: the user's template if `user` names one for it, else the packaged one."""
    path = str(Path(user[name]).expanduser()) if user and user.get(name) else str(packaged(method, name))
    try:
        return compiled(path).render(**variables)
    except jinja2.UndefinedError as e:
        raise TemplateError(f"{path}: {e.message}; the {method} prompt {name!r} is given: {_listing(method, name)}") from None
    except TemplateError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the template's own expressions raise, named by its file
        raise TemplateError(f"{path}: {type(e).__name__}: {' '.join(str(e).split())}") from None


def checked(method: str, templates: dict) -> dict:
    """A config's templates mapping with absolute paths, once every name is a prompt of the method and every file
    parses and uses only that prompt's variables; else ValueError, 'templates...: what; fix' in one line."""
    if not isinstance(templates, dict):
        raise ValueError(f"templates: expected a mapping of prompt name to .jinja file, got {templates!r}")
    names = VARIABLES[method]
    unknown = [k for k in templates if k not in names]
    if unknown:
        raise ValueError(f"templates: unknown prompt name{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(names)}")
    out = {}
    for name, value in templates.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"templates.{name}: expected the path of a .jinja file, got {value!r}")
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"templates.{name}: {value} not found (a relative path is read from the YAML file's folder, "
                             "or on the command line from the current directory)")
        try:
            _, ast, _ = _parsed(str(path))
        except TemplateError as e:
            raise ValueError(f"templates.{name}: {e}") from None
        extra = sorted(jinja2.meta.find_undeclared_variables(ast) - set(names[name]))
        if extra:
            raise ValueError(f"templates.{name}: {value} uses {', '.join(extra)}, which the {name} prompt is not given; "
                             f"its variables: {_listing(method, name)}")
        out[name] = str(path.resolve())
    return out


def _listing(method: str, name: str) -> str:
    return ", ".join(VARIABLES[method][name]) or "none"
