"""What a run's folder says while it trains and after: its log history, progress and ETA, curves, the readiness
checklist, metrics.json, evaluations and sample completions, and the tail of a log. Read only, never written.

The folder is alignment.runner's: config.yaml, readiness.json, data/ and model/, where the Trainer methods append
log_history.jsonl (alignment.progress) and PPO metrics.jsonl and samples.jsonl (alignment.ppo); model/metrics.json
appears when the run ends, eval/*.json when ``launch.py eval`` scores it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HISTORIES = ("log_history.jsonl", "metrics.jsonl")  # Trainer methods (alignment.progress), PPO
BOOKKEEPING = {"step", "max_steps", "epoch", "time", "event", "total_flos", "num_tokens", "eval_num_tokens"}
MAX_PANELS = 9
TAIL_BYTES = 64_000


@dataclass(frozen=True)
class Progress:
    step: int
    max_steps: int | None
    elapsed_s: float | None  # since training (not loading) began
    eta_s: float | None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written right now
            continue
    return [r for r in records if isinstance(r, dict)]


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's logged steps so far, oldest first (empty before its first log)."""
    for name in HISTORIES:
        if (path := Path(run_dir) / "model" / name).is_file():
            return _jsonl(path)
    return []


def progress(records: list[dict[str, Any]], max_steps: int | None = None, now: float | None = None) -> Progress:
    """Step and max_steps of the newest record (``max_steps`` where the records carry none, as PPO's), the time
    since training began and the time left at the pace so far."""
    if not records:
        return Progress(0, max_steps if max_steps and max_steps > 0 else None, None, None)
    last = records[-1]
    step, total = int(last.get("step", 0)), last.get("max_steps") or max_steps
    total = int(total) if total and total > 0 else None
    begins = [r for r in records if r.get("event") == "train_begin" and "time" in r]
    if not begins or "time" not in last:
        return Progress(step, total, None, None)
    begin = begins[-1]
    elapsed = (now or time.time()) - begin["time"]
    done, spent = step - int(begin["step"]), last["time"] - begin["time"]
    eta = spent / done * (total - step) if total and done > 0 else None
    return Progress(step, total, elapsed, max(eta, 0.0) if eta is not None else None)


def curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per logged quantity: the losses first, then the others in the order they appear. The end-of-run
    summary (train_loss, train_runtime, ...) and timings are left out."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in record.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            timing = key.endswith(("_runtime", "_per_second")) or key.startswith("train_")
            if numeric and key not in BOOKKEEPING and not timing:
                series.setdefault(key, []).append((int(record.get("step", 0)), float(value)))
    return dict(sorted(series.items(), key=lambda item: "loss" not in item[0]))


def panels(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, list[tuple[int, float]]]]]:
    """The curves by panel: each quantity beside its held-out twin (``loss`` with ``eval_loss``), losses first."""
    grouped: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, points in curves(records).items():
        grouped.setdefault(name.removeprefix("eval_"), {})[name] = points
    return sorted(grouped.items(), key=lambda item: "loss" not in item[0])[:MAX_PANELS]


def curves_figure(records: list[dict[str, Any]]):
    """The losses and every other logged quantity against the step, each beside its held-out value, in panels of
    a matplotlib Figure; None before the first log."""
    from matplotlib.figure import Figure

    found = panels(records)
    if not found:
        return None
    columns = min(3, len(found))
    rows = -(-len(found) // columns)
    figure = Figure(figsize=(11, 2.3 * rows + 0.4))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, series) in zip(axes, found, strict=False):
        for name, points in series.items():
            steps, values = zip(*points, strict=True)
            held_out = name.startswith("eval_")
            ax.plot(steps, values, "s--" if held_out else ("o-" if len(points) < 30 else "-"), markersize=3,
                    label="held out" if held_out else "train")  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(found) :]:
        ax.set_visible(False)
    axes[min(len(found), columns) - 1].set_xlabel("step", fontsize=8)
    figure.tight_layout()
    return figure


def readiness(run_dir: str | Path) -> dict[str, Any] | None:
    """readiness.json: the checklist of the rows, written before any model loads."""
    return read_json(Path(run_dir) / "readiness.json")


def final_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """model/metrics.json, written when the run ends."""
    return read_json(Path(run_dir) / "model" / "metrics.json")


def evaluations(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """eval/<name>.json by name: what ``launch.py eval`` wrote for the run."""
    folder = Path(run_dir) / "eval"
    found = {path.stem: read_json(path) for path in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    return {name: result for name, result in found.items() if result is not None}


def samples(run_dir: str | Path, limit: int = 8) -> list[dict[str, Any]]:
    """The newest step's sample completions (PPO's samples.jsonl: held-out prompts answered and scored)."""
    records = _jsonl(Path(run_dir) / "model" / "samples.jsonl")
    if not records:
        return []
    newest = max(int(r.get("step", 0)) for r in records)
    return [r for r in records if int(r.get("step", 0)) == newest][:limit]


def log_tail(path: str | Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log as a terminal shows them: of a line a progress bar rewrites with carriage
    returns, only its newest state."""
    try:
        with Path(path).open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - TAIL_BYTES))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    shown = (([part for part in line.split("\r") if part.strip()] or [""])[-1] for line in text.split("\n"))
    kept = [line.rstrip() for line in shown if line.strip()]
    return "\n".join(kept[-lines:])


def duration(seconds: float | None) -> str:
    """A short duration: 45 s, 3 min 05 s, 2 h 10 min."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
