"""Domain data -> passages ("chunks") with stable ids.

Accepted: a folder of .txt/.md/.pdf/.html/.htm files (recursive), one such file, a .jsonl/.json/.csv/.parquet
file, a `datasets` folder written by save_to_disk, or a `datasets` Hub name.

PDF and HTML are turned into text by documents.py. A PDF gives one document per page with text, named
'<file>:p<page>' (page numbers from 1), so every chunk id says its page: 'manual.pdf:p3#0'. A PDF with no text
layer (scanned) is an error on its own and skipped with a warning in a folder. An HTML page's main content becomes
Markdown (navigation, header, footer and sidebars dropped) and is chunked as Markdown.

Chunking is structure-aware. A .md or HTML document is parsed into ATX headings, fenced code blocks (``` or ~~~) and
paragraphs; everything else (.txt, PDF pages, JSONL and dataset rows) into paragraphs only. Blocks are packed into chunks
of about `chunk_words` words, keeping newlines and indentation. A heading starts a new chunk and every chunk
records its heading path ('Setup > Wi-Fi'). A fence is never cut except at its own blank lines (or lines), each
piece re-fenced with the same info string. `code_share` is the fraction of a chunk's words that are code or
log lines, so DAIG can downweight or skip chunks that are mostly code (`sampling_weight`).
A chunk id is '<source>#<n>', stable as long as the source text is unchanged.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")
DOCUMENT_SUFFIXES = (".pdf", ".html", ".htm")  # converted to text by documents.py
MARKDOWN_SUFFIXES = (".md", ".html", ".htm")  # chunked as Markdown (HTML is Markdown once loaded)
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # files of rows (read_table)
log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad user data; the message names the file and the fix."""


@dataclass(frozen=True)
class Chunk:
    id: str  # '<source>#<n>', n the chunk's index in its document
    source: str
    text: str
    heading: str = ""  # enclosing headings, outermost first: 'Advanced > Authentication'; '' when there are none
    code_share: float = 0.0  # fraction of the words in code fences or on log-like lines


def load_documents(path: str, split: str = "train", text_field: str = "text", hub: dict | None = None) -> list[tuple[str, str]]:
    """Return (source name, text) pairs in a stable order (hub: load_dataset options for a Hub id)."""
    p = Path(path).expanduser()
    if p.is_dir() and not saved_dataset(p):
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES + DOCUMENT_SUFFIXES)
        if not files:
            raise DataError(f"domain data folder {p} has no .txt, .md, .pdf or .html files; add some or point "
                            "generation.domain_path elsewhere")
        docs = [doc for f in files for doc in _read_file(f, str(f.relative_to(p)), in_folder=True)]
        if not docs:  # every file was a PDF with no text layer, each already named in a warning
            raise DataError(f"domain data folder {p} has no text: its PDFs have no text layer (scanned); run OCR on them, "
                            "e.g. `ocrmypdf in.pdf out.pdf`")
        return docs
    if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + DOCUMENT_SUFFIXES:
        return _read_file(p, p.name, in_folder=False)
    if p.is_file() and p.suffix.lower() == ".jsonl":
        return [(f"{p.name}:{i}", text) for i, text in enumerate(_jsonl_field(p, text_field))]
    if p.is_file() and p.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"domain data {p}: unsupported file type {p.suffix!r}; use a .txt, .md, .pdf or .html file or a "
                        "folder of them, a .jsonl, .json, .csv or .parquet file, or a dataset")
    rows = read_rows(path, split, hub)
    if rows and text_field not in rows[0]:
        raise DataError(f"{path} has no field {text_field!r} (fields: {', '.join(rows[0])}); set generation.domain_text_field")
    return [(f"{p.name}:{i}", str(r[text_field])) for i, r in enumerate(rows)]


def saved_dataset(p: Path) -> bool:
    """Whether folder p is a `datasets` save_to_disk folder (a Dataset or a DatasetDict), not a folder of files."""
    return any((p / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))


def read_rows(spec: str, split: str = "train", hub: dict | None = None) -> list[dict]:
    """Rows of a table file (read_table), or of a `datasets` folder or Hub id (load_rows; hub: its load_dataset options)."""
    p = Path(spec).expanduser()
    if p.is_file():
        return read_table(p)
    if not p.exists() and (spec.startswith((".", "/", "~")) or p.suffix.lower() in TABLE_SUFFIXES):
        raise DataError(f"{spec} does not exist; check the path")
    return load_rows(spec, split, hub)


