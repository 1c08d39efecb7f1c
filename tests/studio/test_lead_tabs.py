"""The lead and admin tabs through their HTTP API (gradio_client): what a lead and an admin can do, and that a rater
calling any of their endpoints is refused with nothing changed."""

import io
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from sqlalchemy import func
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.db import make_engine, upgrade_database
from storage.demo import seed_demo
from storage.models import (
    Adjudication,
    AuditEvent,
    CalibrationItem,
    Campaign,
    CampaignMember,
    Demonstration,
    DemonstrationReview,
    ExportRecord,
    Judgment,
    Pair,
    Prompt,
    Role,
    User,
    UserCreate,
)
from studio.leads import LeadService
from studio.server import launch_kwargs
from studio.tabs.lead import build_lead_tabs, lead_visibility

PASSWORD = "password1"
SETTINGS = ["", "helpfulness, honesty", 2, 0.1, "training", 10, "", "", 0.7, 20, True, "preference", False]  # in order
VOTES = [(-2, -1, -2), (1, 2, -1), (0, 1, -1), (-1, -1, 1), (2, 2, 2), (-2, 0, 2)]  # three raters, some disagreeing


def _seed_judgments(session: Session, campaign_id: int, rater_ids: list[int]) -> None:
    """Three raters' judgments of every demo pair, calibration items included, written as the studio would."""
    pair_ids = session.exec(select(Pair.id).where(Pair.campaign_id == campaign_id).order_by(Pair.id)).all()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for n, pair_id in enumerate(pair_ids):
        for rater, (rater_id, vote) in enumerate(zip(rater_ids, VOTES[n % len(VOTES)], strict=True)):
            session.add(
                Judgment(
                    pair_id=pair_id,
                    rater_id=rater_id,
                    preference=vote,
                    both_bad=False,
                    reasoning=f"Reason {n}-{rater}: <b>bold</b> claims checked against the prompt.",
                    confidence=3,
                    left="ab"[n % 2],
                    time_on_task_s=30.0 + rater,
                    guideline_version=1,
                    server_time=start + timedelta(minutes=3 * n + rater),
                )  # fmt: skip
            )


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A launched Blocks holding build_lead_tabs, on the demo campaign with three raters' judgments."""
    root = tmp_path_factory.mktemp("lead")
    engine = make_engine(f"sqlite:///{root / 'concord.db'}")
    upgrade_database(engine)
    seed_demo(engine)
    with Session(engine) as session, session.begin():
        roles = {"root": Role.admin, "lena": Role.lead, "ada": Role.rater, "bo": Role.rater, "cy": Role.rater}
        ids = {name: create_user(session=session, user=UserCreate(username=name, password=PASSWORD, role=role)).id
               for name, role in roles.items()}  # fmt: skip
        campaign_id = session.exec(select(Campaign.id)).one()
        session.add(CampaignMember(campaign_id=campaign_id, user_id=ids["lena"], role=Role.lead))
        _seed_judgments(session, campaign_id, [ids["ada"], ids["bo"], ids["cy"]])
        prompt = session.exec(select(Prompt.id).where(Prompt.campaign_id == campaign_id).order_by(Prompt.id)).first()
        session.add(Demonstration(prompt_id=prompt, messages=[{"role": "assistant", "content": "Hello."}],
                                  rater_id=ids["ada"], guideline_version=1))  # fmt: skip
    leads = LeadService(engine)
    with gr.Blocks() as app, gr.Tabs():
        tabs = build_lead_tabs(leads, root / "exports")
    app.queue()
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True, show_error=True, **launch_kwargs(leads))
    yield {"url": url, "engine": engine, "campaign": campaign_id, "exports": root / "exports", "leads": leads,
           "tabs": tabs, "root": root}  # fmt: skip
    app.close()
    engine.dispose()


def client(studio, username: str) -> Client:
    return Client(studio["url"], auth=(username, PASSWORD), verbose=False)


