"""Which pairs and judgments an export keeps, and what its card and record say of them: the flagged raters left out,
each pair's label (a lead's adjudication, else the raters' consensus, else the prior) and drop reason, and agreement
and calibration figures of exactly the rows kept.

Everything but ``flagged_raters_for`` and ``decisions_for`` is numpy over the export's arrays; the definitions are
storage.quality's.
"""

from __future__ import annotations

from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlmodel import Session

from storage.frames import judgment_frame_for
from storage.models import Adjudication, CalibrationItem, Campaign, Pair
from storage.quality.consensus import array_consensus
from storage.quality.judgments import DIRECTIONS, SCALE

CALIBRATION_CHOICES = ("none", "gold", "votes")
"""What an export does with calibration items: leave them out, label them by their gold answer, or by the votes."""


def flagged_raters_for(*, session: Session, campaign_id: int, calibration: pd.DataFrame) -> dict[str, Any]:
    """The raters flagged under the campaign's calibration settings (storage.quality.flags.campaign_flags), as the
    export records them: ``excluded_raters`` (id, pseudonym, reasons, current judgments) and ``flag_settings``."""
    from storage.quality.flags import REASONS, campaign_flags  # scipy and friends load only when this is asked for

    columns = Campaign.calibration_threshold, Campaign.calibration_window
    threshold, window = session.execute(select(*columns).where(Campaign.id == campaign_id)).one()
    judgments = judgment_frame_for(session=session, campaign_id=campaign_id)
    flags = campaign_flags(judgments, calibration, min_calibration_accuracy=threshold, calibration_window=window)
    pseudonyms = judgments.groupby("rater")["pseudonym"].first()
    excluded = [
        {"rater_id": int(rater), "pseudonym": pseudonyms[rater], "reasons": [r for r in REASONS if row[r]],
         "n_judgments": int(row["n_judgments"])}
        for rater, row in flags[flags["flagged"]].iterrows()
    ]  # fmt: skip
    return {"excluded_raters": excluded,
            "flag_settings": {"min_calibration_accuracy": threshold, "calibration_window": window}}  # fmt: skip


