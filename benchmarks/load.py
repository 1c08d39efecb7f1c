"""Load and fault suites: the studio as a real server on 127.0.0.1, judged by a crowd of raters as browsers do.

    python benchmarks/load.py            # SQLite and PostgreSQL; 50, 100 and 200 raters for 60 s each; the faults
    python benchmarks/load.py --quick    # SQLite and PostgreSQL; 20 raters for 15 s; the faults reduced (~2 min)
    python benchmarks/load.py --engines sqlite --raters 50 --seconds 120
    python benchmarks/load.py --soak --engines sqlite    # 50 raters for 10 min, the server's memory every minute
    python benchmarks/load.py --engines sqlite --raters 200 --think 20    # raters who read before they submit

Each run starts ``launch.py studio`` on a new database (a SQLite file, or a new PostgreSQL database on
127.0.0.1:5432) holding the 3,852 distinct HH-RLHF helpful pairs (helpful-online and helpful-rejection-sampled; 50
raters finish helpful-online's 1,135 alone within a minute), overlap k 3, no consent text, no calibration, and one
account per rater. Every rater is a page of its own (``Page``: its own HTTP connection,
cookie and Gradio session, all raters in one asyncio loop) speaking Gradio's queue protocol as the studio's page
does: it logs in (password, as a browser would), loads the app's config, asks for its campaign and its first pair,
then submits judgment after judgment as the browser does (one call: the submit returns the next item), closed-loop
with no think time (``--think S``: S seconds on average, drawn from an exponential, as a person reading the pair),
until the time is up or nothing is left. (Through gradio_client each call cost the client about
85 ms of CPU, a new connection per request: its 50 threads took 1.5 of the 2 cores and the clients, not the server,
set the pace; a ``Page`` costs about 6 ms.) Raters arrive evenly over the first 15 s (a quarter of a short run); one
that fails waits 0.5 s, then twice as long each time (at most 8 s), and logs in again on a new connection. A request
waits up to 60 s for its answer, as a browser would; how long a rater waited from arriving to its first item is
reported. Every submit carries a reasoning text unique to it; a submit is acknowledged when the answer says it was
saved.

Then the database is checked: every acknowledged judgment stored exactly once (lost and duplicated counted), no pair
judged by more than k raters, no rater judging a pair twice. Server CPU (utime + stime of the server process, from
/proc) per acknowledged submit, submits per second, submit latency percentiles and the server's resident memory
are reported.

Faults, each checked the same way:
- ``sigkill``: the server is SIGKILLed mid-load and started again on the same port; raters retry (a new connection)
  until it is back and go on with the pair they held.
- ``pg_restart`` (PostgreSQL): every connection of the database is terminated mid-load (pg_terminate_backend, what a
  restart does to the server's pool); raters must see no stack trace or SQL text, and the server must go on.
- ``export_kill``: ``launch.py export`` is SIGKILLed while writing; no half export may be left where a user looks
  and no ExportRecord written; the export run again succeeds.
- A training run killed and resumed is tests/alignment/test_ppo.py::test_a_killed_run_resumes... (SIGKILL of
  ``launch.py train`` after a checkpoint, then ``--resume``), run in CI's slow suite.

The last line printed is one JSON object; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, func, text  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from benchmarks._report import report  # noqa: E402
from storage.accounts import create_user  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.imports import import_file  # noqa: E402
from storage.models import Campaign, ExportRecord, Judgment, UserCreate  # noqa: E402

HH_DIR = ROOT.parent / "shared" / "data" / "hh-rlhf"
HH = [HH_DIR / subset / "test.jsonl.gz" for subset in ("helpful-online", "helpful-rejection-sampled")]
PG_ADMIN = os.environ.get("CONCORD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSWORD = "load-password-1"
CRITERIA = [4, 4, 4, 3, 3, 3, 3, 3]
CAMPAIGN = "load"
K = 3
RAMP_S = 15.0
REQUEST_TIMEOUT_S = 60.0
LEAK = ("Traceback", "psycopg", "sqlalchemy", "OperationalError", "SELECT ", "INSERT ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def database(kind: str, folder: Path):
    """A new empty database: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'load.db'}"
        return
    name = f"concord_load_{os.getpid()}_{int(time.time())}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='{name}'"))
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def seed(url: str, folder: Path, raters: int, k: int = K) -> list[str]:
    """The HH pairs in campaign ``load`` (overlap ``k``) and ``raters`` accounts; their usernames."""
    pairs = folder / "hh.jsonl"
    rows = []
    for path in HH:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [row for row in map(json.loads, f) if row["chosen"] != row["rejected"]]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    engine = make_engine(url)
    upgrade_database(engine)
    import_file(pairs, engine=engine, campaign=CAMPAIGN, fmt="hh-rlhf", license="MIT")
    names = [f"rater{n:03d}" for n in range(raters)]
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == CAMPAIGN)).one()
        campaign.consent_text, campaign.calibration_rate, campaign.overlap_k = "", 0.0, k
        for name in names:
            create_user(session=session, user=UserCreate(username=name, password=PASSWORD))
    engine.dispose()
    return names


