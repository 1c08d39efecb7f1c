"""What the Runs tab reads from a run's folder (storage.run_folder): progress and ETA, curves by panel, the log's
tail as a terminal shows it, and a history whose last line is still being written."""

import json

from storage.run_folder import history, log_tail, panels, progress, samples


def test_progress_and_eta_come_from_the_pace_since_training_began():
    records = [{"event": "train_begin", "step": 0, "max_steps": 10, "time": 100.0},
               {"step": 2, "max_steps": 10, "time": 104.0, "loss": 1.0},
               {"step": 4, "max_steps": 10, "time": 108.0, "loss": 0.5}]  # fmt: skip
    p = progress(records, now=110.0)
    assert (p.step, p.max_steps, p.elapsed_s, p.eta_s) == (4, 10, 10.0, 12.0)  # 2 s a step, 6 steps left
    resumed = [*records, {"event": "train_begin", "step": 4, "max_steps": 10, "time": 200.0},
               {"step": 5, "max_steps": 10, "time": 201.0}]  # fmt: skip
    assert progress(resumed, now=201.0).eta_s == 5.0  # the pace since the resume, not since the first start
    ppo = progress([{"step": 3, "score": 1.0}], max_steps=6)  # PPO's lines: no times, max_steps from its recipe
    assert (ppo.step, ppo.max_steps, ppo.eta_s) == (3, 6, None)
    assert progress([], max_steps=0).max_steps is None


def test_each_curve_sits_beside_its_held_out_twin_losses_first():
    records = [{"step": s, "time": 1.0, "epoch": 0.1, "learning_rate": 1e-3, "accuracy": 0.5, "loss": 1.0 / s}
               for s in (1, 2)]  # fmt: skip
    records.append({"step": 2, "eval_loss": 0.7, "eval_accuracy": 0.6, "eval_runtime": 0.1, "train_loss": 0.8})
    found = dict(panels(records))
    assert list(found) == ["loss", "learning_rate", "accuracy"]
    assert found["loss"] == {"loss": [(1, 1.0), (2, 0.5)], "eval_loss": [(2, 0.7)]}
    assert found["accuracy"]["eval_accuracy"] == [(2, 0.6)]


def test_the_log_tail_shows_a_progress_bar_once_and_a_half_written_history_line_is_skipped(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("loading\n 10%|#\r 50%|#####\r100%|##########\nINFO done\n")
    assert log_tail(log) == "loading\n100%|##########\nINFO done"
    assert log_tail(log, lines=1) == "INFO done" and log_tail(tmp_path / "missing.log") == ""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "log_history.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + '\n{"step": 2, "lo')
    assert history(tmp_path) == [{"step": 1, "loss": 2.0}]


def test_the_newest_sample_completions_are_shown(tmp_path):
    (tmp_path / "model").mkdir()
    lines = [{"step": step, "prompt": f"p{i}", "completion": f"c{step}", "score": 0.1 * step}
             for step in (0, 5) for i in range(3)]  # fmt: skip
    (tmp_path / "model" / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [(s["step"], s["prompt"]) for s in samples(tmp_path, limit=2)] == [(5, "p0"), (5, "p1")]
    assert samples(tmp_path / "nowhere") == []
