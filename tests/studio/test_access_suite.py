"""The access suite: every endpoint the running studio's own config lists, called over real HTTP by five callers.

The endpoints come from the config Gradio serves (its ``dependencies``: private handlers and browser-only ones
included, by ``fn_index``), so a handler is covered the day it is wired. Who may call one is read from where the app
declares it: the tab the handler sits in (up the config's layout from the component that triggers it); who sees that
tab (``studio.tabs.lead.lead_visibility``: Lead for leads and admins, Users for admins; Compare and Write for
everyone); and, for a call that names a campaign (its picker or one of its pairs), ``storage.members``: ``may_rate``
in the rater tabs and ``may_lead`` in the Lead tab, the same checks the services make (``_rater_in``, ``_lead_of``).
A tab this table does not know fails the suite: a new tab must say whose it is.

Refused means: nothing of the campaign in the answer and nothing changed in the database; an explicit permission
refusal wherever the caller could not even see the tab. Allowed means: no permission refusal.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, select

from storage import members
from storage.db import write_session
from storage.demo import seed_demo
from storage.models import Campaign, Demonstration, ExportRecord, Judgment, Pair, Prompt, Response, Role, User
from studio.access import PermissionDenied
from studio.app import launch_studio
from studio.leads import LeadService
from studio.service import StudioService
from studio.tabs.lead import lead_visibility
from tests.studio.test_server import SETTINGS, add_user

MARK = "zq7wx"  # in every text of campaign X: an answer holding it holds X's data
CALLERS = [None, "ada", "olga", "lena", "root"]  # nobody, X's rater, another campaign's lead, X's lead, an admin
# Each tab's rule for a call that names a campaign (None: its calls name none). The header (None) holds the picker
# of the campaigns one may rate.
RULES = {None: members.may_rate, "compare": members.may_rate, "write": members.may_rate, "history": members.may_rate,
         "lead": members.may_lead, "users": None, "account": None}  # fmt: skip
NAMES_X = {"concord-campaign", "lead-campaign", "adjudication-pair-id", "campaigns-calibration-pair",
           "demonstrations-id"}  # fmt: skip
UNLOGGED = {"loginsession", "login_session", "loginfailure", "login_failure"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The launched studio: campaign X (the demo, every text marked) with lena its lead and ada and a marked rater
    its raters; olga leads campaign Y; root is an admin; victim a rater the admin actions aim at. X has an export."""
    folder = tmp_path_factory.mktemp("access")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONCORD_DATA_DIR", str(folder))
        from storage.db import make_engine, upgrade_database

        engine = make_engine(f"sqlite:///{folder / 'concord.db'}")
        upgrade_database(engine)
        seed_demo(engine)
        ids = {name: add_user(engine, name, role) for name, role in {
            "root": Role.admin, "lena": Role.lead, "olga": Role.lead, "ada": Role.rater, f"b{MARK}": Role.rater,
            "victim": Role.rater}.items()}  # fmt: skip
        x, pair_id = _mark_campaign_x(engine, ids)
        with Session(engine) as session:
            demonstration_id = session.exec(select(Demonstration.id)).one()
        leads = LeadService(engine, login=SETTINGS)
        export = leads.export(ids["lena"], x, out_dir=folder / "exports" / "x-preference", kind="preference")
        app = launch_studio(StudioService(engine, login=SETTINGS), prevent_thread_lock=True, quiet=True)
        try:
            yield SimpleNamespace(
                url=app.local_url.rstrip("/"), app=app, engine=engine, leads=leads, ids=ids, x=x, pair_id=pair_id,
                demonstration_id=demonstration_id, export_id=export.export_id, folder=folder,
            )  # fmt: skip
        finally:
            app.close()
            engine.dispose()


def _mark_campaign_x(engine, ids: dict[str, int]) -> tuple[int, int]:
    with write_session(engine) as session, session.begin():
        x = session.exec(select(Campaign)).one()
        x.name, x.guidelines, x.consent_text, x.calibration_rate = f"demo {MARK}", f"Judge well ({MARK}).", "", 0.0
        for prompt in session.exec(select(Prompt).where(Prompt.campaign_id == x.id)):
            prompt.messages = [{**m, "content": f"{m['content']} {MARK}"} for m in prompt.messages]
            for response in session.exec(select(Response).where(Response.prompt_id == prompt.id)):
                response.text = f"{response.text} {MARK}"
        y = Campaign(name="olga's campaign", guidelines="Y's own.")
        session.add(y)
        session.flush()
        users = {name: session.get(User, user_id) for name, user_id in ids.items()}
        for campaign, name, role in [(x, "lena", Role.lead), (x, "ada", Role.rater), (x, f"b{MARK}", Role.rater),
                                     (y, "olga", Role.lead)]:  # fmt: skip
            members.set_member(session=session, campaign=campaign, user=users[name], role=role, actor_id=None)
        pair = session.exec(select(Pair).where(Pair.campaign_id == x.id).order_by(Pair.id)).first()
        session.add(Judgment(pair_id=pair.id, rater_id=ids[f"b{MARK}"], preference=-2, left="a",
                             reasoning=f"Left cites the report {MARK}.", guideline_version=1))  # fmt: skip
        written = [{"role": "assistant", "content": f"Written by hand {MARK}."}]
        session.add(
            Demonstration(prompt_id=pair.prompt_id, rater_id=ids[f"b{MARK}"], guideline_version=1, messages=written)
        )
        session.flush()
        return x.id, pair.id