def load_rows(name_or_path: str, split: str, hub: dict | None = None) -> list[dict]:
    """Rows of a `datasets` dataset (open_dataset)."""
    return [dict(r) for r in open_dataset(name_or_path, split, hub)]


def open_dataset(name_or_path: str, split: str, hub: dict | None = None, split_field: str = "the split field"):
    """One split of a `datasets` dataset: a save_to_disk folder, a folder of data files (a cloned Hub repo), or a Hub
    id. hub: load_dataset's options for it ({config, revision, data_files}, from generation.datasets). Hub access is
    the user's environment's (HF_HUB_OFFLINE, HF_TOKEN); an unreachable id is one line."""
    import datasets

    p, hub = Path(name_or_path).expanduser(), hub or {}
    try:
        if p.is_dir() and saved_dataset(p):
            ds = datasets.load_from_disk(str(p))
        else:
            ds = datasets.load_dataset(name_or_path, hub.get("config") or None, split=split, revision=hub.get("revision") or None,
                                       data_files=hub.get("data_files") or None)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{split_field}: dataset {name_or_path} has no split {split!r} (splits: {', '.join(ds)}); set one of them")
            ds = ds[split]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        where = "a local folder that" if p.is_dir() else "not a local path and"
        raise DataError(f"{name_or_path!r} is {where} could not be loaded with datasets ({type(e).__name__}: {str(e)[:200]}); "
                        "check the path, or the dataset id, its generation.datasets options and your network (HF_HUB_OFFLINE=1 "
                        "allows only datasets already in your Hugging Face cache)") from None
    return ds


def _read_file(f: Path, name: str, in_folder: bool) -> list[tuple[str, str]]:
    """(source, text) of one document file; a PDF gives one pair per page with text, named '<name>:p<page>'."""
    suffix = f.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [(name, _read_text(f))]
    # Imported here, not at the top: documents imports DataError from this module.
    from generation.data import documents

    if suffix != ".pdf":
        return [(name, documents.html_markdown(f))]
    pages = documents.pdf_pages(f)
    if not pages:
        message = f"{f} has no text layer (a scanned PDF?); run OCR on it first, e.g. `ocrmypdf {f.name} out.pdf`"
        if not in_folder:
            raise DataError(message)
        log.warning("skipped: %s", message)  # one scan among text documents should not stop the run
    return [(f"{name}:p{n}", text) for n, text in pages]


def _read_text(f: Path) -> str:
    data = f.read_bytes()
    if b"\x00" in data:  # checked before decoding, so UTF-16 or a binary file gets this line, not "not UTF-8"
        raise DataError(f"{f} is binary (NUL bytes), not text; remove it or convert it")
    try:
        return data.decode("utf-8")
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


def read_table(p: Path) -> list[dict]:
    """The rows of a .jsonl, .json (a list of objects), .csv or .parquet file. pyarrow (installed with `datasets`) reads
    CSV and Parquet in memory, with no cache folder written; an empty CSV cell reads as None."""
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use {', '.join(TABLE_SUFFIXES)}, or a `datasets` folder or name")
    if suffix == ".jsonl":
        return [row for _, row in read_jsonl(p)]
    try:
        if suffix == ".json":
            rows = json.loads(_read_text(p))
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise DataError(f"{p}: a .json file must hold a list of objects (one per row); use .jsonl for one object per line")
            return rows
        import pyarrow.csv
        import pyarrow.parquet

        table = pyarrow.csv.read_csv(p) if suffix == ".csv" else pyarrow.parquet.read_table(p)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file: the user needs one line naming it
        raise DataError(f"{p} could not be read as {suffix} ({type(e).__name__}: {str(e)[:200]}); check the file") from None
    return table.to_pylist()


def _jsonl_field(p: Path, text_field: str) -> list[str]:
    texts = []
    for n, row in read_jsonl(p):
        if text_field not in row:
            raise DataError(f"{p}:{n}: no field {text_field!r}; set generation.domain_text_field to the field with the text")
        texts.append(str(row[text_field]))
    return texts


