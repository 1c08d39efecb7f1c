"""Time ``export_campaign(kind="preference")`` end to end on a generated SQLite database.

    python benchmarks/export_preference.py            # 1,000,000 judgments over 250,000 pairs, ~60 raters
    python benchmarks/export_preference.py --quick    # 1/20 of that

The last line printed is one JSON object with the figures; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import datasets
import numpy as np
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import report  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)

from storage.db import make_engine, upgrade_database  # noqa: E402
from storage.export import export_campaign  # noqa: E402
from storage.models import Campaign, Judgment, Pair, Prompt, Response, User  # noqa: E402

FULL = {"judgments": 1_000_000, "pairs": 250_000, "raters": 60}
EDIT_FRACTION = 0.02  # judgments that supersede an earlier one of the same rater
PRIOR_FRACTION = 0.1  # pairs imported with a prior label
CHUNK = 50_000
WORDS = (
    "the a model answer question because therefore however safe helpful honest claim source check "
    "response explains step example code function data result error user assistant clear wrong "
    "correct detail summary reason evidence better worse tone concise verbose accurate"
).split()


def texts(rng: np.random.Generator, n: int, mean_chars: int) -> list[str]:
    """``n`` word salads of about ``mean_chars`` characters, sliced from one shared blob (fast to make)."""
    blob = " ".join(rng.choice(WORDS, size=400_000))
    lengths = np.clip(rng.normal(mean_chars, mean_chars / 4, n), 10, None).astype(int)
    starts = rng.integers(0, len(blob) - lengths.max(), n)
    return [blob[s : s + k] for s, k in zip(starts.tolist(), lengths.tolist(), strict=True)]


def insert(engine, table, rows: list[dict]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), CHUNK):
            conn.execute(table.insert(), rows[start : start + CHUNK])


def build_prompts(engine, rng, campaign_id: int, n_pairs: int, now: datetime) -> None:
    """Two pairs per prompt, each pair with its own two responses."""
    n_prompts = n_pairs // 2
    prompt_texts = texts(rng, n_prompts, 200)
    prompts = [
        {"id": i + 1, "campaign_id": campaign_id, "messages": [{"role": "user", "content": t}],
         "content_hash": f"{i:064x}", "source": "bench", "license": "CC-BY-4.0", "created_at": now}
        for i, t in enumerate(prompt_texts)
    ]  # fmt: skip
    insert(engine, Prompt.__table__, prompts)
    del prompts, prompt_texts
    response_texts = texts(rng, 2 * n_pairs, 600)
    responses = [
        {"id": i + 1, "prompt_id": i // 4 + 1, "text": t, "author": f"model-{i % 2}", "generation_params": {},
         "source": "bench", "license": "CC-BY-4.0", "created_at": now}
        for i, t in enumerate(response_texts)
    ]  # fmt: skip
    insert(engine, Response.__table__, responses)
    del responses, response_texts
    priors = np.where(rng.random(n_pairs) < PRIOR_FRACTION, rng.integers(-2, 3, n_pairs), 9).tolist()
    pairs = [
        {"id": i + 1, "campaign_id": campaign_id, "prompt_id": i // 2 + 1, "response_a_id": 2 * i + 1,
         "response_b_id": 2 * i + 2, "prior_preference": None if p == 9 else p, "content_hash": f"{i:064x}",
         "source": "bench", "license": "CC-BY-4.0", "created_at": now}
        for i, p in enumerate(priors)
    ]  # fmt: skip
    insert(engine, Pair.__table__, pairs)


def build_judgments(engine, rng, n_pairs: int, n_judgments: int, n_raters: int, now: datetime) -> None:
    """Raters mostly agree with a hidden per-pair direction; a few edits supersede earlier judgments."""
    n_edits = int(n_judgments * EDIT_FRACTION)
    n_original = n_judgments - n_edits
    pair = np.sort(rng.integers(0, n_pairs, n_original))
    rater = rng.integers(1, n_raters + 1, n_original)
    edited = rng.choice(n_original, n_edits, replace=False)
    pair, rater = np.concatenate([pair, pair[edited]]), np.concatenate([rater, rater[edited]])
    supersedes = np.concatenate([np.zeros(n_original, int), edited + 1])
    hidden = rng.choice([-1, 0, 1], n_pairs, p=[0.45, 0.1, 0.45])[pair]
    follows = rng.random(n_judgments) < 0.75
    preference = np.where(follows, hidden * rng.integers(1, 3, n_judgments), rng.integers(-2, 3, n_judgments))
    both_bad = rng.random(n_judgments) < 0.04
    version = np.where(rng.random(n_judgments) < 0.3, 2, 1)
    reasonings = texts(rng, n_judgments, 120)
    columns = zip(pair.tolist(), rater.tolist(), supersedes.tolist(), preference.tolist(), both_bad.tolist(),
                  version.tolist(), reasonings, strict=True)  # fmt: skip
    rows = [
        {"id": i + 1, "pair_id": p + 1, "rater_id": r, "supersedes_id": s or None, "preference": pref,
         "both_bad": bad, "guideline_version": v, "reasoning": text, "criteria": {}, "confidence": 3, "left": "a",
         "time_on_task_s": 30.0, "client_time": None, "server_time": now}
        for i, (p, r, s, pref, bad, v, text) in enumerate(columns)
    ]  # fmt: skip
    insert(engine, Judgment.__table__, rows)


def build_database(engine, *, judgments: int, pairs: int, raters: int, seed: int = 0) -> int:
    """Fill a migrated database with one campaign; returns the campaign id."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        campaign = Campaign(name="bench")
        session.add(campaign)
        session.add_all(User(username=f"rater{i}", password_hash="-") for i in range(raters))
        session.flush()
        campaign_id = campaign.id
    build_prompts(engine, rng, campaign_id, pairs, now)
    build_judgments(engine, rng, pairs, judgments, raters, now)
    return campaign_id


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/20 of the full size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    size = {**FULL, "judgments": FULL["judgments"] // 20, "pairs": FULL["pairs"] // 20} if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade_database(engine)
        started = time.perf_counter()
        build_database(engine, **size)
        build_s = time.perf_counter() - started
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        result = export_campaign(engine=engine, campaign="bench", kind="preference", out_dir=Path(tmp) / "export")
        export_s = time.perf_counter() - started
        engine.dispose()
    figures = {
        **{f"{key}_in_db": value for key, value in size.items()},
        "build_s": round(build_s, 1),
        "export_s": round(export_s, 2),
        "rows": result.counts,
        "peak_rss_mb_before_export": round(rss_before),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    report("export_preference", figures, "python benchmarks/export_preference.py" + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()
