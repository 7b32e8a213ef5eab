"""The run config: one typed dataclass per stage, composed, loaded from YAML with dotted overrides.

Every problem is found before any model loads: unknown keys (with a suggestion), wrong types and bad
values each raise ConfigError naming the dotted key and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from eval.config import EvalConfig
from generation.config import GenerationConfig
from training.config import TrainConfig

POLICIES = ("loss_softmax", "uniform", "learning_progress", "ucb", "active_uncertainty", "sedi_prune")
UNCERTAINTY_TARGETS = ("reference", "prediction")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DTYPES = ("auto", "float32", "bfloat16", "float16")
log = logging.getLogger("daig")
# Keys that moved: DAIG's knobs left the generation section and the teacher (transport, budget and local-backend
# settings only now) for generation.daig. A config written with the old names still loads, with a warning.
_DAIG_FROM_GENERATION = ("examples_per_round", "examples_in_prompt", "domain_share", "examples_shown", "chunk_sampling", "code_chunks",
                         "max_code_share", "min_instruction_words", "max_instruction_words", "max_answer_words", "max_example_similarity",
                         "dangling_reference", "task_mismatch")
_DAIG_FROM_TEACHER = ("temperature", "top_p", "instruction_max_tokens", "answer_temperature", "answer_max_tokens")
RENAMED = {**{f"generation.{k}": f"generation.daig.{k}" for k in _DAIG_FROM_GENERATION},
           **{f"generation.teacher.{k}": f"generation.daig.{k}" for k in _DAIG_FROM_TEACHER}}


class ConfigError(ValueError):
    """Bad config keys or values; each problem names the dotted key and the fix, all of them in one error."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self.problems[0] if len(self.problems) == 1 else
                         f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class FeedbackConfig:
    policy: str = field(default="loss_softmax", metadata={"help": "How per-task eval results set next round's task sampling weights: 'uniform' (the control); 'loss_softmax' (softmax of loss / temperature, with a floor); 'learning_progress' (favour tasks whose loss fell least or rose, smoothed); 'ucb' (UCB1 bandit over tasks, reward = |loss change|); 'active_uncertainty' (Active Instruction Tuning: favour tasks whose answers the student's likelihood changes most when instruction words are dropped); 'sedi_prune' (SeDi-style: drop pool examples whose generated children did not lower their task's eval loss; task weights as loss_softmax).", "choices": POLICIES})
    temperature: float = field(default=0.5, metadata={"help": "loss_softmax, learning_progress, ucb: lower sharpens toward the top task (learning_progress and ucb scale their scores to [-1, 1] first).", "check": "> 0"})
    floor: float = field(default=0.05, metadata={"help": "Minimum weight of every task, so none starves (must be < 1 / number of tasks).", "check": "[0, 1)"})
    smoothing: float = field(default=0.5, metadata={"help": "learning_progress: weight of the newest loss change in the moving average (1: newest only).", "check": "(0, 1]"})
    ucb_c: float = field(default=1.0, metadata={"help": "ucb: exploration constant of the sqrt(2 ln N / n) bonus.", "check": ">= 0"})
    uncertainty_perturbations: int = field(default=10, metadata={"help": "active_uncertainty: perturbed instructions per row (the paper's README runs 10).", "check": ">= 1"})
    uncertainty_drop: float = field(default=0.2, metadata={"help": "active_uncertainty: probability of dropping each instruction word (the paper's 0.2).", "check": "(0, 1)"})
    uncertainty_rows: int = field(default=10, metadata={"help": "active_uncertainty: held-out rows measured per task, a seeded sample (the paper's 10); 0 for all.", "check": ">= 0"})
    uncertainty_target: str = field(default="reference", metadata={"help": "active_uncertainty: the answer whose likelihood is compared: 'reference' (the row's teacher answer; no generation, cheap on CPU; the paper code's 'HL' variant) or 'prediction' (the student's greedy answer to the original prompt, the paper's reported 'NL' setting; one generation of eval.max_new_tokens per row).", "choices": UNCERTAINTY_TARGETS})
    shrink: bool = field(default=True, metadata={"help": "loss_softmax and sedi_prune: before the policy reads the per-task eval losses, shrink each toward the mean over tasks by its standard error (empirical Bayes: weight tau^2 / (tau^2 + se^2)). A loss from a single row has no standard error and counts as the mean, so weights do not swing on one row's loss. Raw and shrunk losses are both logged. learning_progress and ucb read changes of the raw losses."})
    sedi_min_per_task: int = field(default=0, metadata={"help": "sedi_prune: never prune a task below this many pool examples; 0 uses generation.daig.examples_in_prompt (the prompt shows that many).", "check": ">= 0"})


