"""Where the command line prints: one rich console, and tables at their natural width in logs."""

from __future__ import annotations

from rich.console import Console

console = Console()


def show(renderable: object) -> None:
    """Print to the console; without a terminal (CI, ``> log``) a table gets its natural width.

    A log has no width to fit, and fitting 80 columns would wrap or cut the numbers.
    """
    from rich.measure import Measurement
    from rich.table import Table

    if isinstance(renderable, Table) and not console.is_terminal:
        wide = Console(file=console.file, width=10_000, force_terminal=False)
        natural = Measurement.get(wide, wide.options, renderable).maximum
        Console(file=console.file, width=max(console.width, natural), force_terminal=False).print(renderable)
    else:
        console.print(renderable)
