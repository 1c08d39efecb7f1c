"""Active selection: does letting the reward model choose what raters judge next reach the same held-out accuracy
with fewer judgments? Simulated raters on the real HH-RLHF pairs, judging through Concord's own queue.

    python benchmarks/active_selection.py            # harmless-base, 8 seeds, 1,200 judgments each (~8 min)
    python benchmarks/active_selection.py --quick    # 600 pairs, 2 seeds, 300 judgments: a smoke run (~40 s)

The pairs (../shared/data/hh-rlhf, identical ones dropped) are split by prompt: a fifth of the prompts is held out,
the rest imported, in a seeded order and without labels, into one campaign per order. Careful simulated raters
(benchmarks/rater_pool.py's: right 72% of the time, a tie 6%) take turns asking ``storage.queue`` for a pair; a
pair's label is the sign of its judgments' mean preference. Every order starts from the same seed set (fifo; each
answer is drawn from the seed, the pair and the rater, so the same rater answers the same pair alike in every arm).
Then, each round, a reward model is fitted on the labels so far, scored on the held-out pairs against HH-RLHF's
labels, and its scores of every pool pair are stored as a new TrainingRun's PairScore rows, which the queue follows:

- ``random``: fifo over the shuffled import, k = 1: the baseline.
- ``uncertainty``: k = 1, the smallest |margin| first.
- ``disagreement``: as ``uncertainty`` for half the budget, then k = 3 and the disagreement order: further opinions
  go to the judged pairs whose label the model disputes (at k = 1 no open pair has a consensus, so this order only
  differs once k is raised on a judged campaign).

The loop's reward model is a cheap stand-in, so that hundreds of fits run on a CPU: a Bradley-Terry logistic
regression (no intercept, L2, C = 0.01) on frozen all-MiniLM-L6-v2 embeddings (mean-pooled, normalised) of each
reply after its last user turn, margin = w . (phi(A) - phi(B)); not the studio's fine-tuned reward recipe. It uses
harmless-base, the HH subset such a model learns at all (``ceiling_clean_labels``: every pool pair with HH-RLHF's
labels; the full run measures the helpful subsets too).

Figures: accuracy against judgments per order (mean and standard error over seeds), the paired difference to random
(95% t interval), the judgments each order needs for random's accuracy at the full budget (from a fit a + b ln n of
its mean curve, and read off the curve), the judged pairs' |margin| relative to the pool's mean (the queue followed
the scores) and the most judgments a pair got (never above k). The last line printed is one JSON object; a section
is appended to docs/benchmarks.md and, in the full run, the plot is written to docs/images/active_selection.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sqlalchemy import update
from sqlmodel import Session, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import rater_pool  # noqa: E402
from benchmarks._report import report  # noqa: E402
from benchmarks.reward_quality import minilm_path  # noqa: E402
from storage import active, queue  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.formats import PairRecord, parse_file, prompt_hash  # noqa: E402
from storage.imports import import_file  # noqa: E402
from storage.models import (  # noqa: E402
    Campaign,
    Judgment,
    JudgmentCreate,
    Pair,
    Prompt,
    QueueOrder,
    Response,
    TrainingRun,
    User,
    utcnow,
)
from storage.scores import store_scores  # noqa: E402

log = logging.getLogger("active_selection")

HH = ROOT.parent / "shared" / "data" / "hh-rlhf"
PLOT = ROOT / "docs" / "images" / "active_selection.png"
SUBSET, HELPFUL = "harmless-base", ("helpful-online", "helpful-rejection-sampled")
ARMS = ("random", "uncertainty", "disagreement")
HELDOUT_FRACTION, C, RAISED_K, GOAL, LEASE = 0.2, 0.01, 3, 0.25, timedelta(minutes=30)
FULL = {"pairs": None, "seeds": 8, "seed_set": 100, "batch": 100, "budget": 1200, "raters": 20, "max_length": 128,
        "helpful_ceiling": True}  # fmt: skip
QUICK = {"pairs": 600, "seeds": 2, "seed_set": 50, "batch": 50, "budget": 300, "raters": 6, "max_length": 64,
         "helpful_ceiling": False}  # fmt: skip


def embed(pairs: list[PairRecord], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """phi(A), phi(B): MiniLM's normalised mean-pooled embedding of the last user turn and the reply."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    def text(pair: PairRecord, reply: str) -> str:
        users = [m["content"] for m in pair.prompt.messages if m["role"] == "user"]
        return (users[-1] if users else "") + "\n\n" + reply

    texts = [text(p, reply) for p in pairs for reply in (p.response_a, p.response_b)]
    tokenizer, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path()).eval()
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order, out = np.argsort([len(i) for i in ids]), np.zeros((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), 64):  # batches of similar length: little padding
            batch = order[start : start + 64]
            padded = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            mask = padded["attention_mask"].unsqueeze(-1).float()
            pooled = (model(**padded).last_hidden_state * mask).sum(1) / mask.sum(1)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out[0::2], out[1::2]


