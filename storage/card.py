"""An export's dataset card (README.md): Hugging Face YAML front matter, then what is in it and how it was made."""

from __future__ import annotations

import re
from typing import Any

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
    "reward": "`prompt` / `chosen` / `rejected` / `margin`, conversational (TRL RewardTrainer, which subtracts the "
    "margin inside its loss). The margin is what the raters said beyond the direction: (strength - 1) x agreement "
    'for a judged pair (0 for "slightly better" or a split vote, 1 for a unanimous "much better"), '
    "strength - 1 for a lead's or a gold label, and `prior_margin` (0 unless asked) for an imported prior label.",
    "kto": "`prompt` / `completion` / `label`, unpaired: each pair's chosen completion True, its rejected False.",
}
POLICIES = {
    "majority": "each current judgment votes A, tie or B by the sign of its preference; the most votes wins and a "
    "draw for the most is a tie; strength is the mean |preference| of the winning votes and confidence the share "
    "of the votes that won (the same figure as agreement)",
    "mean": "the mean of the current judgments' preferences (-2 A much better .. +2 B much better): its sign is the "
    "direction and its magnitude the strength; confidence is the share of judgments with that sign (as agreement)",
    "weighted": "Dawid-Skene: each rater's confusion matrix is estimated from all of the campaign's current "
    "judgments (without gold labels) and each pair's label is its most probable class (an exact draw is a tie); "
    "confidence is that class's posterior probability and strength the mean |preference| of the judgments with "
    "that sign, so a reward margin means the same as under majority",
}
FIGURES = (
    "Of exactly the exported rows and the current judgments they were labelled from (flagged raters' left out). "
    "Alpha and raw agreement count each rater's first judgment of a pair, as `storage.quality.agreement` does; the "
    "agreement with the consensus, like each row's `agreement`, counts every current judgment."
)
DROPPED = {
    "unlabelled": "pairs with no current judgment left (and no prior label used)",
    "both_bad": "pairs a majority of raters flagged as both responses bad",
    "tie": "pairs whose consensus is a tie",
    "low_agreement": "pairs whose agreement is below min_agreement",
    "calibration": "calibration (gold) items, left out of training exports (include_calibration none)",
    "rejected": "demonstrations a lead rejected",
    "unreviewed": "demonstrations written in the studio that no lead has reviewed yet (include_unreviewed false)",
}
REVIEW = (
    "A demonstration written in the studio is exported once a lead accepts it (with `include_unreviewed`, also "
    "while no lead has reviewed it); one a lead rejected never is. Imported human writing counts as reviewed where "
    "it came from and is exported unless a lead rejected it."
)
CALIBRATION = {
    "none": "Calibration (gold) items are not in this export: they test raters and are left out of training data.",
    "gold": "Calibration (gold) items are included, labelled by their known (gold) answer whatever the votes said "
    "(label_source `gold`).",
    "votes": "Calibration (gold) items are included and labelled by the raters' votes like any other pair, even "
    "where the votes contradict the known answer.",
}


LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")  # the shape of the Hub's license ids (mit, cc-by-4.0, ...)
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&!$])")  # what starts emphasis, code, links, HTML, entities, cells
LIST_MARKER = re.compile(r"^(\d+)(?=[.)])|^(?=[-+])")  # what opens a list where the text opens a list item


def _license(licenses: set[str | None]) -> str:
    """The Hub's license id when every row shares one known license that is a license id, else "other"."""
    license = next(iter(licenses)) if len(licenses) == 1 else None
    return license.lower() if license and LICENSE_ID.fullmatch(license.lower()) else "other"


def literal(text: Any) -> str:
    """Imported or typed text (a source, a license, a campaign or model name) as one line of markdown that shows
    exactly that text: no newline starts a block, and no character starts HTML, a link, emphasis or a table cell."""
    escaped = MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    return LIST_MARKER.sub(r"\1\\", escaped, count=1)  # "1." -> "1\.", "- x" -> "\- x"


