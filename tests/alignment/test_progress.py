"""The log history a Trainer run appends while it trains (alignment.progress), which the studio reads live."""

import json
from types import SimpleNamespace

from alignment.progress import LogHistoryCallback


def _state(step: int, main: bool = True) -> SimpleNamespace:
    return SimpleNamespace(is_world_process_zero=main, global_step=step, max_steps=6, epoch=step / 6)


def test_each_log_is_one_line_and_a_resume_drops_the_lines_after_its_checkpoint(tmp_path):
    path = tmp_path / "model" / "log_history.jsonl"
    callback = LogHistoryCallback(path)
    callback.on_train_begin(None, _state(0), None)
    for step in (1, 2, 3, 4):
        callback.on_log(None, _state(step), None, logs={"loss": 1.0 / step})
    callback.on_log(None, _state(4, main=False), None, logs={"loss": 9.0})  # another process writes nothing
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("loss") for line in lines] == [None, 1.0, 0.5, 1 / 3, 0.25]
    assert lines[0]["event"] == "train_begin" and all(line["max_steps"] == 6 for line in lines)
    LogHistoryCallback(path).on_train_begin(None, _state(2), None)  # resumed from checkpoint-2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["step"], line.get("event")) for line in lines] == [(0, "train_begin"), (1, None), (2, None),
                                                                      (2, "train_begin")]  # fmt: skip
