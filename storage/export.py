"""DB rows -> TRL-ready datasets: bulk Core reads into numpy/Arrow, consensus over arrays, files, one ExportRecord.

Formats are TRL's conversational ones (storage.card.FORMATS). Preference rows also carry pair and prompt ids,
n_judgments, reasonings, rater pseudonyms and guideline versions (lists in judgment-id order), label_source
("judgments" | "prior" | "adjudication": a lead's decision, which overrides the consensus), agreement (share of
current judgments whose sign matches the label), confidence (the policy's certainty of the direction:
storage.quality.consensus.array_consensus; null for prior and adjudicated labels), strength and both_bad (a majority
of the judgments flagged both responses bad). Consensus is storage.quality.consensus's; with
``exclude_flagged_raters`` the raters storage.quality.flags flags under the campaign's calibration settings are left
out before it, as are, always, the raters a lead excluded from the campaign (storage.members).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict
from datasets.fingerprint import generate_random_fingerprint
from huggingface_hub import HfApi
from sqlalchemy import Engine, Integer, Text, cast, select
from sqlmodel import Session

from storage.card import dataset_card, export_facts
from storage.db import write_session
from storage.demonstrations import newest_reviews
from storage.export_models import model_shares, response_columns, unpaired_rows, with_unpaired
from storage.frames import calibration_frame_for
from storage.members import excluded_raters
from storage.models import AuditEvent, Campaign, Demonstration, ExportRecord, Judgment, Pair, Prompt, Response, User
from storage.quality.consensus import POLICIES
from storage.selection import (
    CALIBRATION_CHOICES,
    agreement_figures,
    calibration_figures,
    decisions_for,
    flagged_raters_for,
    gold_labels_for,
    pair_labels,
)

log = logging.getLogger(__name__)

KINDS = ("sft", "preference", "reward", "kto")
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
CLAIMS = pa.list_(pa.struct([("claim", pa.string()), ("status", pa.string()), ("source", pa.string())]))


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    kind: str
    counts: dict[str, int]
    export_id: int
    notes: list[str] = field(default_factory=list)  # what a reader of the export must know, also in its card

    def summary(self) -> str:
        """One line for the command line (and a line per note)."""
        splits = ", ".join(f"{split} {n:,}" for split, n in self.counts.items())
        line = f"export #{self.export_id}: {sum(self.counts.values()):,} {self.kind} rows ({splits}) in {self.out_dir}"
        return "\n".join([line, *(f"Note: {note}" for note in self.notes)])


@dataclass
class Rows:
    """Dataset rows, train rows first then test (each in id order), and what the record and the card say of them."""

    table: pa.Table
    n_train: int
    record: dict[str, Any]  # ExportRecord fields: fingerprints of pairs and labels, raters, guideline versions
    card: dict[str, Any]  # dataset_card arguments: guideline versions, provenance, dropped, figures
    filters: dict[str, Any]  # what the selection adds to the record's filters: the raters left out and why
    unpaired: tuple | None = None  # KTO: storage.export_models.unpaired_rows


def ids_sha256(ids: Any) -> str:
    """sha256 of the sorted distinct ids written as comma-separated decimals: how ExportRecord fingerprints rows."""
    return hashlib.sha256(",".join(map(str, np.unique(np.asarray(ids, dtype=np.int64)).tolist())).encode()).hexdigest()


def in_test_split(content_hashes: list[str], test_fraction: float) -> np.ndarray:
    """True where a prompt goes to test: sha256 of its content hash, read as a fraction of 2**64, < test_fraction."""
    digests = b"".join(hashlib.sha256(h.encode()).digest()[:8] for h in content_hashes)
    return np.frombuffer(digests, dtype=">u8") / 2.0**64 < test_fraction


def _read(session: Session, query) -> dict[str, pa.ChunkedArray]:
    """Run a Core select and take its raw rows straight into Arrow, skipping per-row SQLAlchemy objects.

    Columns must be integers, floats or strings: cast booleans to Integer and JSON to Text in the query.
    """
    types = {int: pa.int64(), float: pa.float64(), str: pa.string()}
    struct = pa.struct(
        [(c.name, types[getattr(c.type, "impl_instance", c.type).python_type]) for c in query.selected_columns]
    )
    cursor = session.connection().execute(query).cursor
    # Small batches: the row tuples die young, which keeps the garbage collector cheap.
    batches = [pa.array(rows, struct) for rows in iter(lambda: cursor.fetchmany(100_000), [])]
    return dict(zip(struct.names, pa.chunked_array(batches, struct).flatten(), strict=True))


def _take(column: pa.ChunkedArray, indices: np.ndarray) -> pa.Array:
    """Gather from the chunks as read: joining them first would copy every text once more."""
    taken = column.take(indices)
    return taken.chunk(0) if taken.num_chunks == 1 else taken.combine_chunks()


def _positions(keys: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Where each id sits in ``keys`` (any order); names the ids that are not there."""
    sorter = np.argsort(keys)
    found = sorter[np.searchsorted(keys, ids, sorter=sorter).clip(max=len(keys) - 1)] if len(keys) else ids
    missing = ids[keys[found] != ids] if len(keys) else ids
    if len(missing):
        raise ValueError(f"{what} {missing[:5].tolist()} referenced but not found in this campaign")
    return found


