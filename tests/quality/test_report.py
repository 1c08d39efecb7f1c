import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from storage.quality.flags import FlagArguments
from storage.quality.report import (
    CHUNK_ITEMS,
    N_DISAGREEMENTS,
    build_report,
    flag_rules,
    plot_report,
    render_report,
)

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("factual_priority", "safety", "sycophancy_trap")
N_CALIBRATION = 30


def planted_campaign(simulate) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six good raters, r6 and r7 near random (r7 fails every calibration item), r8 picks the left response 85% of
    the time, r9 answers in 3 s."""
    frame, truth = simulate([0.85] * 6 + [0.35] * 2 + [0.85] * 2, n_items=600, per_item=3, seed=3)
    rng = np.random.default_rng(0)
    biased = frame["rater"] == "r8"
    left = np.where(frame.loc[biased, "left"] == "a", -1, 1)  # the preference that picks the left response
    frame.loc[biased, "preference"] = np.where(rng.random(biased.sum()) < 0.85, left, -left)
    frame.loc[frame["rater"] == "r9", "time_on_task_s"] = 3.0
    frame["server_time"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="min")
    frame["pseudonym"] = "rater-" + frame["rater"]
    failing = (frame["rater"] == "r7") & (frame["item"] < N_CALIBRATION)
    frame.loc[failing, "preference"] = np.where(truth[frame.loc[failing, "item"]] > 0, -2, 2)  # the wrong side
    calibration = pd.DataFrame(
        {
            "item": range(N_CALIBRATION),
            "accepted": [[int(t), 2 * int(t)] if t else [0] for t in truth[:N_CALIBRATION]],
            "kind": [KINDS[i % 3] for i in range(N_CALIBRATION)],
        }
    )
    return frame, calibration


@pytest.fixture
def planted(simulate):
    frame, calibration = planted_campaign(simulate)
    return frame, calibration, build_report(frame, calibration, n_boot=50, seed=1)


def by_pseudonym(report):
    return {r["pseudonym"]: r for r in report["raters"]}


def test_report_flags_the_planted_raters_and_only_them(planted):
    _, _, report = planted
    flagged = {f["pseudonym"]: f for f in report["flags"]}
    raters = by_pseudonym(report)
    assert "position_bias" in raters["rater-r8"]["flags"] and raters["rater-r8"]["position_p"] < 1e-6
    assert raters["rater-r8"]["left_rate_ci"][0] > 0.65
    assert raters["rater-r9"]["flags"] == ["too_fast"]
    assert "low_competence" in raters["rater-r6"]["flags"] and "low_competence" in raters["rater-r7"]["flags"]
    assert set(flagged) == {"rater-r6", "rater-r7", "rater-r8", "rater-r9"}
    assert any(reason.startswith("chose the left response in") for reason in flagged["rater-r8"]["reasons"])
    assert raters["rater-r7"]["calibration_accuracy"] == 0 and "low_calibration" in raters["rater-r7"]["flags"]
    assert flagged["rater-r7"]["reasons"][0].startswith("calibration accuracy 0% over the last")
    assert [r["pseudonym"] for r in report["raters"][:4]] == list(flagged)  # flagged raters listed first


def test_calibration_accuracy_by_kind_matches_a_count_by_hand(planted):
    frame, calibration, report = planted
    answers = frame.merge(calibration, on="item")
    answers["correct"] = [p in ok for p, ok in zip(answers["preference"], answers["accepted"], strict=True)]
    expected = answers[answers["rater"] == "r3"].groupby("kind")["correct"].agg(["mean", "size"])
    got = by_pseudonym(report)["rater-r3"]["calibration_by_kind"]
    assert set(got) == set(KINDS)
    for kind, row in expected.iterrows():
        assert got[kind] == {"accuracy": pytest.approx(row["mean"]), "n": row["size"]}
    assert report["summary"]["n_calibration_judgments"] == len(answers)


def test_calibration_window_limits_the_recent_answers(planted):
    frame, calibration, _ = planted
    report = build_report(frame, calibration, calibration_window=4, n_boot=0)
    assert report["thresholds"]["calibration_window"] == 4
    recent = {r["pseudonym"]: r["calibration_recent_n"] for r in report["raters"]}
    assert max(recent.values()) == 4 and recent["rater-r3"] == min(
        4, by_pseudonym(report)["rater-r3"]["calibration_n"]
    )


def test_agreement_leaves_calibration_items_out_and_carries_intervals(planted):
    frame, _, report = planted
    agreement = report["agreement"]
    assert agreement["n_items"] == frame.loc[frame["item"] >= N_CALIBRATION, "item"].nunique()
    for name in ("alpha_ordinal", "alpha_nominal", "fleiss_kappa", "raw_agreement"):
        estimate = agreement[name]
        assert estimate["low"] <= estimate["value"] <= estimate["high"]
    # Six raters at 0.85 and four much worse: agreement well above chance and well below perfect.
    assert 0.15 < agreement["alpha_nominal"]["value"] < 0.6


def test_agreement_over_time_splits_the_items_in_completion_order(planted):
    _, _, report = planted
    points = report["agreement_over_time"]
    assert len(points) == 570 // CHUNK_ITEMS  # 570 regular items, chunks of at least CHUNK_ITEMS
    assert sum(p["n_items"] for p in points) == report["agreement"]["n_items"]
    ends = [p["end"] for p in points]
    assert ends == sorted(ends) and all(p["start"] <= p["end"] for p in points)
    assert all(p["alpha_ordinal"]["low"] <= p["alpha_ordinal"]["value"] for p in points)


def test_disagreements_are_the_lowest_agreement_regular_pairs(planted):
    frame, _, report = planted
    worst = report["disagreements"]
    assert len(worst) == N_DISAGREEMENTS
    assert [d["agreement"] for d in worst] == sorted(d["agreement"] for d in worst)
    assert worst[0]["agreement"] == pytest.approx(1 / 3) and all(d["item"] >= N_CALIBRATION for d in worst)
    first = worst[0]
    rows = frame[frame["item"] == first["item"]]
    assert first["votes"] == dict(zip(rows["pseudonym"], rows["preference"], strict=True))


def test_report_is_strict_json(planted):
    _, _, report = planted
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["thresholds"]["alpha"] == FlagArguments().alpha and report["thresholds"]["correction"] == "holm"


def test_perfect_agreement_and_repeats(simulate):
    frame, _ = simulate([1.0, 1.0], n_items=60, per_item=2, seed=1)
    repeat = frame[frame["rater"] == "r0"].head(5)
    frame = pd.concat([frame, repeat], ignore_index=True)
    frame["server_time"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="h")
    frame["pseudonym"] = frame["rater"]
    report = build_report(frame, None, n_boot=20)
    assert report["agreement"]["alpha_nominal"]["value"] == pytest.approx(1.0)
    assert report["summary"]["n_repeated"] == 5 and report["summary"]["consistency"] == 1.0
    assert report["summary"]["duplicate_reasoning_rate"] == pytest.approx(10 / len(frame))  # the 5 repeats, twice
    assert report["flags"] == [] and all(d["agreement"] == 1.0 for d in report["disagreements"])


def test_report_names_missing_columns(planted):
    frame, calibration, _ = planted
    with pytest.raises(ValueError, match="missing column.*server_time"):
        build_report(frame.drop(columns="server_time"), calibration, n_boot=0)
    with pytest.raises(ValueError, match="no rows"):
        build_report(frame.head(0), calibration, n_boot=0)


def test_render_report_prints_the_flagged_rater_and_why(planted):
    _, _, report = planted
    console = Console(file=io.StringIO(), width=240, record=True)
    render_report({"campaign": "planted", **report}, console)
    text = console.export_text()
    assert "Quality report planted" in text
    flagged = text[text.index("Flagged raters") : text.index("Lowest-agreement pairs")]
    assert "rater-r8" in flagged and "chose the left response in" in flagged
    assert "rater-r3" not in flagged
    assert "A rater is flagged only when the data show them past the line" in flagged


def test_a_newcomer_is_not_enough_evidence_yet_with_the_reason_in_words(planted):
    frame, calibration, _ = planted
    # r10 has judged 8 items and missed the 3 calibration items among them: below 70%, far from enough to show it.
    copied = frame[frame["rater"] == "r4"]
    regular, gold = copied[copied["item"] >= N_CALIBRATION].head(5), copied[copied["item"] < N_CALIBRATION].head(3)
    newcomer = pd.concat([regular, gold.assign(preference=-gold["preference"])]).assign(
        rater="r10", pseudonym="rater-r10"
    )
    report = build_report(pd.concat([frame, newcomer], ignore_index=True), calibration, n_boot=0)
    raters = by_pseudonym(report)
    assert raters["rater-r10"]["status"] == "not enough evidence yet" and raters["rater-r10"]["flags"] == []
    (waiting,) = [row for row in report["not_enough_evidence"] if row["pseudonym"] == "rater-r10"]
    assert waiting["reasons"][0] == "8 judgments so far; the tests need 20"
    assert waiting["reasons"][1].startswith("calibration accuracy 0% over the last 3 answers, below 70%")
    assert waiting["reasons"][1].endswith("not tested yet): too little evidence to test")
    assert {r["status"] for r in report["raters"] if r["flags"]} == {"flagged"}
    assert [r["status"] for r in report["raters"]] == sorted(  # flagged, then waiting, then ok
        (r["status"] for r in report["raters"]), key=["flagged", "not enough evidence yet", "ok"].index
    )


def test_the_rules_in_words_follow_the_thresholds_the_engine_used(planted):
    frame, calibration, _ = planted
    args = FlagArguments(alpha=0.01, correction="bonferroni", min_calibration_items=8, max_tie_rate=0.45)
    report = build_report(frame, calibration, flag_args=args, calibration_window=12, n_boot=0)
    rules = "\n".join(flag_rules(report["thresholds"]))
    assert "last 12 calibration answers below 70%, from 8 answers on" in rules
    assert "more than 45% of judgments called a tie" in rules
    assert "p < 0.01 after Bonferroni correction" in rules and "needs 20 judgments" in rules
    assert "Probation" not in rules  # the report alone does not know the campaign's probation setting
    on_probation = flag_rules(report["thresholds"] | {"probation": True, "probation_min_answers": 5})
    assert "from 5 answers on, sees only calibration items" in on_probation[-1]


def test_plot_report_writes_png_files(planted, tmp_path):
    _, _, report = planted
    paths = plot_report(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["agreement_over_time.png", "calibration_by_kind.png", "position_bias.png"]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000


def test_plot_report_leaves_out_a_plot_with_no_data(simulate, tmp_path):
    frame, _ = simulate([0.8, 0.8, 0.8], n_items=40, per_item=2)
    frame["server_time"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="min")
    frame["pseudonym"] = frame["rater"]
    paths = plot_report(build_report(frame, None, n_boot=0), tmp_path)
    assert [p.name for p in paths] == ["agreement_over_time.png", "position_bias.png"]


def test_report_module_loads_neither_the_database_nor_matplotlib():
    code = "import sys, storage.quality.report; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert "krippendorff" in loaded  # the import did pull in the metric core
    assert not loaded & {"sqlmodel", "sqlalchemy", "matplotlib"}


def test_agreement_over_time_with_one_point_spans_a_day_and_raters_show_by_name_when_named(planted):
    from matplotlib.dates import num2date

    from storage.quality.plots import report_figures

    _, _, report = planted
    report = json.loads(json.dumps(report))
    point = report["agreement_over_time"][-1]
    report["agreement_over_time"] = [point]  # a campaign's first chunk of pairs
    report["raters"][0]["name"] = "ada"
    figures = report_figures(report)
    low, high = (num2date(x) for x in figures["agreement_over_time"].axes[0].get_xlim())
    assert pd.Timedelta(hours=23) < high - low < pd.Timedelta(hours=25)  # not 2025-2029 around one point
    labels = [label.get_text() for label in figures["position_bias"].axes[0].get_yticklabels()]
    assert "ada" in labels and report["raters"][0]["pseudonym"] not in labels
