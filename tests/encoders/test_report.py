"""HTML report: names every model, embeds figures byte for byte, escapes text."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pandas as pd
import pytest

from encoders.plots import plot_roi_medians
from encoders.report import write_report


class _Collector(HTMLParser):
    """Collects img src, iframe src/srcdoc (unescaped by the parser) and h3 texts."""

    def __init__(self):
        super().__init__()
        self.images, self.frames, self.headings, self._in_h3 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "iframe":
            self.frames.append(attrs)
        self._in_h3 = tag == "h3"

    def handle_data(self, data):
        if self._in_h3:
            self.headings.append(data)
            self._in_h3 = False


@pytest.fixture
def inputs(tmp_path):
    png = plot_roi_medians({"lh": {"V1v": 0.5}, "rh": {"V1v": 0.4}}, tmp_path / "figs" / "bars.png")
    view = tmp_path / "figs" / "view.html"
    view.write_text("<html><body><script>var s = \"a & b\";</script><p class='x'>view</p></body></html>")
    leaderboard = pd.DataFrame({"model": ["alexnet.untrained", "<b>ViT-B-32</b>"], "median_r": [0.31234, 0.2]})
    provenance = {
        "alexnet.untrained": {"weights": "untrained", "sha256": "ab12", "seed": 0},
        "<b>ViT-B-32</b>": {"weights": "file:/tmp/w.pt", "layers": ["ln_post"]},
    }
    return png, view, leaderboard, provenance


def _parse(path):
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def test_report_embeds_figures_and_names_models(inputs, tmp_path):
    png, view, leaderboard, provenance = inputs
    out = write_report(leaderboard, [png, view], provenance, tmp_path / "report" / "index.html", title="Demo & <test>")
    text = out.read_text(encoding="utf-8")
    parsed = _parse(out)
    assert parsed.images == ["data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()]
    assert [frame["srcdoc"] for frame in parsed.frames] == [view.read_text()]
    assert parsed.headings == list(provenance)
    assert "alexnet.untrained" in text and "&lt;b&gt;ViT-B-32&lt;/b&gt;" in text
    assert "<b>" not in text
    assert "Demo &amp; &lt;test&gt;" in text
    assert "0.3123" in text and "ab12" in text


def test_report_can_link_views(inputs, tmp_path):
    png, view, leaderboard, provenance = inputs
    out = write_report(leaderboard, [view], provenance, tmp_path / "report.html", embed_views=False)
    assert _parse(out).frames == [{"src": "figs/view.html"}]


def test_report_refuses_unknown_or_missing_figures(inputs, tmp_path):
    png, view, leaderboard, provenance = inputs
    odd = tmp_path / "table.csv"
    odd.write_text("a,b")
    with pytest.raises(ValueError, match=r"table.csv: unsupported type '.csv'"):
        write_report(leaderboard, [odd], provenance, tmp_path / "r.html")
    with pytest.raises(FileNotFoundError, match=r"missing.png does not exist"):
        write_report(leaderboard, [tmp_path / "missing.png"], provenance, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
