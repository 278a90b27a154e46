"""The bench's HTML report: one self-contained file (no external assets).

The table users know from precision comparisons (precision, it/s, speedup, peak VRAM, load time,
quality against BF16), the pictures side by side, and a before/after slider: the baseline and a
chosen variant stacked, the top one clipped at the slider's position. Images are inlined as
base64 PNGs; the styling is a few lines of CSS and the slider a few lines of JavaScript.
"""

from __future__ import annotations

import html
import math
import time

from .bench import BenchReport, BenchRow
from .png import data_uri

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}.err{color:#b00}.pass{color:#070}.fail{color:#b00}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;max-width:320px}
.grid img{width:100%;image-rendering:pixelated;border:1px solid #ccc}
.cmp{position:relative;display:inline-block;max-width:100%;user-select:none}
.cmp img{display:block;max-width:min(100%,768px);image-rendering:pixelated}
.cmp .top{position:absolute;top:0;left:0;height:100%;overflow:hidden;border-right:2px solid #fff}
.cmp .top img{max-width:none}small{color:#666}
"""

_JS = """
const s=document.getElementById('pos'),top_=document.getElementById('top'),
      pick=document.getElementById('pick'),after=document.getElementById('after'),
      base=document.getElementById('base'),src=i=>document.getElementById('img'+i).src;
function size(){base.style.width=after.getBoundingClientRect().width+'px';}
function slide(){top_.style.width=s.value+'%';}
pick.onchange=()=>{after.src=src(pick.value);};s.oninput=slide;window.onresize=size;
after.onload=size;base.src=src(base.dataset.i);after.src=src(pick.value);slide();
"""
"""The slider's two images take their data from the figures (each PNG is inlined once)."""


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "identical"
    return f"{value:.{digits}f}{suffix}"


def _gib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**30:.1f} GiB"


def table_rows(report: BenchReport) -> list[list[str]]:
    """The table as strings (shared by the terminal and the HTML report)."""
    out = []
    for row in report.rows:
        if row.run is None:
            out.append([row.label, "error", row.error or "", "", "", "", "", "", "", "", ""])
            continue
        r, q = row.run.result, row.quality
        out.append([row.label, r.precision, _fmt(r.it_s), _fmt(row.speedup, 2, "×"), _gib(r.peak_vram_bytes),
                    f"{r.load_s:.1f} s, {r.load_gb_s:.1f} GB/s",
                    _fmt(q.latent_psnr, 1, " dB") if q else "–", _fmt(q.latent_cos, 4) if q else "–",
                    _fmt(q.image_psnr, 1, " dB") if q and q.image_psnr is not None else "–",
                    _fmt(q.image_cos, 4) if q and q.image_cos is not None else "–", r.verdict])
    return out


HEADERS = ["variant", "precision", "it/s", "speedup", "peak VRAM", "load", "latent PSNR", "latent cos",
           "image PSNR", "image cos", "verdict"]


def _figure(row: BenchRow, index: int) -> str:
    if row.run is None:
        return f'<figure><figcaption class="err">{html.escape(row.label)}: {html.escape(row.error or "")}</figcaption></figure>'
    r = row.run.result
    return (f'<figure><img id="img{index}" alt="{html.escape(row.label)}" src="{data_uri(row.run.png)}">'
            f'<figcaption><b>{html.escape(row.label)}</b> — {html.escape(r.precision)}, {r.it_s:.2f} it/s<br>'
            f'<small>{html.escape(r.layers)}; {html.escape(r.picture)}</small></figcaption></figure>')


def render(report: BenchReport) -> str:
    """The whole HTML document."""
    done = [r for r in report.rows if r.run is not None]
    base = next((r for r in done if r.label == report.baseline), done[0] if done else None)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = ""
    for cells in table_rows(report):
        cls = {"PASS": "pass", "FAIL": "fail"}.get(cells[-1], "")
        body += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1]) + \
            f'<td class="{cls}">{html.escape(cells[-1])}</td></tr>'
    device = report.device
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>modelmgr bench</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>modelmgr bench</h1>",
        f"<p>{html.escape(device.label)} · {report.width}×{report.height} · {report.steps} steps · seed "
        f"{report.seed} · {time.strftime('%Y-%m-%d %H:%M')}<br><small>speedup vs {html.escape(report.baseline)}; "
        f"quality vs {html.escape(report.quality_reference)}; conditioning: "
        f"{html.escape(done[0].run.result.conditioning if done else '')}</small></p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        "<h2>Side by side</h2><div class='grid'>" + "".join(_figure(r, i) for i, r in enumerate(report.rows))
        + "</div>",
    ]
    if base is not None and len(done) > 1:
        index = {id(r): i for i, r in enumerate(report.rows)}
        options = "".join(f'<option value="{index[id(r)]}">{html.escape(r.label)}</option>'
                          for r in done if r is not base)
        parts += [
            f"<h2>Before / after</h2><p>left of the line: <b>{html.escape(base.label)}</b>; right: "
            f"<select id='pick'>{options}</select></p>",
            "<div class='cmp'><img id='after' alt='variant'>"
            f"<div class='top' id='top'><img id='base' alt='baseline' data-i='{index[id(base)]}'></div></div>",
            "<p><input id='pos' type='range' min='0' max='100' value='50' style='width:min(100%,768px)'></p>",
            f"<script>{_JS}</script>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
