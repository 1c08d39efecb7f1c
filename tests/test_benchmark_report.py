"""How a benchmark reports: a dated section in docs/benchmarks.md with the machine and its speed that day."""

import json
import re

from benchmarks import _report


def test_a_section_states_the_machine_its_speed_and_the_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_report, "DOCS", tmp_path / "benchmarks.md")
    _report.report("Submits", {"sqlite": {"p95_s": 0.5}, "lost": 0}, "python benchmarks/load.py --quick")
    section = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    speed = re.search(r"^- machine speed: ([0-9.]+) ms for ", section, re.MULTILINE)
    assert speed and float(speed.group(1)) > 0
    assert "- command: `python benchmarks/load.py --quick`" in section
    assert "- sqlite.p95_s: 0.5" in section and "- lost: 0" in section
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"sqlite": {"p95_s": 0.5}, "lost": 0}