def split(pairs: list[PairRecord], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pool (in a seeded order: the import order) and of the held-out pairs, split by prompt."""
    hashes = np.array([prompt_hash(p.prompt.messages) for p in pairs])
    rng = np.random.default_rng(seed)
    unique = np.unique(hashes)
    held = np.isin(hashes, rng.choice(unique, size=round(len(unique) * HELDOUT_FRACTION), replace=False))
    pool = np.flatnonzero(~held)
    return rng.permutation(pool), np.flatnonzero(held)


def fit(X: np.ndarray, a_better: np.ndarray) -> np.ndarray:
    """Bradley-Terry weights w (P(A better) = sigmoid(w . x), x = phi(A) - phi(B)); both orientations of every pair,
    so no intercept and no side is preferred."""
    if not len(X):
        return np.zeros(X.shape[1])
    model = LogisticRegression(C=C, fit_intercept=False, max_iter=5000)
    return model.fit(np.vstack([X, -X]), np.concatenate([a_better, ~a_better])).coef_[0]


def import_pool(engine, folder: Path, pairs: list[PairRecord], pool: np.ndarray, arm: str) -> tuple[int, dict]:
    """The pool as campaign ``arm`` (no labels, k = 1, no calibration); its id and pair id -> index into ``pairs``."""
    path = folder / f"{arm}.jsonl"
    rows = ({"prompt": pairs[i].prompt.messages, "response_a": pairs[i].response_a,
             "response_b": pairs[i].response_b} for i in pool)  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    import_file(path, engine=engine, campaign=arm, fmt="pairs", known_as="none", source="hh-rlhf", license="MIT")
    # A pair seen twice is imported once: the index of its first.
    index = {(pairs[i].prompt.content_hash, pairs[i].response_a, pairs[i].response_b): int(i) for i in pool[::-1]}
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == arm)).one()
        campaign.overlap_k, campaign.calibration_rate, campaign.probation = 1, 0.0, False
        text_a, text_b = Response.__table__.alias(), Response.__table__.alias()
        found = session.execute(
            select(Pair.id, Prompt.content_hash, text_a.c.text, text_b.c.text)
            .join(Prompt, Prompt.id == Pair.prompt_id)
            .join(text_a, text_a.c.id == Pair.response_a_id)
            .join(text_b, text_b.c.id == Pair.response_b_id)
            .where(Pair.campaign_id == campaign.id)
        ).all()
        return campaign.id, {pair_id: index[(prompt, a, b)] for pair_id, prompt, a, b in found}


def labels(engine, campaign_id: int, index: dict) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pairs with a decided consensus, and whether it is A."""
    consensus = active.consensus_of(campaign_id)
    with Session(engine) as session:
        rows = session.execute(select(consensus.c.pair_id, consensus.c.mean_preference)).all()
    decided = [(index[pair_id], mean < 0) for pair_id, mean in rows if mean != 0]
    return np.array([i for i, _ in decided], dtype=int), np.array([a for _, a in decided], dtype=bool)


def write_scores(engine, index: dict, w: np.ndarray, emb: tuple[np.ndarray, np.ndarray], name: str) -> None:
    """The model's scores of every pool pair, as a finished reward run's: what the queue follows next."""
    ids = np.fromiter(index, dtype=int)
    rows = np.fromiter(index.values(), dtype=int)
    scores = pd.DataFrame({"pair_id": ids, "score_a": emb[0][rows] @ w, "score_b": emb[1][rows] @ w,
                           "margin_std": 0.0})  # fmt: skip
    with write_session(engine) as session, session.begin():
        run = TrainingRun(name=name, method="reward", status="finished", data_source="active_selection benchmark")
        session.add(run)
        session.flush()
        store_scores(session=session, run_id=run.id, scores=scores)


def set_queue(engine, campaign_id: int, order: QueueOrder, k: int) -> None:
    with write_session(engine) as session, session.begin():
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(queue_order=order, overlap_k=k))