def cookies_of(studio, name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    reply = httpx.post(f"{studio.url}/login", data={"username": name, "password": "correct horse battery"})
    assert reply.status_code == 200, reply.text
    return {SETTINGS.cookie_name: reply.cookies[SETTINGS.cookie_name]}


@dataclass
class Answer:
    status: int  # HTTP status of the queue join (or of the one request of an event outside the queue)
    success: bool = False
    output: object = None
    denied: bool = False  # a PermissionDenied was raised while the call ran

    @property
    def text(self) -> str:
        return json.dumps(self.output, default=str)


@contextmanager
def refusals_counted(monkeypatch) -> Iterator[list]:
    """Every PermissionDenied the server raises (it runs in this process): a refusal whatever words it uses."""
    raised: list = []
    original = PermissionDenied.__init__

    def counting(self, *args):
        raised.append(args)
        original(self, *args)

    monkeypatch.setattr(PermissionDenied, "__init__", counting)
    yield raised


def call(studio, cookies: dict, fn_index: int, data: list, event_data=None, trigger_id=None, raised=None,
         session_hash: str | None = None, queued: bool = True) -> Answer:  # fmt: skip
    """One event as a browser sends it: through Gradio's queue (join, then read the event stream to its end), or, for
    an event outside the queue, one request answered in its response. Calls in one ``session_hash`` share a page:
    its states and what earlier answers changed (a picker's choices)."""
    before = len(raised) if raised is not None else 0
    session_hash = session_hash or uuid.uuid4().hex[:11]
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": event_data,
            "trigger_id": trigger_id}  # fmt: skip
    if not queued:  # the route's name does not matter: the body's fn_index picks the handler
        answer = httpx.post(f"{studio.url}/gradio_api/run/predict", json=body, cookies=cookies, timeout=60)
        denied = raised is not None and len(raised) > before
        return Answer(answer.status_code, answer.status_code == 200, answer.json() if answer.content else None, denied)
    joined = httpx.post(f"{studio.url}/gradio_api/queue/join", json=body, cookies=cookies, timeout=60)
    if joined.status_code != 200:
        return Answer(joined.status_code, output=joined.text)
    url = f"{studio.url}/gradio_api/queue/data"
    with httpx.stream("GET", url, params={"session_hash": session_hash}, cookies=cookies, timeout=120) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                denied = raised is not None and len(raised) > before
                return Answer(200, bool(message.get("success")), message.get("output"), denied)
    raise AssertionError(f"event {fn_index} never completed")


def snapshot(engine) -> dict[str, list]:
    """Every row but login bookkeeping (sessions, failures and their audit events): what a refusal must not change."""
    tables = {}
    with Session(engine) as session:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in UNLOGGED:
                continue
            rows = session.execute(sa_select(table)).mappings().all()
            if table.name in ("auditevent", "audit_event"):
                rows = [row for row in rows if not str(row["action"]).startswith("user.login")]
            tables[table.name] = sorted(json.dumps(dict(row), default=str, sort_keys=True) for row in rows)
    return tables


def layout_tabs(config: dict) -> dict[int, str | None]:
    """The id of the top-level tab each component sits in (None: outside every tab), from the config's layout."""
    kinds = {c["id"]: c for c in config["components"]}
    tab_of: dict[int, str | None] = {}

    def walk(node: dict, tab: str | None) -> None:
        if tab is None and kinds.get(node["id"], {}).get("type") == "tabitem":
            tab = kinds[node["id"]]["props"]["id"]
        tab_of[node["id"]] = tab
        for child in node.get("children", []):
            walk(child, tab)

    walk(config["layout"], None)
    return tab_of


@dataclass
class Endpoint:
    """One of the config's dependencies, with where it sits and what the suite sends it."""

    fn_index: int
    api_name: str
    tab: str | None
    inputs: list[dict]  # the input components' configs
    trigger_id: int | None
    backend: bool
    on_load: bool  # runs when the page opens
    queued: bool  # through Gradio's queue; else one request (the judgment submit)

    @property
    def names_x(self) -> bool:
        """It is given campaign X (its picker) or one of X's items: a call about X, for the campaign rule."""
        return any(c["props"].get("elem_id") in NAMES_X for c in self.inputs)


