"""Where a model comes from (hub id, folder, run:NAME, pkg:NAME) and what fails before any model loads."""

import importlib.util
import logging
from pathlib import Path

import pytest
from sqlmodel import Session, select

from alignment.arguments import ModelArguments
from alignment.model import check_loadable
from alignment.source import resolve_model_path, stale_warnings
from storage.db import write_session
from storage.models import TrainingRun

STORAGE = Path(__file__).resolve().parents[2] / "storage"


def test_hub_ids_and_folders_pass_through_unchanged():
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct", engine=None) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model_path("/some/folder", engine=None) == "/some/folder"


def test_a_package_folder_is_found_without_importing_it():
    assert Path(resolve_model_path("pkg:storage/migrations", engine=None)) == STORAGE / "migrations"
    with pytest.raises(ValueError, match="no installed package 'no_such_package_here'"):
        resolve_model_path("pkg:no_such_package_here", engine=None)
    with pytest.raises(ValueError, match="is not a folder"):
        resolve_model_path("pkg:storage/no-such-subfolder", engine=None)


def _run(engine, tmp_path, name: str, status: str, stale: bool = False) -> Path:
    folder = tmp_path / name
    (folder / "model").mkdir(parents=True)
    with write_session(engine) as session, session.begin():
        session.add(TrainingRun(name=name, method="sft", status=status, stale=stale, output_path=str(folder)))
    return folder / "model"


def test_a_previous_run_is_named_with_run_prefix(sqlite_engine, tmp_path, caplog):
    model = _run(sqlite_engine, tmp_path, "sft-done", "finished")
    _run(sqlite_engine, tmp_path, "sft-crashed", "failed")
    old = _run(sqlite_engine, tmp_path, "sft-erased", "finished", stale=True)
    assert resolve_model_path("run:sft-done", engine=sqlite_engine) == str(model)
    assert resolve_model_path("sft-done", engine=sqlite_engine) == "sft-done"  # a plain name stays a hub id
    with pytest.raises(ValueError, match="that run is failed"):
        resolve_model_path("run:sft-crashed", engine=sqlite_engine)
    with pytest.raises(ValueError, match="no training run is called 'nobody'"):
        resolve_model_path("run:nobody", engine=sqlite_engine)
    with pytest.raises(ValueError, match="looked up in a database"):
        resolve_model_path("run:sft-done", engine=None)
    with caplog.at_level(logging.WARNING, logger="alignment.source"):
        assert resolve_model_path("run:sft-erased", engine=sqlite_engine) == str(old)
    assert "since erased" in caplog.text


def test_stale_runs_are_reported(sqlite_engine, tmp_path):
    _run(sqlite_engine, tmp_path, "fresh", "finished")
    _run(sqlite_engine, tmp_path, "erased", "finished", stale=True)
    with Session(sqlite_engine) as session:
        runs = {run.name: run for run in session.exec(select(TrainingRun)).all()}
        assert stale_warnings(session=session, run=runs["fresh"]) == []
        assert "'erased' is stale" in stale_warnings(session=session, run=runs["erased"])[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"load_in_4bit": True, "use_peft": True}, "need bitsandbytes"),
        ({"load_in_4bit": True, "gguf_file": "m.gguf"}, "cannot also be loaded in 4 or 8 bits"),
        ({"load_in_8bit": True}, "trains only through adapters"),
    ],
)
def test_a_model_that_cannot_load_as_asked_fails_first(changes, message):
    if message == "need bitsandbytes" and importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(ValueError, match=message):
        check_loadable(ModelArguments(model_name_or_path="m", **changes))
