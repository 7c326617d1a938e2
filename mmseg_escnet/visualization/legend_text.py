"""Legend text in any script: class names beyond ASCII are drawn with a TrueType font.

OpenCV's Hershey font, which draws the ASCII names of the legend, has ASCII glyphs only. A name
with other characters (``'ZAŻÓŁĆ'``, ``'猫'``) is drawn with Pillow's ``ImageFont`` and the first
font that has a glyph for each of its characters, looked for in this order:

1. the file named by ``$MMSEG_ESCNET_FONT`` (a ``.ttf``, ``.otf`` or ``.ttc``);
2. the system's fonts of :data:`FONT_FILES` (found with matplotlib's ``findSystemFonts``):
   DejaVu Sans (also shipped with matplotlib: Latin, Greek, Cyrillic...), then the Noto fonts
   (Debian's ``fonts-noto-core`` and ``fonts-noto-cjk``, which ``tools/setup_env.sh`` installs
   when run as root), then the system's other regular sans-serif fonts.

A character no font covers is drawn as :data:`MISSING_MARK` (a white square), and a warning names
it, the class and how to install a font that covers it, once per class name.
"""
import os
import warnings
from functools import lru_cache
from typing import FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

#: Environment variable naming a font file tried before the others.
FONT_ENV = 'MMSEG_ESCNET_FONT'
#: Font files looked for among the system's fonts first, in this order (then matplotlib's DejaVu
#: Sans after the first, then the system's other regular sans-serif fonts).
FONT_FILES = ('DejaVuSans.ttf', 'NotoSans-Regular.ttf', 'NotoSansCJK-Regular.ttc',
              'NotoSansCJKsc-Regular.otf', 'NotoSansArabic-Regular.ttf',
              'NotoSansHebrew-Regular.ttf', 'NotoSansDevanagari-Regular.ttf',
              'NotoSansThai-Regular.ttf')
#: Drawn instead of a character that no font covers.
MISSING_MARK = '\u25a1'
_INSTALL = ('install a font that covers them (Debian: apt-get install fonts-noto-core '
            f'fonts-noto-cjk, which tools/setup_env.sh does as root) or set {FONT_ENV} to such a '
            '.ttf/.otf file')
_warned: set = set()


@lru_cache(maxsize=1)
def font_files() -> Tuple[str, ...]:
    """The font files tried, in order (see the module docstring); empty if none is found."""
    found: List[str] = []
    env = os.environ.get(FONT_ENV)
    if env:
        if os.path.isfile(env):
            found.append(env)
        else:
            warnings.warn(f'{FONT_ENV}={env} is not a font file; using the installed fonts')
    try:
        from matplotlib import font_manager, get_data_path
    except ImportError:
        return tuple(found)
    # the system's fonts, scanned now (matplotlib's cache would miss fonts installed since)
    system = sorted(font_manager.findSystemFonts(fontext='ttf')
                    + font_manager.findSystemFonts(fontext='otf'))
    by_name = {}
    for path in system:
        by_name.setdefault(os.path.basename(path), path)
    bundled = os.path.join(get_data_path(), 'fonts', 'ttf', 'DejaVuSans.ttf')
    preferred = [by_name.get(name) for name in FONT_FILES]
    preferred.insert(1, bundled if os.path.isfile(bundled) else None)
    others = [p for p in system if 'sans' in os.path.basename(p).lower()
              and os.path.basename(p).lower().endswith(('-regular.ttf', '-regular.otf',
                                                         '-regular.ttc', 'sans.ttf'))]
    for path in preferred + others:
        if path and path not in found:
            found.append(path)
    return tuple(found)


@lru_cache(maxsize=None)
def _codepoints(path: str) -> FrozenSet[int]:
    """The characters a font file has glyphs for (its cmap; the first face of a collection)."""
    from fontTools.ttLib import TTFont
    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # noqa: BLE001 - an unreadable font covers nothing
        return frozenset()


@lru_cache(maxsize=64)
def _font(path: str, size: int):
    from PIL import ImageFont
    return ImageFont.truetype(path, size=size)


def font_for(text: str) -> Tuple[Optional[str], str]:
    """The font to draw ``text`` with, and the text to draw.

    Args:
        text (str): A legend row.

    Returns:
        Tuple[str | None, str]: The first font covering every character, with ``text``; else the
        font covering most of them, with the others replaced by :data:`MISSING_MARK` (a warning
        names them once per text). ``(None, text)`` when no TrueType font is installed.
    """
    fonts = font_files()
    if not fonts:
        _warn_once(text, f'legend: no TrueType font found to draw {text!r}; {_INSTALL}')
        return None, text
    needed = {ord(c) for c in text if not c.isspace()}
    covered = [needed - _codepoints(path) for path in fonts]
    best = min(range(len(fonts)), key=lambda i: (len(covered[i]), i))
    missing = covered[best]
    if missing:
        chars = ''.join(sorted(chr(c) for c in missing))
        _warn_once(text, f'legend: no installed font has a glyph for {chars!r} in {text!r} (tried '
                   f'{", ".join(os.path.basename(p) for p in fonts)}); they are drawn as '
                   f'{MISSING_MARK}; {_INSTALL}')
        text = ''.join(MISSING_MARK if ord(c) in missing else c for c in text)
    return fonts[best], text


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


def _size(cap_height: int) -> int:
    """Font size in pixels whose capital letters are about ``cap_height`` high."""
    return max(6, round(cap_height / 0.73))


def text_width(font: str, text: str, cap_height: int) -> int:
    """Width in pixels of ``text`` drawn with ``font`` (see :func:`draw_texts`)."""
    return int(np.ceil(_font(font, _size(cap_height)).getlength(text)))


def draw_texts(panel: np.ndarray, rows: Sequence[Tuple[str, str, int, int]], cap_height: int,
               color: Tuple[int, int, int]) -> np.ndarray:
    """Draw rows of text on an RGB panel with Pillow.

    Args:
        panel (np.ndarray): ``(h, w, 3)`` ``uint8`` RGB.
        rows (Sequence[Tuple[str, str, int, int]]): ``(font, text, x, baseline_y)`` per row.
        cap_height (int): Height of capital letters in pixels, as OpenCV's text beside them.
        color (Tuple[int, int, int]): RGB text colour.

    Returns:
        np.ndarray: The panel with the text (a new array).
    """
    from PIL import Image, ImageDraw
    image = Image.fromarray(panel)
    draw = ImageDraw.Draw(image)
    for font, text, x, baseline in rows:
        draw.text((x, baseline), text, fill=tuple(color), anchor='ls',
                  font=_font(font, _size(cap_height)))
    return np.asarray(image).copy()