class Server:
    """``launch.py studio`` on 127.0.0.1 as a process of its own; its CPU seconds and memory from /proc."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.folder, self.port, self.process = url, folder, free_port(), None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = os.environ | {"CONCORD_DATA_DIR": str(self.folder), "GRADIO_ANALYTICS_ENABLED": "False"}
        command = [sys.executable, str(ROOT / "launch.py"), "--database-url", self.url, "studio", "--host",
                   "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.address}/login", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"the studio did not start in 120 s: see {self.folder / 'server.log'}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


class AppError(Exception):
    """An event the server answered with an error (the message a rater reads)."""


class Page:
    """One rater's page as the browser holds it: a login cookie, the app's config, a session hash, and Gradio's
    queue protocol (POST queue/join, then the event's messages from the queue/data stream). gradio_client speaks
    the same protocol, but with a new HTTP connection for each request and threads of its own: about 85 ms of
    client CPU per submit, so on this 2-core machine its 50 raters, not the server, set the pace."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http, self.session_hash = http, uuid.uuid4().hex

    async def open(self, username: str) -> None:
        answer = await self.http.post("/login", data={"username": username, "password": PASSWORD})
        if answer.status_code != 200:
            raise AppError(f"login refused ({answer.status_code}): {answer.text[:200]}")
        config = (await self.http.get("/config")).raise_for_status().json()
        self.prefix = config.get("api_prefix", "/gradio_api")
        self.states = {c["id"] for c in config["components"] if c.get("type") == "state"}
        self.endpoints = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    async def call(self, api_name: str, *values) -> list:
        """The event's outputs, states left out (as gradio_client returns them)."""
        dependency, given = self.endpoints[api_name], iter(values)
        data = [None if i in self.states else next(given) for i in dependency["inputs"]]
        body = {"data": data, "fn_index": dependency["id"], "session_hash": self.session_hash, "event_data": None,
                "trigger_id": None}  # fmt: skip
        if dependency.get("queue") is False:  # as the browser: one request, the answer in its response
            answer = await self.http.post(f"{self.prefix}/run/{api_name}", json=body)
            if answer.status_code == 500:
                raise AppError(answer.json().get("error") or "the event failed")
            outputs = zip(dependency["outputs"], answer.raise_for_status().json()["data"], strict=True)
            return [value for i, value in outputs if i not in self.states]
        event_id = (await self.http.post(f"{self.prefix}/queue/join", json=body)).raise_for_status().json()["event_id"]
        params = {"session_hash": self.session_hash}
        async with self.http.stream("GET", f"{self.prefix}/queue/data", params=params) as stream:
            stream.raise_for_status()
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "close_stream":
                    break
                if message.get("event_id") != event_id or message.get("msg") != "process_completed":
                    continue
                if not message.get("success"):
                    raise AppError((message.get("output") or {}).get("error") or "the event failed")
                outputs = zip(dependency["outputs"], message["output"]["data"], strict=True)
                return [value for i, value in outputs if i not in self.states]
        raise ConnectionError("the queue's stream closed before the event completed")


class Rater:
    """One rater: log in, open the campaign, then submit until ``stop`` is set or nothing is left."""

    def __init__(self, name: str, server: Server, start_after: float = 0.0, think_s: float = 0.0) -> None:
        self.name, self.server, self.start_after, self.think_s = name, server, start_after, think_s
        self.rng = random.Random(name)  # think times drawn the same way on every run
        self.acked: list[str] = []
        self.latencies: list[float] = []
        self.waited_to_start: float | None = None  # seconds from arriving to the first item on screen
        self.errors: list[str] = []
        self.done = False

    async def connect(self, http: httpx.AsyncClient) -> tuple[Page, int]:
        page = Page(http)
        await page.open(self.name)
        _, dropdown = (await page.call("campaigns"))[:2]
        campaign = next(value for label, value in dropdown["choices"] if label == CAMPAIGN)
        shown = await page.call("next_pair", campaign)
        self.done = "Nothing left" in json.dumps(shown)
        return page, campaign

    async def run(self, stop: threading.Event) -> None:
        http, page, backoff = None, None, 0.5
        await _sleep(stop, self.start_after)
        arrived = time.perf_counter()
        while not stop.is_set() and not self.done:
            try:
                if page is None:
                    # A new connection each time, as a browser reloading the page after an error.
                    http = httpx.AsyncClient(base_url=self.server.address, timeout=REQUEST_TIMEOUT_S)
                    page, campaign = await self.connect(http)
                    if self.waited_to_start is None:
                        self.waited_to_start = time.perf_counter() - arrived
                    backoff = 0.5
                    continue
                reasoning = f"{self.name}-{len(self.acked)}-{time.monotonic_ns()}: the left answer is clearer."
                began = time.perf_counter()
                shown = await page.call("submit_judgment", campaign, -1, False, *CRITERIA, reasoning, 4)
                self.latencies.append(time.perf_counter() - began)
                status = json.dumps(shown[0])
                if "Saved" in status:
                    self.acked.append(reasoning)
                self.done = "Nothing left" in status
                if self.think_s:  # reading the next pair and writing the reasoning, as a person does
                    await _sleep(stop, self.rng.expovariate(1 / self.think_s))
            except Exception as error:  # noqa: BLE001 - a rater keeps going, as a person retries
                self.errors.append(f"{type(error).__name__}: {error}"[:300])
                if http is not None:
                    await http.aclose()
                http, page = None, None
                await _sleep(stop, backoff)  # as a person would, waiting longer each time it fails
                backoff = min(2 * backoff, 8.0)
        if http is not None:
            await http.aclose()


async def _sleep(stop: threading.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, less if ``stop`` is set meanwhile."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.2))


def check(url: str, acked: list[str], k: int = K) -> dict:
    """Every acknowledged judgment stored exactly once, no pair over ``k``, no rater judging a pair twice."""
    engine = make_engine(url)
    with Session(engine) as session:
        stored = dict(session.exec(select(Judgment.reasoning, func.count()).group_by(Judgment.reasoning)).all())
        per_pair = session.exec(select(func.count()).select_from(Judgment).group_by(Judgment.pair_id)).all()
        twice = session.exec(
            select(func.count()).select_from(
                select(Judgment.rater_id, Judgment.pair_id)
                .group_by(Judgment.rater_id, Judgment.pair_id)
                .having(func.count() > 1)
                .subquery()
            )  # fmt: skip
        ).one()
        total = session.exec(select(func.count()).select_from(Judgment)).one()
    engine.dispose()
    return {"acknowledged": len(acked), "stored": total, "lost": sum(1 for r in acked if r not in stored),
            "duplicated": sum(1 for r in acked if stored.get(r, 0) > 1), "pairs_over_k": sum(n > k for n in per_pair),
            "judged_a_pair_twice": twice}  # fmt: skip


def crowd(server: Server, names: list[str], seconds: float, fault=None, rss: list[float] | None = None,
          every: float = 60.0, think_s: float = 0.0) -> tuple[list[Rater], float, float]:  # fmt: skip
    """Run the raters for ``seconds`` (``fault(server)`` half-way; the server's memory appended to ``rss`` every
    ``every`` seconds; each rater thinking ``think_s`` on average between submits); the raters, the wall time and
    server CPU used."""
    stop = threading.Event()
    ramp = min(RAMP_S, seconds / 4)  # raters arrive over the first seconds, not all in one instant
    raters = [Rater(name, server, ramp * n / len(names), think_s) for n, name in enumerate(names)]

    async def everyone() -> None:
        await asyncio.gather(*(rater.run(stop) for rater in raters))

    cpu, began = server.cpu_seconds(), time.monotonic()
    crowd_thread = threading.Thread(target=asyncio.run, args=(everyone(),), daemon=True)
    crowd_thread.start()
    if fault is not None:
        time.sleep(seconds / 2)
        fault(server)
        cpu = None  # a restarted server's CPU is not comparable
    while (left := began + seconds - time.monotonic()) > 0:
        time.sleep(min(left, every))
        if rss is not None:
            rss.append(round(server.rss_mib(), 1))
    used = None if cpu is None else server.cpu_seconds() - cpu
    stop.set()
    crowd_thread.join(timeout=REQUEST_TIMEOUT_S + 30)
    return raters, time.monotonic() - began, used


def figures(raters: list[Rater], wall: float, cpu: float | None, server: Server, url: str, k: int = K) -> dict:
    acked = [r for rater in raters for r in rater.acked]
    latencies = sorted(t for rater in raters for t in rater.latencies)
    errors = [e for rater in raters for e in rater.errors]

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else None

    started = sorted(rater.waited_to_start for rater in raters if rater.waited_to_start is not None)
    waits = {"raters_started": len(started),
             "wait_to_first_item_p50_s": round(started[len(started) // 2], 2) if started else None,
             "wait_to_first_item_max_s": round(started[-1], 2) if started else None}  # fmt: skip
    return {"raters": len(raters), **waits, "seconds": round(wall, 1), "submits_per_s": round(len(acked) / wall, 2),
            "submit_p50_s": pct(0.5), "submit_p95_s": pct(0.95), "submit_max_s": latencies[-1] if latencies else None,
            "server_cpu_ms_per_submit": round(1000 * cpu / len(acked), 1) if cpu and acked else None,
            "server_rss_mib": round(server.rss_mib(), 1), "errors": len(errors),
            "errors_leaking_internals": sum(any(word in e for word in LEAK) for e in errors),
            "error_kinds": sorted({e.split(":")[0] for e in errors}),
            "leaking": sorted({e for e in errors if any(word in e for word in LEAK)})[:3],
            **check(url, acked, k)}  # fmt: skip


def load_run(kind: str, raters: int, seconds: float, think_s: float = 0.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        names = seed(url, Path(tmp), raters)
        server = Server(url, Path(tmp))
        server.start()
        try:
            rss = server.rss_mib()
            result = figures(*crowd(server, names, seconds, think_s=think_s), server, url)
            return result | {"server_rss_start_mib": round(rss, 1), "think_s": think_s}
        finally:
            server.stop()


def soak_run(kind: str, raters: int, seconds: float, every: float) -> dict:
    """``raters`` judging for ``seconds`` in a campaign they cannot finish (every rater may judge every pair), the
    server's memory sampled every ``every`` seconds: it should level off once every rater is in."""
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        names = seed(url, Path(tmp), raters, k=raters)
        server = Server(url, Path(tmp))
        server.start()
        try:
            samples = [round(server.rss_mib(), 1)]
            result = figures(*crowd(server, names, seconds, rss=samples, every=every), server, url, k=raters)
            settled = samples[2:] or samples  # after the raters' arrival and first items
            return result | {"server_rss_samples_mib": samples, "every_s": every,
                             "rss_growth_after_warmup_mib": round(settled[-1] - settled[0], 1)}  # fmt: skip
        finally:
            server.stop()


def _restart(server: Server) -> None:
    server.kill()
    server.start()


def _terminate_connections(server: Server) -> None:
    name = server.url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
                                "AND pid <> pg_backend_pid()"), {"name": name})  # fmt: skip
    admin.dispose()


def fault_run(kind: str, fault, raters: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        names = seed(url, Path(tmp), raters)
        server = Server(url, Path(tmp))
        server.start()
        try:
            raters_, wall, _ = crowd(server, names, seconds, fault=fault)
            return figures(raters_, wall, None, server, url)
        finally:
            server.stop()


def export_kill(kind: str) -> dict:
    """SIGKILL ``launch.py export`` while it writes: nothing half-written where a user looks, no record; then again."""
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        seed(url, Path(tmp), 1)
        out = Path(tmp) / "exports" / "load-preference"
        command = [sys.executable, str(ROOT / "launch.py"), "--database-url", url, "export", "--campaign", CAMPAIGN,
                   "--kind", "preference", "--out", str(out)]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(out.parent.glob("*")) and process.poll() is None:
            time.sleep(0.01)
        killed_while_writing = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
        engine = make_engine(url)
        with Session(engine) as session:
            records = session.exec(select(func.count()).select_from(ExportRecord)).one()
        half = out.exists() and not (out / "export.json").is_file()
        again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        with Session(engine) as session:
            after = session.exec(select(func.count()).select_from(ExportRecord)).one()
        engine.dispose()
        return {"killed_while_writing": killed_while_writing, "records_after_kill": records,
                "half_export_visible": half, "rerun_ok": again.returncode == 0 and (out / "export.json").is_file(),
                "records_after_rerun": after}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 raters for 15 s per engine; faults reduced")
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--raters", nargs="+", type=int, help="crowd sizes (default 50 100 200; quick: 20)")
    parser.add_argument("--seconds", type=float, help="per crowd (default 60; quick: 15)")
    parser.add_argument("--soak", action="store_true", help="only the memory soak: 50 raters, 10 min (quick: 1)")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean seconds a rater thinks between submits (exponential; default 0: closed loop)",
    )
    args = parser.parse_args()
    if missing := [str(path) for path in HH if not path.is_file()]:
        sys.exit(f"{', '.join(missing)} missing: the load suite judges the real HH pairs (see ../shared/README.md)")
    sizes = args.raters or ([20] if args.quick else [50, 100, 200])
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    fault_raters, fault_seconds = (10, 12.0) if args.quick else (50, 60.0)
    results: dict = {"quick": args.quick}
    if args.soak:
        seconds, every = (60.0, 10.0) if args.quick else (args.seconds or 600.0, 60.0)
        for kind in args.engines:
            results[kind] = {"soak": soak_run(kind, (args.raters or [50])[0], seconds, every)}
        command = "python benchmarks/load.py " + " ".join(sys.argv[1:])
        report("Memory soak (benchmarks/load.py --soak)", results, command.strip())
        return
    for kind in args.engines:
        results[kind] = {f"{n}_raters": load_run(kind, n, seconds, args.think) for n in sizes}
        results[kind]["sigkill"] = fault_run(kind, _restart, fault_raters, fault_seconds)
        if kind == "postgres":
            results[kind]["pg_restart"] = fault_run(kind, _terminate_connections, fault_raters, fault_seconds)
        results[kind]["export_kill"] = export_kill(kind)
    runs = [run for kind in args.engines for run in results[kind].values() if "lost" in run]
    results["total_lost"] = sum(run["lost"] for run in runs)
    results["total_duplicated"] = sum(run["duplicated"] for run in runs)
    command = "python benchmarks/load.py " + " ".join(sys.argv[1:])
    report("Load and fault suites (benchmarks/load.py)", results, command.strip())


if __name__ == "__main__":
    main()
