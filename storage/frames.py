"""Database -> pandas DataFrames for the quality engine, read in bulk with Core selects (no ORM row objects).

``judgment_frame_for`` and ``calibration_frame_for`` give the tables ``storage.quality`` works on; the export and
the studio use them too. ``quality_report`` is the whole ``launch.py quality`` command minus printing.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, exists, func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from storage.members import excluded_raters
from storage.models import CalibrationItem, Campaign, Judgment, Pair, PairScore, Prompt, Response, TrainingRun, User
from storage.queue import MIN_CALIBRATION_ANSWERS
from storage.scores import latest_scoring_run

JUDGMENT_COLUMNS = (
    "item", "rater", "preference", "both_bad", "left", "time_on_task_s", "reasoning",
    "server_time", "judgment_id", "pseudonym", "length_a", "length_b",
)  # fmt: skip


def judgment_frame_for(*, session: Session, campaign_id: int) -> pd.DataFrame:
    """The campaign's current judgments (none that a later row supersedes), one per row, in server_time order; on a
    calibration item, the rater's first answer instead (the row that supersedes none): a revision made after the
    feedback of training mode, or after thinking it over, must not change a calibration score or consistency.

    ``length_a`` and ``length_b`` are the characters in responses A and B: the quality engine's length-bias signal.
    """
    later, response_a, response_b = aliased(Judgment), aliased(Response), aliased(Response)
    gold = exists().where(CalibrationItem.pair_id == Judgment.pair_id)
    current = ~exists().where(later.supersedes_id == Judgment.id)
    counted = or_(and_(~gold, current), and_(gold, Judgment.supersedes_id.is_(None)))
    query = (
        select(
            Judgment.pair_id.label("item"), Judgment.rater_id.label("rater"), Judgment.preference, Judgment.both_bad,
            Judgment.left, Judgment.time_on_task_s, Judgment.reasoning, Judgment.server_time,
            Judgment.id.label("judgment_id"), User.pseudonym, func.length(response_a.text).label("length_a"),
            func.length(response_b.text).label("length_b"),
        )
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(User, User.id == Judgment.rater_id)
        .join(response_a, response_a.id == Pair.response_a_id)
        .join(response_b, response_b.id == Pair.response_b_id)
        .where(Pair.campaign_id == campaign_id, counted)
        .order_by(Judgment.server_time, Judgment.id)
    )  # fmt: skip
    frame = pd.read_sql(query, session.connection())
    # An empty result carries no types; give it the ones a filled one has, so callers need no special case.
    types = {"both_bad": bool, "time_on_task_s": float, "server_time": "datetime64[us, UTC]"}
    return frame.astype(types | {"length_a": int, "length_b": int})


def calibration_frame_for(*, session: Session, campaign_id: int) -> pd.DataFrame:
    """The campaign's calibration items: ``item`` (pair id), ``accepted`` (sorted, expected included), ``kind``."""
    query = (
        select(CalibrationItem.pair_id.label("item"), CalibrationItem.expected, CalibrationItem.accepted,
               CalibrationItem.kind)
        .join(Pair, Pair.id == CalibrationItem.pair_id)
        .where(Pair.campaign_id == campaign_id)
        .order_by(CalibrationItem.pair_id)
    )  # fmt: skip
    frame = pd.read_sql(query, session.connection())
    accepted = [
        sorted({expected, *others}) for expected, others in zip(frame["expected"], frame["accepted"], strict=True)
    ]
    return frame.assign(accepted=pd.Series(accepted, index=frame.index, dtype=object))[["item", "accepted", "kind"]]


def model_judgment_frame_for(*, session: Session, campaign_id: int) -> pd.DataFrame:
    """The campaign's current judgments as votes between models (storage.quality.evaluation), but those of raters a
    lead excluded from it (storage.members): ``item``, ``rater``, ``preference``, ``model_a`` and ``model_b`` (who
    wrote each response), ``category`` (the prompt's domain) and ``calibration`` (the pair is a calibration item)."""
    later, response_a, response_b = aliased(Judgment), aliased(Response), aliased(Response)
    query = (
        select(
            Judgment.pair_id.label("item"), Judgment.rater_id.label("rater"), Judgment.preference,
            response_a.author.label("model_a"), response_b.author.label("model_b"), Prompt.domain.label("category"),
            exists().where(CalibrationItem.pair_id == Pair.id).label("calibration"),
        )
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(response_a, response_a.id == Pair.response_a_id)
        .join(response_b, response_b.id == Pair.response_b_id)
        .where(Pair.campaign_id == campaign_id, ~exists().where(later.supersedes_id == Judgment.id))
        .where(col(Judgment.rater_id).not_in(excluded_raters(campaign_id)))
        .order_by(Judgment.server_time, Judgment.id)
    )  # fmt: skip
    return pd.read_sql(query, session.connection()).astype({"calibration": bool})


