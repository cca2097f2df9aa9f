"""Options that several commands take, each defined once; a command composes the blocks it needs.

An option's name, type and default live here; where commands explain it differently (``--device``
for ``run`` and ``distill``), the command passes its own help.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from tcs_fewshot.defaults import DEFAULT_STUDENT

ROOT_HELP = ("Where the benchmark's files are (default $TCS_FEWSHOT_DATA/<benchmark>); "
             "for folder, a directory or a path,label CSV.")
SWEEP_HELP = " A comma list (e.g. {}) is a sweep: one run directory per setting under --out."


def compose(*decorators: Callable) -> Callable:
    """One decorator applying ``decorators``; options show in ``--help`` in the order given."""

    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def comma_list(ctx, param, value: str | None) -> tuple[str, ...] | None:
    """A click callback reading ``a, b`` as ``("a", "b")``."""
    if value is None:
        return None
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise click.BadParameter("give at least one name, comma-separated")
    return items


def int_list(minimum: int):
    """A click callback reading ``1,5`` as ``(1, 5)``: integers of at least ``minimum``, repeats once."""

    def parse(ctx, param, value: str | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        try:
            items = tuple(dict.fromkeys(int(item) for item in str(value).split(",") if item.strip()))
        except ValueError:
            items = ()
        if not items or min(items) < minimum:
            raise click.BadParameter(f"give integers of at least {minimum}, comma-separated (e.g. {minimum},{minimum + 3}); "
                                     f"got '{value}'")
        return items

    return parse


def setting(value: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as TOML (numbers, true/false, "text"), bare words as text."""
    from tcs_fewshot.runs.config import toml_module

    key, equals, text = value.partition("=")
    if not equals or not key.strip():
        raise click.BadParameter(f"give KEY=VALUE (e.g. components=128), got '{value}'")
    try:
        parsed = toml_module().loads(f"v = {text}")["v"]
    except Exception:  # noqa: BLE001 (tomllib's errors vary by version) a bare word is text
        parsed = text
    return key.strip().replace("-", "_"), parsed


def benchmark_option(help: str) -> Callable:
    return click.option("--benchmark", default="emoji", show_default=True, help=help)


def root_option(help: str = ROOT_HELP) -> Callable:
    return click.option("--root", type=click.Path(), default=None, help=help)


scheme_option = click.option("--scheme", default=None, help="The benchmark's split scheme (default: its first).")


def split_file_option(help: str) -> Callable:
    return click.option("--split-file", type=click.Path(dir_okay=False), default=None, help=help)


def teacher_option(help: str) -> Callable:
    return click.option("--teacher", default="torchvision:mobilenet_v2", show_default=True, help=help)


teacher_weights_option = click.option("--teacher-weights", type=click.Path(dir_okay=False), default=None,
                                      help="A local weights file for the teacher.")


def device_option(help: str) -> Callable:
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                        help=help)


def student_option(help: str) -> Callable:
    return click.option("--student", default=DEFAULT_STUDENT, show_default=True, help=help)


def student_weights_option(help: str) -> Callable:
    return click.option("--student-weights", type=click.Path(dir_okay=False), default=None, help=help)


def seed_option(help: str) -> Callable:
    return click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help=help)


ci_option = click.option("--ci", type=click.Choice(["normal", "t"]), default="normal", show_default=True,
                         help="CI quantile: normal 1.96 or Student t (n-1).")


def task_options(command=None, *, sweep: bool = False):
    """The options that define the tasks, shared by ``run`` and ``tasks``.

    With ``sweep=True`` (``run``), ``--ways`` and ``--shots`` take comma lists and give tuples.
    """
    if command is None:
        return lambda command: task_options(command, sweep=sweep)
    sweep_help = (SWEEP_HELP.format("5,20"), SWEEP_HELP.format("1,5")) if sweep else ("", "")
    shape = ({"type": str, "callback": int_list(2), "metavar": "N[,N...]"},
             {"type": str, "callback": int_list(1), "metavar": "K[,K...]"}) if sweep else (
        {"type": click.IntRange(min=2)}, {"type": click.IntRange(min=1)})
    return compose(
        benchmark_option("A benchmark from 'tcs-fewshot benchmarks', 'folder' (your images at --root), "
                         "or 'digits' (bundled demo)."),
        root_option(),
        scheme_option,
        split_file_option("With --benchmark folder: JSON {split: [class, ...]} (default: a seeded class split)."),
        click.option("--features", type=click.Path(dir_okay=False), default=None,
                     help="An .npz features file (ids, labels, features[, split, is_train]) instead of a benchmark."),
        click.option("--protocol", type=click.Choice(["episodic", "pfsl"]), default="episodic", show_default=True,
                     help="episodic: N-way K-shot Q-query tasks from --split's classes; pfsl: every class, K shots "
                          "each from the official train images, the whole official test set as queries."),
        click.option("--split", default="test", show_default=True, help="Split whose classes episodic tasks use."),
        click.option("--ways", default="5" if sweep else 5, show_default=True, **shape[0],
                     help="N, classes per episodic task (pfsl uses every class)." + sweep_help[0]),
        click.option("--shots", default="5" if sweep else 5, show_default=True, **shape[1],
                     help="K, labelled support items per class." + sweep_help[1]),
        click.option("--queries", type=click.IntRange(min=1), default=15, show_default=True,
                     help="Q, query items per class in an episodic task (pfsl queries the whole test set)."),
        click.option("--tasks", "n_tasks", type=click.IntRange(min=1), default=600, show_default=True,
                     help="Tasks (episodic) or repeats of the shot draw (pFSL)."),
        seed_option("Base seed: task i is a pure function of the data, the shape, the seed and i."),
    )(command)


def image_options(command):
    """``--background`` and ``--max-image-pixels``: how image files are decoded (``run``, ``distill``, ``data check``)."""
    from tcs_fewshot.data.images import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS

    return compose(
        click.option("--background", default=DEFAULT_BACKGROUND, show_default=True,
                     help="Colour transparent pixels are composited on: a name, #rrggbb or r,g,b "
                          "(recorded; part of the feature cache's key)."),
        click.option("--max-image-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Largest image decoded whole (PIL's own limit by default); a larger file is refused "
                          "in one line naming it, JPEGs are decoded reduced first. Images over 16.8 "
                          "megapixels are reduced on load."),
    )(command)


def report_options(command):
    """RUN_DIR... and the output options shared by ``report`` and ``compare``."""
    return compose(
        click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False)),
        click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex", "html"]), default=None,
                     help="Text tables (md, csv, latex) or one self-contained HTML file with figures "
                          "(default: tables in the terminal)."),
        click.option("--out", type=click.Path(dir_okay=False), default=None,
                     help="Write to this file instead of stdout (html: default RUN_DIR/report.html)."),
        click.option("--reference", default=None,
                     help="Method the others are paired against, per setting; method@run when runs share a name "
                          "(default: every pair on the same tasks)."),
        ci_option,
    )(command)
