"""The HTML report of a real shots sweep, rendered by headless Chromium: tables, figures, provenance.

Chromium is required (CI installs it): without it these tests fail and say how to install it.
"""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tcs_fewshot.runs.experiment import RunConfig, run_experiment
from tcs_fewshot.reports import figures
from tcs_fewshot.reports.html import write_html_report

INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
METHODS = ("ncm", "simpleshot", "logreg")
SHOTS = (1, 5)
# After the load event: what the browser made of every figure and table, as JSON on <body data-probe>.
PROBE = """<script>
window.addEventListener("load", () => {
  const probe = {figures: {}, tables: {}, rules: 0};
  for (const figure of document.querySelectorAll("figure")) {
    const img = figure.querySelector("img");
    probe.figures[figure.id] = {complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                                width: img.getAttribute("width"), shown: img.getBoundingClientRect().width,
                                shots: figure.dataset.shots || null};
  }
  for (const table of document.querySelectorAll("table")) {
    probe.tables[table.id] = {rows: table.tBodies[0].rows.length, shown: table.getBoundingClientRect().width,
                              header: [...table.tHead.rows[0].cells].map(c => c.textContent.trim())};
  }
  for (const sheet of document.styleSheets) probe.rules += sheet.cssRules.length;
  document.body.dataset.probe = JSON.stringify(probe);
});
</script>"""


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(f"headless Chromium is needed to test the HTML report; install it: {INSTALL}")
    return path


def headless(page, profile, *args):
    """Run headless Chromium on a local page with every network lookup failing (nothing may be fetched)."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
               *args, page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A sweep of the digits benchmark at 1 and 5 shots (a run directory each) and its HTML report."""
    root = tmp_path_factory.mktemp("report")
    for shots in SHOTS:
        config = RunConfig(benchmark="digits", shots=shots, tasks=8, methods=METHODS)
        run_experiment(config, run_dir=root / "sweep" / f"5way{shots}shot")
    return write_html_report([root / "sweep"], root / "report.html", reference="ncm")


class Resources(HTMLParser):
    """Every src/href attribute, and the ids of elements."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [(tag, attrs[key]) for key in ("src", "href") if key in attrs]
        if "id" in attrs:
            self.ids.append(attrs["id"])


def test_report_is_one_self_contained_file(report):
    page = report.read_text(encoding="utf-8")
    parser = Resources()
    parser.feed(page)
    assert parser.links and all(link.startswith("data:image/png;base64,") for _, link in parser.links), parser.links
    assert "<link" not in page and "@import" not in page and "url(" not in page
    for element in ("summary-table", "paired-table", "figure-accuracy-vs-shots", "figure-paired-differences",
                    "figure-cost", "provenance"):
        assert parser.ids.count(element) == 1, element
    assert "leakage-warnings" not in parser.ids  # digits: raw pixels, no teacher


def test_chromium_renders_tables_and_loads_every_figure(report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = headless(probed, tmp_path / "profile", "--dump-dom")
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the page's load handler never ran"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert set(probe["figures"]) == {"figure-accuracy-vs-shots", "figure-paired-differences", "figure-cost"}
    for name, figure in probe["figures"].items():
        assert figure["complete"] and figure["naturalWidth"] > 300 and figure["naturalHeight"] > 100, name
        assert figure["naturalWidth"] == int(figure["width"]) and figure["shown"] > 300, name
    assert probe["figures"]["figure-accuracy-vs-shots"]["shots"] == ",".join(map(str, SHOTS))
    tables = probe["tables"]
    assert tables["summary-table"]["rows"] == len(METHODS) * len(SHOTS)  # a row per method and shots
    assert tables["paired-table"]["rows"] == (len(METHODS) - 1) * len(SHOTS)  # each method against ncm
    assert {"shots", "method", "accuracy (%)", "n", "fit (ms)", "peak memory (MB)"} <= set(tables["summary-table"]["header"])
    assert {"difference (points)", "wins/losses"} <= set(tables["paired-table"]["header"])
    assert all(table["shown"] > 200 for table in tables.values())
    assert probe["rules"] > 10  # the inline stylesheet applied


def test_provenance_holds_config_versions_and_checksums(report):
    page = report.read_text(encoding="utf-8")
    manifest = json.loads((report.parent / "sweep" / "5way1shot" / "manifest.json").read_text())
    details = page[page.index('<details id="provenance">'):]
    assert manifest["tasks_checksum"] in details and manifest["dataset"]["fingerprint"] in details
    assert f"&#34;numpy&#34;: &#34;{manifest['sessions'][0]['versions']['numpy']}&#34;" in details
    assert "&#34;shots&#34;: 5" in details and details.count('class="run-provenance"') == len(SHOTS)


def test_screenshot_shows_the_report(report, tmp_path):
    shot = tmp_path / "report.png"
    headless(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (2400, 1280)
    # Text, tables and plots: far from a blank page, in the top and in the lower half (the figures).
    assert (image[:600] < 128).mean() > 0.01 and (image[1200:] < 250).mean() > 0.01


def test_accuracy_against_flops_figure_has_one_point_per_measured_method():
    from tcs_fewshot.reports.html import report_figures

    summary = pd.DataFrame({"shots": [5, 5, 5, 5], "method": ["ncm", "tcs", "pixel-ncm", "logreg"],
                            "accuracy": [45.8, 44.0, 32.7, 45.0], "ci95": [1.0, 1.1, 0.9, 1.0],
                            "fit_seconds": 0.01, "predict_seconds": 0.001, "peak_memory_mb": 1.0,
                            "network": ["teacher", "student", "pixels", "teacher"],
                            "flops_per_image": [6e8, 4.9e7, 0, None], "parameters": [2.2e6, 2.2e6, 0, None]})
    made = {figure.name: figure for figure in report_figures(summary, pd.DataFrame())}
    assert made["accuracy-vs-flops"].data["rows"] == "3" and made["accuracy-vs-flops"].uri.startswith("data:image/png")
    axes = figures.accuracy_vs_flops(summary).axes[0]
    assert axes.get_xscale() == "log" and len(axes.containers) == 3, "one error bar per measured method"
    assert "accuracy-vs-flops" not in {f.name for f in report_figures(summary.drop(columns="flops_per_image"), pd.DataFrame())}