def endpoints(config: dict) -> list[Endpoint]:
    tab_of, components, deps = layout_tabs(config), {c["id"]: c for c in config["components"]}, config["dependencies"]

    def tab(dep: dict) -> str | None:
        targets = [target for target, _ in dep["targets"] if target is not None]
        if not targets:  # a .then(): where the event it follows was triggered
            return tab(deps[dep["trigger_after"]])
        (where,) = {tab_of[target] for target in targets}
        return where

    return [
        Endpoint(dep["id"], dep["api_name"], tab(dep), [components[i] for i in dep["inputs"]],
                 next((t for t, _ in dep["targets"] if t is not None), None), dep["backend_fn"],
                 any(event == "load" for _, event in dep["targets"]), dep["queue"])
        for dep in deps
    ]  # fmt: skip


def expected_allowed(studio, endpoint: Endpoint, caller: str | None) -> bool:
    """May this caller call it, by the app's own declarations (module docstring)?"""
    if caller is None:
        return False
    assert endpoint.tab in RULES, f"{endpoint.api_name} sits in tab {endpoint.tab!r}: say in RULES whose it is"
    user_id = studio.ids[caller]
    shown = {tab: update.visible for tab, update in lead_visibility(studio.leads, user_id, ["lead", "users"]).items()}
    if not shown.get(endpoint.tab, True):
        return False
    rule = RULES[endpoint.tab]
    if rule is None or not endpoint.names_x:
        return True
    with Session(studio.engine) as session:
        return rule(session=session, user=session.get(User, user_id), campaign_id=studio.x)


def arguments(studio, endpoint: Endpoint, caller: str, n: int) -> tuple[list, dict]:
    """Valid values for every input (so a call gets as far as its permission check), naming X where it can."""
    chosen = {
        "concord-campaign": studio.x, "lead-campaign": studio.x, "adjudication-pair-id": studio.pair_id,
        "campaigns-calibration-pair": studio.pair_id, "demonstrations-id": studio.demonstration_id,
        "users-username": "victim", "campaigns-member-username": "victim", "users-erase-confirm": "victim",
        "users-new-username": f"new{n}", "campaigns-new-name": f"new campaign {n}",
        "campaigns-guidelines": "Judge well.", "adjudication-note": "Decided by the access suite.",
        "account-current": "", "account-new": "", "account-again": "",
        "campaigns-import-file": upload(studio, caller) if caller else None,
    }  # fmt: skip
    data = []
    for component in endpoint.inputs:
        props = component["props"]
        value = chosen.get(props.get("elem_id"), props.get("value"))
        if value in (None, "") and props.get("choices"):
            value = props["choices"][0][1]
        data.append(value)
    row = [studio.pair_id, "victim", "rater", True]
    event = {"index": [0, 0], "value": row[0], "row_value": row, "col_value": [row[0]], "selected": True}
    return data, event