def snapshot(engine) -> dict:
    """Everything a lead or admin action could change."""
    with Session(engine) as session:
        counts = {model.__name__: session.exec(select(func.count()).select_from(model)).one()
                  for model in (Campaign, CampaignMember, CalibrationItem, Adjudication, Pair, Prompt, ExportRecord,
                                Judgment, User, AuditEvent, DemonstrationReview)}  # fmt: skip
        users = session.exec(select(User.username, User.role, User.active, User.domains)).all()
        calibration = session.exec(select(CalibrationItem.pair_id, CalibrationItem.expected)).all()
        campaigns = session.exec(select(Campaign.name, Campaign.rubric, Campaign.guidelines_version)).all()
    return {"counts": counts, "users": sorted(map(tuple, users)), "calibration": sorted(calibration),
            "campaigns": sorted(map(str, campaigns))}  # fmt: skip


def _first_pair(studio) -> int:
    with Session(studio["engine"]) as session:
        return session.exec(select(Pair.id).where(Pair.campaign_id == studio["campaign"]).order_by(Pair.id)).first()


def first_login(studio, name: str, one_time: str) -> str:
    """Sign in with a one-time password the way the login page does: refused until a new password replaces it."""
    url = studio["url"].rstrip("/")
    refused = httpx.post(f"{url}/login", data={"username": name, "password": one_time})
    assert refused.status_code == 403 and refused.json()["change_password"] is True
    chosen = f"{name}'s own password"
    form = {"username": name, "password": one_time, "new_password": chosen}
    assert httpx.post(f"{url}/login", data=form).status_code == 200
    return chosen


def _first_demonstration(studio) -> int:
    with Session(studio["engine"]) as session:
        query = select(Demonstration.id).join(Prompt).where(Prompt.campaign_id == studio["campaign"])
        return session.exec(query.order_by(Demonstration.id)).first()


def test_the_quality_tab_gives_a_lead_tables_and_figures(studio):
    outputs = client(studio, "lena").predict(studio["campaign"], api_name="/lead_quality")
    status, agreement, summary, raters, flags, disagreements, *plots, refused = outputs
    assert "bootstrap" in status
    assert [row[0] for row in agreement["data"]][0].startswith("Krippendorff's alpha")
    # judgments, items, raters: the demo's 18 pairs (10 of them calibration items) x 3 raters
    assert [value for _, value in summary["data"][:3]] == ["54", "18", "3"]
    assert len(raters["data"]) == 3 and disagreements["data"]
    assert len(plots) == 3 and all(plot and plot["type"] == "matplotlib" and plot["plot"] for plot in plots)
    assert refused == ""
    # The lead reads raters by name; the pseudonym, as exports have it, is beside it.
    names = {row[0] for row in raters["data"]} | {
        who for row in disagreements["data"] for who in re.findall(r"(\S+) [+-]\d", row[-1])
    }
    assert names == {"ada", "bo", "cy"} and all(row[1].startswith("rater-") for row in raters["data"])


def test_the_quality_tab_states_the_rules_the_engine_applies(studio):
    status, _, _, raters, flags, *_ = client(studio, "lena").predict(studio["campaign"], api_name="/lead_quality")
    with Session(studio["engine"]) as session:
        lena = session.exec(select(User.id).where(User.username == "lena")).one()
    report = studio["leads"].quality(lena, studio["campaign"], n_boot=0)
    t = report["thresholds"]
    # The campaign's threshold and window, the minimum answers, the test and its correction: as the engine has them.
    assert t["min_calibration_accuracy"] == 0.7 and t["calibration_window"] == 20 and t["probation"]
    assert "accuracy over the last 20 calibration answers below 70%, from 5 answers on" in status
    assert "one-sided binomial test" in status and "Holm correction" in status and "p < 0.05" in status
    assert "Probation" in status and "not enough evidence yet" in status
    # One rater got 3 of the 10 calibration items right: shown to be under 70%. The other two (5 and 4 of 10) are
    # under it too, but not shown to be, and have 18 judgments where the other tests need 20: they are told to wait.
    headers = raters["headers"]
    assert sorted(row[headers.index("status")] for row in raters["data"]) == [
        "flagged", "not enough evidence yet", "not enough evidence yet"
    ]  # fmt: skip
    assert flags["headers"] == ["rater", "status", "why"] and [row[1] for row in flags["data"]] == [
        "flagged", "not enough evidence yet", "not enough evidence yet"
    ]  # fmt: skip
    assert flags["data"][0][2].startswith("calibration accuracy 30% over the last 10 answers, below 70%")
    assert all("18 judgments so far; the tests need 20" in row[2] for row in flags["data"][1:])
    # The lead excludes the flagged rater: the report still shows them, and says so
    lena_client = client(studio, "lena")
    lena_client.predict(studio["campaign"], flags["data"][0][0], "excluded", "", api_name="/lead_assign")
    flags_after = lena_client.predict(studio["campaign"], api_name="/lead_quality")[4]
    assert [row[1] for row in flags_after["data"]] == [
        "flagged; excluded", "not enough evidence yet", "not enough evidence yet"
    ]  # fmt: skip


