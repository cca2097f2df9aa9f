"""A sample HTML report and its screenshot: what ``tcs-fewshot report SWEEP --format html`` makes.

Evaluates the nearest-class-mean, SimpleShot and logistic-regression probes on the bundled
``digits`` benchmark (raw 8x8 pixels, test classes 5-9), 5-way 1-shot and 5-way 5-shot with 15
queries, 200 tasks each (seed 0), into one run directory per setting under a sweep directory;
writes the HTML report with ``ncm`` as the reference, and renders it in headless Chromium at
1280x2400 px into ``benchmarks/results/report_screenshot.png``.

Needs Chromium (``apt-get install chromium``). Run:
``/work/main/.venv/bin/python benchmarks/report_screenshot.py [--tasks 200] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tcs_fewshot.runs.experiment import RunConfig, run_experiment
from tcs_fewshot.reports.html import write_html_report

DEFAULT_OUT = Path(__file__).parent / "results" / "report_screenshot.png"
METHODS = ("ncm", "simpleshot", "logreg")
SHOTS = (1, 5)
WINDOW = (1280, 2400)


def screenshot(page: Path, png: Path, window: tuple[int, int] = WINDOW) -> None:
    """Render ``page`` in headless Chromium, with no network, into ``png`` (``window`` in px)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
             f"--window-size={window[0]},{window[1]}", f"--screenshot={png}", page.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per setting")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the screenshot (PNG)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the sweep and report.html in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        sweep = root / "digits-sweep"
        for shots in SHOTS:
            config = RunConfig(benchmark="digits", shots=shots, tasks=args.tasks, methods=METHODS)
            run_experiment(config, run_dir=sweep / f"5way{shots}shot")
        page = write_html_report([sweep], sweep / "report.html", reference="ncm")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page, args.out)
    print(f"report {page if args.keep else '(temporary)'}; screenshot {args.out}")


if __name__ == "__main__":
    main()