def upload(studio, caller: str) -> dict:
    """A small pairs file for X, uploaded as this caller (anyone signed in may upload; importing is the lead's)."""
    line = json.dumps({"prompt": f"Imported {MARK}?", "chosen": "yes", "rejected": "no"})
    reply = httpx.post(f"{studio.url}/gradio_api/upload", files={"files": ("x.jsonl", line.encode() + b"\n")},
                       cookies=studio.cookies[caller])  # fmt: skip
    assert reply.status_code == 200, reply.text
    return {"path": reply.json()[0], "orig_name": "x.jsonl", "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def config(studio) -> dict:
    studio.cookies = {caller: cookies_of(studio, caller) for caller in CALLERS}
    return httpx.get(f"{studio.url}/config", cookies=studio.cookies["root"]).json()


def test_the_suite_covers_every_handler_the_server_runs(studio, config):
    served = endpoints(config)
    assert [e.fn_index for e in served] == sorted(studio.app.fns), "the config lists every handler, by fn_index"
    assert {e.tab for e in served} <= set(RULES), "each tab says whose it is"
    assert sum(not e.backend for e in served) and sum(e.api_name.startswith("admin_") for e in served)
    assert httpx.get(f"{studio.url}/config").status_code == 401


def test_without_a_session_every_endpoint_answers_401(studio, config):
    before = snapshot(studio.engine)
    for endpoint in endpoints(config):
        data, event = arguments(studio, endpoint, None, 0)
        answer = call(studio, {}, endpoint.fn_index, data, event, endpoint.trigger_id, queued=endpoint.queued)
        assert answer.status == 401 and MARK not in answer.text, endpoint.api_name
    assert snapshot(studio.engine) == before


def served(config: dict) -> list[Endpoint]:
    """The endpoints with a server function (the rest run in the browser only: see the test below)."""
    return [endpoint for endpoint in endpoints(config) if endpoint.backend]


def test_a_browser_only_handler_runs_nothing_on_the_server(studio, config):
    before = snapshot(studio.engine)
    for endpoint in endpoints(config):
        if not endpoint.backend:
            data, event = arguments(studio, endpoint, "ada", 0)
            answer = call(studio, studio.cookies["ada"], endpoint.fn_index, data, event, endpoint.trigger_id,
                          queued=endpoint.queued)  # fmt: skip
            assert not answer.success and "no backend method" in answer.text, endpoint.api_name
    assert snapshot(studio.engine) == before


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["ada", "olga", "lena", "root"])
def test_every_endpoint_gives_each_caller_what_the_app_declares(studio, config, caller, monkeypatch):
    """Refused: nothing of X in the answer and no change in the database. Allowed: no permission refusal.
    Refused callers run first (ada, olga), so what the allowed ones change cannot hide a refusal."""
    outcomes, page, after = {}, uuid.uuid4().hex[:11], snapshot(studio.engine)  # one page, opened first, as a browser
    with refusals_counted(monkeypatch) as raised:
        for n, endpoint in enumerate(sorted(served(config), key=lambda e: not e.on_load)):
            data, event = arguments(studio, endpoint, caller, n)
            before = after
            answer = call(studio, studio.cookies[caller], endpoint.fn_index, data, event, endpoint.trigger_id, raised,
                          page, endpoint.queued)  # fmt: skip
            after = snapshot(studio.engine)
            changed = sorted(table for table, rows in after.items() if rows != before[table])
            allowed = expected_allowed(studio, endpoint, caller)
            where = f"{endpoint.api_name} (fn_index {endpoint.fn_index}, tab {endpoint.tab}) as {caller}"
            assert answer.status == 200, where
            if allowed:
                assert not answer.denied, f"{where}: refused, but the app declares it allowed"
            else:
                assert MARK not in answer.text, f"{where}: holds campaign X's data: {answer.text[:300]}"
                assert not changed, f"{where}: changed {changed}"
            outcomes[endpoint.api_name] = ("allowed" if allowed else "refused", answer.denied, MARK in answer.text)
    shown_x = [name for name, (expected, _, holds_x) in outcomes.items() if expected == "allowed" and holds_x]
    assert bool(shown_x) == (caller != "olga")  # X's data does show where allowed: the check for it can fail


def test_an_export_downloads_only_through_its_permission_checked_route(studio, config):
    with Session(studio.engine) as session:
        record = session.get(ExportRecord, studio.export_id)
    archive, card = record.out_path + ".zip", f"{record.out_path}/README.md"
    route = f"{studio.url}/exports/{studio.export_id}.zip"
    by_path = [f"{studio.url}{prefix}/file={path}" for prefix in ("", "/gradio_api")
               for path in (archive, card, studio.folder / "concord.db")]  # fmt: skip
    for caller, status in {None: 401, "ada": 403, "olga": 403, "lena": 200, "root": 200}.items():
        cookies = studio.cookies[caller]
        for url in by_path:  # Gradio's file routes serve nothing from the data folder, to anyone
            answer = httpx.get(url, cookies=cookies)
            assert answer.status_code in (401, 403, 404) and MARK not in answer.text, (caller, url)
        answer = httpx.get(route, cookies=cookies)
        assert answer.status_code == status, caller
        if status == 200:
            with zipfile.ZipFile(io.BytesIO(answer.content)) as zipped:
                assert MARK in zipped.read("README.md").decode()  # the card names campaign X
        else:
            assert MARK not in answer.text


def test_a_rater_tabs_selection_before_a_campaign_is_picked_changes_nothing(studio, config):
    """Gradio selects the first tab as the page opens, before the page's load has picked a campaign. Its answer
    ("Pick a campaign above.", the item hidden and forgotten) could arrive after the campaign's item and hide it."""
    kinds = {c["id"]: c for c in config["components"]}
    selects = [dep for dep in config["dependencies"] if dep["backend_fn"] and any(
        event == "select" and kinds.get(target, {}).get("props", {}).get("id") in ("compare", "write")
        for target, event in dep["targets"])]  # fmt: skip
    assert len(selects) == 2
    for dep in selects:
        answer = call(studio, studio.cookies["ada"], dep["id"], [None, None], {"value": "Compare", "index": 0},
                      dep["targets"][0][0])  # fmt: skip
        assert answer.success, answer.text
        assert all(map(unchanged, answer.output["data"])), answer.text


def unchanged(value) -> bool:
    """An output left as it is: a state's None, or an update that sets nothing (HTML nests it under ``props``)."""
    if value is None:
        return True
    return (
        isinstance(value, dict)
        and value.get("__type__") == "update"
        and set(value) <= {"__type__", "props"}
        and set(value.get("props", {})) <= {"__type__"}
    )