def decisions_for(*, session: Session, campaign_id: int, pair_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The newest Adjudication of each pair at ``pair_ids`` (sorted ids): ``preference`` (NaN where a pair has none)
    and ``both_bad``, as ``pair_labels`` takes them."""
    query = (
        select(Adjudication.pair_id, Adjudication.preference, Adjudication.both_bad)
        .join(Pair, Pair.id == Adjudication.pair_id)
        .where(Pair.campaign_id == campaign_id)
        .order_by(Adjudication.decided_at, Adjudication.id)
    )
    newest = {pair_id: (preference, both_bad) for pair_id, preference, both_bad in session.execute(query)}
    preference, both_bad = np.full(len(pair_ids), np.nan), np.zeros(len(pair_ids), dtype=bool)
    if newest:
        rows = np.searchsorted(pair_ids, np.fromiter(newest, dtype=np.int64))
        preference[rows] = [decided for decided, _ in newest.values()]
        both_bad[rows] = [bool(bad) for _, bad in newest.values()]
    return {"preference": preference, "both_bad": both_bad}


def gold_labels_for(*, session: Session, campaign_id: int, pair_ids: np.ndarray) -> np.ndarray:
    """The expected (gold) preference of each pair at ``pair_ids`` (sorted ids) that is a calibration item, NaN
    for the others."""
    query = (
        select(CalibrationItem.pair_id, CalibrationItem.expected)
        .join(Pair, Pair.id == CalibrationItem.pair_id)
        .where(Pair.campaign_id == campaign_id)
    )
    gold = np.full(len(pair_ids), np.nan)
    items = session.execute(query).all()
    if items:
        gold[np.searchsorted(pair_ids, [pair_id for pair_id, _ in items])] = [expected for _, expected in items]
    return gold


def pair_labels(
    judgments: dict, prior: np.ndarray, *, policy: str, use_prior: bool, keep_ties: bool, keep_both_bad: bool,
    min_agreement: float, decisions: dict[str, np.ndarray] | None = None, gold: np.ndarray | None = None,
    include_calibration: str = "none",
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, int]]:  # fmt: skip
    """Per pair: direction, strength, agreement, confidence, n_judgments, both_bad, source ("adjudication", "gold",
    "judgments" or "prior"), from_prior and adjudicated (``prior`` is NaN where unknown); which pairs to keep; and
    how many were dropped, by reason (storage.card.DROPPED).

    A lead's decision (``decisions``, from ``decisions_for``) overrides the consensus: its direction, strength and
    both-bad flag are the label, the agreement is the share of the judgments whose sign is its direction, it has no
    confidence figure, and min_agreement never drops it (the lead settled the disagreement); ties and both-bad still
    drop as for any label.

    Calibration items (``gold``, from ``gold_labels_for``: NaN for ordinary pairs) are dropped when
    ``include_calibration`` is "none"; with "gold" their known answer is the label, exactly as a lead's decision
    would be (so a wrong vote never labels one); with "votes" they are labelled like any other pair.
    """
    if include_calibration not in CALIBRATION_CHOICES:
        raise ValueError(f"include_calibration must be one of {', '.join(CALIBRATION_CHOICES)}; "
                         f"got {include_calibration!r}")  # fmt: skip
    index, n = judgments["pair_index"], len(prior)
    labels = array_consensus(policy, item_index=index, preference=judgments["preference"],
                             rater=judgments["rater_id"], n_items=n)  # fmt: skip
    n_judgments = np.bincount(index, minlength=n)
    from_prior = (n_judgments == 0) & ~np.isnan(prior) & use_prior
    decided = decisions["preference"] if decisions else np.full(n, np.nan)
    calibration = ~np.isnan(gold) if gold is not None else np.zeros(n, dtype=bool)
    by_gold = calibration & (include_calibration == "gold")
    decided = np.where(by_gold, gold, decided)
    adjudicated = ~np.isnan(decided)
    direction = np.where(from_prior, np.sign(np.nan_to_num(prior)), labels["direction"])
    direction = np.where(adjudicated, np.sign(np.nan_to_num(decided)), direction).astype(np.int64)
    agrees = np.bincount(index, weights=np.sign(judgments["preference"]) == direction[index], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(adjudicated, agrees / n_judgments, labels["agreement"])
    both_bad = np.bincount(index, weights=judgments["both_bad"], minlength=n) * 2 > n_judgments
    labels |= {
        "direction": direction,
        "strength": np.where(adjudicated, np.abs(decided), np.where(from_prior, np.abs(prior), labels["strength"])),
        "agreement": agreement,
        "confidence": np.where(adjudicated, np.nan, labels["confidence"]),
        "n_judgments": n_judgments,
        "both_bad": np.where(
            adjudicated & ~by_gold,
            decisions["both_bad"] if decisions else False,
            np.where(adjudicated, False, both_bad),
        ),
        "source": np.where(
            adjudicated, np.where(by_gold, "gold", "adjudication"), np.where(from_prior, "prior", "judgments")
        ),
        "from_prior": from_prior & ~adjudicated,
        "adjudicated": adjudicated,
    }
    labelled = (n_judgments > 0) | from_prior | adjudicated
    left_out = labelled & calibration & (include_calibration == "none")
    labelled &= ~left_out
    bad = labelled & labels["both_bad"] & (not keep_both_bad)
    tie = labelled & ~bad & (labels["direction"] == 0) & (not keep_ties)
    # NaN agreement (a prior label's) is never below; an adjudicated pair is never dropped for it.
    low = labelled & ~bad & ~tie & ~adjudicated & (labels["agreement"] < min_agreement)
    dropped = {
        "unlabelled": ~labelled & ~left_out,
        "calibration": left_out,
        "both_bad": bad,
        "tie": tie,
        "low_agreement": low,
    }
    return labels, labelled & ~bad & ~tie & ~low, {reason: int(mask.sum()) for reason, mask in dropped.items()}


def _alpha(counts: np.ndarray, domain: tuple[int, ...], level: str) -> float | str:
    # One value observed throughout: expected disagreement 0, alpha undefined, as in storage.quality.agreement.
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = krippendorff.alpha(value_counts=counts, value_domain=domain, level_of_measurement=level)
    return round(float(alpha), 4) if np.isfinite(alpha) else "undefined: every judgment gave one and the same label"


def agreement_figures(
    item: np.ndarray, rater: np.ndarray, preference: np.ndarray, n_judgments: np.ndarray, agreement: np.ndarray
) -> dict[str, Any]:
    """Agreement of exported rows: their judgments (``item`` groups them by row) and each row's n_judgments and
    agreement (share of its judgments whose sign is its direction).

    Alpha and raw agreement are ``storage.quality.agreement.campaign_agreement``'s (each rater's first judgment of a
    pair; pairs judged by two or more raters), counted here with numpy: its crosstab takes seconds per 100k pairs.
    """
    judged = n_judgments > 0
    figures: dict[str, Any] = {
        "rows labelled by judgments": int(judged.sum()),
        "raters whose judgments were exported": len(np.unique(rater)),
    }
    if not judged.any():
        return figures
    figures["judgments per judged row (mean)"] = round(float(n_judgments[judged].mean()), 3)
    figures["agreement with the consensus (mean share of a row's judgments whose sign is its direction)"] = round(
        float(agreement[judged].mean()), 4
    )
    first = np.unique(item * (int(rater.max()) + 1) + rater, return_index=True)[1]  # stable: a rater's earliest
    n_items = int(item.max()) + 1
    counts = np.bincount(item[first] * 5 + preference[first] + 2, minlength=5 * n_items).reshape(n_items, 5)
    counts = counts[counts.sum(axis=1) >= 2]
    figures["pairs judged by two or more raters"] = len(counts)
    if not len(counts):
        figures["agreement between raters"] = "cannot be measured: no exported pair was judged by two raters"
        return figures
    directions = np.column_stack([counts[:, :2].sum(axis=1), counts[:, 2], counts[:, 3:].sum(axis=1)])
    n = directions.sum(axis=1)
    figures["Krippendorff's alpha, ordinal (-2..2)"] = _alpha(counts, SCALE, "ordinal")
    figures["Krippendorff's alpha, nominal (A / tie / B)"] = _alpha(directions, DIRECTIONS, "nominal")
    figures["raw agreement (share of rater pairs giving one A / tie / B label)"] = round(
        float(((directions * (directions - 1)).sum(axis=1) / (n * (n - 1))).mean()), 4
    )
    figures["unanimous share of rows with 2+ judgments"] = round(float((agreement[n_judgments >= 2] == 1).mean()), 4)
    return figures


def calibration_figures(
    calibration: pd.DataFrame, *, pair_ids: np.ndarray, pair_index: np.ndarray, rater: np.ndarray,
    preference: np.ndarray, exported_raters: np.ndarray,
) -> dict[str, str]:  # fmt: skip
    """Calibration accuracy of the exported raters over their answers to ``calibration`` (calibration_frame_for), as
    storage.quality.raters scores an answer: right when its preference is accepted. The judgment arrays are the
    campaign's current ones, ``pair_index`` pointing into ``pair_ids``."""
    accepted = np.zeros((len(pair_ids), len(SCALE)), dtype=bool)
    rows = np.searchsorted(pair_ids, calibration["item"].to_numpy())  # pair_ids are sorted: read in id order
    for row, values in zip(rows, calibration["accepted"], strict=True):
        accepted[row, np.add(values, 2)] = True
    answers = accepted.any(axis=1)[pair_index] & np.isin(rater, exported_raters)
    if not answers.any():
        return {"calibration accuracy of the exported raters": "no calibration answers by these raters"}
    correct = accepted[pair_index[answers], preference[answers] + 2]
    return {
        "calibration accuracy of the exported raters": f"{correct.mean():.1%} over {int(answers.sum()):,} "
        f"calibration answers by {len(np.unique(rater[answers]))} of the {len(exported_raters)} raters"
    }
