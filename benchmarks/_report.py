"""How every benchmark reports: a section appended to docs/benchmarks.md, then one JSON object on the last line."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _lines(figures: dict[str, Any], prefix: str = "") -> list[str]:
    """Nested figures as ``- a.b: value`` lines, so a section reads without a JSON viewer."""
    lines = []
    for key, value in figures.items():
        if isinstance(value, dict):
            lines += _lines(value, f"{prefix}{key}.")
        else:
            lines.append(f"- {prefix}{key}: {json.dumps(value)}")
    return lines


def report(name: str, figures: dict[str, Any], command: str) -> None:
    """Append the section ``name`` (date, machine, command, figures) to docs/benchmarks.md and print the JSON line."""
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        f"\n## {name}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"- machine: {machine}",
        f"- command: `{command}`",
        *_lines(figures),
    ]
    with DOCS.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(json.dumps(figures))
