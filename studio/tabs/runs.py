"""Runs, for a lead: start ``launch.py train`` on the campaign from a recipe, watch it (progress, ETA, curves,
readiness, the log's tail), stop it, and use a finished run (evaluate it, score the campaign's pairs with it as a
judge, or generate with it); below, the campaign's past runs with their lineage and its exports. Everything shown
is read back from the database, the run's folder and its log (studio.run_views), so a reload loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from storage.run_folder import curves_figure, duration
from storage.runs import COLUMNS
from studio.leads import LeadService
from studio.login import current_user
from studio.run_views import ExportRow, JobView, RunView
from studio.runs import POLICIES, RunOptions
from studio.tabs.events import LEAD_EVENTS, Profile, need_campaign, said_beside, shown_to_user, status_line
from studio.tabs.export import card_markdown, download_link

INTRO = (
    "Pick a recipe (or upload one) and start: the run trains in the background as `launch.py train` on this "
    "campaign's rows, exported when it starts. Blank fields keep the recipe's values. Leave the page and come back: "
    "the run goes on."
)
STATES = {"starting": "**Starting**: loading the libraries, exporting the rows, checking readiness",
          "running": "**Running**", "finished": "**Finished**", "failed": "**Failed**", "stopped": "**Stopped**",
          "interrupted": "**Interrupted**"}  # fmt: skip
LIVE = ("starting", "running")
WIDTHS = ["10%", "6%", "9%", "7%", "7%", "20%", "13%", "6%", "9%", "6%", "7%"]  # COLUMNS' shares of 1280 pixels
CELL = 160


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def state_line(view: RunView) -> str:
    """The run's state, step / max_steps, time so far and left, and its log, in one line."""
    p, line = view.progress, STATES.get(view.state, view.state)
    if p.max_steps and (p.step or view.state in LIVE):
        line += f" · step {p.step} / {p.max_steps} ({p.step / p.max_steps:.0%})"
    elif p.step:
        line += f" · step {p.step}"
    if view.state == "running" and p.elapsed_s is not None:
        line += f" · {duration(p.elapsed_s)} so far" + (f", about {duration(p.eta_s)} left" if p.eta_s else "")
    line += " · **stale**: data it learned from was erased since" if view.stale else ""
    line += f" · log `{view.log}`" if view.log else " · started from the command line"
    return line + (f"\n\n**Why:** `{view.message}`" if view.message else "")


def readiness_frame(view: RunView) -> pd.DataFrame:
    checks = (view.readiness or {}).get("checks", [])
    return pd.DataFrame([[c["check"], c["status"], _cell(c["detail"])] for c in checks],
                        columns=["check", "status", "detail"])  # fmt: skip


def metrics_frame(view: RunView) -> pd.DataFrame:
    """metrics.json's values (nested ones as JSON), then each evaluation's."""
    rows = [[name, _cell(value)] for name, value in (view.metrics or {}).items() if name != "eval"]
    for source, result in view.evaluations.items():
        rows += [[f"eval/{source}: {name}", _cell(value)] for name, value in result.items()
                 if isinstance(value, int | float) and not isinstance(value, bool)]  # fmt: skip
    return pd.DataFrame(rows, columns=["metric", "value"])


def samples_frame(view: RunView) -> pd.DataFrame:
    rows = [[s.get("step"), _cell(s.get("prompt", "")), _cell(s.get("completion", "")), s.get("score")]
            for s in view.samples]  # fmt: skip
    return pd.DataFrame(rows, columns=["step", "prompt", "completion", "score"])


def jobs_markdown(jobs: list[JobView]) -> str:
    if not jobs:
        return ""
    lines = ["| work on this run | state | started (UTC) | log | last line |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {j.kind} | {j.state} | {j.started[:19].replace('T', ' ')} | `{j.log}` | {_cell(j.message)} |"
              for j in jobs]  # fmt: skip
    return "\n".join(lines)


