"""The studio's login, sessions and files over HTTP, as a browser, gradio_client or an attacker reaches them."""

import io
import re
import zipfile

import anyio.to_thread
import httpx
import pytest
from gradio_client import Client
from sqlmodel import Session, select

from storage import members
from storage.accounts import create_user
from storage.db import write_session
from storage.demo import seed_demo
from storage.models import AuditEvent, Campaign, ExportRecord, LoginSession, Role, User, UserCreate, utcnow
from studio.admin import AdminService
from studio.app import launch_studio
from studio.leads import LeadService
from studio.service import StudioService
from studio.sessions import SessionArguments

PASSWORD = "correct horse battery"
SETTINGS = SessionArguments(secret="t" * 32, max_failures=3, max_failures_per_address=50)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A launched studio (1 MB upload limit) on the demo campaign, with root (admin), lena (its lead), ada (rater)."""
    folder = tmp_path_factory.mktemp("server")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONCORD_DATA_DIR", str(folder))  # exports land here, as on a team server
        patch.setenv("CONCORD_MAX_UPLOAD_MB", "1")
        from storage.db import make_engine, upgrade_database

        engine = make_engine(f"sqlite:///{folder / 'concord.db'}")
        upgrade_database(engine)
        seed_demo(engine)
        for name, role in {"root": Role.admin, "lena": Role.lead, "ada": Role.rater}.items():
            add_user(engine, name, role)
        with write_session(engine) as session, session.begin():
            demo = session.exec(select(Campaign)).one()
            lena = session.exec(select(User).where(User.username == "lena")).one()
            members.set_member(session=session, campaign=demo, user=lena, role=Role.lead, actor_id=None)
        app = launch_studio(StudioService(engine, login=SETTINGS), prevent_thread_lock=True, quiet=True)
        leads = LeadService(engine, login=SETTINGS)
        yield {
            "app": app,
            "url": app.local_url.rstrip("/"),
            "engine": engine,
            "leads": leads,
            "folder": folder,
            "demo": demo.id,
        }
        app.close()
        engine.dispose()


def add_user(engine, name: str, role: Role = Role.rater) -> int:
    with write_session(engine) as session, session.begin():
        return create_user(session=session, user=UserCreate(username=name, password=PASSWORD, role=role)).id


def user_id(engine, name: str) -> int:
    with Session(engine) as session:
        return session.exec(select(User.id).where(User.username == name)).one()


def client(studio, name: str) -> Client:
    return Client(studio["url"], auth=(name, PASSWORD), verbose=False)


def post_login(studio, name: str, password: str = PASSWORD, **headers) -> httpx.Response:
    return httpx.post(f"{studio['url']}/login", data={"username": name, "password": password}, headers=headers)


def refused(call) -> None:
    """The call gets nothing: gradio_client raises (Gradio answers 401 before any handler runs)."""
    with pytest.raises(Exception):  # noqa: B017  (its exception type varies with the gradio_client version)
        call()


def test_without_a_session_the_page_is_the_login_form_and_the_api_answers_401(studio):
    page = httpx.get(studio["url"] + "/")
    assert page.status_code == 200 and 'id="login-form"' in page.text and "After 3 wrong passwords" in page.text
    assert "concord-campaign" not in page.text
    assert httpx.get(studio["url"] + "/config").status_code == 401
    cookie = post_login(studio, "ada").headers["set-cookie"]
    signed_in = httpx.get(studio["url"] + "/", cookies={SETTINGS.cookie_name: _token(cookie)})
    assert "login-form" not in signed_in.text and "concord-campaign" in signed_in.text


def test_the_login_check_runs_on_the_event_loop_and_no_dependency_is_resolved_again_per_request(studio, monkeypatch):
    """Gradio's plain-function check would hop to a worker thread on every call, on the routes of Gradio's included
    router too (/gradio_api/run, /queue/join: FastAPI 0.16x builds those afresh from their declarations); FastAPI's
    dependency_overrides would inspect every dependency's signature again on every request
    (studio.server.check_login_on_the_loop)."""
    hopped = []
    run_sync = anyio.to_thread.run_sync

    async def recording(func, *args, **kwargs):
        hopped.append(getattr(getattr(func, "func", func), "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", recording)
    ada = client(studio, "ada")
    ada.predict(api_name="/campaigns")  # queued: queue/join, then the event's stream
    page = httpx.Client(base_url=studio["url"], cookies=ada.cookies)
    config = page.get("/config").raise_for_status().json()
    campaigns = next(d for d in config["dependencies"] if d.get("api_name") == "campaigns")
    body = {"data": [], "fn_index": campaigns["id"], "session_hash": "x", "event_data": None, "trigger_id": None}
    page.post(f"{config['api_prefix']}/run/campaigns", json=body).raise_for_status()  # unqueued, as a submit is
    assert "on_load" in hopped and "signed_in" in hopped  # the handler and the session lookup: what must hop
    assert "login_check" not in hopped
    assert not studio["app"].server_app.dependency_overrides


def _token(set_cookie: str) -> str:
    return re.match(rf"{SETTINGS.cookie_name}=([^;]+);", set_cookie).group(1)


def test_the_session_cookie_is_httponly_samesite_and_secure_behind_https(studio):
    plain = post_login(studio, "ada").headers["set-cookie"].lower()
    assert "httponly" in plain and "samesite=lax" in plain and "secure" not in plain and "max-age=43200" in plain
    assert "secure" in post_login(studio, "ada", **{"X-Forwarded-Proto": "https"}).headers["set-cookie"].lower()


def test_an_old_session_gets_nothing_once_its_account_was_erased_and_the_name_reused_by_a_lead(studio):
    engine, admin = studio["engine"], AdminService(studio["engine"], login=SETTINGS)
    add_user(engine, "victim")
    old = client(studio, "victim")
    old.predict(api_name="/campaigns")
    admin.erase(user_id(engine, "root"), "victim", "anonymise")
    add_user(engine, "victim", Role.lead)
    refused(lambda: old.predict(api_name="/campaigns"))
    refused(lambda: old.predict("rogue", "preference", *CAMPAIGN_SETTINGS, api_name="/lead_create_campaign"))
    with Session(engine) as session:
        assert session.exec(select(Campaign.id).where(Campaign.name == "rogue")).first() is None
    client(studio, "victim").predict(api_name="/campaigns")  # the new account logs in afresh


CAMPAIGN_SETTINGS = ["", "helpfulness", 2, 0.1, "training", 10, "", "", 0.7, 20, True]


def test_an_expired_session_gets_nothing(studio):
    rater = client(studio, "ada")
    with write_session(studio["engine"]) as session, session.begin():
        for row in session.exec(select(LoginSession)):  # every session so far has run out
            row.expires_at = utcnow()
    refused(lambda: rater.predict(api_name="/campaigns"))
    client(studio, "ada").predict(api_name="/campaigns")


@pytest.mark.parametrize("change", ["role", "deactivation", "logout"])
def test_a_role_change_a_deactivation_or_a_logout_ends_the_session(studio, change):
    engine, admin, root = studio["engine"], AdminService(studio["engine"], login=SETTINGS), None
    name = f"temp-{change}"
    add_user(engine, name)
    session = client(studio, name)
    session.predict(api_name="/campaigns")
    root = user_id(engine, "root")
    if change == "role":
        admin.set_role(root, name, "lead")
    elif change == "deactivation":
        admin.set_active(root, name, False)
        admin.set_active(root, name, True)  # reactivated: the old session stays dead
    else:
        httpx.get(studio["url"] + "/logout", cookies=session.cookies)
    refused(lambda: session.predict(api_name="/campaigns"))
    client(studio, name).predict(api_name="/campaigns")


def test_logins_are_throttled_then_locked_with_a_message_even_for_the_right_password(studio):
    add_user(studio["engine"], "locked")
    for _ in range(3):
        wrong = post_login(studio, "locked", "not the password")
        assert wrong.status_code == 400 and wrong.json()["detail"] == "Wrong username or password."
    right = post_login(studio, "locked")
    assert right.status_code == 429 and "set-cookie" not in right.headers
    assert right.json()["detail"] == "Too many failed logins for this account: try again in 15 minutes."
    assert 14 * 60 < int(right.headers["retry-after"]) <= 15 * 60
    with Session(studio["engine"]) as session:
        audited = session.exec(
            select(AuditEvent.details).where(AuditEvent.action == "user.login_failed", AuditEvent.target == "locked")
        ).all()
    assert audited == [{"address": "127.0.0.1"}] * 3


def _export(studio) -> int:
    lena = user_id(studio["engine"], "lena")
    with write_session(studio["engine"]) as session, session.begin():  # one judgment by ada, so there is data
        from storage.models import Judgment, Pair

        pair = session.exec(select(Pair).where(Pair.campaign_id == studio["demo"]).order_by(Pair.id)).first()
        session.add(Judgment(pair_id=pair.id, rater_id=user_id(studio["engine"], "ada"), preference=-2, left="a",
                             reasoning="A is right.", guideline_version=1))  # fmt: skip
    out = studio["folder"] / "exports" / f"demo-preference-{utcnow():%H%M%S%f}"
    return studio["leads"].export(lena, studio["demo"], out_dir=out, kind="preference").export_id


def test_a_rater_cannot_download_an_export_by_path_or_by_its_download_route(studio):
    export_id = _export(studio)
    with Session(studio["engine"]) as session:
        archive = session.get(ExportRecord, export_id).out_path + ".zip"
    rater, lead = client(studio, "ada"), client(studio, "lena")
    by_path = httpx.get(f"{studio['url']}/gradio_api/file={archive}", cookies=rater.cookies)
    assert by_path.status_code == 403  # Gradio's file route serves nothing from the data folder
    assert httpx.get(f"{studio['url']}/gradio_api/file={archive}", cookies=lead.cookies).status_code == 403
    route = f"{studio['url']}/exports/{export_id}.zip"
    assert httpx.get(route).status_code == 401
    denied = httpx.get(route, cookies=rater.cookies)
    assert denied.status_code == 403 and "leads and admins can do this" in denied.text
    served = httpx.get(route, cookies=lead.cookies)
    assert served.status_code == 200 and "attachment" in served.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(served.content)) as zipped:
        assert "README.md" in zipped.namelist()
    assert httpx.get(route, cookies=client(studio, "root").cookies).status_code == 200  # an admin may too


def test_a_stale_export_says_so_where_listed_and_downloads_only_knowingly(studio):
    export_id = _export(studio)
    lead = client(studio, "lena")
    assert "stale" not in lead.predict(studio["demo"], api_name="/lead_exports")
    add_user(studio["engine"], "leaver")
    with write_session(studio["engine"]) as session, session.begin():
        record = session.get(ExportRecord, export_id)  # as if the leaver had judged some of its pairs
        record.rater_ids = [*record.rater_ids, user_id(studio["engine"], "leaver")]
    AdminService(studio["engine"], login=SETTINGS).erase(user_id(studio["engine"], "root"), "leaver", "remove")
    listed = lead.predict(studio["demo"], api_name="/lead_exports")
    (row,) = [line for line in listed.splitlines() if line.startswith(f"| {export_id} |")]
    assert "stale: holds data of a person erased since" in row
    route = f"{studio['url']}/exports/{export_id}.zip"
    warned = httpx.get(route, cookies=lead.cookies)
    assert warned.status_code == 409 and "is stale" in warned.text and "stale=ok" in warned.text
    knowingly = httpx.get(route + "?stale=ok", cookies=lead.cookies)
    assert knowingly.status_code == 200 and knowingly.headers["x-concord-stale"]


def test_an_upload_over_the_limit_is_refused(studio):
    lead = client(studio, "lena")
    upload = f"{studio['url']}/gradio_api/upload"
    small = httpx.post(upload, files={"files": ("ok.jsonl", b"{}\n")}, cookies=lead.cookies)
    assert small.status_code == 200
    big = httpx.post(upload, files={"files": ("big.jsonl", b"x" * (2 * 1024 * 1024))}, cookies=lead.cookies)
    assert big.status_code == 413 and "maximum allowed size" in big.text
    assert httpx.post(upload, files={"files": ("ok.jsonl", b"{}\n")}).status_code == 401
