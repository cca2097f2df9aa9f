"""A self-contained HTML report over one or more runs: tables, figures, provenance, leakage.

One file, no external resource: CSS inline, figures as base64 PNG ``<img>``. Elements a test
or script may look for carry stable ids: ``summary-table``, ``paired-table``,
``figure-accuracy-vs-shots``, ``figure-paired-differences``, ``figure-accuracy-vs-flops``, ``figure-cost``,
``leakage-warnings``, ``provenance``; each ``<figure>`` has ``data-figure`` and its ``<img>``
its pixel ``width``/``height``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from tcs_fewshot.reports import figures
from tcs_fewshot.reports.compare import Run, compare_loaded, load_runs
from tcs_fewshot.reports.leakage import distinct_warnings
from tcs_fewshot.reports.tables import without_constant_settings, without_single_run
from tcs_fewshot.runs.run_tables import readable_paired, readable_summary

TEMPLATE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string("""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1180px; padding: 20px 28px 40px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.25em; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; }
.muted { color: #59636e; font-size: 0.92em; }
table.data { border-collapse: collapse; font-size: 0.9em; margin: 6px 0; }
table.data th, table.data td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: right; white-space: nowrap; }
table.data th { background: #f6f8fa; }
#summary-table :is(td, th):nth-child(-n+{{ left_summary }}),
#paired-table :is(td, th):nth-child(-n+{{ left_paired }}) { text-align: left; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: 0.9em; margin-top: 4px; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.note { background: #ddf4ff; border: 1px solid #54aeff; border-radius: 6px; padding: 8px 14px; margin: 10px 0; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f8fa; padding: 8px 10px; overflow-x: auto; font-size: 0.82em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 0.9em; }
dl.facts dt { color: #59636e; } dl.facts dd { margin: 0; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="muted">{{ runs|length }} run{{ "s" if runs|length != 1 }}: {{ runs|map(attribute="label")|join(", ") }}.
{{ ci }}.{% if class_ci %} {{ class_ci }}.{% endif %} Accuracy in percent, differences in points; time and memory are means per task.</p>
{% if warnings %}
<section id="leakage-warnings" role="alert">
{% for warning in warnings %}<p class="warning leakage" data-runs="{{ warning.runs|join(',') }}">{{ warning.text }}</p>
{% endfor %}</section>
{% endif %}
{% for note in notes %}<p class="note">{{ note }}</p>
{% endfor %}
<h2>Summary</h2>
{% if summary_setting %}<p class="muted">{{ summary_setting }}</p>{% endif %}
{{ summary_table|safe }}
<h2>Paired differences{% if reference %} against {{ reference }}{% endif %}</h2>
{% if paired_table %}
{% if paired_setting %}<p class="muted">{{ paired_setting }}</p>{% endif %}
{{ paired_table|safe }}
<p class="muted">Per task, method minus reference; wins/losses count the tasks where the method was better/worse.</p>
{% if gap_closed %}<section id="gap-closed">{% for line in gap_closed %}<p class="note">{{ line }}</p>
{% endfor %}</section>{% endif %}
{% else %}
<p id="paired-table-empty" class="muted">No two methods ran on the same tasks, so nothing is paired.</p>
{% endif %}
<h2>Figures</h2>
{% for figure in figure_list %}
<figure id="figure-{{ figure.name }}" data-figure="{{ figure.name }}"{% for key, value in figure.data.items() %} data-{{ key }}="{{ value }}"{% endfor %}>
<img src="{{ figure.uri }}" width="{{ figure.size[0] }}" height="{{ figure.size[1] }}" alt="{{ figure.alt }}">
<figcaption>{{ figure.caption }}</figcaption>
</figure>
{% endfor %}
<h2>Provenance</h2>
<details id="provenance">
<summary>Configuration, package versions and checksums of each run</summary>
{% for run in provenance %}
<section class="run-provenance" data-run="{{ run.label }}">
<h3>{{ run.label }}</h3>
<dl class="facts">
{% for key, value in run.facts %}<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}</dl>
<details><summary>config</summary><pre>{{ run.config }}</pre></details>
<details><summary>sessions (package versions, git revision, command line)</summary><pre>{{ run.sessions }}</pre></details>
</section>
{% endfor %}
</details>
</body>
</html>
""")


@dataclass
class ReportFigure:
    """One embedded figure: ``name`` (its id is ``figure-<name>``), PNG data URI, size in px."""

    name: str
    uri: str
    size: tuple[int, int]
    alt: str
    caption: str
    data: dict[str, str]


def _figure(name: str, figure, alt: str, caption: str, **data: str) -> ReportFigure:
    uri, size = figures.png_data_uri(figure)
    return ReportFigure(name, uri, size, alt, caption, data)


def _has_class_ci(table: pd.DataFrame) -> bool:
    return "class_ci95" in table and bool(table["class_ci95"].notna().any())


def report_figures(summary: pd.DataFrame, paired: pd.DataFrame) -> list[ReportFigure]:
    """The report's figures: accuracy against shots, paired differences (if any), cost."""
    shots = sorted(summary["shots"].dropna().astype(int).unique().tolist())
    made = [_figure(
        "accuracy-vs-shots", figures.accuracy_vs_shots(summary),
        "Accuracy against shots per class, one line per method, with 95% confidence intervals",
        "Mean accuracy against shots per class K, error bars the 95% CI over tasks (pFSL: repeats)"
        + ("; the wide pale bars the 95% CI over classes (two-level), which also counts which classes the split "
           "holds." if _has_class_ci(summary) else "."),
        shots=",".join(map(str, shots)), methods=",".join(pd.unique(summary["method"])),
    )]
    forest = figures.forest_plot(paired)
    if forest is not None:
        made.append(_figure(
            "paired-differences", forest, "Forest plot of paired accuracy differences with 95% confidence intervals",
            "Paired differences (method minus reference) with 95% CIs over tasks; green/red: the CI excludes 0"
            + ("; thin pale lines the 95% CI over classes (two-level)." if _has_class_ci(paired) else "."),
            rows=str(len(paired)),
        ))
    flops = figures.accuracy_vs_flops(summary)
    if flops is not None:
        made.append(_figure(
            "accuracy-vs-flops", flops, "Accuracy against the deployed network's inference FLOPs, one point per method",
            "Mean accuracy with its 95% CI over tasks against the FLOPs per image of the network that makes the "
            "predictions (teacher or student; log scale). Methods without a network sit at the left edge.",
            rows=str(int(pd.to_numeric(summary["flops_per_image"]).notna().sum())),
        ))
    made.append(_figure(
        "cost", figures.cost_bars(summary), "Time per task and peak memory per method",
        "Mean wall-clock fit and predict time per task (log scale) and peak Python-heap memory per task.",
        rows=str(len(summary)),
    ))
    return made


def _provenance(run: Run) -> dict[str, Any]:
    manifest = run.manifest
    config = manifest.get("config") or {}
    data = config.get("data") or {}
    facts = [
        ("directory", str(run.path)),
        ("methods", ", ".join(run.methods)),
        ("tasks", str(manifest.get("n_tasks"))),
        ("tasks checksum", manifest.get("tasks_checksum")),
        ("dataset fingerprint", (manifest.get("dataset") or {}).get("fingerprint")),
        *((f"data: {key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value))
          for key, value in data.items()),
    ]
    return {"label": run.label, "facts": [(k, v) for k, v in facts if v not in (None, "")],
            "config": json.dumps(config, indent=2, sort_keys=True, default=str),
            "sessions": json.dumps(manifest.get("sessions", []), indent=2, sort_keys=True, default=str)}


def _leakage(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Distinct leakage warnings, each with the labels of the runs it concerns."""
    return [{"text": text, "runs": labels} for text, labels in distinct_warnings((r.label, r.manifest) for r in runs)]


def _html_table(table: pd.DataFrame, table_id: str) -> tuple[str, str, int]:
    """(HTML of the readable table without constant settings, the constant settings, naming columns).

    Naming columns (settings, run, method, reference) come first and are aligned left.
    """
    narrow, setting = without_constant_settings(without_single_run(table))
    left = 1 + max((i for i, column in enumerate(narrow.columns) if column in ("run", "method", "reference")), default=0)
    html = narrow.to_html(index=False, table_id=table_id, classes="data", border=0, na_rep="", escape=True)
    return html, setting, left


def render_html_report(runs: Sequence[Run], reference: str | None = None, ci: str = "normal",
                       title: str = "tcs-fewshot report") -> str:
    """The report of loaded runs (see :func:`write_html_report`) as an HTML string."""
    summary, paired = compare_loaded(runs, reference, ci)
    summary_html, summary_setting, left = _html_table(readable_summary(summary), "summary-table")
    paired_html, paired_setting, left_paired = "", "", 1
    if len(paired):
        paired_html, paired_setting, left_paired = _html_table(readable_paired(paired), "paired-table")
    return TEMPLATE.render(
        title=title, runs=runs, ci=summary.attrs.get("ci", ""), reference=reference,
        class_ci=summary.attrs.get("class_ci") or paired.attrs.get("class_ci"),
        warnings=_leakage(runs), notes=paired.attrs.get("unpaired", []),
        summary_table=summary_html, summary_setting=summary_setting, left_summary=left,
        left_paired=left_paired,
        paired_table=paired_html, paired_setting=paired_setting,
        gap_closed=paired.attrs.get("gap_closed", []), figure_list=report_figures(summary, paired), provenance=[_provenance(run) for run in runs],
    )


def write_html_report(run_dirs: Iterable[str | os.PathLike], path: str | os.PathLike, reference: str | None = None,
                      ci: str = "normal") -> Path:
    """Write one self-contained HTML report over run (or sweep) directories.

    Args:
        run_dirs: Run directories, or sweep directories whose subdirectories are runs.
        path: The HTML file to write (its directory must exist).
        reference: Method label for paired differences (default: every pair on the same tasks).
        ci: ``normal`` or ``t``.

    Returns:
        ``path``.

    Raises:
        TcsFewshotError: as :func:`tcs_fewshot.reports.compare.compare_runs`.
    """
    path = Path(path)
    html = render_html_report(load_runs(run_dirs), reference, ci)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(html, encoding="utf-8")
    os.replace(temporary, path)
    return path
