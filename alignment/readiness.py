"""Before any model loads: a checklist of exactly the rows a run trains on, saved as readiness.json.

Agreement and calibration are the figures the export computed over these rows (its export.json, the card's
machine-readable twin); a dataset that is not a Concord export cannot have them measured, and the checklist says so.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from alignment.arguments import DataArguments
from alignment.data import COLUMNS, RunData

log = logging.getLogger(__name__)

ALPHA = "Krippendorff's alpha, nominal (A / tie / B)"
CALIBRATION = "calibration accuracy of the exported raters"


class NotReady(ValueError):
    """The rows should not be trained on as they are; the message says why and how to override."""


def _prompt(row: dict[str, Any], method: str) -> str:
    if method != "sft":
        return json.dumps(row["prompt"], sort_keys=True)
    messages = row["messages"]
    while messages and messages[-1]["role"] == "assistant":  # the prompt is what comes before the written answer
        messages = messages[:-1]
    return json.dumps(messages, sort_keys=True)


def _rows_checks(dataset: DatasetDict, method: str) -> list[dict[str, Any]]:
    counts = {split: rows.num_rows for split, rows in dataset.items()}
    checks = [_check("rows per split", "ok" if counts.get("test") else "warn",
                     counts if counts.get("test") else f"{counts}: no held-out rows, so no evaluation")]  # fmt: skip
    for split, rows in dataset.items():
        seen = Counter(json.dumps(row, sort_keys=True) for row in rows.select_columns(COLUMNS[method]).to_list())
        extra = sum(n - 1 for n in seen.values())
        checks.append(_check(f"duplicate rows in {split}", "warn" if extra else "ok", extra))
    if "test" in dataset:
        train = {_prompt(row, method) for row in dataset["train"].to_list()}
        leaked = sum(_prompt(row, method) in train for row in dataset["test"].to_list())
        checks.append(_check("test rows whose prompt is also in train", "warn" if leaked else "ok", leaked))
    versions: set[int] = set()
    for rows in dataset.values():
        if "guideline_versions" in rows.column_names:
            versions.update(v for row in rows["guideline_versions"] for v in row)
        elif "guideline_version" in rows.column_names:
            versions.update(v for v in rows["guideline_version"] if v is not None)
    mixed = len(versions) > 1
    checks.append(_check("guideline versions", "warn" if mixed else "ok", sorted(versions) or "none recorded"))
    if "label_source" in dataset["train"].column_names:
        sources = Counter(s for rows in dataset.values() for s in rows["label_source"])
        checks.append(_check("label sources", "ok", dict(sources)))
    return checks


def _check(name: str, status: str, detail: Any) -> dict[str, Any]:
    return {"check": name, "status": status, "detail": detail}


def _agreement_check(figures: dict[str, Any], data_args: DataArguments) -> dict[str, Any]:
    alpha = figures.get(ALPHA)
    if not isinstance(alpha, int | float):
        reason = figures.get("agreement between raters") or alpha or "not in the export's figures"
        return _check("agreement (alpha, nominal)", "unknown", f"cannot be measured: {reason}")
    if alpha >= data_args.min_agreement_alpha:
        return _check("agreement (alpha, nominal)", "ok", alpha)
    detail = (
        f"{alpha} < min_agreement_alpha {data_args.min_agreement_alpha}: the labels carry the raters' disagreement"
    )
    if data_args.allow_low_agreement:
        return _check("agreement (alpha, nominal)", "warn", detail + " (allowed by allow_low_agreement)")
    return _check("agreement (alpha, nominal)", "stop", detail)


def _export_checks(facts: dict[str, Any] | None, data_args: DataArguments) -> list[dict[str, Any]]:
    if facts is None:
        return [_check("agreement, calibration, ties, licenses", "unknown",
                       "cannot be measured: the dataset is not a Concord export (no export.json)")]  # fmt: skip
    figures = facts["figures"]
    unrated = {"sft": "demonstrations are not rated", "prompts": "prompts are not rated (the reward model was)"}
    if data_args.export_kind in unrated:
        agreement = _check(
            "agreement (alpha, nominal)", "unknown", f"cannot be measured: {unrated[data_args.export_kind]}"
        )
    else:
        agreement = _agreement_check(figures, data_args)
    unknown = any(source["license"] is None for source in facts["sources"])
    return [
        agreement,
        _check("calibration", "ok" if CALIBRATION in figures else "unknown",
               figures.get(CALIBRATION, "cannot be measured: no calibration figure")),
        _check("ties dropped", "ok", facts["dropped"].get("tie", 0)),
        _check("licenses", "warn" if unknown or facts["license"] == "other" else "ok",
               {"license": facts["license"], "sources": facts["sources"]}),
    ]  # fmt: skip


def check_readiness(data: RunData, data_args: DataArguments, run_dir: Path) -> dict[str, Any]:
    """Run the checklist, write ``readiness.json`` into ``run_dir`` and log it; raise NotReady if it says stop."""
    checks = _rows_checks(data.dataset, data_args.method) + _export_checks(data.facts, data_args)
    ready = all(check["status"] != "stop" for check in checks)
    report = {"source": data.source, "export_ids": data.export_ids, "ready": ready, "checks": checks}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "readiness.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for check in checks:
        level = logging.INFO if check["status"] in ("ok", "unknown") else logging.WARNING
        log.log(level, "readiness %-5s %s: %s", check["status"], check["check"], check["detail"])
    if not report["ready"]:
        reasons = "; ".join(f"{c['check']}: {c['detail']}" for c in checks if c["status"] == "stop")
        raise NotReady(f"{data.source} is not ready to train on ({reasons}); set allow_low_agreement to train anyway")
    return report
