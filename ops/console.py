"""Everything the suite prints goes through here: lines, tables, progress, errors.

rich renders colour and live progress on a terminal and plain, line-by-line text when the
output is not a TTY (CI logs stay readable).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

from ops.config import Settings, describe
from ops.errors import OpsError

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported inside the functions: `inv --list` must not pay for it (bench/startup_bench.py).


def escape(text: str) -> str:
    """Escape rich markup in ``text`` (so a value like ``[red]`` prints as it is)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


@cache
def out() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    out().print(escape(message))


def step(message: str) -> None:
    out().print(f"[bold cyan]→[/] {escape(message)}")


def success(message: str) -> None:
    out().print(f"[green]✓[/] {escape(message)}")


def warn(message: str) -> None:
    err().print(f"[yellow]![/] {escape(message)}")


def failure(error: OpsError) -> None:
    """The one red line (and its hint) a task prints before exiting non-zero."""
    error_line(error.message, hint=error.hint)


def error_line(message: str, *, hint: str | None = None) -> None:
    line = f"[bold red]error:[/] {escape(message)}"
    if hint:
        line += f" [dim]— {escape(hint)}[/]"
    err().print(line)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table: drawn by rich on a terminal; off one (a pipe, a CI log) plain aligned text
    as wide as its longest cell, so no name, path or value is ever cut."""
    if not out().is_terminal:
        for line in plain_table(title, columns, rows):
            out().print(escape(line), soft_wrap=True)
        return
    from rich.table import Table

    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*(escape(cell) for cell in row))
    out().print(view)


def plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a table as plain text: columns padded to their widest cell, never cut."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return [title, line(columns).rstrip(), *(line(row).rstrip() for row in rows)]


def human_size(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``1.5 KiB`` ... ``3.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def plan(title: str, items: Sequence[tuple[str, str]]) -> None:
    """A dry-run or confirmation plan: one `key: value` per line."""
    out().print(f"[bold]{escape(title)}[/]")
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        out().print(f"  {escape(key.ljust(width))}  {escape(value)}")


def explain(settings: Settings, names: Sequence[str]) -> None:
    """With --verbose: show the settings a task uses and where each came from."""
    rows = {row.name: row for row in describe(settings)}
    for name in names:
        row = rows[name]
        out().print(f"[dim]  {row.name} = {escape(row.value)}  ({row.source})[/]")


@contextmanager
def byte_progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar for a byte stream; yields ``advance(n)``.

    Off a terminal, prints one line every few seconds instead of redrawing a bar.
    """
    console = err()
    if not console.is_terminal:
        started = last = time.monotonic()
        done = 0

        def advance_plain(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= 5:
                last = now
                console.print(f"  {description}: {_mib(done)} ({_mib(done / (now - started))}/s)")

        yield advance_plain
        elapsed = max(time.monotonic() - started, 1e-9)
        console.print(
            f"  {description}: {_mib(done)} in {elapsed:.1f} s ({_mib(done / elapsed)}/s)"
        )
        return

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            progress.advance(task_id, n)

        yield advance


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"