def download(studio, lead: Client, link: str) -> httpx.Response:
    """Follow a Markdown download link the way the lead's browser would: their session cookie, nothing else."""
    (path,) = re.findall(r"\]\((exports/\d+\.zip)\)", link)
    return httpx.get(f"{studio['url']}{path}", cookies=lead.cookies)


def test_the_export_tab_writes_a_preview_a_card_and_a_zip(studio):
    before = snapshot(studio["engine"])["counts"]["ExportRecord"]
    lead = client(studio, "lena")
    status, preview, card, link, refused = lead.predict(
        *[studio["campaign"], "preference", "majority", 0.0, 0.2, False, False, False, True, "none", "", False],
        api_name="/lead_export",
    )  # fmt: skip
    assert refused == ""
    assert status.startswith("export #") and preview["data"] and "chosen" in preview["headers"]
    assert "Krippendorff" in card and not card.startswith("---")  # front matter shown as a code block
    (folder,) = [path for path in studio["exports"].iterdir() if path.is_dir()]
    assert folder.name.startswith("demo-preference-")
    response = download(studio, lead, link)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert "README.md" in archive.namelist()
    assert snapshot(studio["engine"])["counts"]["ExportRecord"] == before + 1
    listed = lead.predict(studio["campaign"], api_name="/lead_exports")
    export_id = re.match(r"export #(\d+)", status).group(1)
    assert f"(exports/{export_id}.zip)" in link and f"(exports/{export_id}.zip)" in listed and "stale" not in listed


def test_a_lead_sets_up_a_campaign_imports_marks_assigns_and_adjudicates(studio, tmp_path):
    lead = client(studio, "lena")
    created = lead.predict("pilot", *SETTINGS, api_name="/lead_create_campaign")
    pilot = created[0]["value"]
    assert "Created campaign **pilot**" in created[2]
    _, _, refused = lead.predict("pilot", *SETTINGS, api_name="/lead_create_campaign")
    assert refused == "**Not done:** A campaign named 'pilot' already exists; choose another name."
    assert ["pilot", pilot] in created[0]["choices"]
    pairs = tmp_path / "pilot.jsonl"
    pairs.write_text('{"prompt": "Say hi", "response_a": "Hi!", "response_b": "Go away.", "preference": -2}\n')
    report, said = lead.predict(pilot, handle_file(str(pairs)), "pairs", "prior", False, api_name="/lead_import")
    assert "1 pairs" in report and "a **preference** campaign" in said
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Say hi", "response_a": "Hi!"}\n')
    # The import's own message, beside the form; the last report stays as it was.
    report, said = lead.predict(pilot, handle_file(str(bad)), "pairs", "prior", False, api_name="/lead_import")
    assert "Not done" not in str(report) and re.search(r"^\*\*Not done:\*\* .*bad\.jsonl, line 1", said)
    (pair_id,) = [row[0] for row in lead.predict(pilot, api_name="/lead_pairs")["data"]]
    lead.predict(pilot, pair_id, "safety", -2, [-1], "A is polite.", api_name="/lead_mark_calibration")
    members, said = lead.predict(pilot, "ada", "rater", "", api_name="/lead_assign")
    assert ["ada", "rater", "", True] in members["data"] and "**ada** is a rater here" in said
    _, said = lead.predict(pilot, "nobody", "rater", "", api_name="/lead_assign")
    assert said == "**Not done:** There is no user named 'nobody'."
    members, said = lead.predict(pilot, "ada", "excluded", "", api_name="/lead_assign")
    assert ["ada", "excluded", "", True] in members["data"] and "their pairs and prompts are open again" in said
    detail = lead.predict(pair_id, api_name="/lead_pair_detail")
    assert detail[1] == "[user]\nSay hi" and detail[2] == "Hi!"
    *_, said = lead.predict(pair_id, 1, False, "  ", False, "safety", api_name="/lead_adjudicate")
    assert said.startswith("**Not done:** Write a note saying why")
    lead.predict(pair_id, 1, False, "B is fine too.", False, "safety", api_name="/lead_adjudicate")
    with Session(studio["engine"]) as session:
        item = session.exec(select(CalibrationItem).where(CalibrationItem.pair_id == pair_id)).one()
        decision = session.exec(select(Adjudication).where(Adjudication.pair_id == pair_id)).one()
    assert (item.kind, item.expected, item.accepted) == ("safety", -2, [-2, -1])
    assert (decision.preference, decision.note) == (1, "B is fine too.")