def judge(engine, campaign_id: int, raters: list[int], n: int, truth_a: np.ndarray, index: dict, seed: int):
    """Up to ``n`` judgments through the queue, raters taking turns; the data indices of the pairs judged."""
    judged, idle, turn = [], 0, 0
    while len(judged) < n and idle < len(raters):
        rater, turn = raters[turn % len(raters)], turn + 1
        with write_session(engine) as session, session.begin():
            user, campaign = session.get(User, rater), session.get(Campaign, campaign_id)
            assignment = queue.next_pair_assignment(session=session, user=user, campaign=campaign,
                                                    rng=random.Random(turn), now=utcnow(), lease=LEASE)  # fmt: skip
            if assignment is None:
                idle += 1
                continue
            i, idle = index[assignment.pair_id], 0
            answer = random.Random(f"{seed}:{i}:{rater}")  # the same rater answers a pair alike in every arm
            preference = rater_pool.choose("careful", answer, -1 if truth_a[i] else 1, 0)
            judgment = JudgmentCreate(pair_id=assignment.pair_id, preference=preference, left=assignment.left,
                                      reasoning="simulated")  # fmt: skip
            queue.record_judgment(session=session, judgment=judgment, rater_id=rater, guideline_version=1,
                                  now=utcnow(), assignment=assignment)  # fmt: skip
        judged.append(i)
    return judged


def raters_for(engine, n: int) -> list[int]:
    with write_session(engine) as session, session.begin():
        users = [User(username=f"careful-{i:02d}", password_hash="-") for i in range(n)]
        session.add_all(users)
        session.flush()
        return [user.id for user in users]


def order_for(arm: str, judged: int, size: dict) -> tuple[QueueOrder, int]:
    """The arm's queue order and k once ``judged`` judgments are in (every arm's seed set is fifo)."""
    if judged < size["seed_set"] or arm == "random":
        return QueueOrder.fifo, 1
    if arm == "disagreement" and judged >= size["budget"] // 2:
        return QueueOrder.disagreement, RAISED_K
    return QueueOrder.uncertainty, 1


def run_arm(engine, folder: Path, data: dict, split_: tuple, raters: list[int], arm: str, size: dict, seed: int):
    """One order's loop on one split (pool, held out): held-out accuracy after each round, and how the queue
    chose."""
    (pool, held), X, truth = split_, data["x"], data["a_better"]
    campaign_id, index = import_pool(engine, folder, data["pairs"], pool, arm)
    curve, relative_margins, judged = [], [], 0
    while True:
        rows, a_better = labels(engine, campaign_id, index)
        w = fit(X[rows], a_better)
        curve.append(float(((X[held] @ w > 0) == truth[held]).mean()))
        if judged >= size["budget"]:
            break
        write_scores(engine, index, w, data["emb"], f"{arm}-{len(curve)}")
        order, k = order_for(arm, judged, size)
        set_queue(engine, campaign_id, order, k)
        take = size["seed_set"] if judged == 0 else size["batch"]
        picked = judge(engine, campaign_id, raters, take, truth, index, seed)
        if judged:  # how small the picked pairs' margins were, against the pool's mean |margin|, under this model
            margins = np.abs(X[list(index.values())] @ w)
            relative_margins.append(float(np.abs(X[picked] @ w).mean() / max(margins.mean(), 1e-12)))
        judged += len(picked)
    with Session(engine) as session:
        per_pair = select(func.count()).select_from(Judgment).join(Pair, Pair.id == Judgment.pair_id)
        per_pair = per_pair.where(Pair.campaign_id == campaign_id).group_by(Judgment.pair_id)
        most = max(session.exec(per_pair).all(), default=0)
    return {"accuracy": curve, "relative_margin": float(np.mean(relative_margins)), "max_judgments_per_pair": most,
            "k": RAISED_K if arm == "disagreement" else 1}  # fmt: skip


