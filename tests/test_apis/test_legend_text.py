"""Legend rows beyond ASCII (mmseg_escnet.visualization.legend_text): drawn with a TrueType font
that covers them, or visibly replaced with a warning naming what is missing."""
import os
import warnings

import numpy as np
import pytest

from mmseg_escnet.visualization import legend_text
from mmseg_escnet.visualization.overlay import LegendEntry, draw_legend


def _panel(name, **kwargs):
    return draw_legend([LegendEntry(0, name, (200, 30, 30), 0.5)], row_height=32, **kwargs)


@pytest.fixture
def fresh(monkeypatch):
    """Forget the warnings already given."""
    monkeypatch.setattr(legend_text, '_warned', set())


def test_latin_extended_names_are_drawn_not_question_marks(fresh):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a font covers Polish: no warning
        polish = _panel('ZAŻÓŁĆ')
    font, text = legend_text.font_for('ZAŻÓŁĆ 50.0%')
    assert font is not None and text == 'ZAŻÓŁĆ 50.0%'
    assert not np.array_equal(polish, _panel('ZA????'))
    assert not np.array_equal(polish, _panel('ZAZOLC'))
    dark = polish[:, 40:] < 128  # the text right of the swatch
    assert dark.any() and dark.any(axis=2).sum() > 100


def test_ascii_names_keep_opencv_text(fresh, monkeypatch):
    monkeypatch.setattr(legend_text, 'font_for', lambda text: pytest.fail('TrueType used'))
    assert _panel('sky').shape[0] == 32 + 2 * 6


def test_uncovered_characters_are_marked_and_warned_once(fresh, monkeypatch):
    dejavu = [p for p in legend_text.font_files() if os.path.basename(p) == 'DejaVuSans.ttf']
    if not dejavu:
        pytest.skip('no DejaVu Sans font')
    monkeypatch.setattr(legend_text, 'font_files', lambda: (dejavu[0], ))
    with pytest.warns(UserWarning) as record:
        marked = _panel('猫 cat')
    assert len(record) == 1
    message = str(record[0].message)
    assert "no installed font has a glyph for '猫' in '猫 cat 50.0%'" in message
    assert 'DejaVuSans.ttf' in message and 'fonts-noto-cjk' in message
    assert legend_text.font_for('猫 cat 50.0%') == (dejavu[0], '\u25a1 cat 50.0%')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once per name
        again = _panel('猫 cat')
    np.testing.assert_array_equal(marked, again)
    np.testing.assert_array_equal(marked, _panel('\u25a1 cat'))


def test_without_any_truetype_font_the_fallback_is_visible(fresh, monkeypatch):
    monkeypatch.setattr(legend_text, 'font_files', lambda: ())
    with pytest.warns(UserWarning, match="no TrueType font found to draw 'ZAŻÓŁĆ 50.0%'"):
        panel = _panel('ZAŻÓŁĆ')
    np.testing.assert_array_equal(panel, _panel('ZA????'))


def test_cjk_with_an_installed_cjk_font(fresh):
    font, text = legend_text.font_for('猫')
    if text != '猫':
        pytest.skip('no CJK font installed (tools/setup_env.sh installs fonts-noto-cjk as root)')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not np.array_equal(_panel('猫'), _panel('\u25a1'))
