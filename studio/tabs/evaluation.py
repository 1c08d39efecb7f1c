"""Models in the loop, for a lead: Generate (start ``launch.py generate`` in the background and watch its progress)
and Evaluation (an evaluation campaign's Bradley-Terry ratings, win rates and plot, from studio.generation)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from storage.quality.evaluation import evaluation_figure
from storage.quality.judge import judge_line
from studio.generation import GenerationProgress
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

KEYS_NOTE = (
    "One model spec per line, as for `launch.py generate --model`: `[NAME=]` a hub id, a folder, `run:NAME`, "
    "`pkg:PACKAGE` (optionally `#FILE.gguf`), or `MODEL@http://HOST/v1` for an OpenAI-compatible endpoint. "
    "**Endpoint keys are never typed here:** the server passes its own `$CONCORD_OPENAI_API_KEY` (or "
    "`$OPENAI_API_KEY`) to the run. Generation runs in the background; leave this page and come back."
)
NO_JUDGE = (
    "No reward model has judged this campaign. To see one beside the raters, score its pairs with a reward "
    "run: `python launch.py score --campaign NAME --run RUN` (or *Use as judge* under *Runs*)."
)
STATES = {"none": "No generation started for this campaign yet.", "running": "**Running**",
          "finished": "**Finished**", "failed": "**Failed**",
          "unknown": "**Unknown**: started before the studio restarted; see its log"}  # fmt: skip


def progress_table(progress: GenerationProgress) -> pd.DataFrame:
    rows = [[m.model, m.stored, m.expected, f"{m.stored / m.expected:.0%}" if m.expected else "-"]
            for m in progress.models]  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "responses stored", "prompts x n", "done"])


def progress_line(progress: GenerationProgress) -> str:
    line = STATES[progress.state]
    if progress.state != "none":
        line += f" (started {progress.started[:19].replace('T', ' ')} UTC; log `{progress.log}`)"
    return line + (f"\n\n**Last log line:** `{progress.message}`" if progress.message else "")


def _ci(row: dict[str, Any], key: str = "rating") -> str:
    low, high = ("low", "high") if key == "rating" else (f"{key}_low", f"{key}_high")
    return f"{row[key]:.0f} [{row[low]:.0f}, {row[high]:.0f}]"


def ratings_table(ratings: dict[str, Any], category: str | None = None) -> pd.DataFrame:
    """One row per model: rank, rating and Davidson rating with 95% intervals, votes, win rate (and the category)."""
    rows = [[r["rank"], r["model"], _ci(r), _ci(r, "davidson"), r["votes"], f"{r['win_rate']:.0%}"]
            for r in ratings["ratings"]]  # fmt: skip
    table = pd.DataFrame(rows, columns=["rank", "model", "rating [95% CI]", "Davidson [95% CI]", "votes", "win rate"])
    return table if category is None else table.assign(category=category)[["category", *table.columns]]


def separation_line(ratings: dict[str, Any]) -> str:
    """Whether the top two models' intervals are apart, else about how many votes would part them."""
    s = ratings["separation"]
    first, second = s["models"]
    if s["separated"]:
        return f"{first} and {second}: their intervals are apart."
    if s["votes_needed"] is None:
        return f"{first} and {second} are rated the same: no number of votes is estimated to part them."
    return f"{first} and {second}: intervals overlap; about {s['votes_needed']:,} votes in all should part them."


def win_matrix(ratings: dict[str, Any]) -> pd.DataFrame:
    """Row beats column: win rate (ties half) [95% CI] and votes."""
    w, models = ratings["win_rate"], ratings["models"]
    cell = ("-" if w["rate"][a][b] is None or not w["votes"][a][b] else
            f"{w['rate'][a][b]:.0%} [{w['low'][a][b]:.0%}, {w['high'][a][b]:.0%}] n={w['votes'][a][b]:.0f}"
            for a in range(len(models)) for b in range(len(models)))  # fmt: skip
    cells = list(cell)
    rows = [[model, *cells[a * len(models) : (a + 1) * len(models)]] for a, model in enumerate(models)]
    return pd.DataFrame(rows, columns=["row beats column", *models])