def _messages(session: Session, campaign_id: int, prompt_ids: np.ndarray) -> pa.Array:
    query = select(Prompt.id, cast(Prompt.messages, Text).label("messages")).where(Prompt.campaign_id == campaign_id)
    prompts = _read(session, query)
    messages = pa.array([json.loads(text) for text in prompts["messages"].to_pylist()], MESSAGES)
    return messages.take(_positions(prompts["id"].to_numpy(), prompt_ids, "prompt"))


def _pseudonyms(session: Session, rater_ids: np.ndarray) -> pa.Array:
    users = _read(session, select(User.id, User.pseudonym))
    return _take(users["pseudonym"], _positions(users["id"].to_numpy(), rater_ids, "rater"))


def _rows(
    table: pa.Table, is_test: np.ndarray, *, pairs=(), judgments=(), demonstrations=(), raters, versions, provenance,
    filters=None, **card: Any,
) -> Rows:  # fmt: skip
    """Rows plus what the record and the card say of them; ``provenance`` is one (source, license) per row."""
    raters, versions = (np.unique(np.asarray(ids, dtype=np.int64)).tolist() for ids in (raters, versions))
    record = {"pair_ids_sha256": ids_sha256(pairs), "judgment_ids_sha256": ids_sha256(judgments),
              "demonstration_ids_sha256": ids_sha256(demonstrations), "rater_ids": raters,
              "guideline_versions": versions}  # fmt: skip
    card |= {"guideline_versions": versions, "provenance": dict(Counter(provenance))}
    return Rows(table=table, n_train=int((~is_test).sum()), record=record, card=card, filters=filters or {})


def _current_judgments(session: Session, campaign_id: int, pair_ids: np.ndarray) -> dict:
    """Judgments no other row supersedes, sorted by (pair, id); ``pair_index`` points into pair_ids, ``row`` into
    ``reasoning`` (left as read, so the export copies the texts once)."""
    query = (
        select(Judgment.id, Judgment.pair_id, Judgment.preference, cast(Judgment.both_bad, Integer).label("both_bad"),
               Judgment.rater_id, Judgment.guideline_version, Judgment.supersedes_id, Judgment.reasoning)
        .join(Pair, Pair.id == Judgment.pair_id).where(Pair.campaign_id == campaign_id)
    )  # fmt: skip
    judgments = _read(session, query)
    ids = judgments["id"].to_numpy()
    pair_index = _positions(pair_ids, judgments["pair_id"].to_numpy(), "pair")
    order = np.lexsort((ids, pair_index))
    order = order[~np.isin(ids[order], judgments["supersedes_id"].drop_null().to_numpy())]
    names = ("id", "preference", "both_bad", "rater_id", "guideline_version")
    current = {name: judgments[name].to_numpy()[order] for name in names}
    return {**current, "pair_index": pair_index[order], "row": order, "reasoning": judgments["reasoning"]}


def _without(judgments: dict, leave_out: np.ndarray) -> dict:
    """``_current_judgments`` less those where ``leave_out``."""
    return {name: column if name == "reasoning" else column[~leave_out] for name, column in judgments.items()}


def _lists(lengths: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), values)


