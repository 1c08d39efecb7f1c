"""A run's history while it trains: every Trainer log as one JSON line in ``<output_dir>/log_history.jsonl``.

The Trainer keeps its log history in memory and in checkpoints' trainer_state.json only, and recipes may save no
checkpoint at all; the studio's Runs tab (storage.run_folder) reads this file for progress, ETA and curves while
the run goes on, and after. Each line holds the step, max_steps, epoch and wall time beside the logged values; the
first line of each start (``"event": "train_begin"``) marks where timing starts. PPO, which has no Trainer, writes
its own metrics.jsonl (alignment.ppo).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

HISTORY = "log_history.jsonl"


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class LogHistoryCallback(TrainerCallback):
    """Append each log (main process only) to ``path``; on a resume, drop the lines past the checkpoint's step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        kept = [line for line in _lines(self.path) if line.get("step", 0) <= state.global_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(line) + "\n" for line in kept), encoding="utf-8")
        self._append({"event": "train_begin", "step": state.global_step, "max_steps": state.max_steps,
                      "time": time.time()})  # fmt: skip

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if state.is_world_process_zero:
            self._append({"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                          "time": time.time(), **(logs or {})})  # fmt: skip
