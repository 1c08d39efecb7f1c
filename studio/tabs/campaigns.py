"""Campaigns: the selected campaign's settings (kind included: saved as an edit, or as a new campaign), importing a
file into it, marking calibration items among its pairs, and its members. Each section says beside its button what
was refused and why (studio.tabs.events.said_beside)."""

from __future__ import annotations

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from storage.models import CalibrationKind, CalibrationMode, CampaignCreate, CampaignKind, CampaignUpdate
from studio.leads import LeadService
from studio.login import current_user
from studio.scoring import QueueScores
from studio.tabs.adjudication import PAIR_COLUMNS, SCALE, first_cell, pairs_frame
from studio.tabs.events import LEAD_EVENTS, Profile, need_campaign, said_beside, shown_to_user, status_line
from studio.tabs.users import split_list
from studio.validation import message

FORMATS = [("detect from the file", ""), "prompts", "pairs", "hh-rlhf", "oasst", "trl", "sharegpt"]
KNOWN_AS = [("a prior label", "prior"), ("a calibration item", "calibration"), ("nothing", "none")]
MEMBER_COLUMNS = ["username", "role", "domains", "active"]
SETTINGS = ["guidelines", "rubric", "overlap_k", "calibration_rate", "calibration_mode", "min_reasoning_chars",
            "domains", "consent_text", "calibration_threshold", "calibration_window", "probation", "kind",
            "criteria_required", "queue_order"]  # fmt: skip
KINDS = [
    ("preference: raters compare pairs", "preference"),
    ("demonstration: raters write responses", "demonstration"),
    ("both: compare and write", "both"),
]
LISTS = {"rubric", "domains"}
QUEUE_ORDERS = [
    ("fifo: in import order", "fifo"),
    ("uncertainty: the reward model's smallest margins first", "uncertainty"),
    ("disagreement: judged pairs whose consensus the reward model disputes first, then uncertainty", "disagreement"),
]


def settings_values(values: tuple) -> dict:
    """The settings form's values by field name, comma-separated lists split."""
    named = dict(zip(SETTINGS, values, strict=True))
    return {name: split_list(value) if name in LISTS else value for name, value in named.items()}


def schema(model, **values):
    """CampaignCreate or CampaignUpdate from the form; a bad value is a gr.Error naming the field."""
    try:
        return model(**values)
    except ValidationError as error:
        raise gr.Error(message(error), print_exception=False) from None


def kind_choices() -> list[tuple[str, str]]:
    """Every campaign kind, described where a description exists."""
    described = dict((value, label) for label, value in KINDS)
    return [(described.get(kind.value, kind.value), kind.value) for kind in CampaignKind]


def queue_note(scores: QueueScores, campaign: str) -> str:
    """Which run's scores the queue order follows and when they were written, or why the queue is fifo."""
    scoring = scores.scoring
    if scoring is None:
        if scores.order == "fifo":
            return "Pairs go out in import order (fifo). No reward run has scored this campaign."
        return (f"**No reward run has scored this campaign yet: the queue hands out pairs in fifo order** until one "
                f"does. Train a reward run on it, or `launch.py score --campaign {campaign} --run RUN`.")  # fmt: skip
    scored = f"run **{scoring.run}**, written {scoring.scored_at:%Y-%m-%d %H:%M} UTC"
    covered = f"{scoring.scored_pairs:,} of its {scoring.total_pairs:,} pairs"
    if scores.order == "fifo":
        return f"Pairs go out in import order (fifo). The latest scores ({scored}, {covered}) are not used."
    unscored = scoring.total_pairs - scoring.scored_pairs
    later = f"; the {unscored:,} unscored pairs come after the scored ones" if unscored > 0 else ""
    return (f"The **{scores.order}** order follows the scores of {scored} ({covered}{later}). A reward run trained "
            "on this campaign rescores it when it finishes.")  # fmt: skip


def members_frame(rows) -> pd.DataFrame:
    return pd.DataFrame([[m.username, m.role, ", ".join(m.domains), m.active] for m in rows], columns=MEMBER_COLUMNS)


