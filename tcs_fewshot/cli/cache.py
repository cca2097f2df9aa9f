"""``tcs-fewshot cache info|clear``: the teacher feature cache."""

from __future__ import annotations

import click

from tcs_fewshot.cli.output import console, show


@click.group()
def cache() -> None:
    """The teacher feature cache ($TCS_FEWSHOT_DATA/features): what it holds, and clearing it.

    \b
    Example: tcs-fewshot cache info
             tcs-fewshot cache clear --teacher torchvision:mobilenet_v2
    """


@cache.command("info")
def cache_info_command() -> None:
    """One row per teacher and dataset: items filled, views, size on disk (MB).

    \b
    Example: tcs-fewshot cache info
    """
    from tcs_fewshot.cache.admin import cache_info, default_root
    from tcs_fewshot.reports.tables import rich_table

    table = cache_info()
    if table.empty:
        console.print(f"the feature cache at {default_root()} is empty")
        return
    table["size_mb"] = table["size_mb"].round(1)
    show(rich_table(table[["teacher", "dataset", "items", "items_filled", "views", "feature_dim", "size_mb",
                           "invalidated"]]))
    for row in table.itertuples():
        if row.last_invalidated:  # why features were recomputed: the files changed under the cache
            console.print(f"{row.teacher} on {row.dataset}: {row.invalidated} items recomputed after their file "
                          f"changed; latest {row.last_invalidated}", markup=False, highlight=False)


@cache.command("clear")
@click.option("--teacher", "teacher_name", default=None, help="Only this teacher (its spec or identity).")
def cache_clear_command(teacher_name) -> None:
    """Delete cached teacher features (all, or one teacher's); they are recomputed when needed.

    \b
    Example: tcs-fewshot cache clear --teacher torchvision:mobilenet_v2
    """
    from tcs_fewshot.cache.admin import clear_cache

    console.print(f"freed {clear_cache(teacher=teacher_name) / 2**20:.1f} MB")
