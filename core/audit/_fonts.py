"""A Unicode font for the PDF report, taken from a package (never a system path).

Noto Sans CJK (the `cvttf-notosanscjk-regular` package, SIL Open Font License) covers
Latin, Greek, Cyrillic, CJK and common symbols. fpdf2 mis-measures its CFF outlines, so
the glyphs a report needs are subset and converted to TrueType outlines first; the result
is a few dozen kilobytes, embedded in the PDF. Characters the font lacks print as '?'.
"""

from __future__ import annotations

import functools
import io
import threading
from pathlib import Path

from fontTools import subset
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont, newTable

_lock = threading.Lock()
BASE_TEXT = "".join(chr(c) for c in range(0x20, 0x7F)) + "…–—→•✓·€£¥©®°±×÷"


def font_path() -> Path:
    """Return the bundled font file. Raise RuntimeError if the package is not installed."""
    try:
        import cvttf_NotoSansCJK_Regular as package
    except ImportError:
        raise RuntimeError(
            "the PDF report needs the cvttf-notosanscjk-regular package (requirements.txt)"
        ) from None
    return Path(package.__file__).parent / "NotoSansCJKtc-Regular.otf"


@functools.cache
def _cmap() -> frozenset[int]:
    with TTFont(font_path(), lazy=True) as font:
        return frozenset(font.getBestCmap())


def printable(text: str) -> str:
    """Return `text` with the characters the font lacks replaced by '?'."""
    cmap = _cmap()
    return "".join(c if ord(c) in cmap or c in "\n\t" else "?" for c in text)


def subset_ttf(text: str) -> bytes:
    """Return a TrueType font with the glyphs for BASE_TEXT and `text`."""
    with _lock:
        font = TTFont(font_path(), lazy=True)
    try:
        return _subset(font, text)
    finally:
        font.close()


def _subset(font: TTFont, text: str) -> bytes:
    options = subset.Options()
    options.layout_features = []
    options.hinting = False
    options.desubroutinize = True
    options.notdef_outline = True
    options.name_IDs = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=BASE_TEXT + text)
    subsetter.subset(font)
    _cff_to_glyf(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def _cff_to_glyf(font: TTFont) -> None:
    """Replace CFF (cubic) outlines by TrueType (quadratic) ones, as fontTools' otf2ttf does."""
    order = font.getGlyphOrder()
    glyphs = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyphs)
        glyphs[name].draw(Cu2QuPen(pen, max_err=1.0, reverse_direction=True))
        glyf[name] = pen.glyph()
    font["glyf"] = glyf
    font["loca"] = newTable("loca")
    maxp = font["maxp"]
    maxp.tableVersion = 0x00010000
    for attr in (
        "maxZones", "maxTwilightPoints", "maxStorage", "maxFunctionDefs",
        "maxInstructionDefs", "maxStackElements", "maxSizeOfInstructions",
        "maxComponentElements", "maxComponentDepth",
    ):  # fmt: skip
        setattr(maxp, attr, 0)
    maxp.maxZones = 1
    font["post"].formatType = 3.0
    font["head"].glyphDataFormat = 0
    for table in ("CFF ", "VORG"):
        if table in font:
            del font[table]
    font.sfntVersion = "\x00\x01\x00\x00"
