"""Command line: `daig run CONFIG --out DIR [key=value ...]`, `daig config`, `daig models`, `daig export`, `daig export-data`,
`daig report`, `daig trace`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "filelock", "datasets", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="daig", description="Closed-loop generate-and-train instruction tuning.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of its one line (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the loop", description="daig run configs/quickstart.yaml --out runs/quickstart training.lora_r=16")
    run_p.add_argument("config", help="YAML config file")
    run_p.add_argument("--out", required=True, help="output folder (must not already hold a run)")
    run_p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.lora_r=16 rounds=3")
    cfg_p = sub.add_parser("config", help="print every config key with its default and help, or a config resolved")
    cfg_p.add_argument("config", nargs="?", help="YAML config to resolve (omit to list all keys)")
    cfg_p.add_argument("overrides", nargs="*")
    abl_p = sub.add_parser("ablate", help="run a grid of arms x seeds sharing one teacher cache",
                           description="daig ablate configs/ablations/policies.yaml --out runs/ablations/policies")
    abl_p.add_argument("ablation", help="ablation YAML (base, overrides, arms, seeds)")
    abl_p.add_argument("--out", required=True, help="ablation folder (rerun the same command to continue an interrupted one)")
    res_p = sub.add_parser("resume", help="continue a killed run from its last finished stage", description="daig resume runs/quickstart")
    res_p.add_argument("run_dir")
    res_p.add_argument("--allow-pickle", action="store_true",
                       help="resume from an older version's checkpoint.pkl; unpickling runs any code the file names, so only for folders you trust")
    sub.add_parser("models", help="list the packaged offline models")
    exp_p = sub.add_parser("export", help="copy or merge a round's adapter out of a run",
                           description="daig export runs/quickstart --out my-adapter [--round 2] [--merge] [--push-to-hub user/name]")
    exp_p.add_argument("run_dir")
    exp_p.add_argument("--out", required=True)
    exp_p.add_argument("--round", type=int, help="round number (default: the last with an adapter)")
    exp_p.add_argument("--merge", action="store_true", help="merge into the base model and save a full model")
    _hub_flags(exp_p, "the exported folder")
    dat_p = sub.add_parser("export-data", help="a run's rows as a Hugging Face dataset (train, validation, test, rejected)",
                           description="daig export-data runs/quickstart --out my-data [--push-to-hub user/name] [--public] [--license cc-by-4.0]")
    dat_p.add_argument("run_dir")
    dat_p.add_argument("--out", required=True, help="folder to write (new or empty): save_to_disk folder, data/*.parquet, README.md, config.yaml")
    dat_p.add_argument("--license", default="unknown", metavar="ID",
                       help="the card's licence field, a Hub licence id such as cc-by-4.0 (default: unknown); the rows quote your documents and the teacher")
    _hub_flags(dat_p, "the card, config.yaml and data/*.parquet")
    rep_p = sub.add_parser("report", help="write an HTML report (plots and tables) of a run or an ablation",
                           description="daig report runs/quickstart [--out report.html]")
    rep_p.add_argument("path", help="a run folder (daig run --out) or an ablation folder (daig ablate)")
    rep_p.add_argument("--out", help="HTML file to write (default: PATH/report.html)")
    tr_p = sub.add_parser("trace", help="print the lineage of one generated row (kept or rejected)",
                          description="daig trace runs/quickstart r1-00003 [--json]")
    tr_p.add_argument("run_dir")
    tr_p.add_argument("example_id", help="the row's id, e.g. r1-00003")
    tr_p.add_argument("--json", action="store_true", help="print the lineage as JSON")
    return parser, sub


def _hub_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--push-to-hub", metavar="USER/NAME", help=f"upload {what} to this Hub repo (token from HF_TOKEN or `hf auth login`, never stored)")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True,
                     help="create the Hub repo private (the default, so nothing goes public by accident)")
    vis.add_argument("--public", dest="private", action="store_false", help="create the Hub repo public; an existing repo keeps its visibility either way")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, overrides gathered wherever they stand (argparse alone does not take positionals after
    --out); a stray argument exits with the subcommand's usage."""
    parser, sub = build_parser()
    debug = "--debug" in argv  # accepted anywhere, not only before the command
    args, extra = parser.parse_known_args([a for a in argv if a != "--debug"])
    args.debug = debug
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and args.command not in ("run", "config")):
        sub_parser = sub.choices[args.command]  # its usage, not the top level's
        if args.command in ("run", "config") and not any(x.startswith("-") for x in stray):
            sub_parser.error(f"overrides are key=value, e.g. training.lora_r=16; got: {' '.join(stray)}")
        sub_parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv))

    from loop.config import ConfigError, describe, load_config, to_dict

    try:
        if args.command == "models":
            from loop.models import PACKAGED

            for name, m in PACKAGED.items():
                print(f"{name}: {m.note}; upstream {m.hub_id}; from {', '.join(f'{d}=={v}' for d, v, _ in m.parts[:2])}{' ...' if len(m.parts) > 2 else ''}; licence {m.licence}")
            return 0
        if args.command == "export":
            _setup_logging()
            from loop.export import export, push_to_hub

            folder = _exported(args, lambda: export(args.run_dir, args.out, args.round, args.merge, repo_id=args.push_to_hub))
            if folder is None:
                return 2
            print(f"exported to {folder}")
            again = f"`hf upload {args.push_to_hub} {shlex.quote(str(folder))} {'--private' if args.private else '--no-private'}`"
            return _push(args, folder, lambda: push_to_hub(folder, args.push_to_hub, args.private), again)
        if args.command == "export-data":
            _setup_logging()
            import datasets

            from loop.export import push_to_hub
            from loop.export_data import export_data, upload_paths

            datasets.disable_progress_bars()  # a few hundred rows: bars would only clutter the output
            folder = _exported(args, lambda: export_data(args.run_dir, args.out, args.push_to_hub, args.license))
            if folder is None:
                return 2
            print(f"dataset written to {folder} (datasets.load_from_disk reads it; Parquet in {folder / 'data'})")
            return _push(args, folder, lambda: push_to_hub(folder, args.push_to_hub, args.private, "dataset", upload_paths(folder)),
                         f"`hf upload {args.push_to_hub} {shlex.quote(str(folder))} --repo-type dataset --include README.md --include config.yaml "
                         f"--include 'data/*.parquet' {'--private' if args.private else '--no-private'}`")
        if args.command == "report":
            from loop.report import write_report

            try:
                print(f"report written to {write_report(args.path, args.out)}")
            except FileNotFoundError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            return 0
        if args.command == "trace":
            from loop.trace import TraceError, format_trace, trace

            try:
                lineage = trace(args.run_dir, args.example_id)
            except (FileNotFoundError, TraceError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(json.dumps(lineage, ensure_ascii=False, indent=1) if args.json else format_trace(lineage))
            return 0
        if args.command == "config":
            if args.config is None:
                text = "\n".join(describe())
            else:
                import yaml

                text = yaml.safe_dump(to_dict(load_config(args.config, args.overrides)), sort_keys=False)
            try:
                print(text)
            except BrokenPipeError:  # `daig config | head`: silence the flush at exit (Python docs' recipe)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if args.command == "ablate":
            _setup_logging()
            from loop.ablate import run_ablation

            rows = run_ablation(args.ablation, args.out)
            print(open(os.path.join(args.out, "summary.md"), encoding="utf-8").read())
            return 0 if all(r["status"] == "done" for r in rows) else 1
        if args.command == "resume":
            from loop.config import build, RunConfig
            from loop.runfolder import read_config

            cfg_path = os.path.join(args.run_dir, "config.yaml")
            if not os.path.isfile(cfg_path):
                print(f"error: {args.run_dir} has no config.yaml; pass the folder a `daig run --out` made", file=sys.stderr)
                return 2
            cfg = build(RunConfig, read_config(args.run_dir))
        else:
            cfg = load_config(args.config, args.overrides)
        from loop.device import placement
        from training.sft import check_hardware

        check_hardware(cfg.training)
        placement(cfg)  # device: cuda on a machine without one stops here, in one line
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    # Hub access is the user's environment's: HF_HUB_OFFLINE is not set for them, so a Hub dataset id works beside the
    # packaged models (which load from local folders and make no Hub call; measured 2026-12-07, LOG.md).
    _setup_logging()
    import sqlite3

    from generation.teacher.cache import CacheError
    from eval.sets import EvalSetError
    from generation.data.corpus import DataError
    from generation.teacher.backends import TeacherError, TeacherUnavailable
    from loop.runfolder import CHECKPOINT, CheckpointError
    from loop.controller import resume, run
    from loop.models import ModelError
    from loop.preflight import PreflightError

    known = (DataError, EvalSetError, TeacherError, ModelError, CacheError, CheckpointError, PreflightError, ConfigError, FileExistsError,
             FileNotFoundError)
    try:
        if args.command == "resume":
            resume(args.run_dir, allow_pickle=args.allow_pickle)
        else:  # a W&B sweep agent runs the command without a shell: expand $WANDB_RUN_ID and friends here
            run(cfg, os.path.expandvars(args.out))
    except (*known, OSError, sqlite3.Error, ValueError) as e:
        if args.debug:
            raise
        # The endpoint went down mid-run, or is still down at a resume: everything so far is saved and the same
        # folder continues later (exit 3, apart from bad input's 2, so a script can wait and retry). An endpoint
        # unreachable at a new run's start may be a wrong URL: that is bad input.
        down_at_resume = args.command == "resume" and getattr(e, "endpoint_down", False)
        code = 3 if isinstance(e, TeacherUnavailable) or down_at_resume else 2
        where = args.run_dir if args.command == "resume" else os.path.expandvars(args.out)
        again = f"`daig resume {where}`" if os.path.exists(os.path.join(where, CHECKPOINT)) else "the same `daig run` command"
        hint = f" Everything so far is saved: {again} continues." if code == 3 else ""
        detail = str(e) if isinstance(e, known) else f"{type(e).__name__}: {e}"  # an unforeseen one names its type
        print(f"error: {detail}{hint} (--debug shows the traceback)", file=sys.stderr)
        return code
    return 0


def _exported(args: argparse.Namespace, build):
    """build() an export (after checking --push-to-hub's repo id); a bad RUN_DIR, --out or repo id is one line and None."""
    from loop.export import check_repo_id

    try:
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)
        return build()
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return None


def _push(args: argparse.Namespace, folder, push, again: str) -> int:
    """Run a --push-to-hub upload; a failure (no login, no network, no rights) is one line, the export kept."""
    if not args.push_to_hub:
        return 0
    try:
        url = push()
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many kinds (auth, HTTP, offline); each gets one line
        if args.debug:
            raise
        print(f"error: pushing {folder} to {args.push_to_hub} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"the export is complete; log in with `hf auth login` or set HF_TOKEN, then push with {again}",
              file=sys.stderr)
        return 2
    print(f"pushed ({'private' if args.private else 'public'} repo {args.push_to_hub}): {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