@dataclass
class TrackingConfig:
    wandb: bool = field(default=True, metadata={"help": "Log to Weights & Biases (config, per-round metrics, weights table). metrics.jsonl is always written."})
    mode: str = field(default="auto", metadata={"help": "W&B mode: 'auto' follows WANDB_MODE if set, else online when wandb has credentials (WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc; a sweep agent's runs inherit them), else offline, never a login prompt; or online, offline, disabled.", "choices": WANDB_MODES})
    job_type: str = field(default="generate-train", metadata={"help": "W&B job_type of the run (`daig ablate` arms keep it), for filtering runs in a project."})
    project: str = field(default="daig", metadata={"help": "W&B project."})
    entity: str = field(default="", metadata={"help": "W&B entity (team or user); empty for your default."})
    group: str = field(default="", metadata={"help": "W&B group, e.g. an ablation name."})
    run_name: str = field(default="", metadata={"help": "W&B run name; empty uses the output folder's name."})
    tags: list[str] = field(default_factory=list, metadata={"help": "W&B tags."})


@dataclass
class RunConfig:
    rounds: int = field(default=2, metadata={"help": "Generate-train-evaluate-reweight rounds.", "check": ">= 1"})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, splits, training and teacher requests."})
    student: str = field(default="smollm2-135m-instruct", metadata={"help": "Student model: a packaged model name (see `daig models`), a local folder or .gguf file, or a Hub id."})
    num_threads: int = field(default=2, metadata={"help": "torch threads for teacher and student (they run one after the other). Use 1 per process when two share 2 cores.", "check": ">= 1"})
    cache_dir: str = field(default="~/.cache/daig", metadata={"help": "Where packaged models are unpacked and converted (shared by runs)."})
    device: str = field(default="auto", metadata={"help": "Where the student (training and eval) and a local teacher run: 'auto' (the GPU when torch sees one, else the CPU), 'cpu', 'cuda' or 'cuda:N'. Training always takes the GPU trl/accelerate picks (the first visible one, or one per process under accelerate launch): to pin every stage to one GPU, set CUDA_VISIBLE_DEVICES. Checked at start: 'cuda' on a machine without one stops the run.", "pattern": (r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")})
    dtype: str = field(default="auto", metadata={"help": "Weights and compute dtype of those models: 'auto' (bfloat16 on a GPU that supports it, else float16; float32 on the CPU), 'float32', 'bfloat16', 'float16'. Half precision on the CPU is refused (emulated there: trl's bf16 measured 10x slower); a CPU with native bf16 can still train in it with training.sft_args.bf16=true.", "choices": DTYPES})
    plateau_rounds: int = field(default=0, metadata={"help": "Stop early when the best eval loss of the last N rounds beats the best before them by less than plateau_min_delta (0: never; the run also stops at `rounds` or a teacher budget cap).", "check": ">= 0"})
    plateau_min_delta: float = field(default=0.01, metadata={"help": "Smallest eval-loss improvement over plateau_rounds rounds that counts as progress.", "check": ">= 0"})
    generation: GenerationConfig = field(default_factory=GenerationConfig, metadata={"help": "Generation stage."})
    training: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Training stage."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation stage."})
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig, metadata={"help": "Feedback stage."})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "Experiment tracking."})

    def __post_init__(self):
        if not self.student:
            raise ValueError("student: empty; set a packaged model name, a folder or a Hub id")
        if not self.generation.domain_path and self.generation.method == "daig":
            raise ValueError("generation.domain_path: not set; point it at your documents (folder, .jsonl or dataset)")


# ---------------------------------------------------------------- building from plain data

def _check_type(value, tp, key: str):
    """Return value converted to annotation tp, or raise ConfigError naming key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _check_type(value, next(a for a in typing.get_args(tp) if a is not type(None)), key)
    if origin is list:
        if not isinstance(value, list):
            value = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def build(cls, data: dict | None, prefix: str = ""):
    """Build dataclass cls from nested dict data; unknown keys and bad values raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    problems = []  # every problem in every section, reported together (litgpt's validate_args)
    for key in data:
        if key not in names:
            nested = _nested_keys(cls, key, prefix)  # a known key given without its section: lora_r -> training.lora_r
            close = nested or [prefix + c for c in difflib.get_close_matches(key, names, n=1)]
            quoted = [f"'{c}'" for c in close]
            hint = (f"; did you mean {', '.join(quoted[:-1])} or {quoted[-1]}?" if len(quoted) > 1 else f"; did you mean {quoted[0]}?") \
                if close else f"; valid keys: {', '.join(names)}"
            problems.append(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            continue
        tp = hints[name]
        try:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, dict):
                    raise ConfigError(f"{prefix}{name}: expected a mapping of its fields, got {value!r}")
                kwargs[name] = build(tp, value, f"{prefix}{name}.")
            else:
                kwargs[name] = _check_type(value, tp, prefix + name)
        except ConfigError as e:
            problems += e.problems
    problems += field_problems(cls, kwargs, prefix)
    if problems:
        raise ConfigError(problems)
    try:
        return cls(**kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix}{e}") from None


