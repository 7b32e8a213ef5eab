"""PDF and HTML files -> text for the chunker in corpus.py. Pure Python, offline, no model, no GPU (LOG.md, issue 15).

PDF (pypdf): the text layer of each page on its own, so a chunk id can say its page. No OCR: a scanned PDF has no
text layer and gives no pages.
HTML (BeautifulSoup + markdownify): the main region (<main>, role=main, a lone <article>, else <body>) without
navigation, sidebars, scripts and forms, as Markdown, so headings and <pre> blocks feed the Markdown chunker.
"""
from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter
from pypdf import PdfReader
from pypdf.errors import DependencyError

from generation.data.corpus import DataError

NOISE_TAGS = ["nav", "aside", "script", "style", "noscript", "template", "form", "button", "svg", "iframe"]
NOISE_ROLES = ["navigation", "complementary", "search"]
PAGE_ROLES = ["banner", "contentinfo"]  # the site's header and footer, dropped when the page has no main region


def pdf_pages(f: Path) -> list[tuple[int, str]]:
    """(page number from 1, text) of every page with text; [] when the PDF has no text layer (scanned)."""
    try:
        reader = PdfReader(f)
        if reader.is_encrypted and not reader.decrypt(""):  # an empty user password (print/copy limits only) opens
            raise DataError(f"{f} is encrypted with a password; decrypt it first, e.g. "
                            f"`qpdf --decrypt --password=PW {f.name} out.pdf`")
        pages = [(n, page.extract_text() or "") for n, page in enumerate(reader.pages, 1)]
    except DataError:
        raise
    except DependencyError:  # AES encryption, even with an empty password, needs the optional `cryptography`
        raise DataError(f"{f} is AES-encrypted; `pip install cryptography` so pypdf can open it, or decrypt it with "
                        "qpdf") from None
    except Exception as e:  # noqa: BLE001 - pypdf raises many kinds on a damaged file; the user needs one line
        raise DataError(f"{f} could not be read as a PDF ({type(e).__name__}: {str(e)[:200]}); repair or remove it") from None
    return [(n, text) for n, text in pages if text.strip()]


def html_markdown(f: Path) -> str:
    """The page's main content as Markdown: ATX headings, fenced code, lists and tables; links and images as text."""
    data = f.read_bytes()
    if not data.strip():  # bs4 would log a decoding warning for an empty file
        return ""
    soup = BeautifulSoup(data, "html.parser")  # bytes: bs4 follows a BOM or <meta charset>, else guesses
    articles = soup.find_all("article")
    root = soup.find("main") or soup.find(attrs={"role": "main"}) or (articles[0] if len(articles) == 1 else None) \
        or soup.body or soup
    noise = root.find_all(NOISE_TAGS) + root.find_all(attrs={"role": NOISE_ROLES}) + root.find_all("a", class_="headerlink")
    if root is soup.body or root is soup:  # inside <main> or <article>, a <header> holds the title: kept there
        noise += root.find_all(["header", "footer"]) + root.find_all(attrs={"role": PAGE_ROLES})
    for tag in noise:
        if not tag.decomposed:  # already gone with an enclosing noise tag
            tag.decompose()
    md = MarkdownConverter(heading_style="ATX", bullets="-", strip=["a", "img"], escape_asterisks=False,
                           escape_underscores=False, code_language_callback=_code_language).convert_soup(root)
    return re.sub(r"\n{3,}", "\n\n", md).strip()


def _code_language(pre: Tag) -> str | None:
    """'python' for <pre class="language-python"> or <pre><code class="lang-python"> (HTML5, highlight.js, Prism)."""
    classes = (pre.get("class") or []) + ((pre.code.get("class") or []) if pre.code else [])
    return next((c.split("-", 1)[1] for c in classes if c.startswith(("language-", "lang-"))), None)