def exports_markdown(rows: list[ExportRow]) -> str:
    """The campaign's exports: counts, raters by pseudonym, guideline versions, filters, stale marks, downloads."""
    if not rows:
        return "No exports of this campaign yet: a run exports the rows it trains on when it starts."
    lines = ["| # | kind | made (UTC) | rows | judgments | raters | guidelines | filters | download |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for e in rows:
        link = download_link(e.export_id, e.file_name)
        link = f"**stale**, {link}" if e.stale else link
        judged = "?" if e.judgments is None else f"{e.judgments:,}"
        versions = ", ".join(f"v{v}" for v in e.guideline_versions) or "-"
        lines.append(f"| {e.export_id} | {e.kind} | {e.created_at:%Y-%m-%d %H:%M} | {e.row_count:,} | {judged} | "
                     f"{e.raters or '-'} | {versions} | {e.filters} | {link} |")  # fmt: skip
    return "\n".join(lines)


@dataclass
class RunsPage:
    """The Runs tab's components, for the functions that wire their events."""

    form: dict[str, Any]  # the start form's inputs, by name, and its button
    refused: gr.Markdown
    run: gr.Dropdown
    buttons: dict[str, gr.Button]  # refresh, stop, evaluate, judge, generator
    eval_on: gr.Dropdown
    view: dict[str, Any]  # state, curve, metrics, readiness, samples, jobs, log, timer
    table: gr.Dataframe
    exports: gr.Markdown
    card_of: gr.Dropdown
    card: gr.Markdown
    list_handler: Any = None  # _wire_lists's, which a started run calls again


def _start_form() -> dict[str, Any]:
    with gr.Row(equal_height=True):
        recipe = gr.Dropdown(label="Recipe", choices=[], scale=3, allow_custom_value=True, elem_id="runs-recipe")
        upload = gr.UploadButton("Upload a recipe (.yaml)", file_types=[".yaml", ".yml"], type="filepath", scale=1,
                                 size="sm", elem_id="runs-upload")  # fmt: skip
        model = gr.Textbox(label="Model (blank: the recipe's)", placeholder="hub id, folder, run:NAME or pkg:NAME",
                           scale=3, elem_id="runs-model")  # fmt: skip
        name = gr.Textbox(label="Run name (blank: generated)", scale=2, elem_id="runs-name")
    with gr.Row(equal_height=True):
        policy = gr.Dropdown([("the recipe's", ""), *[(p, p) for p in POLICIES]], value="", scale=1,
                             label="Combine judgments by", elem_id="runs-policy")  # fmt: skip
        # Text, not numbers: a blank field keeps the recipe's value, where a number field would send 0.
        agreement = gr.Textbox(label="Min agreement (0-1)", placeholder="the recipe's", scale=1,
                               elem_id="runs-min-agreement")  # fmt: skip
        fraction = gr.Textbox(label="Test split (0-1)", placeholder="the recipe's", scale=1,
                              elem_id="runs-test-fraction")  # fmt: skip
        flagged = gr.Checkbox(label="Leave out flagged raters", scale=1, elem_id="runs-exclude-flagged")
        overrides = gr.Textbox(label="More overrides", placeholder="--max_steps 20 --learning_rate 1e-4", scale=3,
                               elem_id="runs-overrides")  # fmt: skip
        start = gr.Button("Start run", variant="primary", scale=1, min_width=120, elem_id="runs-start")
    return {"recipe": recipe, "upload": upload, "model": model, "name": name, "policy": policy,
            "agreement": agreement, "fraction": fraction, "flagged": flagged, "overrides": overrides,
            "start": start}  # fmt: skip


def _layout() -> RunsPage:
    with gr.Accordion("Start a run", open=True, elem_id="runs-start-form") as box:
        gr.Markdown(INTRO)
        form = _start_form() | {"box": box}
    refused = status_line("runs-refused")
    with gr.Row(equal_height=True):
        # the service, not the choice lists, decides what may be picked
        run = gr.Dropdown(label="Run", choices=[], scale=3, allow_custom_value=True, elem_id="runs-run")
        eval_on = gr.Dropdown(label="Evaluate on", choices=[("its own held-out rows", "")], value="", scale=3,
                              allow_custom_value=True, elem_id="runs-eval-on")  # fmt: skip
        with gr.Column(scale=4, min_width=420):
            small = {"size": "sm", "min_width": 100}
            with gr.Row():
                buttons = {"refresh": gr.Button("Refresh", elem_id="runs-refresh", **small),
                           "stop": gr.Button("Stop", variant="stop", interactive=False, elem_id="runs-stop",
                                             **small),
                           "evaluate": gr.Button("Evaluate on a campaign", elem_id="runs-evaluate",
                                                 **small)}  # fmt: skip
            with gr.Row():
                buttons |= {"judge": gr.Button("Use as judge", elem_id="runs-judge", **small),
                            "generator": gr.Button("Use as generator", elem_id="runs-generator", **small)}  # fmt: skip
    view = {"state": gr.Markdown(elem_id="runs-state"), "stop": buttons["stop"]}  # Stop: only while it runs
    with gr.Row():
        view["curve"] = gr.Plot(label="Loss and metrics by step", scale=3, elem_id="runs-curve")
        with gr.Column(scale=2):
            view["metrics"] = gr.Dataframe(label="Metrics (metrics.json, evaluations)", interactive=False,
                                           max_height=220, wrap=True, column_widths=["45%", "55%"],
                                           elem_id="runs-metrics")  # fmt: skip
            view["readiness"] = gr.Dataframe(label="Readiness checklist", interactive=False, max_height=220,
                                             wrap=True, column_widths=["40%", "12%", "48%"],
                                             elem_id="runs-readiness")  # fmt: skip
    view["samples"] = gr.Dataframe(label="Sample completions", interactive=False, wrap=True, visible=False,
                                   elem_id="runs-samples")  # fmt: skip
    view["jobs"] = gr.Markdown(elem_id="runs-jobs")
    view["log"] = gr.Textbox(label="Log (its last lines)", lines=10, max_lines=10, interactive=False,
                             autoscroll=True, elem_id="runs-log")  # fmt: skip
    view["timer"] = gr.Timer(2.0, active=False)
    with gr.Accordion("Past runs of this campaign", open=True):
        table = gr.Dataframe(headers=list(COLUMNS), interactive=False, wrap=True, max_height=320,
                             column_widths=WIDTHS, elem_id="runs-table")  # fmt: skip
    with gr.Accordion("Past exports of this campaign", open=False):
        exports = gr.Markdown(elem_id="runs-exports")
        with gr.Row(equal_height=True):
            card_of = gr.Dropdown(
                label="Dataset card of export", choices=[], scale=1, allow_custom_value=True, elem_id="runs-card-of"
            )
            card = gr.Markdown(container=True, sanitize_html=True, elem_id="runs-card")
    return RunsPage(form, refused, run, buttons, eval_on, view, table, exports, card_of, card)


def share(text: str | None) -> float | None:
    """A share typed in a text field; blank is None (the recipe's value)."""
    if not (text or "").strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise gr.Error(f"{text!r} is not a number: write a share such as 0.1, or leave it blank.") from None


def _actor(leads: LeadService, request: gr.Request, profile: Profile) -> int:
    return current_user(leads, request, profile)


def shown(page: RunsPage, view: RunView) -> dict:
    """The live view's components for ``view``; the timer polls while it or work on it goes on."""
    live = view.state in LIVE or any(j.state in LIVE for j in view.jobs)
    v = page.view
    return {v["state"]: state_line(view), v["curve"]: curves_figure(view.history), v["metrics"]: metrics_frame(view),
            v["readiness"]: readiness_frame(view), v["jobs"]: jobs_markdown(view.jobs), v["log"]: view.log_tail,
            v["samples"]: gr.Dataframe(samples_frame(view), visible=bool(view.samples)),
            v["timer"]: gr.Timer(active=live), v["stop"]: gr.Button(interactive=view.state in LIVE)}  # fmt: skip


def nothing_shown(page: RunsPage) -> dict:
    """The live view with no run picked: empty, not polled, nothing to stop."""
    v = page.view
    return {v["state"]: "", v["curve"]: None, v["metrics"]: pd.DataFrame(), v["readiness"]: pd.DataFrame(),
            v["samples"]: gr.Dataframe(None, visible=False), v["jobs"]: "", v["log"]: "",
            v["timer"]: gr.Timer(active=False), v["stop"]: gr.Button(interactive=False)}  # fmt: skip


def build_runs_tab(leads: LeadService, campaign: gr.Dropdown, generate_specs: gr.Textbox, sections: gr.Tabs) -> None:
    """The Runs tab; "Use as generator" fills ``generate_specs`` and opens the Generate tab of ``sections``."""
    page = _layout()
    _wire_lists(page, leads, campaign)
    _wire_view(page, leads, campaign)
    _wire_start(page, leads, campaign)
    _wire_finished(page, leads, campaign, generate_specs, sections)


def _wire_lists(page: RunsPage, leads: LeadService, campaign: gr.Dropdown) -> None:
    """The recipe and run pickers, the past runs and the past exports, when the campaign changes or on Refresh."""

    def on_list(campaign_id, current, request: gr.Request, profile: Profile) -> dict:
        if campaign_id in (None, ""):  # a lead with no campaign: nothing to list, nothing to refuse
            return {page.view["timer"]: gr.Timer(active=False)}
        with shown_to_user():
            who, campaign_id = _actor(leads, request, profile), need_campaign(campaign_id)
            names, done = leads.run_names(who, campaign_id), leads.past_exports(who, campaign_id)
            rows, recipes = leads.past_runs(who, campaign_id), leads.recipes(who, campaign_id)
        pairs = [(f"test split of export #{e.export_id} ({e.kind})", e.export_id) for e in done
                 if e.kind in ("preference", "reward")]  # fmt: skip
        chosen = current if current in names else (names[0] if names else None)
        return {page.form["recipe"]: gr.Dropdown(choices=recipes), page.run: gr.Dropdown(choices=names, value=chosen),
                page.table: pd.DataFrame(rows, columns=list(COLUMNS)), page.exports: exports_markdown(done),
                page.card_of: gr.Dropdown(choices=[(f"#{e.export_id} {e.kind}", e.export_id) for e in done]),
                page.eval_on: gr.Dropdown(choices=[("its own held-out rows", ""), *pairs])}  # fmt: skip

    def on_card(campaign_id, export_id, request: gr.Request, profile: Profile) -> str:
        if campaign_id in (None, "") or export_id in (None, ""):
            return ""
        with shown_to_user():
            card = leads.export_card(_actor(leads, request, profile), need_campaign(campaign_id), export_id)
        return card_markdown(card)

    listed = [page.form["recipe"], page.run, page.table, page.exports, page.card_of, page.eval_on,
              page.view["timer"]]  # fmt: skip
    campaign.change(on_list, [campaign, page.run], listed, api_name="lead_runs", **LEAD_EVENTS)
    page.buttons["refresh"].click(on_list, [campaign, page.run], listed, api_visibility="private", **LEAD_EVENTS)
    page.card_of.change(on_card, [campaign, page.card_of], page.card, api_name="lead_export_card", **LEAD_EVENTS)
    page.list_handler = on_list


def _wire_view(page: RunsPage, leads: LeadService, campaign: gr.Dropdown) -> None:
    """The live view of the picked run, polled while it runs; Stop."""

    def with_table(who: int, campaign_id: int, view: RunView) -> dict:
        """The view, and the past runs once it has ended (the poll's last tick): its row changed."""
        out = shown(page, view)
        if view.state not in LIVE:
            out[page.table] = pd.DataFrame(leads.past_runs(who, campaign_id), columns=list(COLUMNS))
        return out

    def on_view(campaign_id, run_name, request: gr.Request, profile: Profile) -> dict:
        if campaign_id in (None, "") or not run_name:  # another campaign picked, with no run yet
            return nothing_shown(page)
        with shown_to_user():
            who, campaign_id = _actor(leads, request, profile), need_campaign(campaign_id)
            return with_table(who, campaign_id, leads.run_view(who, campaign_id, run_name))

    @said_beside(page.refused)
    def on_stop(campaign_id, run_name, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            who, campaign_id = _actor(leads, request, profile), need_campaign(campaign_id)
            view = leads.stop_run(who, campaign_id, run_name)
            return {**with_table(who, campaign_id, view), page.refused: f"Stopped **{view.name}**."}

    outputs, private = [*page.view.values(), page.table], {"api_visibility": "private", **LEAD_EVENTS}
    page.run.change(on_view, [campaign, page.run], outputs, api_name="lead_run_view", **LEAD_EVENTS)
    page.view["timer"].tick(on_view, [campaign, page.run], outputs, **private)
    page.buttons["refresh"].click(on_view, [campaign, page.run], outputs, **private)
    page.buttons["stop"].click(on_stop, [campaign, page.run], [*outputs, page.refused], api_name="lead_run_stop",
                               **LEAD_EVENTS)  # fmt: skip


def _wire_start(page: RunsPage, leads: LeadService, campaign: gr.Dropdown) -> None:
    """Start a run from the form; upload a recipe into the recipe list."""
    form = page.form

    @said_beside(page.refused)
    def on_start(campaign_id, recipe, model, name, policy, agreement, fraction, flagged, overrides,
                 request: gr.Request, profile: Profile) -> dict:  # fmt: skip
        options = RunOptions(policy or None, share(agreement), share(fraction), bool(flagged))
        with shown_to_user():
            view = leads.start_run(_actor(leads, request, profile), need_campaign(campaign_id), recipe,
                                   model=model or "", run_name=name or "", options=options,
                                   overrides=overrides or "")  # fmt: skip
        return {**shown(page, view), page.run: gr.Dropdown(choices=[view.name], value=view.name),
                form["box"]: gr.Accordion(open=False), page.refused: f"Started **{view.name}**."}  # fmt: skip

    @said_beside(page.refused)
    def on_upload(campaign_id, path, request: gr.Request, profile: Profile) -> dict:
        if not path:
            raise gr.Error("Choose a .yaml file to upload.")
        with shown_to_user():
            who, campaign_id = _actor(leads, request, profile), need_campaign(campaign_id)
            added = leads.save_recipe(who, campaign_id, Path(path).name, Path(path).read_bytes())
            choices = leads.recipes(who, campaign_id)
        return {form["recipe"]: gr.Dropdown(choices=choices, value=added), page.refused: f"Uploaded `{added}`."}

    names = ("recipe", "model", "name", "policy", "agreement", "fraction", "flagged", "overrides")
    outputs = [*page.view.values(), page.run, form["box"], page.refused]
    started = form["start"].click(on_start, [campaign, *(form[n] for n in names)], outputs, api_name="lead_run_start",
                                  **LEAD_EVENTS)  # fmt: skip
    listed = [form["recipe"], page.run, page.table, page.exports, page.card_of, page.eval_on, page.view["timer"]]
    started.success(page.list_handler, [campaign, page.run], listed, api_visibility="private", **LEAD_EVENTS)
    form["upload"].upload(on_upload, [campaign, form["upload"]], [form["recipe"], page.refused],
                          api_name="lead_recipe_upload", **LEAD_EVENTS)  # fmt: skip


def _wire_finished(page: RunsPage, leads: LeadService, campaign: gr.Dropdown, generate_specs: gr.Textbox,
                   sections: gr.Tabs) -> None:  # fmt: skip
    """A finished run: evaluate it, use it as a judge (score the campaign's pairs) or as a generator."""

    def on_job(kind: str):  # one handler for two buttons (functools.partial hides the request's type)
        @said_beside(page.refused)
        def handler(campaign_id, run_name, export_id, request: gr.Request, profile: Profile) -> dict:
            with shown_to_user():
                who, campaign_id = _actor(leads, request, profile), need_campaign(campaign_id)
                if kind == "eval":
                    job = leads.evaluate_run(who, campaign_id, run_name, export_id or None)
                else:
                    job = leads.judge_with_run(who, campaign_id, run_name)
                view = leads.run_view(who, campaign_id, run_name)
            return {**shown(page, view), page.refused: f"Started `{job.kind}` on **{job.run_name}**: log `{job.log}`."}

        return handler

    @said_beside(page.refused)
    def on_generator(campaign_id, run_name, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            spec = leads.generator_spec(_actor(leads, request, profile), need_campaign(campaign_id), run_name)
        return {generate_specs: spec, sections: gr.Tabs(selected="lead-generate")}

    outputs = [*page.view.values(), page.refused]
    for kind, api_name in (("eval", "lead_run_evaluate"), ("score", "lead_run_judge")):
        button = page.buttons["evaluate" if kind == "eval" else "judge"]
        button.click(on_job(kind), [campaign, page.run, page.eval_on], outputs, api_name=api_name,
                     **LEAD_EVENTS)  # fmt: skip
    page.buttons["generator"].click(on_generator, [campaign, page.run], [generate_specs, sections, page.refused],
                                    api_name="lead_run_generator", **LEAD_EVENTS)  # fmt: skip
