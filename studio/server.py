"""What Concord adds to Gradio's web server: its own login, logout and the permission-checked export download.

``launch_kwargs(service)`` gives ``Blocks.launch`` all of it through Gradio's public hooks: ``auth_dependency``
(studio.login.signed_in_user: every Gradio route asks it who the request belongs to), ``app_kwargs`` (our routes,
registered before Gradio's own, so ``POST /login`` is ours; and the login page shown where Gradio would refuse the
page), and ``max_file_size`` (uploads). Off Spaces there is no Gradio ``auth=`` at all: Gradio's in-memory token
table, which mapped a cookie to a bare username forever, is never used.

Routes:
- ``POST /login``: form fields ``username`` and ``password``. 200 and an HttpOnly, SameSite session cookie (Secure
  when served over HTTPS); 400 for a wrong password; 429 with ``Retry-After`` while the account or address is locked;
  403 with ``"change_password": true`` for a right one-time password (an admin's reset), which signs in only with a
  ``new_password`` field replacing it. The JSON ``detail`` says which, in words for the person.
- ``GET /logout``: ends this session and returns to the login page.
- ``GET /exports/<id>.zip``: the export's .zip for the leads of its campaign and admins; 401 without a session, 403
  for anyone else, 409 (a page saying why, with a link to confirm) for a stale export unless ``?stale=ok``.
"""

from __future__ import annotations

import html
import inspect
import os
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.exception_handlers import http_exception_handler
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from studio.access import PermissionDenied, Service
from studio.exports import ExportService, StaleExport
from studio.login import hf_oauth_enabled, session_token, signed_in_user

LOGIN_PAGE = (Path(__file__).parent / "static" / "login.html").read_text(encoding="utf-8")
DEFAULT_MAX_UPLOAD_MB = 50.0
SESSIONS_KEPT = 1000


def max_upload_mb() -> float:
    """``CONCORD_MAX_UPLOAD_MB`` (default 50): the largest file anyone may upload, imports included."""
    raw = os.environ.get("CONCORD_MAX_UPLOAD_MB", "").strip()
    try:
        limit = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise ValueError(f"CONCORD_MAX_UPLOAD_MB={raw!r} is not a number of megabytes") from None
    if limit <= 0:
        raise ValueError(f"CONCORD_MAX_UPLOAD_MB must be positive (got {raw!r})")
    return limit


def launch_kwargs(service: Service, *, upload_mb: float | None = None) -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: Concord's login (unless Hugging Face OAuth signs people in), the
    export download and the upload limit (``upload_mb``, default ``max_upload_mb()``)."""
    exports = ExportService(service.engine, login=service.login)
    routes = [Route("/exports/{export_id:int}.zip", partial(_download, service, exports), methods=["GET"])]
    kwargs: dict[str, Any] = {
        "max_file_size": int((upload_mb or max_upload_mb()) * 1024 * 1024),
        "ssr_mode": False,  # the page must come from this server, which shows the login page in its place
        # Gradio keeps every page's session (about 0.75 MiB of component config here) until 10,000 are held; the
        # least recently used beyond 1,000 go (an idle rater's next submit then asks them to press Next item).
        "state_session_capacity": SESSIONS_KEPT,
        "app_kwargs": {"routes": routes},
    }
    if not hf_oauth_enabled():
        routes += [
            Route("/login", partial(_login, service), methods=["POST"]),
            Route("/logout", partial(_logout, service), methods=["GET"]),
        ]
        kwargs["auth_dependency"] = signed_in_user(service)
        kwargs["app_kwargs"]["exception_handlers"] = {401: partial(_login_page, _policy(service))}
    return kwargs


def _routers_and_routes(router: Any) -> Any:
    """(router, route) for every route under ``router``, those of included routers too: FastAPI 0.16x keeps an
    included router whole (its routes built afresh, lazily, from their declarations), older ones copy its routes in."""
    for route in router.routes:
        if (included := getattr(route, "original_router", None)) is not None:
            yield from _routers_and_routes(included)
        else:
            yield router, route


def check_login_on_the_loop(app: FastAPI) -> None:
    """Gradio checks the login before each API call in a plain function, which FastAPI runs on a worker thread: a
    thread hop of its own on every submit, to test a value for None. The same check as a coroutine, put in its place
    in each route's declared and resolved dependencies (FastAPI's ``dependency_overrides`` would do it too, but makes
    FastAPI inspect every dependency's signature again on every request: 3.5 % of the studio's Python under load).
    Only with Concord's login: Gradio's check lets everyone through when neither ``auth`` nor ``auth_dependency`` is
    set (Hugging Face OAuth)."""
    declared, resolved, changed = [], [], {}  # (list, index) of each Depends; each resolved dependency; routers
    for router, route in _routers_and_routes(app.router):
        for i, depends in enumerate(getattr(route, "dependencies", None) or []):
            if getattr(depends.dependency, "__name__", "") == "login_check":
                declared.append((route.dependencies, i))
                changed[id(router)], gradios = router, depends.dependency
        resolved += [d for d in getattr(getattr(route, "dependant", None), "dependencies", ())
                     if d.call.__name__ == "login_check"]  # fmt: skip
    who = inspect.signature(gradios).parameters["user"].default  # Depends(get_current_user): one lookup

    async def login_check(user: str | None = who) -> None:
        if user is None:
            raise HTTPException(401, detail={"error": "Not authenticated", "auth_message": None})

    for dependency in resolved:  # the same signature, so FastAPI's resolved parameters stay right
        dependency.call = login_check
    for dependencies, i in declared:
        dependencies[i] = Depends(login_check)
    for router in changed.values():  # an included router's routes, if built already, are built again from declarations
        getattr(router, "_mark_routes_changed", lambda: None)()


def _policy(service: Service) -> str:
    login = service.login
    return html.escape(
        f"After {login.max_failures} wrong passwords for an account, or {login.max_failures_per_address} from one "
        f"address, within {login.lockout_minutes:g} minutes, logins wait. A session lasts {login.session_hours:g} "
        "hours."
    )


async def _login_page(policy: str, request: Request, error: HTTPException) -> Response:
    """Where Gradio refuses the studio's page to a request without a session, show the login form instead."""
    root = (request.scope.get("root_path") or "").rstrip("/")
    if request.method in ("GET", "HEAD") and request.url.path.rstrip("/") == root:
        return HTMLResponse(LOGIN_PAGE.replace("__POLICY__", policy), headers={"Cache-Control": "no-store"})
    return await http_exception_handler(request, error)


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


