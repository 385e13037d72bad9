"""One self-contained HTML report: leaderboard table, figures and each model's provenance.

PNG/JPEG/SVG figures are embedded as base64 data URIs; nilearn's interactive surface views (HTML files,
which nilearn 0.14 saves as an inline frame) are embedded whole as ``<iframe srcdoc>`` (they carry their
own JavaScript inline, a few MB each; their only outside reference is nilearn's favicon URL) or, with
``embed_views=False``, linked by path relative to the report.
All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from encoders.errors import InvalidArgumentError

_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table.leaderboard { border-collapse: collapse; font-size: 0.9em; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figure iframe { width: 100%; height: 840px; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _leaderboard_html(leaderboard: pd.DataFrame) -> str:
    """The leaderboard as an escaped HTML table (index shown unless it is a plain 0..n-1 range)."""
    show_index = not isinstance(leaderboard.index, pd.RangeIndex)
    return leaderboard.to_html(
        escape=True, index=show_index, border=0, classes="leaderboard", float_format=lambda v: f"{v:.4f}", na_rep="-"
    )


def _figure_html(path: Path, out_dir: Path, embed_views: bool) -> str:
    """One ``<figure>``: an embedded image or an interactive view (iframe) captioned with its file name."""
    if not path.is_file():
        raise FileNotFoundError(f"Report figure {path} does not exist")
    suffix = path.suffix.lower()
    caption = f"<figcaption>{html.escape(path.name)}</figcaption>"
    if suffix in _IMAGE_TYPES:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        alt = html.escape(path.stem, quote=True)
        return f'<figure><img alt="{alt}" src="data:{_IMAGE_TYPES[suffix]};base64,{data}">{caption}</figure>'
    if suffix in (".html", ".htm"):
        if embed_views:
            source = html.escape(path.read_text(encoding="utf-8"), quote=True)
            return f'<figure><iframe srcdoc="{source}"></iframe>{caption}</figure>'
        link = html.escape(Path(os.path.relpath(path, out_dir)).as_posix(), quote=True)
        return f'<figure><iframe src="{link}"></iframe>{caption}</figure>'
    raise InvalidArgumentError(
        f"Report figure {path}: unsupported type {suffix!r}; expected one of {[*_IMAGE_TYPES, '.html']}"
    )


def _provenance_html(provenance: Mapping[str, Mapping]) -> str:
    """Each model's provenance as pretty JSON under its name."""
    parts = []
    for model, record in provenance.items():
        text = json.dumps(record, indent=2, sort_keys=True, default=str)
        parts.append(f"<h3>{html.escape(str(model))}</h3>\n<pre>{html.escape(text)}</pre>")
    return "\n".join(parts)


def write_report(
    leaderboard: pd.DataFrame,
    figures: Sequence[str | Path],
    provenance: Mapping[str, Mapping],
    out_html: str | Path,
    *,
    title: str = "Encoding report",
    embed_views: bool = True,
) -> Path:
    """Write one HTML file with the leaderboard, the figures (embedded) and each model's provenance.

    Parameters
    ----------
    leaderboard : pandas.DataFrame
        One row per model (and whatever columns rank it), shown as a table.
    figures : sequence of str or Path
        PNG/JPEG/SVG files (embedded as base64) and nilearn HTML views (embedded as iframes).
    provenance : mapping of str to mapping
        Model name -> JSON-able provenance (catalog entry, weights sha256, settings...).
    out_html : str or Path
        Where to write the report.
    title : str, default="Encoding report"
        Page heading.
    embed_views : bool, default=True
        Embed HTML views (self-contained, larger) or link them by path relative to the report.

    Returns
    -------
    Path
        ``out_html``.
    """
    out_html = Path(out_html)
    out_dir = out_html.parent
    figure_html = "\n".join(_figure_html(Path(path), out_dir, embed_views) for path in figures)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<section id="leaderboard">
<h2>Leaderboard</h2>
{_leaderboard_html(leaderboard)}
</section>
<section id="figures">
<h2>Figures</h2>
{figure_html}
</section>
<section id="provenance">
<h2>Provenance</h2>
{_provenance_html(provenance)}
</section>
</body>
</html>
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