def build_generate_tab(leads: LeadService, campaign: gr.Dropdown) -> gr.Textbox:
    """The Generate tab; returns its model specs box (the Runs tab's "Use as generator" fills it)."""
    gr.Markdown(KEYS_NOTE)
    with gr.Row():
        specs = gr.Textbox(label="Models (one spec per line)", lines=3, scale=3, elem_id="generate-specs")
        with gr.Column(scale=2):
            n = gr.Number(label="Responses per prompt (n)", value=1, precision=0, minimum=1, elem_id="generate-n")
            temperature = gr.Number(label="Temperature (0 is greedy)", value=0.7, elem_id="generate-temperature")
            max_new = gr.Number(label="Max new tokens per turn", value=256, precision=0, elem_id="generate-max-new")
    with gr.Row():
        start = gr.Button("Start", variant="primary", scale=0, min_width=160, elem_id="generate-start")
        check = gr.Button("Refresh progress", scale=0, min_width=160, elem_id="generate-refresh")
        refused = status_line("generate-refused")
    state = gr.Markdown(elem_id="generate-state")
    table = gr.Dataframe(label="Responses stored per model", interactive=False, elem_id="generate-progress")
    timer = gr.Timer(2.0, active=False)

    def shown(progress: GenerationProgress) -> dict:
        running = progress.state == "running"
        return {state: progress_line(progress), table: progress_table(progress), timer: gr.Timer(active=running)}

    @said_beside(refused)
    def on_start(campaign_id, specs_text, n_value, temp, max_tokens, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            progress = leads.start_generation(current_user(leads, request, profile), need_campaign(campaign_id),
                                              (specs_text or "").splitlines(), int(n_value or 0), float(temp or 0),
                                              int(max_tokens or 0))  # fmt: skip
        return shown(progress)

    def on_progress(campaign_id, request: gr.Request, profile: Profile) -> dict:
        if campaign_id in (None, ""):  # a lead with no campaign: nothing to watch, nothing to refuse
            return {timer: gr.Timer(active=False)}
        with shown_to_user():
            return shown(leads.generation_progress(current_user(leads, request, profile), campaign_id))

    outputs = [state, table, timer, refused]
    start.click(on_start, inputs=[campaign, specs, n, temperature, max_new], outputs=outputs, api_name="lead_generate",
                **LEAD_EVENTS)  # fmt: skip
    for trigger in (check.click, timer.tick, campaign.change):
        trigger(on_progress, inputs=campaign, outputs=[state, table, timer], api_visibility="private", **LEAD_EVENTS)
    return specs


def build_evaluation_tab(leads: LeadService, campaign: gr.Dropdown) -> None:
    with gr.Row():
        gr.Markdown("An evaluation campaign's verdict: Bradley-Terry ratings (ties half a win; Davidson's tie model "
                    "beside them), ranks as Chatbot Arena defines them, win rates, per category, computed when you "
                    "press *Refresh*. Model names appear only here, never to raters.")  # fmt: skip
        refresh = gr.Button("Refresh", variant="primary", scale=0, min_width=160, elem_id="evaluation-refresh")
    refused = status_line("evaluation-refused")
    with gr.Column(visible=False, elem_id="evaluation-report") as shown:  # by a Refresh, until another campaign
        summary = gr.Markdown(elem_id="evaluation-summary")
        ratings = gr.Dataframe(label="Ratings (rank: 1 + models whose lower bound is above this one's upper bound)",
                               interactive=False, elem_id="evaluation-ratings")  # fmt: skip
        matrix = gr.Dataframe(label="Win rate of row against column (ties half) [95% CI]", interactive=False,
                              wrap=True, elem_id="evaluation-matrix")  # fmt: skip
        categories = gr.Dataframe(label="Per category", interactive=False, elem_id="evaluation-categories")
        plot = gr.Plot(label="Ratings and win rates", elem_id="evaluation-plot")
        judge = gr.Markdown(elem_id="evaluation-judge")
        judge_ratings = gr.Dataframe(label="The reward model's ratings, from its own votes on the same pairs",
                                     interactive=False, visible=False, elem_id="evaluation-judge-ratings")  # fmt: skip

    @said_beside(refused, ValueError)  # no votes between two models yet
    def on_refresh(campaign_id, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            report = leads.evaluation(current_user(leads, request, profile), need_campaign(campaign_id))
        overall, by_category = report["overall"], report["categories"].items()
        return {
            shown: gr.Column(visible=True),
            summary: f"**{overall['n_votes']}** votes on **{report['n_pairs']}** pairs by **{report['n_raters']}** "
            f"raters. {separation_line(overall)}",
            ratings: ratings_table(overall),
            matrix: win_matrix(overall),
            categories: pd.concat([ratings_table(r, c) for c, r in by_category]) if by_category else pd.DataFrame(),
            plot: evaluation_figure(report),
            judge: "#### A reward model as judge\n\n" + (judge_line(report["judge"]) if report["judge"] else NO_JUDGE),
            judge_ratings: gr.Dataframe(
                ratings_table(report["judge"]["ratings"]) if report["judge"] else None, visible=bool(report["judge"])
            ),  # fmt: skip
        }

    outputs = [shown, summary, ratings, matrix, categories, plot, judge, judge_ratings, refused]
    refresh.click(on_refresh, inputs=campaign, outputs=outputs, api_name="lead_evaluation", **LEAD_EVENTS)
    cleared_on_campaign_change(campaign, {shown: gr.Column(visible=False), refused: ""})
