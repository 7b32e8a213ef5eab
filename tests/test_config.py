import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loop.config import ConfigError, RunConfig, describe, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if not {"quickstart_data", "accelerate", "ablations", "sweeps"} & set(p.parts))
ABLATIONS = sorted((REPO / "configs" / "ablations").glob("*.yaml"))
ACCELERATE = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def write(tmp_path, data: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert Path(cfg.generation.domain_path).exists(), "shipped configs point at data that ships with them"


def test_quickstart_paths_resolve_relative_to_the_file():
    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    assert Path(cfg.generation.domain_path) == REPO / "configs" / "quickstart_data" / "corpus"
    assert cfg.generation.teacher.model == "qwen2.5-coder-1.5b-instruct" and cfg.generation.teacher.backend == "llamacpp"
    assert cfg.rounds >= 2
    old = load_config(REPO / "configs" / "teacher_0.5b.yaml")
    assert (old.generation.teacher.backend, old.generation.teacher.model) == ("local", "qwen2.5-coder-0.5b-instruct")


def test_dotted_overrides_are_typed(tmp_path):
    p = write(tmp_path, {"generation": {"domain_path": str(tmp_path)}})
    cfg = load_config(p, ["training.lora_r=16", "feedback.temperature=2", "generation.tasks=[a, b]", "tracking.wandb=false"])
    assert cfg.training.lora_r == 16 and cfg.feedback.temperature == 2.0 and isinstance(cfg.feedback.temperature, float)
    assert cfg.generation.tasks == ["a", "b"] and cfg.tracking.wandb is False


def test_unknown_key_names_the_key_and_suggests(tmp_path):
    p = write(tmp_path, {"generation": {"domain_path": str(tmp_path)}, "training": {"lora_rr": 4}})
    with pytest.raises(ConfigError, match=r"unknown config key 'training.lora_rr'; did you mean 'training.lora_r'"):
        load_config(p)
    with pytest.raises(ConfigError, match="unknown config key 'trainin'"):
        load_config(p, ["trainin.lora_r=3"])


@pytest.mark.parametrize("override,message", [
    ("training.lora_r=0", "training.lora_r: must be >= 1"),
    ("training.lora_r=abc", "training.lora_r: expected int"),
    ("training.adapter_mode=sideways", "training.adapter_mode: 'sideways' is not one of restart, continue"),
    ("feedback.policy=best", "feedback.policy: 'best' is not one of loss_softmax, uniform"),
    ("generation.teacher.backend=vllm", "generation.teacher.backend: 'vllm' is not one of local, openai, llamacpp"),
    ("generation.daig.domain_share=1.5", "generation.daig.domain_share: must be in [0, 1]"),
    ("rounds=0", "rounds: must be >= 1"),
    ("training", "expected key=value"),
])
def test_bad_values_name_the_field(tmp_path, override, message):
    p = write(tmp_path, {"generation": {"domain_path": str(tmp_path)}})
    with pytest.raises(ConfigError) as e:
        load_config(p, [override])
    assert message in str(e.value)


def test_missing_domain_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="generation.domain_path: not set"):
        load_config(write(tmp_path, {}))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.yaml", ["seed=3"])
    again = load_config(write(tmp_path, to_dict(cfg)))
    assert to_dict(again) == to_dict(cfg)


def test_every_field_has_help():
    lines = describe()
    assert len(lines) > 40
    assert all(line.split("\n    ")[1].strip() for line in lines), "every config field needs help text"


def test_cli_reports_config_errors_in_one_line(tmp_path):
    p = write(tmp_path, {"generation": {"domain_path": str(tmp_path)}, "trianing": {}})
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "run", str(p), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config error: unknown config key 'trianing'; did you mean 'training'?"
    assert not (tmp_path / "o").exists(), "nothing is written before the config is valid"


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_configs_parse_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.compute_environment.value == "LOCAL_MACHINE"


def test_base_key_overlays_a_config_and_resolves_paths_per_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "sub").mkdir()
    write(tmp_path, {"rounds": 3, "generation": {"domain_path": "data", "examples_per_round": 5}, "training": {"lora_r": 4}})
    over = tmp_path / "sub" / "over.yaml"
    over.write_text(yaml.safe_dump({"base": "../c.yaml", "generation": {"examples_per_round": 7}, "training": {"lora_alpha": 32}}))
    cfg = load_config(over)
    assert cfg.rounds == 3 and cfg.generation.daig.examples_per_round == 7
    assert cfg.training.lora_r == 4 and cfg.training.lora_alpha == 32
    assert Path(cfg.generation.domain_path) == tmp_path / "data"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"base": "sub/over.yaml"}))
    with pytest.raises(ConfigError, match="cycle"):
        load_config(over)


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.name for p in ABLATIONS])
def test_every_shipped_ablation_validates_each_arm(path):
    from loop.ablate import arm_overrides, load_ablation

    abl = load_ablation(path)  # builds every arm x seed config
    assert len(abl.arms) >= 2 and abl.base.is_file()
    policies = {load_config(abl.base, arm_overrides(abl, a, abl.seeds[0])).feedback.policy for a in abl.arms}
    assert len(policies) == len(abl.arms)


