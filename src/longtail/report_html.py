"""The evaluation as one self-contained HTML page (KFP's HTML artifact): numbers, plots inline."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from longtail.atomic_file import write_text
from longtail.model_dir import EvaluationDir


def write_html_report(evaluation_dir: str | Path, out_path: str | Path) -> Path:
    """Render metrics.json, report.txt and the plots of an evaluation folder into one HTML file.

    The KFP UI shows an HTML artifact in an iframe with no access to sibling files, so the
    PNGs are embedded as data URIs.
    """
    d = EvaluationDir(evaluation_dir)
    m = d.load_metrics()
    gate = "passed" if m.get("passed") else "failed"
    parts = [
        "<!doctype html><meta charset='utf-8'><title>longtail evaluation</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px}"
        "td,th{padding:2px 10px;text-align:right}img{max-width:100%;border:1px solid #ddd;margin:6px 0}"
        ".failed{color:#b00}.passed{color:#070}pre{background:#f6f6f6;padding:8px;overflow:auto}</style>",
        f"<h1>macro-F1 {m['macro_f1']:.4f}</h1>",
        "<table><tr><th>accuracy</th><th>weighted-F1</th><th>images</th><th>gate</th></tr>"
        f"<tr><td>{m['accuracy']:.4f}</td><td>{m['weighted_f1']:.4f}</td><td>{m['n']}</td>"
        f"<td class='{gate}'>{gate}</td></tr></table>",
        f"<p class='{gate}'>{html.escape(str(m.get('reason', '')))}</p>",
    ]
    for w in m.get("warnings", []):
        parts.append(f"<p class='failed'>⚠ {html.escape(w)}</p>")
    for png in d.plots():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(png.stem.replace('_', ' '))}</h2><img src='data:image/png;base64,{data}'>")
    report = d.report_text()
    if report is not None:
        parts.append(f"<h2>classification report</h2><pre>{html.escape(report)}</pre>")
    return write_text(out_path, "\n".join(parts), what="HTML report")
