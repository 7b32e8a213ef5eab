# python tests/data/documents/make_pdfs.py  -- rewrites the PDF fixtures beside this file (run once; the PDFs are committed).
"""Small real PDFs for tests/test_documents.py, drawn with matplotlib (already a dependency) in the PDF core fonts,
so the text layer is plain Helvetica text that any PDF reader extracts. scanned.pdf has a page with shapes and no text."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams.update({"pdf.use14corefonts": True, "pdf.compression": 9})
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
MANUAL = [  # one list of paragraphs per page; each paragraph's lines are drawn as written
    ["Ferncast controller manual",
     "The Ferncast controller waters up to eight zones\nfrom one wall unit on a 24 V transformer.",
     "It keeps its schedule for a week without power."],
    ["Pairing",
     "Pairing uses the Ferncast app and only 2.4 GHz\nWi-Fi networks are supported by the radio.",
     "Hold the Pair button until the light turns blue."],
    ["Rain delay",
     "A rain sensor on terminal S2 pauses all zones\nfor 48 hours after rain."],
]


def page(paragraphs: list[str]) -> Figure:
    fig = Figure(figsize=(5.8, 8.3))  # A5
    y = 0.92
    for text in paragraphs:
        fig.text(0.08, y, text, fontsize=12, va="top", family="sans-serif")
        y -= 0.06 * (text.count("\n") + 2)
    return fig


def write(path: Path, figures: list[Figure]) -> None:
    with PdfPages(path, metadata={"Creator": "make_pdfs.py", "Producer": "matplotlib", "CreationDate": None}) as pdf:
        for fig in figures:
            pdf.savefig(fig)


if __name__ == "__main__":
    write(HERE / "manual.pdf", [page(p) for p in MANUAL])
    blank = Figure(figsize=(5.8, 8.3))
    blank.add_artist(matplotlib.patches.Rectangle((0.1, 0.1), 0.8, 0.8, transform=blank.transFigure, color="0.8"))
    write(HERE / "scanned.pdf", [blank])