def _assistant(texts: pa.Array) -> pa.Array:
    """Each text as a one-message assistant turn."""
    message = pa.StructArray.from_arrays([pa.repeat("assistant", len(texts)), texts], fields=list(MESSAGE))
    return _lists(np.ones(len(texts), np.int64), message)


def _pair_table(session: Session, campaign_id: int, pairs: dict, labels: dict, judgments: dict) -> pa.Table:
    """Rows for the pairs at positions ``labels["kept"]``; the list columns hold their current judgments."""
    kept = labels["kept"]
    b_wins = labels["direction"][kept] > 0
    a_ids, b_ids = pairs["response_a_id"].to_numpy()[kept], pairs["response_b_id"].to_numpy()[kept]
    query = select(Response.id, Response.text, Response.author,
                   cast(Response.generation_params, Text).label("generation_params"))  # fmt: skip
    query = query.join(Prompt, Prompt.id == Response.prompt_id).where(Prompt.campaign_id == campaign_id)
    responses = _read(session, query)
    response_ids = responses["id"].to_numpy()
    chosen_at = _positions(response_ids, np.where(b_wins, b_ids, a_ids), "response")
    rejected_at = _positions(response_ids, np.where(b_wins, a_ids, b_ids), "response")
    chosen, rejected = _take(responses["text"], chosen_at), _take(responses["text"], rejected_at)
    # Each kept pair's current judgments, gathered in kept order: one copy of the reasoning texts.
    lengths = labels["n_judgments"][kept]
    starts = np.concatenate([[0], np.cumsum(labels["n_judgments"])])[kept]
    gather = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)])[:-1], lengths) + np.arange(lengths.sum())
    return pa.table({
        "prompt": _messages(session, campaign_id, pairs["prompt_id"].to_numpy()[kept]),
        "chosen": _assistant(chosen),
        "rejected": _assistant(rejected),
        "pair_id": pairs["id"].take(kept),
        "prompt_id": pairs["prompt_id"].take(kept),
        "n_judgments": lengths,
        "reasonings": _lists(lengths, _take(judgments["reasoning"], judgments["row"][gather])),
        "rater_pseudonyms": _lists(lengths, _pseudonyms(session, judgments["rater_id"][gather])),
        "guideline_versions": _lists(lengths, pa.array(judgments["guideline_version"][gather])),
        "label_source": pa.array(labels["source"][kept]),
        "agreement": pa.array(labels["agreement"][kept], mask=np.isnan(labels["agreement"][kept])),
        "confidence": pa.array(labels["confidence"][kept], mask=np.isnan(labels["confidence"][kept])),
        "strength": labels["strength"][kept],
        "both_bad": labels["both_bad"][kept],
        **response_columns(responses, chosen_at, rejected_at, _take),
    })  # fmt: skip