def ceiling(data: dict, pool: np.ndarray, held: np.ndarray) -> float:
    """Held-out accuracy of the same model fitted on every pool pair with HH-RLHF's own labels."""
    X, truth = data["x"], data["a_better"]
    return float(((X[held] @ fit(X[pool], truth[pool]) > 0) == truth[held]).mean())


def load(subsets: tuple[str, ...], n_pairs: int | None, max_length: int) -> dict:
    """Each subset's test pairs (identical ones dropped; its first ``n_pairs`` when set), embedded."""
    if not HH.is_dir():
        sys.exit(f"HH-RLHF data not found at {HH}: this benchmark needs ../shared beside the project")
    files = [HH / subset / "test.jsonl.gz" for subset in subsets]
    pairs = [pair for path in files for pair in parse_file(path, "hh-rlhf", drop_identical=True).pairs[:n_pairs]]
    emb = embed(pairs, max_length)
    return {"pairs": pairs, "emb": emb, "x": emb[0] - emb[1], "a_better": np.array([p.preference < 0 for p in pairs])}


def reach(grid: list[int], mean: np.ndarray, random_mean: np.ndarray) -> dict:
    """Judgments this order needs for random's accuracy at the full budget: from a fit a + b ln n of each mean curve,
    and read off the curve (the first round at or above it); the saving is 1 - that / the budget."""
    logn, budget = np.log(grid), grid[-1]
    slope_r, intercept_r = np.polyfit(logn, random_mean, 1)
    slope, intercept = np.polyfit(logn, mean, 1)
    fitted = np.exp((intercept_r + slope_r * np.log(budget) - intercept) / slope) if slope > 0 else None
    on_curve = next((n for n, acc in zip(grid, mean, strict=True) if acc >= random_mean[-1]), None)
    return {"judgments_fit": None if fitted is None else round(float(fitted)),
            "saving_fit": None if fitted is None else round(1 - float(fitted) / budget, 3),
            "judgments_on_curve": on_curve,
            "saving_on_curve": None if on_curve is None else round(1 - on_curve / budget, 3)}  # fmt: skip


def summarise(runs: dict, grid: list[int]) -> dict:
    """Mean curves, paired differences to random, judgments to random's final accuracy, and the goal's verdict."""
    curves = {arm: np.array([run["accuracy"] for run in arm_runs]) for arm, arm_runs in runs.items()}
    n = len(runs["random"])
    figures = {"accuracy": {arm: {"mean": np.round(c.mean(0), 4).tolist(),
                                  "se": np.round(c.std(0, ddof=1) / np.sqrt(n), 4).tolist() if n > 1 else None}
                            for arm, c in curves.items()}}  # fmt: skip
    t = stats.t.ppf(0.975, n - 1) if n > 1 else float("nan")
    figures["difference_to_random"], figures["to_reach_random_at_budget"], verdicts = {}, {}, []
    for arm in ARMS[1:]:
        diff = curves[arm] - curves["random"]
        half = t * diff.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(grid), np.nan)
        figures["difference_to_random"][arm] = {"mean": np.round(diff.mean(0), 4).tolist(),
                                                "ci95_half_width": np.round(half, 4).tolist()}  # fmt: skip
        found = reach(grid, curves[arm].mean(0), curves["random"].mean(0))
        figures["to_reach_random_at_budget"][arm] = found
        met = all(found[key] is not None and found[key] >= GOAL for key in ("saving_fit", "saving_on_curve"))
        found["goal_met"] = met
        outcome = "met" if met else "not met"
        verdicts.append(f"{arm}: saves {found['saving_fit']} (fit), {found['saving_on_curve']} (curve) of the "
                        f"judgments random needs at {grid[-1]}; goal {GOAL:.0%} {outcome}")  # fmt: skip
    figures["relative_margin_of_judged_pairs"] = {
        arm: round(float(np.mean([run["relative_margin"] for run in arm_runs])), 3) for arm, arm_runs in runs.items()
    }
    figures["max_judgments_per_pair"] = {arm: max(run["max_judgments_per_pair"] for run in arm_runs)
                                         for arm, arm_runs in runs.items()}  # fmt: skip
    figures["k"] = {arm: arm_runs[0]["k"] for arm, arm_runs in runs.items()}
    figures["verdict"] = "; ".join(verdicts)
    return figures


