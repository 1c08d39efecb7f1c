"""Export: every option of ``launch.py export``; a run shows the first rows, the dataset card and a .zip to download.

Each run writes a new folder ``<exports_dir>/<campaign>-<kind>-<UTC time>``, so no export overwrites another. The
campaign's exports are listed below, stale ones (holding data erased since) marked as such. Every download link
goes to studio.server's route, which checks on each download that the caller leads the campaign or is an admin.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio.exports import ExportSummary
from studio.leads import LeadService
from studio.login import current_user
from studio.tabs.events import (
    LEAD_EVENTS,
    Profile,
    cleared_on_campaign_change,
    need_campaign,
    said_beside,
    shown_to_user,
    status_line,
)

KINDS = [
    ("preference (DPO): prompt, chosen, rejected", "preference"),
    ("reward: preference plus margin", "reward"),
    ("kto: prompt, completion, label", "kto"),
    ("sft: messages", "sft"),
]
POLICIES = [
    ("majority: most votes", "majority"),
    ("mean: mean preference", "mean"),
    ("weighted: Dawid-Skene rater reliability", "weighted"),
]
CALIBRATION_ITEMS = [
    ("left out: they test raters, not train models", "none"),
    ("included, labelled by their gold answer", "gold"),
    ("included, labelled by the raters' votes", "votes"),
]
PREVIEW_CHARS = 160  # per cell: a preview, not the dataset


def export_folder(exports_dir: Path, campaign_name: str, kind: str) -> Path:
    """A new folder for one export: the campaign's name made safe for a path, the kind and the UTC time."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", campaign_name).strip("-.") or "campaign"
    return Path(exports_dir) / f"{slug}-{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "content" in m for m in value)


def _cell(value: Any) -> Any:
    if _is_messages(value):  # a conversation: "role: text" per turn, easier to scan than JSON
        value = " | ".join(f"{m.get('role', '?')}: {m['content']}" for m in value)
    elif isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return value[: PREVIEW_CHARS - 1] + "…"
    return value


def preview_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The preview rows as text cells: conversations as "role: text", other lists as JSON, long texts cut."""
    return pd.DataFrame([{name: _cell(value) for name, value in row.items()} for row in rows])


def card_markdown(card: str) -> str:
    """The dataset card for display: its YAML front matter shown as a code block instead of read as Markdown."""
    match = re.match(r"---\n(.*?)\n---\n", card, flags=re.DOTALL)
    if match is None:
        return card
    return f"```yaml\n{match.group(1)}\n```\n\n{card[match.end() :]}"


def download_link(export_id: int, file_name: str) -> str:
    """A Markdown link to the export's permission-checked download (studio.server), relative to the studio's page.
    The text keeps only path-safe characters: a folder named on the command line could hold Markdown."""
    return f"[{re.sub(r'[^A-Za-z0-9._-]+', '-', file_name)}](exports/{export_id}.zip)"


def exports_markdown(exports: list[ExportSummary]) -> str:
    """The campaign's exports as a Markdown table, newest first; a stale one says so beside its link."""
    if not exports:
        return "No exports of this campaign yet."
    lines = ["| # | kind | made (UTC) | rows | by | download |", "| --- | --- | --- | --- | --- | --- |"]
    for e in exports:
        link = download_link(e.export_id, e.file_name)
        if e.stale:
            link = f"**stale: holds data of a person erased since**, {link}"
        made = f"{e.created_at:%Y-%m-%d %H:%M}"
        lines.append(f"| {e.export_id} | {e.kind} | {made} | {e.row_count} | {e.made_by} | {link} |")
    return "\n".join(lines)