def preference_rows(
    *, session: Session, campaign_id: int, policy: str, keep_ties: bool, keep_both_bad: bool, use_prior: bool,
    test_fraction: float, min_agreement: float, exclude_flagged_raters: bool, include_calibration: str = "none",
) -> Rows:  # fmt: skip
    """One row per labelled pair, chosen/rejected by the consensus of its current judgments or else its prior;
    calibration items as ``include_calibration`` says (storage.selection.pair_labels)."""
    query = select(
        Pair.id, Pair.prompt_id, Pair.response_a_id, Pair.response_b_id, Pair.prior_preference, Pair.source,
        Pair.license, Prompt.content_hash,
    ).join(Prompt, Prompt.id == Pair.prompt_id)  # fmt: skip
    pairs = _read(session, query.where(Pair.campaign_id == campaign_id).order_by(Pair.id))
    judgments = _current_judgments(session, campaign_id, pairs["id"].to_numpy())
    calibration = calibration_frame_for(session=session, campaign_id=campaign_id)
    excluded = np.isin(judgments["rater_id"], session.exec(excluded_raters(campaign_id)).all())
    judgments = _without(judgments, excluded)  # raters a lead excluded from the campaign (storage.members)
    flagged = flagged_raters_for(session=session, campaign_id=campaign_id, calibration=calibration) \
        if exclude_flagged_raters else {}  # fmt: skip
    if flagged:  # before consensus: a flagged rater's judgments neither vote nor train Dawid-Skene
        judgments = _without(
            judgments, np.isin(judgments["rater_id"], [rater["rater_id"] for rater in flagged["excluded_raters"]])
        )
    prior = pairs["prior_preference"].to_numpy().astype(float)  # nulls become NaN
    decisions = decisions_for(session=session, campaign_id=campaign_id, pair_ids=pairs["id"].to_numpy())
    gold = gold_labels_for(session=session, campaign_id=campaign_id, pair_ids=pairs["id"].to_numpy())
    labels, keep, dropped = pair_labels(judgments, prior, policy=policy, use_prior=use_prior, keep_ties=keep_ties,
                                        keep_both_bad=keep_both_bad, min_agreement=min_agreement,
                                        decisions=decisions, gold=gold,
                                        include_calibration=include_calibration)  # fmt: skip
    is_test = in_test_split(pairs["content_hash"].filter(keep).to_pylist(), test_fraction)
    labels["kept"] = kept = np.flatnonzero(keep)[np.argsort(is_test, kind="stable")]
    held = keep[judgments["pair_index"]]
    raters = judgments["rater_id"][held]
    figures = agreement_figures(judgments["pair_index"][held], raters, judgments["preference"][held],
                                labels["n_judgments"][kept], labels["agreement"][kept])  # fmt: skip
    figures |= calibration_figures(calibration, pair_ids=pairs["id"].to_numpy(), pair_index=judgments["pair_index"],
                                   rater=judgments["rater_id"], preference=judgments["preference"],
                                   exported_raters=np.unique(raters))  # fmt: skip
    figures["judgments left out: their raters were excluded from the campaign"] = int(excluded.sum())
    # One count per label source, so they add up to the rows (a judged pair a lead decided counts as decided).
    sources = labels["source"][kept]
    figures["rows labelled by judgments"] = int((sources == "judgments").sum())
    figures["rows labelled by a lead's adjudication"] = int((sources == "adjudication").sum())
    figures["rows labelled by their gold answer"] = int((sources == "gold").sum())
    figures["rows labelled by a prior label (known at import)"] = int((sources == "prior").sum())
    figures["calibration items among the rows"] = int((~np.isnan(gold[kept])).sum())
    return _rows(
        _pair_table(session, campaign_id, pairs, labels, judgments), is_test, pairs=pairs["id"].to_numpy()[kept],
        judgments=judgments["id"][held], raters=raters, versions=judgments["guideline_version"][held],
        provenance=zip(pairs["source"].take(kept).to_pylist(), pairs["license"].take(kept).to_pylist(), strict=True),
        filters=flagged, dropped=dropped, figures=figures,
    )  # fmt: skip


def _reviewed(session: Session, demo_ids: np.ndarray, written: np.ndarray, include_unreviewed: bool):
    """Which demonstrations to keep by their newest review (storage.demonstrations): accepted ones, imported ones
    (``written`` False) unless rejected, and with ``include_unreviewed`` every one not rejected; and the counts of
    those left out."""
    status = newest_reviews(session=session, demonstration_ids=demo_ids.tolist())
    verdict = np.array([str(status[i].status) if i in status else "" for i in demo_ids.tolist()], dtype=object)
    rejected, unreviewed = verdict == "rejected", (verdict == "") & written
    keep = ~rejected & (include_unreviewed | ~unreviewed)
    dropped = {"rejected": int(rejected.sum())}
    if not include_unreviewed:
        dropped["unreviewed"] = int(unreviewed.sum())
    return keep, dropped