def scored_model_pairs_for(*, session: Session, campaign_id: int, run_id: int) -> pd.DataFrame:
    """The run's scores of the campaign's pairs between two different models (calibration items left out):
    ``item``, ``model_a``, ``model_b``, ``margin`` (score A minus score B)."""
    response_a, response_b = aliased(Response), aliased(Response)
    query = (
        select(PairScore.pair_id.label("item"), response_a.author.label("model_a"),
               response_b.author.label("model_b"), (PairScore.score_a - PairScore.score_b).label("margin"))
        .join(Pair, Pair.id == PairScore.pair_id)
        .join(response_a, response_a.id == Pair.response_a_id)
        .join(response_b, response_b.id == Pair.response_b_id)
        .where(Pair.campaign_id == campaign_id, PairScore.run_id == run_id, response_a.author != response_b.author)
        .where(~exists().where(CalibrationItem.pair_id == Pair.id))
        .order_by(PairScore.pair_id)
    )  # fmt: skip
    return pd.read_sql(query, session.connection())


def _judge(*, session: Session, campaign_id: int, judge: str | None) -> tuple[str, pd.DataFrame] | None:
    """The judging run (``judge`` by name, else the one that scored the campaign last) and its scored pairs."""
    if judge is None:
        run = latest_scoring_run(session=session, campaign_id=campaign_id)
    else:
        run = session.execute(select(TrainingRun).where(TrainingRun.name == judge)).scalars().first()
    if run is None and judge is not None:
        raise ValueError(f"no training run is called {judge!r}")
    if run is None:
        return None
    pairs = scored_model_pairs_for(session=session, campaign_id=campaign_id, run_id=run.id)
    if pairs.empty and judge is not None:
        raise ValueError(f"run {judge!r} has not scored this campaign: launch.py score --campaign ... --run {judge}")
    return (run.name, pairs) if not pairs.empty else None


def evaluation_report(*, engine: Engine, campaign: str, judge: str | None = None, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The evaluation report (``storage.quality.evaluation.evaluation_report``) of the campaign named ``campaign``,
    with the reward-model run ``judge`` (default: the run that scored it last, if any) as one more judge."""
    from storage.quality.evaluation import evaluation_report as build

    with Session(engine) as session:
        found = session.execute(select(Campaign.id, Campaign.kind).where(Campaign.name == campaign)).one_or_none()
        if found is None:
            raise ValueError(f"no campaign named {campaign!r}")
        frame = model_judgment_frame_for(session=session, campaign_id=found.id)
        judged = _judge(session=session, campaign_id=found.id, judge=judge)
    return {"campaign": campaign, "kind": found.kind, **build(frame, judge=judged, n_boot=n_boot, seed=seed)}


def quality_report(*, engine: Engine, campaign: str, n_boot: int = 1000) -> dict[str, Any]:
    """The quality report (``storage.quality.report.build_report``) of the campaign named ``campaign``.

    Raters are flagged under the campaign's own calibration threshold and window, as the export excludes them; the
    thresholds also say whether the campaign puts raters on probation and from how many calibration answers.
    """
    # Imported here: the export and the studio read frames without loading the statistics libraries.
    from storage.quality.evaluation import model_figures
    from storage.quality.flags import FlagArguments
    from storage.quality.report import build_report

    columns = Campaign.id, Campaign.calibration_threshold, Campaign.calibration_window, Campaign.probation
    with Session(engine) as session:
        found = session.execute(select(*columns).where(Campaign.name == campaign)).one_or_none()
        if found is None:
            raise ValueError(f"no campaign named {campaign!r}")
        judgments = judgment_frame_for(session=session, campaign_id=found.id)
        calibration = calibration_frame_for(session=session, campaign_id=found.id)
        by_model = model_judgment_frame_for(session=session, campaign_id=found.id)
    if judgments.empty:
        raise ValueError(f"campaign {campaign!r} has no judgments yet: nothing to report")
    flag_args = FlagArguments(min_calibration_accuracy=found.calibration_threshold)
    report = build_report(
        judgments, calibration, flag_args=flag_args, calibration_window=found.calibration_window, n_boot=n_boot
    )
    report["thresholds"] |= {"probation": found.probation, "probation_min_answers": MIN_CALIBRATION_ANSWERS}
    report["models"] = model_figures(by_model)  # None when no pair is between two models
    return {"campaign": campaign, **report}