def export_facts(
    *, campaign: str, kind: str, counts: dict[str, int], filters: dict[str, Any], dropped: dict[str, int],
    figures: dict[str, Any], guideline_versions: list[int], provenance: dict[tuple[str, str | None], int],
    notes: list[str] = (), models: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What the card states, as ``export.json``: the machine-readable twin that training reads."""
    sources = [{"source": source, "license": license, "rows": n} for (source, license), n in provenance.items()]
    return {"campaign": campaign, "kind": kind, "counts": counts, "filters": filters, "dropped": dropped,
            "figures": figures, "guideline_versions": guideline_versions, "sources": sources,
            "license": _license({license for _, license in provenance}), "notes": list(notes),
            "models": models or {}}  # fmt: skip


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
    explained = [
        f"Consensus policy `{filters['policy']}`: {POLICIES[filters['policy']]}.",
        "A pair's `agreement` is the share of its current judgments whose sign is its consensus direction; pairs "
        "below `min_agreement` are dropped. Pairs without judgments take their imported prior label when "
        "`use_prior` is on (label_source `prior`): a prior label has no agreement or confidence figure and is kept "
        "whatever `min_agreement` is.",
    ] if "policy" in filters else []  # fmt: skip
    if "include_calibration" in filters:
        explained.append(CALIBRATION[filters["include_calibration"]])
    if "include_unreviewed" in filters:
        explained.append(REVIEW)
    excluded, settings = filters.get("excluded_raters", []), filters.get("flag_settings")
    if settings:
        explained.append(
            f"Flagged raters were left out before consensus: {len(excluded)} flagged by `storage.quality.flags` with "
            f"the campaign's calibration threshold ({settings['min_calibration_accuracy']:.0%} over a rater's last "
            f"{settings['calibration_window']} calibration answers) and the default `FlagArguments` otherwise: a "
            "rater is flagged for low calibration accuracy, a position or length bias, many ties, rushing or low "
            "agreement only when a test across the campaign's raters (Holm-corrected) shows it, never for too little "
            "evidence."
        )
    return [
        "## How the rows were chosen",
        "",
        "Only current versions count: a judgment or demonstration replaced by an edit is left out.",
        *explained,
        "",
        *(f"- {name}: {value}" for name, value in filters.items() if name not in ("excluded_raters", "flag_settings")),
        *(f"- excluded rater {r['pseudonym']} ({', '.join(r['reasons'])}): {r['n_judgments']:,} judgments left out"
          for r in excluded),
        *(f"- dropped, {DROPPED[reason]}: {n:,}" for reason, n in dropped.items()),
        "",
    ]  # fmt: skip


def _models(models: dict[str, dict[str, int]] | None) -> list[str]:
    """The card's section on the models behind the rows."""
    if not models:
        return []
    total = sum(m["responses"] for m in models.values())
    return [
        "## Models",
        "",
        "Who wrote the responses in these rows (`model_chosen` / `model_rejected`, or `model` for KTO rows), their "
        "share of the responses, and how many of theirs are the chosen (desirable) ones.",
        "",
        "| model | responses | share | chosen |",
        "|---|---|---|---|",
        *(f"| {literal(name)} | {m['responses']:,} | {m['responses'] / total:.1%} | {m['chosen']:,} |"
          for name, m in models.items()),
        "",
    ]  # fmt: skip


def dataset_card(
    *,
    campaign: str,
    kind: str,
    counts: dict[str, int],
    filters: dict[str, Any],
    dropped: dict[str, int],
    figures: dict[str, Any],
    guideline_versions: list[int],
    provenance: dict[tuple[str, str | None], int],
    notes: list[str] = (),
    models: dict[str, dict[str, int]] | None = None,
) -> str:
    """The card's text; ``figures`` (``agreement_figures`` and ``calibration_figures``) describe exactly these rows."""
    lines = [
        *_front_matter(kind, counts, provenance),
        f"# {literal(campaign)}: {kind} export",
        "",
        f"Human-feedback data exported by Concord from campaign **{literal(campaign)}**. Format: {FORMATS[kind]}",
        "",
        "## Splits",
        "",
        "| split | rows |",
        "|---|---|",
        *(f"| {split} | {n:,} |" for split, n in counts.items()),
        "",
        *(f"**Note:** {note}\n" for note in notes),
        "Splits are grouped by prompt: a hash of each prompt's content decides its side, so no prompt is on both "
        "and the same data always splits the same way.",
        "",
        *_selection(filters, dropped),
        "## Agreement and calibration",
        "",
        *([FIGURES, ""] if figures else []),
        *([f"- {name}: {value}" for name, value in figures.items()] or ["No agreement figures for these rows."]),
        "",
        *_models(models),
        "## Guidelines, sources and licenses",
        "",
        f"- guideline versions: {', '.join(map(str, guideline_versions)) or 'none recorded'}",
        *(f"- {literal(source)} ({literal(license or 'license unknown')}): {n:,} rows"
          for (source, license), n in provenance.items()),
        "",
        "Files: `dataset/` (datasets.load_from_disk), `parquet/` and `jsonl/` with one file per split.",
        "",
    ]
    return "\n".join(lines)