def sft_rows(*, session: Session, campaign_id: int, test_fraction: float, include_unreviewed: bool = False) -> Rows:
    """One row per current demonstration a lead accepted (or, imported, did not reject; with ``include_unreviewed``
    also those not reviewed yet): the prompt's messages followed by the demonstration's."""
    query = (
        select(Demonstration.id, Demonstration.prompt_id, cast(Demonstration.messages, Text).label("messages"),
               cast(Demonstration.claims, Text).label("claims"), Demonstration.rater_id,
               Demonstration.guideline_version, Demonstration.supersedes_id, Demonstration.source,
               Demonstration.license, Prompt.content_hash)
        .join(Prompt, Prompt.id == Demonstration.prompt_id)
        .where(Prompt.campaign_id == campaign_id).order_by(Demonstration.id)
    )  # fmt: skip
    demos = _read(session, query)
    ids = demos["id"].to_numpy()
    current = ~np.isin(ids, demos["supersedes_id"].drop_null().to_numpy())
    reviewed, dropped = _reviewed(session, ids[current], demos["rater_id"].is_valid().to_numpy(zero_copy_only=False)
                                  [current], include_unreviewed)  # fmt: skip
    kept = np.flatnonzero(current)[reviewed]
    is_test = in_test_split(demos["content_hash"].take(kept).to_pylist(), test_fraction)
    demos = {k: _take(v, kept[np.argsort(is_test, kind="stable")]) for k, v in demos.items()}
    prompts = _messages(session, campaign_id, demos["prompt_id"].to_numpy()).to_pylist()
    raters = demos["rater_id"].drop_null().to_numpy()
    table = pa.table({
        "messages": pa.array([p + json.loads(w) for p, w in zip(prompts, demos["messages"].to_pylist(), strict=True)],
                             MESSAGES),
        "demonstration_id": demos["id"],
        "prompt_id": demos["prompt_id"],
        "author": pc.replace_with_mask(demos["source"], demos["rater_id"].is_valid(), _pseudonyms(session, raters)),
        "guideline_version": demos["guideline_version"],
        "claims": pa.array([json.loads(text) for text in demos["claims"].to_pylist()], CLAIMS),
    })  # fmt: skip
    provenance = zip(demos["source"].to_pylist(), demos["license"].to_pylist(), strict=True)
    versions = demos["guideline_version"].drop_null()
    return _rows(table, is_test, demonstrations=demos["id"], raters=raters, versions=versions,
                 provenance=provenance, dropped=dropped, figures={})  # fmt: skip


def reward_margins(table: pa.Table, prior_margin: float) -> np.ndarray:
    """What the raters said of each pair beyond its direction, as the margin TRL's RewardTrainer subtracts inside its
    loss: (strength - 1) x agreement for a judged pair, so "slightly better" or a split vote asks for no margin and a
    unanimous "much better" for 1; (strength - 1) for a lead's or a gold label; ``prior_margin`` for an imported
    prior label (0 unless asked: the import says nothing of strength)."""
    strength = table["strength"].to_numpy(zero_copy_only=False)
    agreement = table["agreement"].to_numpy(zero_copy_only=False)
    source = table["label_source"].to_numpy(zero_copy_only=False)
    excess = np.clip(strength - 1, 0, None)
    margin = np.where(source == "judgments", excess * np.nan_to_num(agreement), excess)
    return np.where(source == "prior", prior_margin, margin)


def shape_rows(table: pa.Table, kind: str, prior_margin: float = 0.0) -> pa.Table:
    """Preference rows as ``kind`` rows; sft rows stay as built.

    ``reward`` adds ``margin`` (``reward_margins``). A kept tie (reward only) has A as chosen, B as rejected and
    margin 0, so it still nudges A above B: keep ties only with that in mind.
    ``kto`` makes two rows of each pair, its chosen completion labelled True and its rejected one False: that keeps
    desirable and undesirable examples 1:1 (what KTO's default weights assume), labels nothing the raters did not
    compare, and both rows share the prompt, so they land in the same split.
    """
    if kind == "reward":
        return table.append_column("margin", pa.array(reward_margins(table, prior_margin)))
    if kind != "kto":
        return table
    sided = [f"{name}_{side}" for name in ("model", "generation_params") for side in ("chosen", "rejected")]
    extras = table.drop_columns(["prompt", "chosen", "rejected", *sided])
    halves = [
        pa.table({"prompt": table["prompt"], "completion": table[side], "label": np.full(table.num_rows, label),
                  **dict(zip(extras.column_names, extras.columns, strict=True)), "model": table[f"model_{side}"],
                  "generation_params": table[f"generation_params_{side}"]})
        for side, label in (("chosen", True), ("rejected", False))
    ]  # fmt: skip
    return pa.concat_tables(halves).sort_by([("pair_id", "ascending"), ("label", "descending")])


