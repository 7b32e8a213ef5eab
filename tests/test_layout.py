"""The repository's own rules: imports go one way, and the tests need nothing outside the repository."""
import ast

import pytest

from conftest import REPO, SHARED

LEAVES = ("generation", "training", "eval")  # loop/ is the only package that imports the others


@pytest.mark.parametrize("package", LEAVES)
def test_generation_training_and_eval_never_import_each_other_or_loop(package):
    forbidden = {"loop", *LEAVES} - {package}
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in forbidden]
    assert not found, found


def test_no_test_reads_outside_the_repository():
    """conftest's audit hook refuses ../shared at run time; no test names it either."""
    with pytest.raises(RuntimeError, match="vendor what tests need"):
        open(SHARED / "data" / "anything.jsonl")
    named = [p.name for p in (REPO / "tests").glob("*.py") if p.name not in ("conftest.py", "test_layout.py")
             and ("../shared" in p.read_text(encoding="utf-8") or "shared/data" in p.read_text(encoding="utf-8"))]
    assert not named, named


def test_the_published_seed_tasks_and_benchmark_ship_with_the_package():
    from loop.evalsets import load_benchmark
    from generation.config import GenerationConfig
    from generation.data.seeds import load_seed_tasks

    seeds = load_seed_tasks("builtin")
    assert len(seeds) == 175 and sum(s.is_classification for s in seeds) > 0
    assert [s.instruction for s in seeds] == [s.instruction for s in load_seed_tasks(str(REPO / "tests" / "data" / "self_instruct_seed_tasks.jsonl"))]
    assert len(load_benchmark("builtin", 1000)) == 252
    g = GenerationConfig()
    assert g.self_instruct.seed_tasks == g.alpaca.seed_tasks == "builtin"
    for folder in ("generation/data", "eval/data"):
        assert (REPO / folder / "LICENSE.self-instruct.Apache-2.0.txt").exists() and "Apache-2.0" in (REPO / folder / "README.md").read_text()


def readme_commands() -> list[str]:
    """Every `daig ...` line in the README's bash blocks, comments dropped."""
    text, commands, inside = (REPO / "README.md").read_text(encoding="utf-8"), [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" and not inside
            continue
        if inside and line.startswith("daig "):
            commands.append(line.split("  #")[0].strip())
    return commands


@pytest.mark.parametrize("command", readme_commands())
def test_the_readme_commands_parse_and_their_configs_load(command, monkeypatch):
    """Each command line parses as written; a `run` or `config` line's config file and overrides load."""
    import shlex

    from loop.cli import parse
    from loop.config import load_config

    monkeypatch.chdir(REPO)  # the README's paths are relative to the checkout
    args = parse(shlex.split(command)[1:])
    if args.command in ("run", "config") and args.config:
        load_config(args.config, [o.replace("/path/to/docs", str(REPO / "configs" / "quickstart_data" / "corpus"))
                                  .replace("/path/to/tasks.jsonl", str(REPO / "generation" / "data" / "general_tasks.jsonl"))
                                  for o in args.overrides])
    if args.command in ("ablate",):
        assert (REPO / args.ablation).is_file()


def test_the_readme_has_commands_for_every_subcommand():
    assert {shlex_first(c) for c in readme_commands()} >= {"run", "config", "resume", "ablate", "report", "trace"}


def shlex_first(command: str) -> str:
    return command.split()[1]


def test_a_key_without_its_section_and_an_override_without_equals_say_what_to_write(capsys):
    from loop.cli import parse
    from loop.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"unknown config key 'lora_r'; did you mean 'training.lora_r'\?"):
        load_config(None, ["lora_r=8"])
    with pytest.raises(SystemExit):
        parse(["run", "configs/quickstart.yaml", "--out", "x", "training.lora_r", "8"])
    err = capsys.readouterr().err
    assert err.startswith("usage: daig run") and "overrides are key=value, e.g. training.lora_r=16" in err


def test_every_method_module_has_the_contract_and_a_name():
    import inspect

    import dataclasses
    import typing

    from generation.config import GenerationConfig
    from loop.methods import METHODS

    files = {p.stem for p in (REPO / "generation" / "methods").glob("*.py") if p.stem != "__init__"}
    assert {m.__name__.rsplit(".", 1)[1] for m in METHODS.values()} == files, "every method module is named in loop/methods.py"
    from generation.config import METHODS as CONFIG_NAMES

    assert tuple(METHODS) == CONFIG_NAMES, "the names generation.method accepts are the names loop/methods.py maps"
    for name, module in METHODS.items():
        assert isinstance(module.STEERED, bool), name
        section = {"evol_instruct": "evol"}.get(name, name)  # the method's config section is generation.<section>
        assert dataclasses.is_dataclass(module.Config) and typing.get_type_hints(GenerationConfig)[section] is module.Config, name
        assert list(inspect.signature(module.start).parameters) == ["g", "pool", "chunks", "load_embedder"], name
        assert isinstance(module.STREAMS, bool), name
        assert list(inspect.signature(module.run_round).parameters) == ["teacher", "state", "g", "weights", "round_idx", "seed",
                                                                         "rng", "closed_book"] + ["emit"] * module.STREAMS, name
        assert callable(module.State.to_json) and callable(module.State.restore), name