def _settings_form() -> list:
    with gr.Row():
        kind = gr.Dropdown(kind_choices(), value="preference", label="Kind (what raters do; imports never change it "
                           "once set)", elem_id="campaigns-kind")  # fmt: skip
        required = gr.Checkbox(False, label="Rubric criteria required: a judgment must score every criterion",
                               elem_id="campaigns-criteria-required")  # fmt: skip
    guidelines = gr.Textbox(label="Guidelines (Markdown)", lines=6, elem_id="campaigns-guidelines")
    with gr.Row():
        rubric = gr.Textbox(label="Rubric criteria (comma-separated)", elem_id="campaigns-rubric")
        domains = gr.Textbox(label="Domains (comma-separated)", elem_id="campaigns-domains")
        overlap_k = gr.Number(3, label="Raters per item (k)", precision=0, minimum=1, maximum=50,
                              info="3 or more: agreement is measured and a careless vote is outvoted; 1: neither",
                              elem_id="campaigns-overlap-k")  # fmt: skip
        min_chars = gr.Number(20, label="Minimum reasoning characters", precision=0, minimum=0,
                              elem_id="campaigns-min-reasoning")  # fmt: skip
    with gr.Row():
        rate = gr.Slider(0, 1, value=0.1, step=0.01, label="Calibration rate", elem_id="campaigns-calibration-rate")
        mode = gr.Radio([m.value for m in CalibrationMode], value="training", label="Calibration mode",
                        info="training: raters see the answer after submitting",
                        elem_id="campaigns-calibration-mode")  # fmt: skip
        threshold = gr.Slider(0, 1, value=0.7, step=0.01, label="Calibration threshold",
                              elem_id="campaigns-calibration-threshold")  # fmt: skip
        window = gr.Number(20, label="Calibration window (answers)", precision=0, minimum=1,
                           elem_id="campaigns-calibration-window")  # fmt: skip
    with gr.Row():
        consent = gr.Textbox(label="Consent text (empty: none asked)", lines=3, scale=3, elem_id="campaigns-consent")
        probation = gr.Checkbox(True, label="Probation: flagged raters see only calibration items until they pass",
                                elem_id="campaigns-probation")  # fmt: skip
    order = gr.Radio(QUEUE_ORDERS, value="fifo", label="Queue order: which open pair a rater gets next",
                     elem_id="campaigns-queue-order")  # fmt: skip
    return [guidelines, rubric, overlap_k, rate, mode, min_chars, domains, consent, threshold, window, probation, kind,
            required, order]  # fmt: skip


def _settings_section(leads: LeadService, campaign: gr.Dropdown) -> None:
    versions = gr.Markdown(
        "Pick a campaign to edit it, or fill in the form and create one.", elem_id="campaigns-versions"
    )
    form = _settings_form()
    note = gr.Markdown(elem_id="campaigns-queue-note")
    with gr.Row(equal_height=True):
        save = gr.Button("Save changes", variant="primary", elem_id="campaigns-save")
        name = gr.Textbox(label="New campaign name", elem_id="campaigns-new-name")
        create = gr.Button("Create as a new campaign", elem_id="campaigns-create")
    status = status_line("campaigns-status")

    def show(settings, scores: QueueScores) -> dict:
        values = settings.model_dump()
        shown = {box: ", ".join(values[n]) if n in LISTS else values[n] for n, box in zip(SETTINGS, form, strict=True)}
        header = (
            f"**Guidelines version {settings.guidelines_version}, consent version {settings.consent_version}** "
            f"({settings.kind} campaign). Saving an edited text gives it a new version."
        )
        return {versions: header, **shown, note: queue_note(scores, settings.name)}

    def on_select(campaign_id, request: gr.Request, profile: Profile) -> dict:
        if campaign_id in (None, ""):  # no campaign to lead (yet): leave the form as it is
            return gr.skip()
        with shown_to_user():
            actor, campaign_id = current_user(leads, request, profile), need_campaign(campaign_id)
            return show(leads.campaign(actor, campaign_id), leads.queue_scores(actor, campaign_id))

    @said_beside(status)
    def on_save(request: gr.Request, profile: Profile, campaign_id, *values) -> dict:  # Gradio injects the request
        changes = schema(CampaignUpdate, **settings_values(values))
        with shown_to_user():
            actor, campaign_id = current_user(leads, request, profile), need_campaign(campaign_id)
            saved = leads.update_campaign(actor, campaign_id, changes)
            return {**show(saved, leads.queue_scores(actor, campaign_id)), status: "Saved."}

    @said_beside(status)
    def on_create(request: gr.Request, profile: Profile, new_name, *values) -> dict:
        settings = schema(CampaignCreate, name=(new_name or "").strip(), **settings_values(values))
        with shown_to_user():
            actor = current_user(leads, request, profile)
            created = leads.create_campaign(actor, settings)
            choices = leads.led_campaigns(actor)
        return {campaign: gr.Dropdown(choices=choices, value=created), name: "",
                status: f"Created campaign **{settings.name}**."}  # fmt: skip

    outputs = [versions, *form, note]
    campaign.change(on_select, campaign, outputs, api_name="lead_campaign", **LEAD_EVENTS)
    save.click(on_save, [campaign, *form], [*outputs, status], api_name="lead_update_campaign", **LEAD_EVENTS)
    create.click(on_create, [name, *form], [campaign, name, status], api_name="lead_create_campaign", **LEAD_EVENTS)