def write_files(splits: dict[str, pa.Table], out_dir: Path, card: str, facts: dict[str, Any]) -> DatasetDict:
    """``dataset/`` (save_to_disk), ``parquet/`` and ``jsonl/`` per split, ``README.md`` and ``export.json``, moved in
    at once."""
    # A random fingerprint: datasets would otherwise hash every byte of the tables to make one.
    dataset = DatasetDict({name: Dataset(t, fingerprint=generate_random_fingerprint()) for name, t in splits.items()})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as staging:
        # Written aside, then renamed: out_dir never holds half an export.
        staged = Path(staging) / "export"
        for folder in ("parquet", "jsonl"):
            (staged / folder).mkdir(parents=True)
        with ThreadPoolExecutor(1) as pool:
            # Arrow and parquet writers release the GIL, so they run beside the JSON writer, which holds it.
            # One shard for an empty split: datasets writes none otherwise, then cannot load the split back.
            empty = {name: 1 for name, table in splits.items() if not table.num_rows}
            futures = [pool.submit(dataset.save_to_disk, str(staged / "dataset"), num_shards=empty)]
            futures += [pool.submit(pq.write_table, t, staged / "parquet" / f"{n}.parquet") for n, t in splits.items()]
            for name, split in dataset.items():
                split.to_json(staged / "jsonl" / f"{name}.jsonl", force_ascii=False)
            for future in futures:
                future.result()  # raises what failed in the thread
        (staged / "README.md").write_text(card, encoding="utf-8")
        (staged / "export.json").write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
        staged.rename(out_dir)
    return dataset


def record_export(*, session: Session, record: ExportRecord, campaign: str, push_to_hub: str | None) -> ExportRecord:
    """Add the ExportRecord and its AuditEvent(action="export", target=campaign); flushes, never commits."""
    session.add(record)
    session.flush()
    details = {"export_id": record.id, "kind": record.kind, "rows": record.row_count, "push_to_hub": push_to_hub}
    session.add(AuditEvent(actor_id=record.created_by, action="export", target=campaign, details=details))
    session.flush()
    return record


def _check_arguments(kind: str, out_dir: Path, test_fraction: float, options: dict[str, Any]) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if options["policy"] not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {options['policy']!r}")
    if options["keep_ties"] and kind != "reward":
        raise ValueError(f"keep_ties applies to kind 'reward' only: a tie has no chosen response for a {kind} row")
    if kind == "sft" and (options["min_agreement"] or options["exclude_flagged_raters"]):
        raise ValueError("min_agreement and exclude_flagged_raters apply to judgments: kind 'sft' has none")
    if not 0 <= options["min_agreement"] <= 1:
        raise ValueError(f"min_agreement must be in [0, 1]; got {options['min_agreement']}")
    if options["include_calibration"] not in CALIBRATION_CHOICES:
        raise ValueError(f"include_calibration must be one of {', '.join(CALIBRATION_CHOICES)}; "
                         f"got {options['include_calibration']!r}")  # fmt: skip
    if options["include_unreviewed"] and kind != "sft":
        raise ValueError("include_unreviewed applies to kind 'sft' only: it takes demonstrations not reviewed yet")
    if options["prior_margin"] and kind != "reward":
        raise ValueError(f"prior_margin applies to kind 'reward' only: a {kind} row has no margin")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty folder; export into a new one")


def _collect(engine: Engine, campaign: str, kind: str, filters: dict) -> tuple[int, Rows]:
    # Every read sees one snapshot: SQLite's read transaction gives it; PostgreSQL needs REPEATABLE READ.
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with Session(engine) as session:
        campaign_id = session.execute(select(Campaign.id).where(Campaign.name == campaign)).scalar()
        if campaign_id is None:
            raise ValueError(f"no campaign named {campaign!r}")
        rows = (sft_rows if kind == "sft" else preference_rows)(session=session, campaign_id=campaign_id, **filters)
        if kind == "kto" and filters["use_prior"]:
            rows.unpaired = unpaired_rows(session=session, campaign_id=campaign_id)
    if not rows.table.num_rows and not (rows.unpaired and rows.unpaired[0].num_rows):
        hint = ""
        if rows.card.get("dropped", {}).get("unreviewed"):
            hint = ("; demonstrations export once a lead accepts them (Lead > Demonstrations), or with "
                    "include_unreviewed")  # fmt: skip
        raise ValueError(f"campaign {campaign!r} has no {kind} rows to export (dropped: {rows.card.get('dropped')})"
                         f"{hint}")  # fmt: skip
    return campaign_id, rows