def test_a_sweep_through_wandbs_own_parsing_builds_a_command_daig_runs(tmp_path, monkeypatch):
    """The agent's steps, with wandb's own functions: load the sweep file, expand the command's env macros, build
    ${args_no_hyphens} from one grid point, substitute it as the agent does; daig's parser and config take the result."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    from loop.cli import parse

    sweep = sweep_utils.load_sweep_config(str(REPO / "configs" / "sweeps" / "wandb_policies.yaml"))
    assert sweep["metric"] == {"name": "eval_loss", "goal": "minimize"} and sweep["program"] == "daig"
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    point = {k: {"value": v["values"][-1] if "values" in v else v["value"]} for k, v in sweep["parameters"].items()}
    macros = sweep_utils.create_sweep_command_args({"args": point})
    command = []
    for part in sweep_utils.create_sweep_command(list(sweep["command"])):
        command += macros[part[2:-1]] if part.startswith("${") and part.endswith("}") else [part]
    assert command[:2] == ["daig", "run"] and "runs/sweeps/abc123" in command
    args = parse(command[1:])
    cfg = load_config(REPO / args.config, args.overrides)
    assert (cfg.feedback.policy, cfg.seed, cfg.rounds) == ("learning_progress", 1, 3) and args.out == "runs/sweeps/abc123"


def test_wandb_auto_mode_trusts_wandb_login(tmp_path, monkeypatch):
    """`wandb login` writes the key to ~/.netrc, and a sweep agent's runs inherit it: auto goes online with it, offline
    without it (never a login prompt); WANDB_MODE still wins."""
    from loop.tracking import wandb_mode

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode("auto") == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode("auto") == "online" and wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_mode("auto") == "offline"  # a key for another host is not a login here
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("auto") == "offline"


def test_ablation_file_errors_name_the_fix(tmp_path):
    from loop.ablate import load_ablation

    bad = write(tmp_path, {"base": "missing.yaml", "arms": {"a": ["seed=1"]}})
    with pytest.raises(ConfigError, match="not found"):
        load_ablation(bad)
    bad.write_text(yaml.safe_dump({"base": "x.yaml", "arms": {"a": "feedback.policy=ucb"}}))
    with pytest.raises(ConfigError, match="arm 'a' must be a list"):
        load_ablation(bad)


def test_every_problem_in_every_section_is_reported_at_once():
    from loop.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, ["lora_r=8", "training.lora_alpha=abc", "generation.daig.top_p=3", "eval.nope=1"])
    assert len(e.value.problems) == 4 and str(e.value).startswith("4 problems:")
    for needle in ("'training.lora_r'", "training.lora_alpha: expected int", "generation.daig.top_p: must be in (0, 1]", "'eval.nope'"):
        assert needle in str(e.value), needle


def test_every_field_rule_parses_and_every_default_meets_it():
    import dataclasses
    import typing

    from loop.config import field_problems

    def sections(cls, prefix=""):
        yield cls, prefix
        for name, tp in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(tp):
                yield from sections(tp, f"{prefix}{name}.")

    found = list(sections(RunConfig))
    ruled = [f for cls, _ in found for f in dataclasses.fields(cls) if "check" in f.metadata or "choices" in f.metadata]
    assert len(found) == 16 and len(ruled) > 80
    for cls, prefix in found:
        assert field_problems(cls, {}, prefix) == [], cls.__name__


def test_bad_values_in_every_section_are_reported_together(tmp_path):
    p = write(tmp_path, {"generation": {"domain_path": str(tmp_path)}})
    with pytest.raises(ConfigError) as e:
        load_config(p, ["rounds=0", "training.lora_r=0", "generation.daig.top_p=0", "feedback.policy=best",
                        "generation.novelty.threshold=2", "eval.heldout_fraction=1"])
    assert sorted(x.split(":")[0] for x in e.value.problems) == sorted([
        "rounds", "training.lora_r", "generation.daig.top_p", "feedback.policy", "generation.novelty.threshold", "eval.heldout_fraction"])


def test_a_config_with_the_old_daig_key_names_still_loads_and_says_where_they_went(tmp_path, caplog):
    old = write(tmp_path, {"generation": {"domain_path": str(tmp_path), "examples_per_round": 7, "chunk_sampling": "uniform",
                                          "teacher": {"answer_max_tokens": 99, "temperature": 0.3, "backend": "openai"}}})
    with caplog.at_level("WARNING", logger="daig"):
        cfg = load_config(old, ["generation.examples_in_prompt=2"])
    d = cfg.generation.daig
    assert (d.examples_per_round, d.chunk_sampling, d.answer_max_tokens, d.temperature, d.examples_in_prompt) == (7, "uniform", 99, 0.3, 2)
    assert cfg.generation.teacher.backend == "openai"
    said = caplog.text
    for old_key, new_key in (("generation.examples_per_round", "generation.daig.examples_per_round"),
                             ("generation.teacher.answer_max_tokens", "generation.daig.answer_max_tokens"),
                             ("generation.examples_in_prompt", "generation.daig.examples_in_prompt")):
        assert f"{old_key} is now {new_key}" in said
