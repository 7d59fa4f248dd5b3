"""A plan is data: what a mutating operation would do, built before it does anything.

Every mutating operation in ``ops`` goes converge → status → act (pyinvoke/invocations'
release tasks): a ``plan_*`` function reads the current state and returns a ``Plan``; the
task layer renders it (``ops.tasks.common.carry_out``), asks if the plan says so, and then
calls the operation's act function with the same plan. ``--dry-run`` stops after the render.

A plan holds only what may be printed: Secret values never enter ``items`` or
``warnings``; what the act needs (values included) is in ``work``, which is never rendered
and hidden from ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

W = TypeVar("W")


@dataclass(frozen=True, kw_only=True)
class Item:
    """One line of a plan: ``key  value`` (an empty key continues the line above)."""

    key: str
    value: str


@dataclass(frozen=True, kw_only=True)
class Ask:
    """The plan needs a yes: the user types ``expected`` (a namespace, a database name)."""

    prompt: str
    expected: str


@dataclass(frozen=True, kw_only=True)
class Plan(Generic[W]):
    """What an operation would do (``items``), what to mind (``warnings``), whether to ask
    first (``ask``), and what its act function needs to carry it out (``work``)."""

    title: str  # the task's name, e.g. "secrets.apply"
    items: tuple[Item, ...]
    work: W = field(repr=False)
    warnings: tuple[str, ...] = ()
    ask: Ask | None = None


def items(*pairs: tuple[str, str]) -> tuple[Item, ...]:
    """``items(("image", name), ("tags", tags))``: a plan's lines from ``(key, value)`` pairs."""
    return tuple(Item(key=key, value=value) for key, value in pairs)
