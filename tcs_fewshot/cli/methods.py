"""``tcs-fewshot methods``: every method ``run --methods`` accepts."""

from __future__ import annotations

import click

from tcs_fewshot.cli.output import show


@click.command("methods")
def list_methods() -> None:
    """List every method --methods accepts, what it consumes, and its reference.

    \b
    Example: tcs-fewshot methods
    """
    import pandas as pd

    from tcs_fewshot.methods.registry import descriptions, method_kind
    from tcs_fewshot.reports.tables import rich_table

    table = pd.DataFrame([{"method": name, "inputs": method_kind(name), "description": text}
                          for name, text in descriptions().items()])
    show(rich_table(table))