def test_the_adjudication_tab_shows_raters_reasoning_as_text(studio):
    lead = client(studio, "lena")
    disagreed = lead.predict(studio["campaign"], True, api_name="/lead_disagreements")["data"]
    assert disagreed and all(row[3] for row in disagreed)  # the "disagreed" column
    detail = lead.predict(disagreed[0][0], api_name="/lead_pair_detail")
    reasonings = [row[4] for row in detail[4]["data"]]
    assert len(reasonings) == 3 and all("<b>bold</b>" in text for text in reasonings)  # verbatim, as text
    assert detail[-1] == ""
    # An empty or unknown id is said beside the Open button, and the pair on screen stays
    for chosen, why in ((None, "Enter a pair id, or click a pair in the list."), (10**6, "10000")):
        kept = lead.predict(chosen, api_name="/lead_pair_detail")
        assert kept[-1].startswith("**Not done:** ") and why in kept[-1]
        assert all(value == {"__type__": "update"} for value in kept[:-1])  # Gradio's "left as it was"


def test_an_admin_creates_a_user_who_can_log_in_then_erases_them(studio):
    admin = client(studio, "root")
    password, table, _ = admin.predict("dee", "rater", "law, medicine", api_name="/admin_create_user")
    assert ["dee", "rater", True, "law, medicine"] in [row[:4] for row in table["data"]]
    _, _, said = admin.predict("dee", "rater", "", api_name="/admin_create_user")  # the name is taken: said beside
    assert said == "**Not done:** The username 'dee' is taken; choose another username."
    dee = Client(studio["url"], auth=("dee", first_login(studio, "dee", password)), verbose=False)
    dee.predict(None, api_name="/lead_campaigns")
    new_password, status = admin.predict("dee", api_name="/admin_reset_password")
    assert new_password != password and "New one-time password for **dee**" in status
    with pytest.raises(Exception):  # noqa: B017  (the old session ended with the old password: Gradio answers 401)
        dee.predict(None, api_name="/lead_campaigns")
    with pytest.raises(Exception):  # noqa: B017  (a one-time password opens no session)
        Client(studio["url"], auth=("dee", new_password), verbose=False)
    Client(studio["url"], auth=("dee", first_login(studio, "dee", new_password)), verbose=False)
    admin.predict("dee", "lead", api_name="/admin_set_role")
    table, _ = admin.predict("dee", "dee-hf", api_name="/admin_link_hf")
    assert ["dee", "dee-hf"] in [[row[0], row[5]] for row in table["data"]]
    assert studio["leads"].user_for_hf("DEE-HF") == studio["leads"].user_id("dee")  # HF names are case-insensitive
    _, said = admin.predict("lena", "dee-hf", api_name="/admin_link_hf")
    assert "already linked to 'dee'" in said
    admin.predict("dee", False, api_name="/admin_set_active")
    *_, said = admin.predict("dee", "remove", False, api_name="/admin_erase")
    assert "Tick the confirmation" in said
    report, *_ = admin.predict("dee", "remove", True, api_name="/admin_erase")
    assert "erased (remove)" in report and "dee" not in [
        row[0] for row in admin.predict(api_name="/admin_users")["data"]
    ]


