"""What every task shares: turning errors into one red line, and building the settings."""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar, overload

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import Task

from ops import console
from ops.config import Settings, load_settings
from ops.errors import OpsError, local_file_error
from ops.plan import Plan

__all__ = [
    "SHORT_FLAGS",
    "Collection",
    "Settings",
    "carry_out",
    "debug_enabled",
    "ops_task",
    "settings_for",
    "show_plan",
]

W = TypeVar("W")
R = TypeVar("R")

# The only short flags, each with one meaning in every task (Invoke's automatic ones gave
# `-n` four meanings). A task without the long flag simply has no such short flag.
SHORT_FLAGS: dict[str, str] = {
    "namespace": "n",
    "yes": "y",
    "verbose": "v",
    "tag": "t",
    "file": "f",
}
# Settings whose task flag is named differently, so an error names the flag you can type.
FLAG_NAMES: dict[str, str] = {
    "postgres_pod": "--pod",
    "backup_format": "--format",
    "backup_compression": "--compression",
    "backup_keep": "--keep",
    "rollout_timeout": "--timeout",
}


class OpsTask(Task[Any]):
    """An Invoke task whose short flags come from ``SHORT_FLAGS`` only."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short is not None and short not in taken_names:
            opts["names"].append(short)
        return opts


def debug_enabled() -> bool:
    """`inv --debug ...` (Invoke turns on root DEBUG logging) or MANIFEST_DEBUG=1."""
    return os.environ.get("MANIFEST_DEBUG") == "1" or logging.getLogger().isEnabledFor(
        logging.DEBUG
    )


@functools.cache
def skip_collection_at_exit() -> None:
    """Once a task has run: at exit, the cyclic garbage collector looks at nothing.

    The interpreter's shutdown collects every object of every module imported (Invoke, the
    docker SDK, requests, rich; bench/pipeline_bench.py measures what it costs) only to free
    memory the process gives back anyway. ``gc.freeze`` as an exit handler moves them all
    out of the collector's sight first; everything else still happens
    (other exit handlers, ``weakref.finalize`` callbacks, flushing stdout and stderr, objects
    not in a reference cycle freed as before). Our files and connections are closed by
    ``with`` blocks, not by the collector.
    """
    atexit.register(gc.freeze)


@overload
def ops_task(fn: Callable[..., Any], /) -> Task[Any]: ...
@overload
def ops_task(**kwargs: Any) -> Callable[[Callable[..., Any]], Task[Any]]: ...
def ops_task(*args: Any, **kwargs: Any) -> Any:
    """Like ``invoke.task``, but an error becomes one red line and a non-zero exit.

    ``inv --debug`` prints the traceback first; the exit code is the same with or without.
    """

    def decorate(fn: Callable[..., Any]) -> Task[Any]:
        @functools.wraps(fn)
        def body(*a: Any, **kw: Any) -> Any:
            skip_collection_at_exit()
            try:
                return fn(*a, **kw)
            except OpsError as error:
                if debug_enabled():
                    traceback.print_exc()
                console.failure(error)
                raise Exit(code=error.exit_code) from None
            except KeyboardInterrupt:
                console.error_line("interrupted", hint="Nothing partial was kept.")
                raise Exit(code=130) from None
            except Exit:
                raise
            except Exception as exc:
                if debug_enabled():
                    traceback.print_exc()
                if isinstance(exc, OSError) and exc.filename is not None:
                    # The local file system's boundary: one line naming the path. (Socket
                    # errors have no filename; each client maps its own.)
                    file_error = local_file_error(exc)
                    console.failure(file_error)
                    raise Exit(code=file_error.exit_code) from None
                console.error_line(
                    f"unexpected {type(exc).__name__}: {exc}",
                    hint="Run again as `inv --debug ...` for the traceback, and report it.",
                )
                raise Exit(code=1) from None

        kwargs.setdefault("auto_shortflags", False)
        return OpsTask(body, **kwargs)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def settings_for(**flags: object | None) -> Settings:
    """Settings from every source, with the task's flags on top (None = flag not given)."""
    return load_settings(flags, flag_names=FLAG_NAMES)


def show_plan(plan: Plan[Any], *, dry_run: bool) -> None:
    """The plan's lines under "<title> would:" (dry run) or "<title> plan:", then its warnings."""
    console.plan(
        f"{plan.title} {'would:' if dry_run else 'plan:'}",
        [(item.key, item.value) for item in plan.items],
    )
    for warning in plan.warnings:
        console.warn(warning)


def carry_out(
    plan: Plan[W],
    act: Callable[[Plan[W]], R],
    *,
    dry_run: bool,
    yes: bool = False,
    announce: bool = True,
) -> R | None:
    """Render the plan; stop there on a dry run; ask if the plan says so (the user types
    its ``expected``); then act on it.

    ``announce=False``: show the plan only on a dry run (work that shows itself as it goes,
    such as a build's steps). Returns what ``act`` returned, or None after a dry run. Not
    confirmed: exit 1, nothing done.
    """
    if dry_run or announce or plan.ask is not None:
        show_plan(plan, dry_run=dry_run)
    if dry_run:
        console.info("Dry run: nothing was changed.")
        return None
    ask = plan.ask
    if ask is not None and not yes:
        try:
            answer = input(f"{ask.prompt} ")
        except EOFError:  # no TTY (stdin closed) counts as no
            answer = ""
        if answer.strip() != ask.expected:
            raise Exit("Not confirmed; nothing was changed.", code=1)
    return act(plan)
