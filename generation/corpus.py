"""Domain data -> passages ("chunks") with stable ids.

Accepted: a folder of .txt/.md files (recursive), a .jsonl file, a `datasets` folder written by
save_to_disk, or a `datasets` Hub name. Paragraphs (blank-line separated) are packed into chunks of about
`chunk_words` words; a chunk id is '<source>#<n>', stable as long as the source text is unchanged.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")


class DataError(ValueError):
    """Bad user data; the message names the file and the fix."""


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    text: str


def load_documents(path: str, split: str = "train", text_field: str = "text") -> list[tuple[str, str]]:
    """Return (source name, text) pairs in a stable order."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "dataset_info.json").exists() and not (p / "dataset_dict.json").exists():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"domain data folder {p} has no .txt or .md files; add some or point generation.domain_path elsewhere")
        return [(str(f.relative_to(p)), _read_text(f)) for f in files]
    if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES:
        return [(p.name, _read_text(p))]
    if p.is_file() and p.suffix.lower() == ".jsonl":
        return [(f"{p.name}:{i}", text) for i, text in enumerate(_jsonl_field(p, text_field))]
    if p.is_file():
        raise DataError(f"domain data {p}: unsupported file type {p.suffix!r}; use a folder of .txt/.md files, a .jsonl file or a dataset")
    rows = load_rows(path, split)
    if rows and text_field not in rows[0]:
        raise DataError(f"dataset {path} has no field {text_field!r} (fields: {', '.join(rows[0])}); set generation.domain_text_field")
    return [(f"{Path(path).name}:{i}", str(r[text_field])) for i, r in enumerate(rows)]


def load_rows(name_or_path: str, split: str) -> list[dict]:
    """Rows of a `datasets` dataset: a save_to_disk folder, or a Hub name (fails offline with a clear line)."""
    import datasets

    p = Path(name_or_path).expanduser()
    try:
        if p.is_dir():
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"dataset {p} has no split {split!r} (splits: {', '.join(ds)})")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name_or_path, split=split)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        raise DataError(f"{name_or_path!r} is not a local path and could not be loaded with datasets ({type(e).__name__}: "
                        f"{str(e)[:200]}); check the path, or the dataset name and your network") from None
    return [dict(r) for r in ds]


def _read_text(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{f} is not UTF-8 (byte {e.start}); convert it, e.g. `iconv -f latin1 -t utf-8 {f.name}`") from None


def read_jsonl(p: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object raises DataError naming it."""
    rows = []
    for n, line in enumerate(_read_text(p).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(row, dict):
            raise DataError(f"{p}:{n}: each line must be a JSON object of fields")
        rows.append((n, row))
    return rows


def _jsonl_field(p: Path, text_field: str) -> list[str]:
    texts = []
    for n, row in read_jsonl(p):
        if text_field not in row:
            raise DataError(f"{p}:{n}: no field {text_field!r}; set generation.domain_text_field to the field with the text")
        texts.append(str(row[text_field]))
    return texts


def chunk_text(text: str, chunk_words: int) -> list[str]:
    """Pack blank-line paragraphs into chunks of about chunk_words words; split longer paragraphs."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks, current = [], []
    for para in paragraphs:
        words = para.split()
        for i in range(0, len(words), chunk_words):
            piece = words[i:i + chunk_words]
            if current and len(current) + len(piece) > chunk_words:
                chunks.append(" ".join(current))
                current = []
            current += piece
    if current:
        chunks.append(" ".join(current))
    return chunks


def load_corpus(path: str, chunk_words: int, split: str = "train", text_field: str = "text") -> list[Chunk]:
    p = Path(path).expanduser()
    if not path:
        raise DataError("generation.domain_path is empty; point it at your documents")
    docs = load_documents(path, split, text_field) if p.exists() or not path.startswith((".", "/", "~")) else None
    if docs is None:
        raise DataError(f"domain data {path} does not exist; fix generation.domain_path")
    chunks = [Chunk(f"{source}#{i}", source, text) for source, doc in docs for i, text in enumerate(chunk_text(doc, chunk_words))]
    if not chunks:
        raise DataError(f"domain data {path} has no text (all {len(docs)} documents are empty); add documents with text")
    return chunks