def _import_section(leads: LeadService, campaign: gr.Dropdown) -> None:
    with gr.Row(equal_height=True):
        upload = gr.File(label="File (JSONL, CSV, Parquet)", type="filepath", elem_id="campaigns-import-file")
        with gr.Column():
            fmt = gr.Dropdown(FORMATS, value="", label="Format", elem_id="campaigns-import-format")
            known_as = gr.Radio(KNOWN_AS, value="prior", label="A known preference becomes",
                                elem_id="campaigns-import-known-as")  # fmt: skip
            drop_identical = gr.Checkbox(label="Skip pairs whose two responses are identical",
                                         elem_id="campaigns-import-drop-identical")  # fmt: skip
            run = gr.Button("Import", variant="primary", elem_id="campaigns-import")
    status = status_line("campaigns-import-status")
    report = gr.Textbox(label="Import report", lines=2, interactive=False, elem_id="campaigns-import-report")

    @said_beside(status)
    def on_import(campaign_id, path, fmt_, known, drop, request: gr.Request, profile: Profile) -> dict:
        if not path:
            raise gr.Error("Choose a file to import first.")
        with shown_to_user():  # ImportFailed: the file, line and field, word for word; nothing was written
            actor = current_user(leads, request, profile)
            done = leads.import_file(actor, need_campaign(campaign_id), path, fmt=fmt_ or None, known_as=known,
                                     drop_identical=drop)  # fmt: skip
            kind = leads.campaign(actor, campaign_id).kind
        return {report: done.summary(), status: f"Imported. The campaign is a **{kind}** campaign: change its kind "
                "under Settings if raters should do something else."}  # fmt: skip

    inputs = [campaign, upload, fmt, known_as, drop_identical]
    run.click(on_import, inputs, [report, status], api_name="lead_import", **LEAD_EVENTS)


def _calibration_section(leads: LeadService, campaign: gr.Dropdown) -> None:
    pairs = gr.Dataframe(headers=PAIR_COLUMNS, label="Pairs (click one to fill in its id)", interactive=False,
                         max_height=260, elem_id="campaigns-pairs")  # fmt: skip
    with gr.Row():
        pair_id = gr.Number(None, label="Pair id", placeholder="click a pair above, or type its id", precision=0,
                            elem_id="campaigns-calibration-pair")  # fmt: skip
        kind = gr.Dropdown([k.value for k in CalibrationKind], value="factual_priority", label="Kind",
                           elem_id="campaigns-calibration-kind")  # fmt: skip
        expected = gr.Radio(SCALE, label="Expected answer", scale=2, elem_id="campaigns-calibration-expected")
    accepted = gr.CheckboxGroup(SCALE, label="Also accepted", elem_id="campaigns-calibration-accepted")
    explanation = gr.Textbox(label="Explanation shown to raters in training mode", lines=2,
                             elem_id="campaigns-calibration-explanation")  # fmt: skip
    with gr.Row(equal_height=True):
        mark = gr.Button("Mark as calibration item", variant="primary", scale=0, min_width=240,
                         elem_id="campaigns-mark-calibration")  # fmt: skip
        status = status_line("campaigns-calibration-status")

    def on_pairs(campaign_id, request: gr.Request, profile: Profile):
        if campaign_id in (None, ""):
            return gr.skip()
        with shown_to_user():
            return pairs_frame(leads.pairs(current_user(leads, request, profile), need_campaign(campaign_id)))

    @said_beside(status)
    def on_mark(campaign_id, chosen, kind_, expected_, accepted_, text, request: gr.Request, profile: Profile) -> dict:
        if chosen is None or expected_ is None:
            raise gr.Error("Give the pair id and its expected answer.")
        with shown_to_user():
            actor = current_user(leads, request, profile)
            leads.mark_calibration(actor, int(chosen), expected=expected_, accepted=list(accepted_ or []),
                                   kind=kind_, explanation=text or "")  # fmt: skip
        return {pairs: on_pairs(campaign_id, request, profile), status: f"Pair {int(chosen)} is a calibration item."}

    campaign.change(on_pairs, campaign, pairs, api_name="lead_pairs", **LEAD_EVENTS)
    pairs.select(first_cell, None, pair_id, api_visibility="private", **LEAD_EVENTS)
    mark.click(on_mark, [campaign, pair_id, kind, expected, accepted, explanation], [pairs, status],
               api_name="lead_mark_calibration", **LEAD_EVENTS)  # fmt: skip