def export_campaign(
    *, engine: Engine, campaign: str, kind: str, out_dir: Path, policy: str = "majority", keep_ties: bool = False,
    keep_both_bad: bool = False, use_prior: bool = True, min_agreement: float = 0.0,
    exclude_flagged_raters: bool = False, include_calibration: str = "none", prior_margin: float = 0.0,
    test_fraction: float = 0.1, push_to_hub: str | None = None, actor_id: int | None = None,
    include_unreviewed: bool = False,
) -> ExportResult:  # fmt: skip
    """Write one campaign as a TRL-ready dataset under ``out_dir`` and record what went into it.

    ``policy`` is storage.quality.consensus's (majority, mean or weighted); ``min_agreement`` drops judged pairs
    whose agreement is below it; ``exclude_flagged_raters`` leaves out, before consensus, the judgments of the raters
    storage.quality.flags flags under the campaign's calibration threshold and window; ``include_calibration``
    leaves calibration items out ("none"), labels them by their gold answer ("gold") or by the votes ("votes");
    ``prior_margin`` is the reward margin of a prior label (``reward_margins``); kind sft takes the demonstrations a
    lead accepted (imported ones unless rejected), and with ``include_unreviewed`` those not reviewed yet too. An
    export too small for its test split to leave anything in train goes to train whole, and its card says so.
    """
    out_dir = Path(out_dir)
    options = {"policy": policy, "keep_ties": keep_ties, "keep_both_bad": keep_both_bad, "use_prior": use_prior,
               "min_agreement": min_agreement, "exclude_flagged_raters": exclude_flagged_raters,
               "include_calibration": include_calibration, "prior_margin": prior_margin,
               "include_unreviewed": include_unreviewed}  # fmt: skip
    _check_arguments(kind, out_dir, test_fraction, options)
    selection = {name: value for name, value in options.items() if name not in ("prior_margin", "include_unreviewed")}
    sft = {"include_unreviewed": include_unreviewed}
    filters = {"test_fraction": test_fraction} | (sft if kind == "sft" else selection)
    campaign_id, rows = _collect(engine, campaign, kind, filters)
    filters |= rows.filters | ({"prior_margin": prior_margin} if kind == "reward" else {})
    notes = []
    if rows.n_train == 0 and rows.table.num_rows:  # a hash split of a few prompts can send all to test: train on them
        rows.n_train = rows.table.num_rows
        notes.append(f"All {rows.table.num_rows:,} rows are in train and the test split is empty: the prompts' hashes "
                     f"sent every one to test at test_fraction {test_fraction}, too few to hold any out.")  # fmt: skip
        log.warning("campaign %r: %s", campaign, notes[-1])
    splits = {"train": rows.table.slice(0, rows.n_train), "test": rows.table.slice(rows.n_train)}
    splits = {name: shape_rows(table, kind, prior_margin) for name, table in splits.items()}
    if rows.unpaired is not None:
        table, hashes, provenance = rows.unpaired
        splits = with_unpaired(splits, table, in_test_split(hashes, test_fraction))
        rows.card["provenance"] = dict(Counter(rows.card["provenance"]) + provenance)
    rows.card["models"] = model_shares(splits)
    counts = {name: table.num_rows for name, table in splits.items()}
    described = {"campaign": campaign, "kind": kind, "counts": counts, "filters": filters, "notes": notes, **rows.card}
    dataset = write_files(splits, out_dir, dataset_card(**described), export_facts(**described))
    if push_to_hub:  # the splits, then our card in place of the one the Hub generated
        dataset.push_to_hub(push_to_hub)
        HfApi().upload_file(path_or_fileobj=out_dir / "README.md", path_in_repo="README.md", repo_id=push_to_hub,
                            repo_type="dataset")  # fmt: skip
    record = ExportRecord(
        campaign_id=campaign_id, kind=kind, filters=filters, out_path=str(out_dir.resolve()),
        row_count=sum(counts.values()), created_by=actor_id, **rows.record,
    )  # fmt: skip
    with write_session(engine) as session, session.begin():
        record_export(session=session, record=record, campaign=campaign, push_to_hub=push_to_hub)
    log.info("exported %s %s rows of campaign %r to %s", record.row_count, kind, campaign, out_dir)
    return ExportResult(out_dir=out_dir, kind=kind, counts=counts, export_id=record.id, notes=notes)
