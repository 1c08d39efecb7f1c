"""Does a rater's submit cost stay flat as a campaign grows? Next item, submit and progress at 10,000 and 1,000,000
stored judgments.

    python benchmarks/queue_scale.py                 # 10,000 and 1,000,000 judgments, SQLite and PostgreSQL
    python benchmarks/queue_scale.py --quick         # 10,000 and 100,000 judgments, SQLite only (about a minute)

For each size a new database gets one campaign (overlap k 3) whose pairs are fully judged by a pool of 1,000
raters (size / 3 pairs, each judged by 3 of them, each judgment with its closed lease), plus 2,000 open pairs,
written in bulk with Core inserts. Then
20 fresh raters, in turn, do what the studio's submit does through the real StudioService: submit the pair they
hold, get the next one, read their progress line; 300 such cycles after 20 warm-up ones. The figures are the
process CPU milliseconds per cycle (the server's share of a submit, without Gradio), and wall p50/p95; the ratio of
the largest size to the smallest says how flat it is. The last line printed is one JSON object; a section is
appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from benchmarks._report import report  # noqa: E402
from benchmarks.load import database  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.models import Assignment, Campaign, Judgment, Pair, Prompt, Response, Role, User, utcnow  # noqa: E402
from studio.service import StudioService  # noqa: E402
from studio.validation import JudgmentAnswer  # noqa: E402

POOL, OPEN, FRESH, K = 1000, 2000, 20, 3
ANSWER = JudgmentAnswer(choice=-1, both_bad=False, criteria={"helpfulness": 4}, reasoning="The left one is clearer "
                        "and answers the question.", confidence=4, time_on_task_s=5.0)  # fmt: skip


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _bulk(session: Session, model, rows: list[dict], chunk: int = 20_000) -> None:
    for start in range(0, len(rows), chunk):
        session.execute(insert(model), rows[start : start + chunk])


def seed(url: str, judgments: int) -> tuple[int, list[int]]:
    """The campaign (``judgments`` stored ones) and the ids of the fresh raters."""
    engine = make_engine(url)
    upgrade_database(engine)
    pairs = judgments // K + OPEN
    now = utcnow()
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name="scale", consent_text="", calibration_rate=0.0, overlap_k=K, rubric=["helpfulness"])
        users = [User(username=f"u{n}", password_hash="x", role=Role.rater) for n in range(POOL + FRESH)]
        session.add_all([campaign, *users])
        session.flush()
        ids = [user.id for user in users]
        _bulk(session, Prompt, [{"id": n + 1, "campaign_id": campaign.id, "content_hash": _hash(f"p{n}"),
                                 "messages": [{"role": "user", "content": f"Question {n}?"}], "source": "bench",
                                 "created_at": now} for n in range(pairs)])  # fmt: skip
        _bulk(session, Response, [{"id": n + 1, "prompt_id": n // 2 + 1, "text": f"Answer {n}.", "author": "m",
                                   "generation_params": {}, "source": "bench", "created_at": now}
                                  for n in range(2 * pairs)])  # fmt: skip
        _bulk(session, Pair, [{"id": n + 1, "campaign_id": campaign.id, "prompt_id": n + 1, "response_a_id": 2 * n + 1,
                               "response_b_id": 2 * n + 2, "content_hash": _hash(f"pair{n}"), "source": "bench",
                               "created_at": now} for n in range(pairs)])  # fmt: skip
        rng = random.Random(0)
        rows = []
        for n in range(judgments // K):
            for rater in rng.sample(ids[:POOL], K):
                rows.append({"pair_id": n + 1, "rater_id": rater, "preference": rng.choice((-1, 1)), "both_bad": False,
                             "criteria": {}, "reasoning": "bulk", "confidence": 3, "left": "a", "time_on_task_s": 5.0,
                             "guideline_version": 1, "server_time": now})  # fmt: skip
        _bulk(session, Judgment, rows)
        _bulk(session, Assignment, [{"campaign_id": campaign.id, "rater_id": row["rater_id"], "task": "judgment",
                                     "pair_id": row["pair_id"], "left": "a", "is_calibration": False, "leased_at": now,
                                     "expires_at": now, "closed_at": now} for row in rows])  # fmt: skip
        campaign_id = campaign.id
    if engine.dialect.name == "postgresql":  # the bulk ids were given: move the sequences past them
        with write_session(engine) as session, session.begin():
            for table in ("prompt", "response", "pair"):
                session.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
        with engine.connect() as connection:  # fresh statistics, as autovacuum would gather after a bulk load
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    return campaign_id, ids[POOL:]


def cycles(url: str, campaign_id: int, raters: list[int], n: int, warm: int) -> dict:
    service = StudioService(make_engine(url), rng=random.Random(0))
    walls, cpu = [], 0.0
    for i in range(warm + n):
        rater = raters[i % len(raters)]
        cpu_began, began = time.process_time(), time.perf_counter()
        task = service.next_pair(rater, campaign_id)
        service.submit_judgment(rater, task.assignment_id, ANSWER)
        service.next_pair(rater, campaign_id)
        service.progress(rater, campaign_id)
        if i >= warm:
            walls.append(time.perf_counter() - began)
            cpu += time.process_time() - cpu_began
    service.engine.dispose()
    walls.sort()
    return {"cpu_ms_per_cycle": round(1000 * cpu / n, 2), "wall_p50_ms": round(1000 * statistics.median(walls), 2),
            "wall_p95_ms": round(1000 * walls[int(0.95 * len(walls))], 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 and 100,000 judgments on SQLite only")
    parser.add_argument("--engines", nargs="+", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 1_000_000]
    engines = args.engines or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    results: dict = {"quick": args.quick}
    for kind in engines:
        results[kind] = {}
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
                began = time.monotonic()
                campaign_id, raters = seed(url, size)
                seeded = time.monotonic() - began
                results[kind][f"{size}_judgments"] = cycles(url, campaign_id, raters, n=300, warm=20) | {
                    "seed_s": round(seeded, 1)}  # fmt: skip
        small, large = (results[kind][f"{size}_judgments"]["cpu_ms_per_cycle"] for size in sizes)
        results[kind]["cpu_ratio_largest_to_smallest"] = round(large / small, 2)
    report("Queue cost against campaign size (benchmarks/queue_scale.py)", results,
           "python benchmarks/queue_scale.py " + " ".join(sys.argv[1:]))  # fmt: skip


if __name__ == "__main__":
    main()
