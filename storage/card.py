"""An export's dataset card (README.md): Hugging Face YAML front matter, then what is in it and how it was made."""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

TASKS = {
    "sft": ["text-generation"],
    "preference": ["text-generation"],
    "reward": ["text-classification"],
    "kto": ["text-generation"],
}
FORMATS = {
    "sft": "`messages`: the prompt's messages followed by the rater's written response (TRL conversational SFT).",
    "preference": "`prompt` / `chosen` / `rejected`, conversational with an explicit prompt (TRL DPO and friends).",
    "reward": "`prompt` / `chosen` / `rejected` / `margin`, conversational (TRL RewardTrainer; margin = strength).",
    "kto": "`prompt` / `completion` / `label`, unpaired: each pair's chosen completion True, its rejected False.",
}
POLICIES = {
    "majority": "each current judgment votes A, tie or B by the sign of its preference; the most votes wins and a "
    "draw for the most is a tie; strength is the mean |preference| of the winning votes",
    "mean": "the mean of the current judgments' preferences (-2 A much better .. +2 B much better): its sign is the "
    "direction and its magnitude the strength",
}
DROPPED = {
    "unlabelled": "pairs with no current judgment (and no prior label used)",
    "both_bad": "pairs a majority of raters flagged as both responses bad",
    "tie": "pairs whose consensus is a tie",
}


def agreement_figures(n_judgments: np.ndarray, agreement: np.ndarray) -> dict[str, float]:
    """Raw agreement of exported rows, from each row's n_judgments and agreement; more figures can join these."""
    judged, several = n_judgments > 0, n_judgments >= 2
    figures = {"rows labelled by judgments": int(judged.sum())}
    if judged.any():
        figures["judgments per judged row (mean)"] = round(float(n_judgments[judged].mean()), 3)
        figures["raw agreement (mean share of a row's judgments that agree with its consensus)"] = round(
            float(agreement[judged].mean()), 4
        )
    if several.any():
        figures["unanimous share of rows with 2+ judgments"] = round(float((agreement[several] == 1).mean()), 4)
    return figures


def _license(licenses: set[str | None]) -> str:
    """The Hub's license id when every row shares one known license, else "other"."""
    return next(iter(licenses)).lower() if len(licenses) == 1 and None not in licenses else "other"


def _front_matter(kind: str, counts: dict[str, int], provenance: dict[tuple[str, str | None], int]) -> list[str]:
    front = {
        "license": _license({license for _, license in provenance}),
        "task_categories": TASKS[kind],
        "tags": ["concord", "trl", "human-feedback", kind],
        # One pattern matches both parquet/train.parquet here and data/train-*.parquet on the Hub after a push;
        # an empty split is left out, as datasets cannot build a split from an empty parquet file.
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"*/{s}*.parquet"} for s in counts if counts[s]],
            }
        ],
    }
    return ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]


def _selection(filters: dict[str, Any], dropped: dict[str, int]) -> list[str]:
    consensus = [
        f"Consensus policy `{filters['policy']}`: {POLICIES[filters['policy']]}.",
        "Pairs without judgments take their imported prior label when `use_prior` is on (label_source `prior`).",
    ] if "policy" in filters else []  # fmt: skip
    return [
        "## How the rows were chosen",
        "",
        "Only current versions count: a judgment or demonstration replaced by an edit is left out.",
        *consensus,
        "",
        *(f"- {name}: {value}" for name, value in filters.items()),
        *(f"- dropped, {DROPPED[reason]}: {n:,}" for reason, n in dropped.items()),
        "",
    ]


def dataset_card(
    *,
    campaign: str,
    kind: str,
    counts: dict[str, int],
    filters: dict[str, Any],
    dropped: dict[str, int],
    figures: dict[str, float],
    guideline_versions: list[int],
    provenance: dict[tuple[str, str | None], int],
) -> str:
    """The card's text. ``figures`` names agreement figures (raw agreement now; Krippendorff's alpha can join)."""
    lines = [
        *_front_matter(kind, counts, provenance),
        f"# {campaign}: {kind} export",
        "",
        f"Human-feedback data exported by Concord from campaign **{campaign}**. Format: {FORMATS[kind]}",
        "",
        "## Splits",
        "",
        "| split | rows |",
        "|---|---|",
        *(f"| {split} | {n:,} |" for split, n in counts.items()),
        "",
        "Splits are grouped by prompt: a hash of each prompt's content decides its side, so no prompt is on both "
        "and the same data always splits the same way.",
        "",
        *_selection(filters, dropped),
        "## Agreement",
        "",
        *([f"- {name}: {value}" for name, value in figures.items()] or ["No agreement figures for these rows."]),
        "",
        "## Guidelines, sources and licenses",
        "",
        f"- guideline versions: {', '.join(map(str, guideline_versions)) or 'none recorded'}",
        *(f"- {source} ({license or 'license unknown'}): {n:,} rows" for (source, license), n in provenance.items()),
        "",
        "Files: `dataset/` (datasets.load_from_disk), `parquet/` and `jsonl/` with one file per split.",
        "",
    ]
    return "\n".join(lines)
