"""Import under load: a large import on SQLite while raters keep judging. Do their submits stay fast?

    python benchmarks/import_load.py              # 100,000 synthetic pairs into a new campaign, 4 rater threads
    python benchmarks/import_load.py --quick      # 10,000 pairs: a smoke run
    python benchmarks/import_load.py --into-live  # append into the campaign the raters work in (published by moving)

The import runs as ``launch.py import`` would, in a process of its own (its wall time and peak resident memory are
measured there). Meanwhile rater threads loop through the real StudioService: next pair, then submit. Submit and
next-pair latencies are reported before, during and after the import, with every error, and whether a rater ever
saw a campaign that was not there before the import finished. The last line printed is one JSON object; a section
is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from sqlmodel import Session  # noqa: E402

from benchmarks._report import report  # noqa: E402
from storage.accounts import create_user  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.imports import import_file  # noqa: E402
from storage.models import Campaign, Pair, UserCreate  # noqa: E402
from studio.service import StudioService  # noqa: E402
from studio.validation import JudgmentAnswer  # noqa: E402

log = logging.getLogger("import_load")

LIVE = "live"
WORDS = "the model answer should explain each step clearly and cite where the numbers come from".split()

# Runs in the importing process: the import, timed; the process's resident memory before it and at its peak (Linux
# VmRSS and VmHWM, which start afresh at exec, unlike ru_maxrss); and how long each of its write transactions held
# SQLite's write lock (from BEGIN IMMEDIATE to the end of COMMIT).
CHILD = """
import json, re, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from sqlalchemy import event
from sqlmodel import Session
from storage.db import make_engine
from storage.imports import import_file
def memory(name):
    return int(re.search(name + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
engine, began, holds = make_engine(sys.argv[2]), {}, []
event.listen(Session, "after_begin", lambda session, *_: began.setdefault(id(session), time.perf_counter()))
for name in ("after_commit", "after_rollback"):
    event.listen(Session, name, lambda session: holds.append(time.perf_counter() - began.pop(id(session), 0)))
before = memory("VmRSS")
start = time.perf_counter()
done = import_file(sys.argv[3], engine=engine, campaign=sys.argv[4], fmt="pairs")
seconds = time.perf_counter() - start
holds = sorted(h for h in holds if h < seconds + 1)
print(json.dumps({"seconds": seconds, "rss_before_mb": before, "rss_peak_mb": memory("VmHWM"),
                  "pairs": done.pairs, "prompts": done.prompts, "transactions": len(holds),
                  "hold_p95_ms": 1000 * holds[int(0.95 * (len(holds) - 1))], "hold_max_ms": 1000 * holds[-1]}))
"""


def write_pairs(path: Path, n: int, seed: int, tag: str) -> Path:
    """``n`` pairs of synthetic text, about 120 characters of prompt and 400 of each response."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = {"prompt": f"{tag} question {i}: {words(20)}?", "response_a": f"A{i} {words(70)}",
                   "response_b": f"B{i} {words(70)}", "model_a": "model-a", "model_b": "model-b"}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"n": len(ordered), "p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}  # fmt: skip


class Raters:
    """Rater threads judging the live campaign through the service, their latencies filed by phase."""

    def __init__(self, engine, rater_ids: list[int], campaign_id: int) -> None:
        self.service, self.campaign_id = StudioService(engine), campaign_id
        self.rater_ids, self.phase, self.stop = rater_ids, "before", threading.Event()
        self.lock = threading.Lock()
        self.submits: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        self.nexts: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        self.errors: list[str] = []
        self.campaigns_seen: set[str] = set()
        self.threads = [threading.Thread(target=self.run, args=(r,), daemon=True) for r in rater_ids]

    def run(self, rater_id: int) -> None:
        rng = random.Random(rater_id)
        while not self.stop.is_set():
            phase = self.phase
            try:
                start = time.perf_counter()
                task = self.service.next_pair(rater_id, self.campaign_id)
                fetched = time.perf_counter()
                if task is None:
                    time.sleep(0.05)
                    continue
                answer = JudgmentAnswer(choice=rng.choice([-2, -1, 0, 1, 2]), both_bad=False,
                                        criteria={name: 3 for name in task.rubric}, reasoning="x" * 40, confidence=3,
                                        time_on_task_s=20.0)  # fmt: skip
                self.service.submit_judgment(rater_id, task.assignment_id, answer)
                done = time.perf_counter()
                names = {name for name, _ in self.service.campaigns_for(user_id=rater_id)}
            except Exception as error:  # noqa: BLE001  (every failure a rater would see is a finding)
                waited = time.perf_counter() - start
                with self.lock:
                    self.errors.append(f"{phase}, after {waited:.1f} s: {type(error).__name__}: {str(error)[:160]}")
                continue
            with self.lock:
                self.nexts[phase].append(fetched - start)
                self.submits[phase].append(done - fetched)
                self.campaigns_seen |= names


def prepare(folder: Path, n: int, raters: int, live_pairs: int) -> tuple:
    """A migrated SQLite database with the raters' live campaign and accounts, and the file to import."""
    url = f"sqlite:///{folder / 'concord.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    import_file(write_pairs(folder / "live.jsonl", live_pairs, 1, "live"), engine=engine, campaign=LIVE, fmt="pairs")
    with write_session(engine) as session, session.begin():
        ids = [create_user(session=session, user=UserCreate(username=f"rater-{i}", password="import-load")).id
               for i in range(raters)]  # fmt: skip
        live_id = session.scalars(select(Campaign.id).where(Campaign.name == LIVE)).one()
    big = write_pairs(folder / "big.jsonl", n, 2, "big")
    log.info("%d pairs written to %s (%.0f MB)", n, big, big.stat().st_size / 1e6)
    return engine, url, ids, live_id, big


def import_while_judging(raters: Raters, url: str, big: Path, target: str, idle: float) -> tuple[dict, set[str]]:
    """Raters judge for ``idle`` seconds, then during the import (in a process of its own), then ``idle`` more."""
    for thread in raters.threads:
        thread.start()
    time.sleep(idle)
    before_names = set(raters.campaigns_seen)
    raters.phase = "during"
    child = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), url, str(big), target],
                           capture_output=True, text=True, check=False)  # fmt: skip
    raters.phase = "after"
    time.sleep(idle)
    raters.stop.set()
    for thread in raters.threads:
        thread.join()
    if child.returncode != 0:
        sys.exit(f"the import failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), before_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 pairs instead of 100,000")
    parser.add_argument("--pairs", type=int, default=None, help="pairs to import (default 100,000; --quick 10,000)")
    parser.add_argument("--raters", type=int, default=4, help="rater threads submitting during the import")
    parser.add_argument("--into-live", action="store_true", help="import into the raters' own campaign")
    parser.add_argument("--idle-s", type=float, default=None, help="seconds of judging before and after the import")
    parser.add_argument("--label", default="", help="a note for the report, e.g. which code was measured")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("storage").setLevel(logging.WARNING)
    n, target = args.pairs or (10_000 if args.quick else 100_000), LIVE if args.into_live else "bulk"
    idle = args.idle_s if args.idle_s is not None else (3.0 if args.quick else 8.0)
    folder = Path(tempfile.mkdtemp(prefix="import_load_"))
    engine, url, ids, live_id, big = prepare(folder, n, args.raters, 1_000 if args.quick else 5_000)
    raters = Raters(engine, ids, live_id)
    imported, before_names = import_while_judging(raters, url, big, target, idle)
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(Pair).join(Campaign).where(Campaign.name == target))
    figures = {
        "label": args.label,
        "database": "sqlite",
        "pairs_imported": imported["pairs"],
        "pairs_in_campaign_after": stored,
        "into": "the raters' live campaign" if args.into_live else "a new campaign",
        "raters": args.raters,
        "import_s": round(imported["seconds"], 1),
        "import_rss_before_mb": round(imported["rss_before_mb"]),
        "import_rss_peak_mb": round(imported["rss_peak_mb"]),
        "import_transactions": imported["transactions"],
        "import_write_lock_hold_p95_ms": round(imported["hold_p95_ms"], 1),
        "import_write_lock_hold_max_ms": round(imported["hold_max_ms"], 1),
        "submit": {phase: percentiles(values) for phase, values in raters.submits.items()},
        "next_pair": {phase: percentiles(values) for phase, values in raters.nexts.items()},
        "errors": len(raters.errors),
        "first_errors": raters.errors[:3],
        "campaigns_raters_saw_during_import": sorted(raters.campaigns_seen - before_names - {target}),
    }
    flags = "".join(f" {flag}" for flag, on in (("--quick", args.quick), ("--into-live", args.into_live)) if on)
    report("Import under load (SQLite)" + (f": {args.label}" if args.label else ""), figures,
           f"python benchmarks/import_load.py{flags}")  # fmt: skip


if __name__ == "__main__":
    main()
