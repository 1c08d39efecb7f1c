"""The load and fault suites of benchmarks/load.py in reduced size (CI's slow suite): a real studio server judged by
raters (pages speaking Gradio's queue protocol) on SQLite and PostgreSQL; a SIGKILLed server, terminated PostgreSQL
connections and a killed export. Zero acknowledged judgments lost or duplicated, no pair over k, no rater judging a
pair twice. The full sizes (50/100/200 raters) run from benchmarks/load.py; no timing is asserted here."""

import importlib
from pathlib import Path

import pytest

from tests.conftest import POSTGRES

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL"))]


@pytest.fixture
def load(shared_data, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.load")


def assert_nothing_lost(result: dict) -> None:
    assert result["acknowledged"] > 0, result
    assert result["lost"] == result["duplicated"] == 0, result
    assert result["pairs_over_k"] == result["judged_a_pair_twice"] == 0, result
    assert result["errors_leaking_internals"] == 0, result
    assert result["stored"] >= result["acknowledged"], result  # a submit in flight at a kill may land unacknowledged


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENGINES)
def test_a_crowd_of_raters_loses_nothing(load, kind):
    result = load.load_run(kind, raters=8, seconds=10)
    assert_nothing_lost(result)
    assert result["errors"] == 0 and result["stored"] == result["acknowledged"], result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENGINES)
def test_a_killed_server_restarts_and_its_raters_go_on(load, kind):
    result = load.fault_run(kind, load._restart, raters=6, seconds=16)
    assert_nothing_lost(result)
    assert result["errors"] > 0, "the raters must have met the dead server"


@pytest.mark.slow
@pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL")
def test_postgres_connections_cut_mid_load_leak_nothing_and_the_server_goes_on(load):
    assert_nothing_lost(load.fault_run("postgres", load._terminate_connections, raters=6, seconds=12))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENGINES)
def test_a_killed_export_leaves_no_half_export_and_runs_again(load, kind):
    result = load.export_kill(kind)
    assert result["records_after_kill"] == 0 and not result["half_export_visible"], result
    assert result["rerun_ok"] and result["records_after_rerun"] == 1, result


@pytest.mark.slow
def test_the_memory_soak_samples_the_servers_memory_and_loses_nothing(load):
    """The soak's campaign lets every rater judge every pair (k = raters), so it never runs dry; memory is sampled."""
    result = load.soak_run("sqlite", raters=4, seconds=12, every=3)
    assert_nothing_lost(result)
    assert len(result["server_rss_samples_mib"]) == 5 and all(m > 0 for m in result["server_rss_samples_mib"])