CODE_CHUNK_WEIGHTS = {"keep": 1.0, "downweight": 0.25, "skip": 0.0}

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_LOG_LINE = re.compile(r"^\s*\[?(?:\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|\d{2}:\d{2}:\d{2}(?:[,.]\d+)?\b"
                       r"|(?:TRACE|DEBUG|INFO|WARN|WARNING|ERROR|CRITICAL|FATAL)(?:[:\]]|\s))")


@dataclass(frozen=True)
class Block:
    """One parsed unit: a heading, a fenced code block, or a paragraph (lists and tables are paragraphs)."""
    kind: str  # "heading", "code" or "para"
    lines: tuple[str, ...]  # as written, trailing whitespace stripped; for "code" the body only
    level: int = 0  # heading level 1..6
    fence: tuple[str, str] = ("", "")  # code: the opening and closing fence lines

    def render(self) -> str:
        lines = (self.fence[0], *self.lines, self.fence[1]) if self.kind == "code" else self.lines
        return "\n".join(lines)


def parse_blocks(text: str, markdown: bool) -> list[Block]:
    """Split a document into blocks; plain text has paragraphs only (a '#' line or ``` is just text)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    blocks, para, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        fence = _open_fence(line) if markdown else None
        heading = _HEADING.match(line) if markdown else None
        if para and (fence or heading or not line):
            blocks.append(Block("para", tuple(para)))
            para = []
        if fence:
            end = _fence_end(lines, i + 1, fence[2])
            body = lines[i + 1:end]
            if end == len(lines):  # unclosed: runs to the end of the document (CommonMark) and is closed here
                while body and not body[-1]:
                    body.pop()
            close = lines[end] if end < len(lines) else fence[1] + fence[2]
            blocks.append(Block("code", tuple(body), fence=(line, close)))
            i = end
        elif heading:
            blocks.append(Block("heading", (line,), level=len(heading[1])))
        elif line:
            para.append(line)
        i += 1
    if para:
        blocks.append(Block("para", tuple(para)))
    return blocks


def _open_fence(line: str) -> re.Match | None:
    m = _FENCE.match(line)
    return None if m and m[2][0] == "`" and "`" in m[3] else m  # CommonMark: a ``` info string has no backticks


def _fence_end(lines: list[str], start: int, marker: str) -> int:
    """Index of the line that closes a fence opened with marker (same char, at least as long), or len(lines)."""
    close = re.compile(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$")
    return next((j for j in range(start, len(lines)) if close.match(lines[j])), len(lines))


def heading_text(block: Block) -> str:
    m = _HEADING.match(block.lines[0])
    return (m[2] or "").strip() if m else ""


def _words(text: str) -> int:
    return len(text.split())


def _code_words(block: Block) -> int:
    """Words in code fences or on log-like lines; a paragraph that is mostly log lines counts whole."""
    if block.kind == "code":
        return _words(block.render())
    if block.kind == "heading":
        return 0
    logs = [line for line in block.lines if _LOG_LINE.match(line)]
    if len(logs) * 2 > len(block.lines):
        return _words(block.render())
    return sum(_words(line) for line in logs)


def split_block(block: Block, chunk_words: int) -> list[Block]:
    """Pieces of at most about chunk_words words: a fence at its blank lines, then at lines (each piece re-fenced);
    a paragraph at lines, then at words."""
    if block.kind == "heading" or _words(block.render()) <= chunk_words:
        return [block]
    if block.kind == "para":
        lines = [piece for line in block.lines for piece in _split_words(line, chunk_words)]
        return [Block("para", tuple(g)) for g in _pack([[line] for line in lines], chunk_words)]
    budget = max(1, chunk_words - _words(block.fence[0]) - _words(block.fence[1]))
    segments = [piece for seg in _code_segments(block.lines) for piece in _pack([[line] for line in seg], budget)]
    pieces = [_strip_blank_edges(g) for g in _pack(segments, budget)]
    return [Block("code", tuple(g), fence=block.fence) for g in pieces if g]


def _code_segments(lines: tuple[str, ...]) -> list[list[str]]:
    """Code lines cut after each run of blank lines (the blanks stay at the end of their segment)."""
    segments, current = [], []
    for line in lines:
        if line and current and not current[-1]:
            segments.append(current)
            current = []
        current.append(line)
    return segments + [current]


def _strip_blank_edges(lines: list[str]) -> list[str]:
    """A fence piece cut at blank lines: its leading and trailing blank lines go, inner ones stay."""
    text_at = [i for i, line in enumerate(lines) if line]
    return lines[text_at[0]:text_at[-1] + 1] if text_at else []


def _pack(items: list[list[str]], budget: int) -> list[list[str]]:
    """Greedily concatenate runs of lines into groups of at most budget words (an item over budget stands alone)."""
    groups, current, n = [], [], 0
    for item in items:
        k = sum(_words(line) for line in item)
        if current and n + k > budget:
            groups.append(current)
            current, n = [], 0
        current, n = current + item, n + k
    return groups + ([current] if current else [])


def _split_words(line: str, chunk_words: int) -> list[str]:
    """A line longer than chunk_words, cut at word boundaries (the last resort: inner spacing is lost)."""
    words = line.split()
    if len(words) <= chunk_words:
        return [line]
    return [" ".join(words[i:i + chunk_words]) for i in range(0, len(words), chunk_words)]


def chunk_document(source: str, text: str, chunk_words: int, markdown: bool | None = None) -> list[Chunk]:
    """Pack a document's blocks into chunks of about chunk_words words, ids '<source>#<n>'.

    A heading closes the chunk before it and opens the next one; a fence is never cut except at its own
    blank lines (each piece re-fenced). markdown defaults to whether source ends in .md, .html or .htm.
    """
    markdown = source.lower().endswith(MARKDOWN_SUFFIXES) if markdown is None else markdown
    parts = []  # (blocks, heading path); the path is read at flush time, as only a flush changes the section
    stack, current, has_body = [], [], False  # stack: (level, text) of the enclosing headings
    for block in parse_blocks(text, markdown):
        if block.kind == "heading":
            if has_body:
                parts.append((current, _path(stack)))
                current, has_body = [], False
            stack = [(lv, t) for lv, t in stack if lv < block.level] + [(block.level, heading_text(block))]
            current = [b for b in current if b.level < block.level] + [block]  # drop empty sibling sections
            continue
        for piece in split_block(block, chunk_words):
            if has_body and _words(_render(current)) + _words(piece.render()) > chunk_words:
                parts.append((current, _path(stack)))
                current = []
            current.append(piece)
            has_body = True
    if current and (has_body or not parts):  # a trailing heading with no body is dropped, unless it is all there is
        parts.append((current, _path(stack)))
    return [_make_chunk(f"{source}#{i}", source, blocks, path) for i, (blocks, path) in enumerate(parts)]


def _path(stack: list[tuple[int, str]]) -> str:
    return " > ".join(text for _, text in stack)


def _render(blocks: list[Block]) -> str:
    return "\n\n".join(b.render() for b in blocks)


def _make_chunk(chunk_id: str, source: str, blocks: list[Block], heading: str) -> Chunk:
    text = _render(blocks)
    total = _words(text)
    return Chunk(chunk_id, source, text, heading, sum(map(_code_words, blocks)) / total if total else 0.0)


def chunk_text(text: str, chunk_words: int, markdown: bool = False) -> list[str]:
    """The texts of chunk_document's chunks (plain text unless markdown)."""
    return [c.text for c in chunk_document("", text, chunk_words, markdown)]


def sampling_weight(chunk: Chunk, code_chunks: str, max_code_share: float) -> float:
    """DAIG's sampling weight of a chunk: 1.0, or for a mostly-code/log chunk the code_chunks policy's weight."""
    if code_chunks not in CODE_CHUNK_WEIGHTS:
        raise ValueError(f"code_chunks: unknown policy {code_chunks!r}; use one of {', '.join(CODE_CHUNK_WEIGHTS)}")
    return CODE_CHUNK_WEIGHTS[code_chunks] if chunk.code_share > max_code_share else 1.0


def load_corpus(path: str, chunk_words: int, split: str = "train", text_field: str = "text", hub: dict | None = None) -> list[Chunk]:
    p = Path(path).expanduser()
    if not path:
        raise DataError("generation.domain_path is empty; point it at your documents")
    docs = load_documents(path, split, text_field, hub) if p.exists() or not path.startswith((".", "/", "~")) else None
    if docs is None:
        raise DataError(f"domain data {path} does not exist; fix generation.domain_path")
    chunks = [chunk for source, doc in docs for chunk in chunk_document(source, doc, chunk_words)]
    if not chunks:
        raise DataError(f"domain data {path} has no text (all {len(docs)} documents are empty); add documents with text")
    return chunks
