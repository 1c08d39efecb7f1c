"""How every benchmark reports: a section appended to docs/benchmarks.md, then one JSON object on the last line."""

from __future__ import annotations

import json
import os
import platform
import time
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


def machine_speed_ms() -> float:
    """Milliseconds a fixed pure-Python workload takes here (the fastest of five), measured when a section is written.
    The same code's figures on this machine differ by up to 2x between days; this says which kind of day it was."""

    def workload() -> float:
        began = time.perf_counter()
        rows = [{"id": i, "text": f"row {i}", "score": i * 0.5} for i in range(20_000)]
        json.loads(json.dumps(rows))
        sorted(rows, key=lambda row: (row["text"], -row["score"]))
        return time.perf_counter() - began

    return round(1000 * min(workload() for _ in range(5)), 1)


def report(name: str, figures: dict[str, Any], command: str) -> None:
    """Append the section ``name`` (date, machine, command, figures) to docs/benchmarks.md and print the JSON line."""
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        f"\n## {name}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"- machine: {machine}",
        f"- machine speed: {machine_speed_ms()} ms for benchmarks/_report.py's fixed workload (lower is faster)",
        f"- command: `{command}`",
        *_lines(figures),
    ]
    with DOCS.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(json.dumps(figures))