def _members_section(leads: LeadService, campaign: gr.Dropdown) -> None:
    table = gr.Dataframe(headers=MEMBER_COLUMNS, label="Members (no rater member: open to every rater)",
                         interactive=False, max_height=260, elem_id="campaigns-members")  # fmt: skip
    with gr.Row():
        username = gr.Textbox(label="Username", elem_id="campaigns-member-username")
        role = gr.Radio(
            ["rater", "lead", "excluded"],
            value="rater",
            label="Role in this campaign",
            info="excluded: no more work here; their judgments leave the exports and their pairs go back to the queue",
            elem_id="campaigns-member-role",
        )
        assign = gr.Button("Assign", variant="primary", elem_id="campaigns-assign")
        unassign = gr.Button("Unassign", variant="stop", elem_id="campaigns-unassign")
    with gr.Row():
        domains = gr.Textbox(
            label="The rater's domains (comma-separated)", scale=3, elem_id="campaigns-member-domains"
        )
        set_domains = gr.Button("Set domains", elem_id="campaigns-set-domains")
    status = status_line("campaigns-members-status")

    def on_members(campaign_id, request: gr.Request, profile: Profile):
        if campaign_id in (None, ""):
            return gr.skip()
        with shown_to_user():
            return members_frame(leads.members(current_user(leads, request, profile), need_campaign(campaign_id)))

    def on_change(action: str):  # one handler for three buttons (functools.partial hides the request's type)
        @said_beside(status)
        def handler(campaign_id, name, role_, domains_, request: gr.Request, profile: Profile) -> dict:
            with shown_to_user():
                actor, name = current_user(leads, request, profile), (name or "").strip()
                campaign_id = need_campaign(campaign_id)
                if action == "assign":
                    leads.assign(actor, campaign_id, name, role_)
                elif action == "unassign":
                    leads.unassign(actor, campaign_id, name)
                else:
                    leads.set_domains(actor, campaign_id, name, split_list(domains_))
            assigned = f"**{name}** is a {role_} here."
            if role_ == "excluded":
                assigned = (
                    f"**{name}** is excluded here: their judgments (and demonstrations no lead accepted) "
                    "no longer count; their pairs and prompts are open again."
                )
            done = {"assign": assigned, "unassign": f"**{name}** is off this campaign.",
                    "set_domains": f"**{name}**'s domains are set."}[action]  # fmt: skip
            return {table: on_members(campaign_id, request, profile), status: done}

        return handler

    def on_pick(event: gr.SelectData) -> dict:
        name, role_, domains_ = event.row_value[:3]
        return {username: name, role: role_, domains: domains_}

    inputs = [campaign, username, role, domains]
    campaign.change(on_members, campaign, table, api_name="lead_members", **LEAD_EVENTS)
    table.select(on_pick, None, [username, role, domains], api_visibility="private", **LEAD_EVENTS)
    for button, action in ((assign, "assign"), (unassign, "unassign"), (set_domains, "set_domains")):
        button.click(on_change(action), inputs, [table, status], api_name=f"lead_{action}", **LEAD_EVENTS)


def build_campaigns_tab(leads: LeadService, campaign: gr.Dropdown) -> None:
    with gr.Accordion("Settings", open=True, elem_id="campaigns-settings"):
        _settings_section(leads, campaign)
    with gr.Accordion("Import a file", open=False, elem_id="campaigns-import-section"):
        _import_section(leads, campaign)
    with gr.Accordion("Calibration items", open=False, elem_id="campaigns-calibration-section"):
        _calibration_section(leads, campaign)
    with gr.Accordion("Members", open=False, elem_id="campaigns-members-section"):
        _members_section(leads, campaign)