def test_only_leads_and_admins_see_the_lead_tabs(studio):
    picker, hint = client(studio, "ada").predict(None, api_name="/lead_campaigns")
    assert picker["choices"] == [] and "You lead no campaign yet" in hint["value"]
    lead_tab, users_tab = studio["tabs"]
    leads = studio["leads"]
    shown = {name: lead_visibility(leads, leads.user_id(name), studio["tabs"]) for name in ("ada", "lena", "root")}
    assert [(shown[name][lead_tab].visible, shown[name][users_tab].visible) for name in ("ada", "lena", "root")] == [
        (False, False), (True, False), (True, True)
    ]  # fmt: skip


REFUSED = {
    "/lead_campaign": lambda s: [s["campaign"]],
    "/lead_quality": lambda s: [s["campaign"]],
    "/lead_export": lambda s: [
        s["campaign"],
        "preference",
        "majority",
        0,
        0.1,
        False,
        False,
        False,
        True,
        "none",
        "",
        False,
    ],
    "/lead_create_campaign": lambda s: ["rogue", *SETTINGS],
    "/lead_demonstrations": lambda s: [s["campaign"], "all"],
    "/lead_demonstration": lambda s: [_first_demonstration(s)],
    "/lead_accept_demonstration": lambda s: [s["campaign"], "all", _first_demonstration(s), ""],
    "/lead_reject_demonstration": lambda s: [s["campaign"], "all", _first_demonstration(s), "no"],
    "/lead_update_campaign": lambda s: [s["campaign"], *SETTINGS],
    "/lead_import": lambda s: [s["campaign"], handle_file(str(s["root"] / "import.jsonl")), "pairs", "prior", False],
    "/lead_pairs": lambda s: [s["campaign"]],
    "/lead_mark_calibration": lambda s: [s["campaign"], _first_pair(s), "safety", 2, [], "no"],
    "/lead_members": lambda s: [s["campaign"]],
    "/lead_assign": lambda s: [s["campaign"], "bo", "lead", ""],
    "/lead_unassign": lambda s: [s["campaign"], "lena", "rater", ""],
    "/lead_set_domains": lambda s: [s["campaign"], "bo", "rater", "law"],
    "/lead_disagreements": lambda s: [s["campaign"], True],
    "/lead_pair_detail": lambda s: [_first_pair(s)],
    "/lead_adjudicate": lambda s: [_first_pair(s), 2, False, "mine now", True, "safety"],
    "/admin_users": lambda s: [],
    "/admin_create_user": lambda s: ["mallory", "admin", ""],
    "/admin_set_role": lambda s: ["ada", "admin"],
    "/admin_set_active": lambda s: ["lena", False],
    "/admin_link_hf": lambda s: ["ada", "ada-on-hf"],
    "/admin_erase": lambda s: ["lena", "remove", True],
    "/admin_reset_password": lambda s: ["lena"],
    "/lead_exports": lambda s: [s["campaign"]],
    "/lead_generate": lambda s: [s["campaign"], "tiny=some/model", 1, 1.0, 16],
    "/lead_evaluation": lambda s: [s["campaign"]],
}


@pytest.mark.parametrize("endpoint", REFUSED)
def test_a_rater_calling_a_lead_or_admin_endpoint_is_refused_and_nothing_changes(studio, endpoint):
    (studio["root"] / "import.jsonl").write_text('{"prompt": "p", "response_a": "a", "response_b": "b"}\n')
    rater = client(studio, "ada")  # before the snapshot: a login is audited
    before, exports = snapshot(studio["engine"]), sorted(Path(studio["exports"]).glob("*"))
    with pytest.raises(Exception, match=r"Only (the campaign's )?(leads and )?admins"):
        rater.predict(*REFUSED[endpoint](studio), api_name=endpoint)
    assert snapshot(studio["engine"]) == before and sorted(Path(studio["exports"]).glob("*")) == exports
