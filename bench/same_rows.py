"""Are two run folders the same data? Rows, eval sets, samples, training data and adapters, compared across code versions.

python bench/same_rows.py runs/before runs/after

Rows written before the one row schema (generation/rows.py) are read through rows.upgrade, so a run made before the
schema change compares equal to one made after when only the layout moved. Prints one line per file and ALL SAME.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generation.rows import upgrade  # noqa: E402


def rows(path: Path) -> list[dict]:
    return [upgrade(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(a: Path, b: Path) -> bool:
    same = True
    for r in sorted(int(p.name) for p in (a / "rounds").iterdir() if p.name.isdigit()):
        for name in ("data.jsonl", "rejected.jsonl", "eval_samples.jsonl"):
            ok = rows(a / "rounds" / str(r) / name) == rows(b / "rounds" / str(r) / name)
            print(f"round {r} {name}: {'same' if ok else 'DIFFERENT'}")
            same &= ok
        cards = [json.loads((x / "rounds" / str(r) / "adapter" / "daig_adapter.json").read_text()) for x in (a, b)
                 if (x / "rounds" / str(r) / "adapter" / "daig_adapter.json").exists()]
        weights = [(x / "rounds" / str(r) / "adapter" / "adapter_model.safetensors").read_bytes() for x in (a, b)
                   if (x / "rounds" / str(r) / "adapter" / "adapter_model.safetensors").exists()]
        ok = len(cards) != 1 and len({c["data_sha256"] for c in cards}) <= 1 and len(set(weights)) <= 1
        print(f"round {r} training data hash and adapter weights: {'same' if ok else 'DIFFERENT'}")
        same &= ok
    for name in ("validation.jsonl", "test.jsonl"):
        if (a / "eval" / name).exists() or (b / "eval" / name).exists():
            strip = lambda rs: [{k: v for k, v in x.items() if k != "chunk_id"} for x in rs]  # noqa: E731 (eval rows carry it on top too)
            ok = strip(rows(a / "eval" / name)) == strip(rows(b / "eval" / name))
            print(f"eval/{name}: {'same' if ok else 'DIFFERENT'}")
            same &= ok
    print("ALL SAME" if same else "NOT THE SAME")
    return same


if __name__ == "__main__":
    sys.exit(0 if main(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