async def _login(service: Service, request: Request) -> Response:
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    address = request.client.host if request.client else ""
    new_password = str(form.get("new_password") or "") or None
    outcome = await run_in_threadpool(service.log_in, username, password, address, new_password)
    if outcome.must_change_password:
        return JSONResponse({"detail": outcome.refusal, "change_password": True}, status_code=403)
    if outcome.token is None:
        locked = outcome.retry_after_s > 0
        headers = {"Retry-After": str(outcome.retry_after_s)} if locked else None
        return JSONResponse({"detail": outcome.refusal}, status_code=429 if locked else 400, headers=headers)
    login = service.login
    response = JSONResponse({"success": True})
    response.set_cookie(
        login.cookie_name, outcome.token, max_age=int(login.lifetime.total_seconds()), path="/", httponly=True,
        samesite=login.cookie_samesite, secure=login.cookie_secure or _is_https(request),
    )  # fmt: skip
    return response


async def _logout(service: Service, request: Request) -> Response:
    await run_in_threadpool(service.log_out, session_token(service, request))
    response = RedirectResponse("./", status_code=302)
    response.delete_cookie(service.login.cookie_name, path="/")
    return response


def _caller(service: Service, request: Request) -> int | None:
    """The account behind a plain HTTP request: its Concord session, or its Hugging Face sign-in on a Space."""
    if not hf_oauth_enabled():
        found = service.signed_in(session_token(service, request))
        return found[0] if found else None
    try:
        userinfo = request.session.get("oauth_info", {}).get("userinfo", {})
    except AssertionError:  # no session middleware: nobody has signed in with Hugging Face
        return None
    return service.user_for_hf(userinfo.get("preferred_username")) if userinfo else None


def _page(status: int, text: str, link: str = "") -> HTMLResponse:
    body = f"<p>{html.escape(text)}</p>"
    if link:
        body += f'<p><a href="{html.escape(link)}">Download it anyway</a></p>'
    return HTMLResponse(f"<!doctype html><title>Concord</title>{body}", status_code=status)


async def _download(service: Service, exports: ExportService, request: Request) -> Response:
    export_id = request.path_params["export_id"]
    try:
        actor = await run_in_threadpool(_caller, service, request)
        if actor is None:
            return _page(401, "Log in first.")
        acknowledged = request.query_params.get("stale") == "ok"
        found = await run_in_threadpool(partial(exports.export_file, actor, export_id, acknowledge_stale=acknowledged))
    except PermissionDenied as refused:
        return _page(403, str(refused))
    except StaleExport as stale:
        return _page(409, str(stale), link=f"{export_id}.zip?stale=ok")
    except LookupError as missing:
        return _page(404, missing.args[0] if missing.args else "Not found.")
    headers = {"Cache-Control": "no-store"}
    if found.stale:
        headers["X-Concord-Stale"] = "holds data of a person erased since it was made"
    return FileResponse(found.path, filename=found.file_name, media_type="application/zip", headers=headers)
