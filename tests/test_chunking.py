"""Structure-aware chunking: fences stay whole, headings start chunks, code/log share drives DAIG's chunk weight.

Run: OMP_NUM_THREADS=1 pytest -q tests/test_chunking.py
"""
import pytest

from generation.config import GenerationConfig
from generation.data.corpus import DataError, chunk_document, load_corpus, sampling_weight

CODE_1 = """def reset(controller):
    if controller.busy:
        controller.wait(timeout=10)

    controller.press("Mode", seconds=10)
    return controller.status()"""

CODE_2 = """for zone in range(8):
\tprint(zone)"""

MANUAL = f"""# Top

The Ferncast controller waters up to eight zones and resets when the Mode button is held.

```python
{CODE_1}
```

## Sub

Pairing uses the app and only 2.4 GHz networks are supported by the radio.

```python
{CODE_2}
```
"""

LOGS = """2024-01-02 10:11:12 INFO server started on port 8080
2024-01-02 10:11:13 DEBUG connection from 10.0.0.1 accepted
10:11:14,123 WARNING slow response from sensor S1
[DEBUG] cache miss for key zone-3
ERROR: rain sensor disconnected at terminal S2"""


def fence_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.lstrip().startswith(("```", "~~~"))]


def code_lines(text: str) -> list[str]:
    """The lines between fence markers, as written."""
    out, inside = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            out.append(line)
    return out


def test_markdown_fences_stay_intact_and_headings_give_paths(tmp_path):
    (tmp_path / "manual.md").write_text(MANUAL, encoding="utf-8")
    chunks = load_corpus(str(tmp_path), chunk_words=60)
    assert [c.id for c in chunks] == [f"manual.md#{i}" for i in range(len(chunks))] and len(chunks) == 2
    assert [c.heading for c in chunks] == ["Top", "Top > Sub"]
    assert chunks[0].text.startswith("# Top\n\n") and chunks[1].text.startswith("## Sub\n\n")
    assert all(len(fence_lines(c.text)) % 2 == 0 for c in chunks)
    assert f"```python\n{CODE_1}\n```" in chunks[0].text  # indentation, tabs and the inner blank line, byte for byte
    assert f"```python\n{CODE_2}\n```" in chunks[1].text
    assert 0 < chunks[0].code_share < 1


def test_long_fence_is_split_at_its_blank_lines_and_refenced():
    code = "\n\n".join(f"def step_{i}(zone):\n    zone.open(valve={i})\n    return zone.flow()" for i in range(6))
    text = f"# Watering\n\nSteps the scheduler runs.\n\n```python\n{code}\n```\n"
    chunks = chunk_document("steps.md", text, chunk_words=20)
    fenced = [c for c in chunks if "```" in c.text]
    assert len(fenced) > 1
    for c in fenced:
        body = c.text[c.text.index("```python"):]
        assert body.startswith("```python\n") and body.endswith("\n```")
        assert code_lines(c.text) and all(code_lines(c.text)[i] for i in (0, -1))  # cut at blank lines, not mid-def
    got = [line for c in fenced for line in code_lines(c.text)]
    assert [line for line in got if line] == [line for line in code.split("\n") if line]


def test_no_chunk_starts_inside_a_fence():
    paras = "\n\n".join(f"Paragraph {i} explains how zone {i} is watered in the morning." for i in range(4))
    fence = "```bash\n" + "\n".join(f"ferncast zone {i} --minutes 10" for i in range(12)) + "\n```"
    text = f"{paras}\n\n{fence}\n\n~~~\nplain tilde fence\n\nwith a blank line\n~~~\n\n{paras}\n"
    for chunk_words in (7, 15, 40):
        for c in chunk_document("doc.md", text, chunk_words):
            lines = c.text.split("\n")
            assert len(fence_lines(c.text)) % 2 == 0, c.text
            assert not any(line.startswith("ferncast") for line in lines[:1]), c.text


def test_log_chunk_is_code_heavy_and_downweighted():
    text = f"# Logs\n\n{LOGS}\n\n# Reset\n\nHold the Mode button for ten seconds to reset the controller.\n"
    logs, prose = chunk_document("run.md", text, chunk_words=80)
    assert logs.code_share > 0.8 and prose.code_share == 0
    assert [sampling_weight(logs, p, 0.8) for p in ("downweight", "skip", "keep")] == [0.25, 0.0, 1.0]
    assert [sampling_weight(prose, p, 0.8) for p in ("downweight", "skip", "keep")] == [1.0, 1.0, 1.0]
    plain = chunk_document("run.txt", LOGS + "\n    at Sensor.read(sensor.py:42)", chunk_words=80)
    assert plain[0].code_share == 1.0  # a plain paragraph of mostly log lines counts whole


def test_ids_stable_and_txt_has_no_headings(tmp_path):
    (tmp_path / "notes.txt").write_text("# not a heading\nThe valve opens at dawn.\n\n# also not\n    indented line kept\n")
    first, again = load_corpus(str(tmp_path), 50), load_corpus(str(tmp_path), 50)
    assert first == again and [c.id for c in first] == ["notes.txt#0"]
    assert first[0].heading == "" and first[0].text == "# not a heading\nThe valve opens at dawn.\n\n# also not\n    indented line kept"


def test_nul_bytes_are_rejected_with_one_line(tmp_path):
    (tmp_path / "blob.txt").write_bytes(b"manual\x00\x01\x02 text")
    with pytest.raises(DataError, match=r"blob.txt is binary \(NUL bytes\), not text; remove it or convert it") as e:
        load_corpus(str(tmp_path), 50)
    assert "\n" not in str(e.value)


def test_code_chunks_config_is_validated():
    assert GenerationConfig(domain_path="x").daig.code_chunks == "downweight"
    from loop.config import build

    with pytest.raises(ValueError, match="daig.code_chunks: 'drop' is not one of keep, downweight, skip"):
        build(GenerationConfig, {"daig": {"code_chunks": "drop"}})
    with pytest.raises(ValueError, match=r"daig.max_code_share: must be in \[0, 1\], got 1.5"):
        build(GenerationConfig, {"daig": {"max_code_share": 1.5}})
