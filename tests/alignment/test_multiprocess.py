"""Two processes under `accelerate launch` (gloo on CPU): one run, one export, the main process does the database work.

`accelerate launch --cpu` starts a single process unless MPI is set up; `--multi_gpu` starts one per
--num_processes through torchrun, and the recipe's `use_cpu: true` makes them a gloo group on CPU.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlmodel import Session, select

from storage.db import make_engine, upgrade_database
from storage.models import ExportRecord, TrainingRun
from tests.alignment.conftest import TWO_GLOO_PROCESSES, seed_campaign

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_train_one_run_from_one_export(tmp_path, tiny_causal_lm):
    url = f"sqlite:///{tmp_path / 'concord.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    campaign = seed_campaign(engine, tmp_path)
    engine.dispose()
    recipe = [
        str(ROOT / "recipes" / "tiny" / "dpo.yaml"),
        "--model_name_or_path",
        tiny_causal_lm,
        "--campaign",
        campaign,
        "--output_root",
        str(tmp_path / "runs"),
    ]
    command = [*TWO_GLOO_PROCESSES, str(ROOT / "launch.py"), "--database-url", url, "train", *recipe]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    engine = make_engine(url)
    with Session(engine) as session:
        runs = session.exec(select(TrainingRun)).all()
        exports = session.exec(select(ExportRecord)).all()
    engine.dispose()
    assert len(runs) == 1 and len(exports) == 1 and runs[0].export_ids == [exports[0].id]
    run = runs[0]
    assert run.status == "finished" and done.stdout.count("finished in") == 1  # only the main process reports
    # 4 steps of 4 rows per process over 15 train rows: two epochs with two processes, one with one.
    assert run.metrics["eval"]["epoch"] == pytest.approx(2.0)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]  # both processes took the same run_name
    metrics = json.loads((Path(run.output_path) / "model" / "metrics.json").read_text())
    assert metrics["train_steps"] == 4 and metrics["heldout_reward_accuracy"] == run.metrics["heldout_reward_accuracy"]