def field_problems(cls, values: dict, prefix: str = "") -> list[str]:
    """Every field of cls whose value (given, else its default) breaks the field's own rule: metadata 'check' (">= 1",
    "> 0", "[0, 2]", "(0, 1]", ...), 'choices' or 'pattern' (a regular expression the whole value must match, and how
    to say it). One checker for every config section; __post_init__ keeps only the checks that read several fields."""
    problems = []
    for f in dataclasses.fields(cls):
        rule, choices, pattern = f.metadata.get("check"), f.metadata.get("choices"), f.metadata.get("pattern")
        if not rule and not choices and not pattern:
            continue
        value = values[f.name] if f.name in values else f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if choices and value not in choices:
            problems.append(f"{prefix}{f.name}: {value!r} is not one of {', '.join(choices)}")
        elif pattern and not re.fullmatch(pattern[0], str(value)):
            problems.append(f"{prefix}{f.name}: {value!r} is not one of {pattern[1]}")
        elif rule and not _within(value, rule):
            problems.append(f"{prefix}{f.name}: must be {rule if rule[0] in '<>' else 'in ' + rule}, got {value}")
    return problems


def _within(value: float, rule: str) -> bool:
    if rule[0] in "<>":
        op, bound = rule.split()
        return {">=": value >= float(bound), ">": value > float(bound), "<=": value <= float(bound), "<": value < float(bound)}[op]
    low, high = (float(x) for x in rule[1:-1].split(","))
    return (low <= value if rule[0] == "[" else low < value) and (value <= high if rule[-1] == "]" else value < high)


def _nested_keys(cls, key: str, prefix: str) -> list[str]:
    """The dotted names of fields called `key` in cls's sections, nearest first."""
    found, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            inner = typing.get_type_hints(hints[f.name])
            found += [f"{prefix}{f.name}.{key}"] if key in inner else []
            found += _nested_keys(hints[f.name], key, f"{prefix}{f.name}.")
    return sorted(set(found), key=lambda k: k.count("."))


def set_dotted(data: dict, dotted: str, value) -> None:
    """Apply one 'a.b.c=value' override to nested dict data."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. training.lora_r=16")
    key, raw = text.split("=", 1)
    return key.strip(), (yaml.safe_load(raw) if raw.strip() else "")


_PATH_KEYS = ("generation.domain_path", "generation.general_pool", "generation.domain_pool", "eval.benchmark_path",
              "training.accelerate_config", "generation.self_instruct.seed_tasks", "generation.alpaca.seed_tasks",
              "generation.dynosaur.dataset", *(f"generation.{m}.templates" for m in ("daig", "self_instruct", "alpaca", "evol", "dynosaur")))


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML config, apply dotted overrides, resolve relative paths, validate everything."""
    data = _read_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        if key in RENAMED:
            log.warning("%s is now %s; this override uses the old name", key, RENAMED[key])
            key = RENAMED[key]
        if key in _PATH_KEYS and isinstance(value, str):
            value = _resolve(value, Path.cwd())
        set_dotted(data, key, value)
    return build(RunConfig, data)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """One YAML file, its relative paths resolved against its folder. `base: other.yaml` names a config this one
    overlays (sections merge key by key, this file wins), so an ablation or method config states only what differs."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass a YAML file such as configs/quickstart.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    here = path.resolve().parent
    data = renamed(data, str(path))
    _resolve_paths(data, here)
    parent = data.pop("base", None)
    if parent is None:
        return data
    parent_path = (here / str(parent)).resolve()
    if parent_path in seen:
        raise ConfigError(f"config file {path}: 'base: {parent}' makes a cycle; remove one of the base keys")
    return _merge(_read_yaml(parent_path, seen + (parent_path,)), data)


def renamed(data: dict, source: str) -> dict:
    """data with every key of RENAMED at its new place (a warning names each; the new name wins if both are given)."""
    data = _merge({}, data)  # a copy, nested sections included
    for old, new in RENAMED.items():
        *sections, key = old.split(".")
        node = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            value = node.pop(key)
            log.warning("%s: %s is now %s; the value is read from there", source, old, new)
            *new_sections, new_key = new.split(".")
            target = data
            for section in new_sections:
                target = target.setdefault(section, {})
            target.setdefault(new_key, value)
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve(value: str, base: Path) -> str:
    """A relative path that exists under base becomes absolute; anything else (a Hub name) passes through."""
    if not value or value == "builtin" or Path(value).is_absolute():
        return value
    candidate = base / value
    return str(candidate) if candidate.exists() else value


def _resolve_paths(data: dict, base: Path) -> None:
    for dotted in _PATH_KEYS:
        *sections, key = dotted.split(".")
        node = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = _resolve(node[key], base)
        elif isinstance(node, dict) and isinstance(node.get(key), dict):  # a mapping of paths: a method's templates
            node[key] = {k: _resolve(v, base) if isinstance(v, str) else v for k, v in node[key].items()}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def describe(cls=RunConfig, prefix: str = "") -> list[str]:
    """One line per field: dotted key, default, help. Used by `daig config`."""
    lines = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, f"{prefix}{f.name}.")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"{prefix}{f.name} = {default!r}\n    {f.metadata.get('help', '')}")
    return lines
