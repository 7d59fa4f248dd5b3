"""The README stays true: every setting is documented, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from ops.config import env_var, setting_names

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_settings_table() -> None:
    missing = [n for n in setting_names() if f"| `{n}` |" not in README or env_var(n) not in README]
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```\n(python -m pip install[^\n]*pytest[^\n]*)\n```", README)
    assert len(commands) == 1, "README must show exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[0] in ci