def build_export_tab(leads: LeadService, campaign: gr.Dropdown, exports_dir: Path) -> None:
    with gr.Row():
        kind = gr.Dropdown(KINDS, value="preference", label="Kind", elem_id="export-kind")
        policy = gr.Dropdown(POLICIES, value="majority", label="Combine judgments by", elem_id="export-policy")
        min_agreement = gr.Slider(0, 1, value=0, step=0.05, label="Minimum agreement (0: keep all)",
                                  elem_id="export-min-agreement")  # fmt: skip
        test_fraction = gr.Slider(0, 0.5, value=0.1, step=0.01, label="Test split (share of prompts)",
                                  elem_id="export-test-fraction")  # fmt: skip
    with gr.Row():
        exclude_flagged = gr.Checkbox(label="Leave out flagged raters", elem_id="export-exclude-flagged")
        keep_ties = gr.Checkbox(label="Keep ties (reward only)", elem_id="export-keep-ties")
        keep_both_bad = gr.Checkbox(label="Keep both-bad pairs", elem_id="export-keep-both-bad")
        use_prior = gr.Checkbox(value=True, label="Use labels known at import", elem_id="export-use-prior")
        calibration_items = gr.Dropdown(CALIBRATION_ITEMS, value="none", label="Calibration (gold) items",
                                        elem_id="export-calibration")  # fmt: skip
        unreviewed = gr.Checkbox(label="Also demonstrations no lead has reviewed yet (sft only; rejected ones never)",
                                 elem_id="export-include-unreviewed")  # fmt: skip
    with gr.Row():
        push_to_hub = gr.Textbox(label="Also push to the Hugging Face Hub (repo id, optional)", scale=3,
                                 elem_id="export-push-to-hub")  # fmt: skip
        run = gr.Button("Run export", variant="primary", scale=1, elem_id="export-run")
    refused = status_line("export-refused")
    with gr.Row():
        status = gr.Textbox(label="Result", interactive=False, scale=3, elem_id="export-status")
        download = gr.Markdown(label="Download (.zip)", container=True, scale=1, elem_id="export-file")
    preview = gr.Dataframe(label="First rows of the train split (cells cut for the preview)", interactive=False,
                           max_height=320, elem_id="export-preview")  # fmt: skip
    card = gr.Markdown(label="Dataset card", container=True, sanitize_html=True, elem_id="export-card")
    listing = gr.Markdown(label="Exports of this campaign", container=True, elem_id="export-list")

    @said_beside(refused, ValueError, FileExistsError)  # storage's export names the bad option or the empty result
    def on_run(campaign_id, kind_, policy_, agreement, fraction, flagged, ties, both_bad, prior, calibration, hub,
               include_unreviewed, request: gr.Request, profile: Profile) -> dict:  # fmt: skip
        with shown_to_user():
            actor, campaign_id = current_user(leads, request, profile), need_campaign(campaign_id)
            result = leads.export(
                actor, campaign_id, out_dir=export_folder(exports_dir, leads.campaign(actor, campaign_id).name, kind_),
                kind=kind_, policy=policy_, min_agreement=float(agreement), test_fraction=float(fraction),
                exclude_flagged_raters=flagged, keep_ties=ties, keep_both_bad=both_bad, use_prior=prior,
                include_calibration=calibration, push_to_hub=(hub or "").strip() or None,
                include_unreviewed=bool(include_unreviewed) and kind_ == "sft",
            )  # fmt: skip
        return {status: result.summary, preview: preview_frame(result.rows), card: card_markdown(result.card),
                download: f"**Download:** {download_link(result.export_id, result.zip_path.name)}"}  # fmt: skip

    def on_list(campaign_id, request: gr.Request, profile: Profile) -> str:
        with shown_to_user():
            return exports_markdown(leads.exports(current_user(leads, request, profile), need_campaign(campaign_id)))

    options = [kind, policy, min_agreement, test_fraction, exclude_flagged, keep_ties, keep_both_bad, use_prior,
               calibration_items, push_to_hub, unreviewed]  # fmt: skip
    ran = run.click(on_run, [campaign, *options], [status, preview, card, download, refused], api_name="lead_export",
                    **LEAD_EVENTS)  # fmt: skip
    ran.success(on_list, campaign, listing, api_visibility="private", **LEAD_EVENTS)
    campaign.change(on_list, campaign, listing, api_name="lead_exports", **LEAD_EVENTS)
    cleared_on_campaign_change(campaign, {status: "", preview: pd.DataFrame(), card: "", download: "", refused: ""})