def plot(figures: dict, path: Path) -> None:
    """Held-out accuracy against judgments per order, and each active order's paired difference to random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array(figures["judgments"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for arm, curve in figures["accuracy"].items():
        mean, se = np.array(curve["mean"]), np.array(curve["se"] or np.zeros(len(grid)))
        (line,) = left.plot(grid, mean, marker="o", markersize=3, label=arm)
        left.fill_between(grid, mean - se, mean + se, color=line.get_color(), alpha=0.2)
    left.axhline(figures["ceiling_clean_labels"][SUBSET], color="grey", linestyle=":",
                 label="every pool pair, HH labels")  # fmt: skip
    left.set(xlabel="judgments", ylabel="held-out pairwise accuracy", title=f"HH-RLHF {SUBSET}, "
             f"{len(figures['seeds'])} seeds (mean +- s.e.)")  # fmt: skip
    for arm, diff in figures["difference_to_random"].items():
        mean, half = np.array(diff["mean"]), np.nan_to_num(np.array(diff["ci95_half_width"], dtype=float))
        (line,) = right.plot(grid, mean, marker="o", markersize=3, label=arm)
        right.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    right.axhline(0, color="black", linewidth=0.8)
    right.set(xlabel="judgments", ylabel="accuracy minus random's (paired)", title="Difference to random (95% CI)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def measure(size: dict, seeds: list[int], folder: Path) -> dict:
    """Every order on every seed's split; the figures (without the plot)."""
    started = time.perf_counter()
    data = load((SUBSET,), size["pairs"], size["max_length"])
    embed_s, runs, ceilings, sizes = time.perf_counter() - started, {arm: [] for arm in ARMS}, [], []
    for seed in seeds:
        pool, held = split(data["pairs"], seed)
        engine = make_engine(f"sqlite:///{folder}/seed-{seed}.db")
        upgrade_database(engine)
        raters = raters_for(engine, size["raters"])  # the same raters in every arm
        for arm in ARMS:
            runs[arm].append(run_arm(engine, folder, data, (pool, held), raters, arm, size, seed))
            log.info("seed %d %s: %s", seed, arm, np.round(runs[arm][-1]["accuracy"][1:], 3).tolist())
        engine.dispose()
        ceilings.append(ceiling(data, pool, held))
        sizes.append((len(pool), len(held)))
    grid = [size["seed_set"] + size["batch"] * r for r in range(len(runs["random"][0]["accuracy"]) - 1)]
    for arm_runs in runs.values():  # the accuracy with no judgment at all is no point of the curve
        for run in arm_runs:
            run["accuracy"] = run["accuracy"][1:]
    figures = {"data": {"subset": SUBSET, "pairs": len(data["pairs"]), "pool_pairs": round(np.mean(sizes, 0)[0]),
                        "heldout_pairs": round(np.mean(sizes, 0)[1])},
               "reward_model": f"logistic regression (C {C}) on frozen all-MiniLM-L6-v2 embeddings, max_length "
                               f"{size['max_length']}",
               "seeds": seeds, "raters": size["raters"], "seed_set": size["seed_set"], "batch": size["batch"],
               "judgments": grid, **summarise(runs, grid),
               "ceiling_clean_labels": {SUBSET: round(float(np.mean(ceilings)), 4)}}  # fmt: skip
    if size["helpful_ceiling"]:
        helpful = load(HELPFUL, None, size["max_length"])
        figures["ceiling_clean_labels"]["helpful"] = round(
            float(np.mean([ceiling(helpful, *split(helpful["pairs"], seed)) for seed in seeds])), 4
        )
    return figures | {"embed_s": round(embed_s), "total_s": round(time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 pairs, 2 seeds, 300 judgments: a smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", help="the seeds (default: 0 .. 7, or 0 1 with --quick)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "storage", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    size = QUICK if args.quick else FULL
    seeds = args.seeds or list(range(size["seeds"]))
    with tempfile.TemporaryDirectory(prefix="concord-active-") as tmp:
        figures = measure(size, seeds, Path(tmp))
        plot(figures, Path(tmp) / "active_selection.png" if args.quick else PLOT)
    figures["plot"] = "not kept (--quick)" if args.quick else str(PLOT.relative_to(ROOT))
    command = "python benchmarks/active_selection.py" + " --quick" * args.quick
    command += f" --seeds {' '.join(map(str, seeds))}" * (args.seeds is not None)
    report("active_selection", figures, command)


if __name__ == "__main__":
    main()
