"""PDF and HTML documents in the corpus: PDF pages in the chunk ids, HTML's main content as Markdown sections.

Run: OMP_NUM_THREADS=1 pytest -q tests/test_documents.py
The fixtures are in tests/data/documents/ (the PDFs were made once by make_pdfs.py there and are committed).
"""
import shutil

import pytest
from conftest import TEST_DATA
from pypdf import PdfWriter

from generation.data.corpus import DataError, load_corpus

DOCS = TEST_DATA / "documents"
NOISE = ("NAV-", "Ferncast Docs", "SITE-BANNER", "SIDEBAR-ADS", "FOOTER-", "TRACKING-SCRIPT", "font-family")


def one_line_error(path, match: str) -> str:
    with pytest.raises(DataError, match=match) as e:
        load_corpus(str(path), 50)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_pdf_chunks_say_their_page():
    chunks = load_corpus(str(DOCS / "manual.pdf"), chunk_words=200)
    assert [(c.id, c.source) for c in chunks] == [(f"manual.pdf:p{n}#0", f"manual.pdf:p{n}") for n in (1, 2, 3)]
    page2 = next(c for c in chunks if "only 2.4 GHz" in c.text)
    assert page2.id == "manual.pdf:p2#0" and "Pair button" in page2.text and "Rain" not in page2.text
    small = load_corpus(str(DOCS / "manual.pdf"), chunk_words=10)  # several chunks a page; none crosses a page
    assert small[1].id == "manual.pdf:p1#1" and [c.id for c in small] == [c.id for c in load_corpus(str(DOCS / "manual.pdf"), 10)]
    pages = {n: " ".join(c.text for c in small if c.source == f"manual.pdf:p{n}") for n in (1, 2, 3)}
    assert "eight zones" in pages[1] and "turns blue" in pages[2] and "48 hours" in pages[3]
    assert "Pairing" not in pages[1] + pages[3] and "Rain" not in pages[1] + pages[2]


def test_html_keeps_the_main_content_as_markdown_sections():
    chunks = load_corpus(str(DOCS / "ferncast.html"), chunk_words=60)
    assert [c.heading for c in chunks] == ["Ferncast controller guide", "Ferncast controller guide > Resetting",
                                           "Ferncast controller guide > Scripting the schedule",
                                           "Ferncast controller guide > Scripting the schedule > Rain delay"]
    assert [c.id for c in chunks] == [f"ferncast.html#{n}" for n in range(4)]
    assert not [(n, c.id) for c in chunks for n in NOISE if n in c.text]  # navigation, header, sidebar, footer, script
    assert chunks[1].text.startswith("## Resetting\n\nHold the **Mode** button") and "- Long press: reset." in chunks[1].text
    code = chunks[2]
    assert "```python\nfor zone in range(8):\n    controller.water(zone, minutes=5)\n" in code.text and code.code_share > 0.2


def test_html_charset_and_pages_without_a_main_region(tmp_path):
    page = tmp_path / "PAGE.HTM"  # the suffix in any case
    page.write_bytes('<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head><body>'
                     '<header>SITE</header><nav>MENU</nav><h1>Caf\xe9</h1><p>Cr\xe8me \u201cbr\xfbl\xe9e\u201d uses snake_case '
                     'and *stars*.</p><div role="contentinfo">FOOT</div></body></html>'.encode("cp1252"))
    [chunk] = load_corpus(str(page), 50)
    assert chunk.text == "# Café\n\nCrème “brûlée” uses snake_case and *stars*." and chunk.heading == "Café"
    post = tmp_path / "post.html"  # a lone <article>: its own <header> holds the title and stays
    post.write_text("<body><header>SITE</header><article><header><h1>Post</h1></header><p>Body.</p></article></body>")
    assert [c.text for c in load_corpus(str(post), 50)] == ["# Post\n\nBody."]


def test_a_folder_mixes_markdown_pdf_and_html_in_a_stable_order(tmp_path, caplog):
    (tmp_path / "a.md").write_text("# Notes\n\nThe Mode button resets the controller.\n")
    shutil.copy(DOCS / "ferncast.html", tmp_path / "guide.html")
    shutil.copy(DOCS / "scanned.pdf", tmp_path / "scan.pdf")
    (tmp_path / "sub").mkdir()
    shutil.copy(DOCS / "manual.pdf", tmp_path / "sub" / "manual.pdf")
    chunks = load_corpus(str(tmp_path), chunk_words=200)
    assert list(dict.fromkeys(c.source for c in chunks)) == ["a.md", "guide.html", "sub/manual.pdf:p1", "sub/manual.pdf:p2",
                                                             "sub/manual.pdf:p3"]
    assert chunks[1].heading == "Ferncast controller guide" and chunks[-1].id == "sub/manual.pdf:p3#0"
    assert [c.id for c in chunks] == [c.id for c in load_corpus(str(tmp_path), chunk_words=200)]
    assert "scan.pdf has no text layer" in caplog.text  # a scan among text documents is skipped, by name


def test_scanned_damaged_and_locked_pdfs_get_one_line(tmp_path):
    one_line_error(DOCS / "scanned.pdf", r"scanned.pdf has no text layer \(a scanned PDF\?\); run OCR.*ocrmypdf")
    (tmp_path / "scans").mkdir()
    shutil.copy(DOCS / "scanned.pdf", tmp_path / "scans" / "scan.pdf")
    one_line_error(tmp_path / "scans", "folder .*scans has no text: its PDFs have no text layer")
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes((DOCS / "manual.pdf").read_bytes()[:1200])
    one_line_error(damaged, r"damaged.pdf could not be read as a PDF \(.*\); repair or remove it")
    (tmp_path / "mixed").mkdir()  # in a folder too: a damaged file is the user's to fix, unlike a scan
    shutil.copy(damaged, tmp_path / "mixed" / "damaged.pdf")
    (tmp_path / "mixed" / "a.txt").write_text("Some text.")
    one_line_error(tmp_path / "mixed", "damaged.pdf could not be read as a PDF")
    for name, password in (("locked.pdf", "secret"), ("open.pdf", "")):  # an empty user password opens
        writer = PdfWriter(clone_from=DOCS / "manual.pdf")
        writer.encrypt(user_password=password, owner_password="owner", algorithm="RC4-128")
        writer.write(tmp_path / name)
    one_line_error(tmp_path / "locked.pdf", r"locked.pdf is encrypted with a password; decrypt it first.*qpdf")
    assert [c.id for c in load_corpus(str(tmp_path / "open.pdf"), 200)] == [f"open.pdf:p{n}#0" for n in (1, 2, 3)]


def test_unsupported_and_empty_folders_name_the_new_types(tmp_path):
    (tmp_path / "deck.pptx").write_bytes(b"PK")
    one_line_error(tmp_path / "deck.pptx", r"unsupported file type '.pptx'; use a .txt, .md, .pdf or .html file")
    (tmp_path / "none").mkdir()
    one_line_error(tmp_path / "none", r"has no .txt, .md, .pdf or .html files")
