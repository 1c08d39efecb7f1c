"""The rows a run trains on: a campaign exported into the run folder, or an exported folder or a datasets name."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk
from sqlalchemy import Engine
from sqlmodel import Session

from alignment.arguments import DataArguments
from storage.campaigns import campaign_id_for, prompts_for
from storage.card import export_facts
from storage.export import export_campaign, in_test_split

log = logging.getLogger(__name__)

COLUMNS = {
    "sft": ["messages"],
    "reward": ["prompt", "chosen", "rejected"],
    "dpo": ["prompt", "chosen", "rejected"],
    "kto": ["prompt", "completion", "label"],
    "ppo": ["prompt"],
    "rloo": ["prompt"],
    "grpo": ["prompt"],
}
"""The columns each method's TRL trainer reads (reward also reads ``margin`` where present)."""
PROMPTS = Features({"prompt": [{"role": Value("string"), "content": Value("string")}], "prompt_id": Value("int64")})


@dataclass
class RunData:
    dataset: DatasetDict
    export_ids: list[int]  # ExportRecord ids; empty when the rows come from a folder or a datasets name
    source: str  # the campaign, folder or name the rows came from
    facts: dict | None  # the export's export.json (storage.card.export_facts), whose figures readiness reads


def _facts(folder: Path) -> dict | None:
    path = folder / "export.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def from_folder_or_name(name: str) -> tuple[DatasetDict, dict | None]:
    """A Concord export folder (with its export.json), a save_to_disk folder or a datasets name."""
    path = Path(name)
    if not path.is_dir():
        return load_dataset(name), None
    # A Concord export holds dataset/ (save_to_disk) beside export.json; a bare save_to_disk folder is taken as is.
    folder = path / "dataset" if (path / "dataset").is_dir() else path
    return load_from_disk(str(folder)), _facts(path)


def write_prompts(*, engine: Engine, campaign: str, test_fraction: float, data_dir: Path) -> RunData:
    """The campaign's prompts as ``prompt`` rows in ``data_dir``: dataset/ (save_to_disk) and export.json (the facts
    readiness reads). They are split by content hash as every export splits them, so a prompt held out of a reward
    model's export of the same campaign is held out here too. No ExportRecord: no rater's work is in them."""
    with Session(engine) as session:
        rows = prompts_for(session=session, campaign_id=campaign_id_for(session=session, name=campaign))
    if not rows:
        raise ValueError(f"campaign {campaign!r} has no prompts to answer")
    is_test = in_test_split([row["content_hash"] for row in rows], test_fraction)
    splits = {name: {"prompt": [], "prompt_id": []} for name in ("train", "test")}
    for row, test in zip(rows, is_test, strict=True):
        for column, values in splits["test" if test else "train"].items():
            values.append(row[column])
    # from_dict, not from_list: an empty split (test_fraction 0) keeps its columns.
    dataset = DatasetDict({name: Dataset.from_dict(split, features=PROMPTS) for name, split in splits.items()})
    dataset.save_to_disk(str(data_dir / "dataset"), num_shards={name: 1 for name in dataset})
    counts = {name: len(split["prompt"]) for name, split in splits.items()}
    facts = export_facts(campaign=campaign, kind="prompts", counts=counts, filters={"test_fraction": test_fraction},
                         dropped={}, figures={}, guideline_versions=[],
                         provenance=Counter((r["source"], r["license"]) for r in rows))  # fmt: skip
    (data_dir / "export.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
    log.info("wrote %s prompts of campaign %r into %s (%s)", len(rows), campaign, data_dir, counts)
    return RunData(load_from_disk(str(data_dir / "dataset")), [], campaign, facts)


def load_run_data(data_args: DataArguments, *, engine: Engine | None, data_dir: Path) -> RunData:
    """Export the campaign into ``data_dir`` (one ExportRecord; its prompts alone for an online method) or load the
    dataset; fails on rows it cannot use."""
    if data_args.campaign is not None and data_args.export_kind == "prompts":
        data = write_prompts(engine=engine, campaign=data_args.campaign, test_fraction=data_args.test_fraction,
                             data_dir=data_dir)  # fmt: skip
    elif data_args.campaign is not None:
        log.info("exporting campaign %r (%s rows) into %s", data_args.campaign, data_args.export_kind, data_dir)
        result = export_campaign(
            engine=engine, campaign=data_args.campaign, kind=data_args.export_kind, out_dir=data_dir,
            policy=data_args.policy, min_agreement=data_args.min_agreement,
            exclude_flagged_raters=data_args.exclude_flagged_raters, include_calibration=data_args.include_calibration,
            prior_margin=data_args.prior_margin, test_fraction=data_args.test_fraction,
        )  # fmt: skip
        log.info(result.summary())
        data = RunData(load_from_disk(str(data_dir / "dataset")), [result.export_id], data_args.campaign,
                       _facts(data_dir))  # fmt: skip
    else:
        dataset, facts = from_folder_or_name(data_args.dataset)
        data = RunData(dataset, [], data_args.dataset, facts)
    _check_columns(data, data_args.method)
    return data


def _check_columns(data: RunData, method: str) -> None:
    if "train" not in data.dataset or not data.dataset["train"].num_rows:
        raise ValueError(f"{data.source}: no train rows to train {method} on (splits: {dict(data.dataset.num_rows)})")
    for split, rows in data.dataset.items():
        missing = [name for name in COLUMNS[method] if name not in rows.column_names]
        if missing:
            raise ValueError(f"{data.source}: split {split!r} lacks column(s) {missing} that {method} trains on")


def distinct_prompts(rows: Dataset) -> list[list[dict]]:
    """Each distinct prompt of ``rows`` once (a preference export repeats a prompt for each of its pairs), in
    first-seen order: what an online method answers."""
    seen = {json.dumps(prompt, sort_keys=True): prompt for prompt in rows["prompt"]} if rows.num_rows else {}
    return list(seen.values())


def training_columns(dataset: DatasetDict, method: str) -> DatasetDict:
    """Only what the trainer reads: the export's lineage columns (lists of reasonings, pseudonyms) stay out of it."""
    keep = COLUMNS[method] + (["margin"] if method == "reward" and "margin" in dataset["train"].column_names else [])
    return DatasetDict({split: rows.select_columns(keep) for split, rows in dataset.items()})
