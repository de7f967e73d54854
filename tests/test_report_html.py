"""The `snakemake --report` HTML of the tiny run, opened in headless Chromium (Debian `chromium`):
every figure loads with a non-zero natural width and shows a caption.

Snakemake's report is a single-page React app: the results, with each figure as a data URI and its
caption as HTML, sit in a global ``results`` object, and a global ``app`` switches the view. The
test loads it in an iframe of a wrapper page (same origin for file:// pages with
``--allow-file-access-from-files``), drives the app as its buttons do (show each figure, then its
description), and writes what it saw into the wrapper's DOM, which ``--dump-dom`` prints once the
page is idle (``--virtual-time-budget`` lets the timers and image decoding run first). No Python
package beyond the standard library is needed.
"""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import snakemake

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

WRAPPER = """<!doctype html><html><body>
<pre id="result">pending</pre>
<iframe id="report" style="width:1400px;height:900px" src="REPORT_URI"></iframe>
<script>
const out = document.getElementById("result");
const frame = document.getElementById("report");
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function waitFor(fn, ms) {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(50)) {
    try { const v = fn(); if (v) return v; } catch (e) {}
  }
  return null;
}
const text = s => s.replace(/\\s+/g, " ").trim();
frame.onload = async () => {
  try {
    const win = frame.contentWindow, doc = frame.contentDocument;
    // `app` is a top-level `let` of the report's scripts: reachable by eval in its realm only
    const app = await waitFor(() => win.eval("typeof app === 'undefined' ? null : app"), 20000);
    if (!app) throw new Error("the report's app did not start");
    const figures = [];
    for (const [path, entry] of Object.entries(win.results)) {
      if (!entry.mime_type.startsWith("image/")) continue;
      app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
      const img = await waitFor(() => [...doc.querySelectorAll("img")].find(
        i => i.getAttribute("src") === entry.data_uri && i.complete), 20000);
      app.showResultInfo(path);
      const captionText = text(new DOMParser().parseFromString(entry.caption || "", "text/html").body.textContent);
      const shown = await waitFor(() => [...doc.querySelectorAll(".prose-invert")].map(
        e => text(e.textContent)).find(t => captionText && t.includes(captionText.slice(0, 60))), 20000);
      figures.push({path, naturalWidth: img ? img.naturalWidth : 0, naturalHeight: img ? img.naturalHeight : 0,
                    caption: captionText, captionShown: Boolean(shown)});
    }
    out.textContent = JSON.stringify({figures, results: Object.keys(win.results)});
  } catch (e) {
    out.textContent = JSON.stringify({error: String(e)});
  }
};
</script></body></html>
"""


def open_in_chromium(report_html: Path, folder: Path) -> dict:
    wrapper = folder / "check_report.html"
    wrapper.write_text(WRAPPER.replace("REPORT_URI", report_html.resolve().as_uri()))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=120000", "--dump-dom", wrapper.as_uri()],
        capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no result in chromium's DOM (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh installs it)")
def test_every_report_figure_loads_with_a_caption(tiny_run, tmp_path):
    report = tiny_run / "results" / "report.html"
    snakemake(tiny_run, "--report", str(report))
    seen = open_in_chromium(report, tmp_path)
    assert "error" not in seen, seen
    figures = {Path(f["path"]).name: f for f in seen["figures"]}
    assert set(figures) == {"rb.png", "wer_heatmap.png", "perceptual.png", "training.png", "contrasts.png"}
    for name, fig in figures.items():
        assert fig["naturalWidth"] > 0 and fig["naturalHeight"] > 0, (name, fig)
        assert fig["captionShown"] and len(fig["caption"]) > 100, (name, fig)
        assert "tiny" in fig["caption"]  # the tiny preset's study's name, rendered into the caption
    assert {Path(p).name for p in seen["results"]} >= {"summary.md", "wer.csv", "rb.csv", "perceptual.csv"}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh installs it)")
def test_the_check_fails_on_a_broken_figure(tiny_run, tmp_path):
    """The browser check is not vacuous: a figure whose data is not an image has natural width 0."""
    report = tiny_run / "results" / "report.html"
    if not report.exists():
        snakemake(tiny_run, "--report", str(report))
    text = report.read_text()
    broken = re.sub(r'"data_uri": "data:image/png[^"]*"', '"data_uri": "data:image/png;base64,AAAA"', text, count=1)
    assert broken != text
    (tmp_path / "broken.html").write_text(broken)
    seen = open_in_chromium(tmp_path / "broken.html", tmp_path)
    widths = sorted(f["naturalWidth"] for f in seen["figures"])
    assert widths[0] == 0 and widths[-1] > 0
