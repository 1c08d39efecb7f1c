"""Does Concord's quality control make a better reward model? Three measurements on the real HH-RLHF helpful pairs.

    python benchmarks/quality_proof.py            # all three, full size (about 15 minutes on 2 idle cores)
    python benchmarks/quality_proof.py --quick    # a smoke run: tiny sizes, a few steps (about a minute)

Every reward model is the MiniLM reward recipe (recipes/smollm2-135m/reward.yaml) run by ``alignment.runner.train``
from a campaign, as ``launch.py train`` runs it, with ``--max_length`` 128 here so that a dozen models fit the time.
Each is scored on the same held-out pairs, whose prompts no simulated rater saw, against HH-RLHF's own labels:
pairwise accuracy with a 95% Wilson interval (a tie counts as wrong), and McNemar's exact test between paired models.

1. **QC against naive**: a rater pool (careful raters about 72% right, plus random, position-biased, length-biased
   and tie-lazy ones) judges the training pairs through the real queue and service (benchmarks/rater_pool.py's
   simulator, k = 3). The naive export takes every judgment by majority; the quality-controlled one leaves out the
   raters the engine flags, weights the rest by their learned competence (Dawid-Skene) and drops pairs whose
   agreement is under 0.6. Then the lead excludes the flagged raters from the campaign, the others judge the pairs
   that opened again (rater_pool.exclude_flagged), and the quality-controlled export trains a third model.
2. **Quality over quantity**: excellent labels (the majority of three careful raters) against mediocre ones (one
   judgment each from the mixed pool), at several sizes, so that 10x as many mediocre pairs meet the excellent ones.
3. **Agreement ladder**: the same number of pairs, each labelled by one judgment (a campaign without overlap, where
   nothing outvotes a wrong label), from expert raters with random raters mixed in until their Krippendorff's alpha
   (nominal A / tie / B, measured as such a campaign measures it: three judgments of OVERLAP_PAIRS of the pairs) is
   about 0.3, 0.5, 0.7 and 0.9; McNemar's exact test of each rung against the lowest. (Labelled by the majority of
   three judgments instead, the same rungs' labels are 92-99% right and the ladder is flat: benchmarks/reward_probe.py
   measures both ladders over five seeds.)

Labels of 2 and 3 are simulated with the same rater model as 1 and imported as a campaign's pairs. The last line
printed is one JSON object; a section is appended to docs/benchmarks.md and the plot is written to
docs/images/quality_proof.png.
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
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, disable_progress_bars
from sqlalchemy import update
from statsmodels.stats.contingency_tables import mcnemar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import rater_pool  # noqa: E402
from benchmarks._report import report  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.formats import PairRecord, parse_file, prompt_hash  # noqa: E402
from storage.imports import import_file  # noqa: E402
from storage.models import Pair  # noqa: E402
from storage.quality.agreement import campaign_agreement  # noqa: E402
from storage.quality.pairwise import longer_scored_higher, pairwise_figures  # noqa: E402

log = logging.getLogger("quality_proof")

HH = ROOT.parent / "shared" / "data" / "hh-rlhf"
HELPFUL = ("helpful-online", "helpful-rejection-sampled")
RECIPE = ROOT / "recipes" / "smollm2-135m" / "reward.yaml"
PLOT = ROOT / "docs" / "images" / "quality_proof.png"
HELDOUT_FRACTION = 0.3  # of the prompts: about 1,150 pairs for the paired tests (0.15 gave 578: too few to tell
# 4 points apart). The 2,690 pairs left keep about 2,380 single judgments that are not ties: room for 2,000 mediocre
MIXED_POOL = {"careful": 24, "random": 4, "position": 4, "length": 4, "tie_lazy": 4}  # rater_pool.py's full pool
EXPERT_RIGHT = 0.97  # the ladder's experts: right this often, else wrong (no ties)
OVERLAP_PAIRS = 400  # a one-judgment rung's agreement: three judgments of this many of its pairs, as a campaign that
# labels each pair once measures its raters on an overlap sample
FULL = {"pool_pairs": 1200, "excellent": (100, 200), "mediocre": (200, 2000), "alphas": (0.3, 0.5, 0.7, 0.9),
        "ladder_pairs": 600, "heldout_pairs": None, "pair_passes": 1000, "train": ["--max_length", "128"]}  # fmt: skip
QUICK = {"pool_pairs": 90, "excellent": (30,), "mediocre": (90,), "alphas": (0.3, 0.9), "ladder_pairs": 40,
         "heldout_pairs": 40, "pair_passes": 0, "train": ["--max_length", "64", "--max_steps", "2"]}  # fmt: skip
# Every model sees at least ``pair_passes`` pairs (more epochs for a small set): a 100-pair set at one epoch is 7
# steps, still inside the warmup, and would measure nothing but an untrained head.
QC = {"policy": "weighted", "exclude_flagged_raters": "true", "min_agreement": "0.6"}
NAIVE = {"policy": "majority"}


def helpful_pairs(seed: int) -> tuple[list[PairRecord], list[PairRecord]]:
    """The helpful HH-RLHF pairs (identical ones dropped) in a seeded order, split by prompt: (training pool,
    held out)."""
    if not HH.is_dir():
        sys.exit(f"HH-RLHF data not found at {HH}: this benchmark needs ../shared beside the project")
    files = [HH / name / "test.jsonl.gz" for name in HELPFUL]
    pairs = [pair for path in files for pair in parse_file(path, "hh-rlhf", drop_identical=True).pairs]
    hashes = sorted({prompt_hash(p.prompt.messages) for p in pairs})
    held = set(random.Random(seed).sample(hashes, round(len(hashes) * HELDOUT_FRACTION)))
    random.Random(seed).shuffle(pairs)
    is_held = [prompt_hash(p.prompt.messages) in held for p in pairs]
    return [p for p, h in zip(pairs, is_held, strict=True) if not h], [
        p for p, h in zip(pairs, is_held, strict=True) if h
    ]


def reply(text: str) -> list[dict]:
    """A response as the conversational rows' one assistant turn."""
    return [{"role": "assistant", "content": text}]


def heldout_rows(pairs: list[PairRecord]) -> Dataset:
    """Held-out pairs as conversational prompt/chosen/rejected rows, labelled by HH-RLHF."""
    return Dataset.from_list([
        {"prompt": p.prompt.messages, "chosen": reply(p.response_a if p.preference < 0 else p.response_b),
         "rejected": reply(p.response_b if p.preference < 0 else p.response_a)}
        for p in pairs
    ])  # fmt: skip


def judge(kind: str, rng: random.Random, pair: PairRecord) -> int:
    """One judgment (-1 A better, 0 tie, +1 B better) by a rater of ``kind``: rater_pool's simulated raters, shown
    the pair in a random order as the service would; an ``expert`` is right with probability EXPERT_RIGHT."""
    truth = int(np.sign(pair.preference))
    if kind == "expert":
        return truth if rng.random() < EXPERT_RIGHT else -truth
    flip = 1 if rng.random() < 0.5 else -1  # -1: B on the left
    longer = int(np.sign(len(pair.response_b) - len(pair.response_a)))
    return int(np.sign(rater_pool.choose(kind, rng, truth * flip, longer * flip))) * flip


def labelled(pairs: list[PairRecord], raters: list[str], k: int, n: int | None, rng: random.Random):
    """The first ``n`` (None: all) of ``pairs`` whose ``k`` judgments (by distinct raters drawn from ``raters``) have
    a majority direction, relabelled by it; and every judgment given on the way, as a frame of item, rater and
    preference."""
    out, judgments = [], []
    for item, pair in enumerate(pairs):
        if len(out) == n:
            break
        drawn = rng.sample(range(len(raters)), k)
        votes = [judge(raters[r], rng, pair) for r in drawn]
        judgments += [(item, r, v) for r, v in zip(drawn, votes, strict=True)]
        if sum(votes):
            out.append(PairRecord(pair.prompt, pair.response_a, pair.response_b, preference=int(np.sign(sum(votes)))))
    if n is not None and len(out) < n:
        sys.exit(f"only {len(out)} of the {n} pairs asked for got a majority: too few training pairs")
    return out, pd.DataFrame(judgments, columns=["item", "rater", "preference"])


def alpha(judgments: pd.DataFrame) -> float:
    """Krippendorff's alpha, nominal (A / tie / B), as the quality report and the export card give it."""
    return round(campaign_agreement(judgments, n_boot=0).alpha_nominal.value, 3)


def import_pairs(engine, folder: Path, campaign: str, pairs: list[PairRecord]) -> None:
    """``pairs`` as a campaign whose labels are their preferences (prior labels, as an import brings them)."""
    path = folder / f"{campaign}.jsonl"
    rows = ({"prompt": p.prompt.messages, "response_a": p.response_a, "response_b": p.response_b,
             "preference": p.preference} for p in pairs)  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    import_file(path, engine=engine, campaign=campaign, fmt="pairs", known_as="prior", source="hh-rlhf", license="MIT")


def train_and_score(engine, folder: Path, campaign: str, name: str, size: dict, heldout: Dataset, seed: int,
                    n_pairs: int, export: dict | None = None) -> dict:  # fmt: skip
    """The recipe on ``campaign`` through the runner (as ``launch.py train``), then its figures on ``heldout``
    (for the paired tests: ``correct``, which pairs it got right, and ``longer_higher``, on the pairs whose responses
    differ in length, whether it scored the longer one higher)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignment.reward import reply_lengths, score_rows
    from alignment.runner import train

    options = [arg for key, value in (export or {}).items() for arg in (f"--{key}", str(value))]
    options += ["--num_train_epochs", str(max(1, math.ceil(size["pair_passes"] / n_pairs)))]
    overrides = ["--campaign", campaign, "--test_fraction", "0", "--eval_strategy", "no", "--output_root",
                 str(folder / "runs"), "--run_name", name, "--seed", str(seed), "--save_strategy", "no",
                 "--report_to", "none", "--allow_low_agreement", "true", *size["train"], *options]  # fmt: skip
    started = time.perf_counter()
    run = train(RECIPE, overrides, engine=engine)
    model_dir = Path(run.output_path) / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    scores = score_rows(model, AutoTokenizer.from_pretrained(model_dir), heldout, run.recipe["training"]["max_length"])
    lengths = reply_lengths(heldout["chosen"]), reply_lengths(heldout["rejected"])
    figures = pairwise_figures(scores["chosen"], scores["rejected"], *lengths)
    facts = json.loads((Path(run.output_path) / "data" / "export.json").read_text(encoding="utf-8"))
    log.info("%s: held-out accuracy %s in %.0f s", name, figures["accuracy"], time.perf_counter() - started)
    return {"train_pairs": facts["counts"]["train"], "heldout_accuracy": figures["accuracy"], "ci95": figures["ci95"],
            "longer_response_scored_higher": figures["longer_response_scored_higher"],
            "train_and_score_s": round(time.perf_counter() - started),
            "correct": scores["chosen"] > scores["rejected"],
            "longer_higher": longer_scored_higher(scores["chosen"], scores["rejected"], *lengths)}  # fmt: skip


def paired_p(x: np.ndarray, y: np.ndarray) -> float:
    """McNemar's exact p of two models' yes/no outcomes on the same held-out pairs."""
    table = [[int((x & y).sum()), int((x & ~y).sum())], [int((~x & y).sum()), int((~x & ~y).sum())]]
    return float(f"{mcnemar(table, exact=True).pvalue:.2g}")  # two significant digits: a tiny p stays readable


def label_accuracy(rows: list[PairRecord], truth: dict[tuple[str, str], int]) -> float:
    """Share of the simulated labels that match HH-RLHF's."""
    return round(float(np.mean([truth[(p.response_a, p.response_b)] == p.preference for p in rows])), 3)


def judged_pool(engine, folder: Path, size: dict, pairs, seed: int) -> tuple[rater_pool.Pool, dict]:
    """The first ``pool_pairs`` of ``pairs`` as campaign rater_pool.POOL, judged by the mixed rater pool through the
    real queue and service, their prior labels then removed; the pool and its figures."""
    import_pairs(engine, folder, rater_pool.POOL, pairs[: size["pool_pairs"]])
    pool = rater_pool.prepare_campaign(engine, MIXED_POOL, seed)
    started = time.perf_counter()
    n = rater_pool.simulate(engine, pool, seed)
    with write_session(engine) as session, session.begin():  # the truth must not reach an export as a prior label
        session.execute(update(Pair).where(Pair.campaign_id == pool.campaign_id).values(prior_preference=None))
    return pool, {"raters": MIXED_POOL, "pool_pairs": len(pool.truth), "judgments": n,
                  "simulate_s": round(time.perf_counter() - started)}  # fmt: skip


def qc_against_naive(engine, folder: Path, size: dict, pairs, heldout: Dataset, seed: int) -> dict:
    """Experiment 1: the rater pool judges; then the naive and the quality-controlled export of its campaign each
    train a reward model; then the lead excludes the flagged raters, the others judge the pairs that opened again,
    and the quality-controlled export trains one more."""
    pool, figures = judged_pool(engine, folder, size, pairs, seed)

    def train(name: str, options: dict) -> dict:
        return train_and_score(engine, folder, rater_pool.POOL, name, size, heldout, seed, figures["pool_pairs"],
                               options)  # fmt: skip

    figures["naive"], figures["quality_controlled"] = train("naive", NAIVE), train("quality_controlled", QC)
    figures["refill"] = rater_pool.exclude_flagged(engine, pool, seed)
    figures["quality_controlled_refilled"] = train("quality_controlled_refilled", QC)
    for prefix, model in (("", "quality_controlled"), ("refilled_", "quality_controlled_refilled")):
        naive, qc = figures["naive"], figures[model]
        figures[f"{prefix}mcnemar_p"] = paired_p(naive["correct"], qc["correct"])
        # whether QC changed how often the model scores the longer response higher (the length-biased raters' mark)
        figures[f"{prefix}length_mcnemar_p"] = paired_p(naive["longer_higher"], qc["longer_higher"])
    return figures


def quality_over_quantity(engine, folder: Path, size: dict, pairs, heldout: Dataset, seed: int) -> dict:
    """Experiment 2: excellent labels (3 careful raters' majority) and mediocre ones (one mixed-pool judgment)."""
    rng, truth = random.Random(seed), {(p.response_a, p.response_b): int(np.sign(p.preference)) for p in pairs}
    mixed = [kind for kind, n in MIXED_POOL.items() for _ in range(n)]
    figures = {}
    for quality, sizes, raters, k in (("excellent", size["excellent"], ["careful"] * 3, 3),
                                      ("mediocre", size["mediocre"], mixed, 1)):  # fmt: skip
        for n in sizes:
            rows, _ = labelled(pairs, raters, k, n, rng)
            name = f"{quality}-{n}"
            import_pairs(engine, folder, name, rows)
            figures[name] = train_and_score(engine, folder, name, name, size, heldout, seed, n)
            figures[name]["label_accuracy"] = label_accuracy(rows, truth)
    return figures


def raters_at(share: float) -> list[str]:
    """Twenty raters, ``share`` of them random and the others experts."""
    n_random = round(20 * share)
    return ["random"] * n_random + ["expert"] * (20 - n_random)


def ladder_shares(targets, pairs, rng: random.Random) -> dict[float, float]:
    """For each target alpha, the share of random raters (in steps of 0.05) whose judgments come closest to it,
    measured on a sample of the pairs."""
    shares = np.linspace(0, 1, 21)
    measured = np.array([alpha(labelled(pairs[:OVERLAP_PAIRS], raters_at(s), 3, None, rng)[1]) for s in shares])
    return {target: float(shares[int(np.argmin(np.abs(measured - target)))]) for target in targets}


def one_judgment_rung(pairs, share: float, n: int, rng: random.Random) -> tuple[list[PairRecord], float]:
    """The first ``n`` of ``pairs`` labelled by one judgment each from ``raters_at(share)``, and those raters' alpha
    on three judgments of OVERLAP_PAIRS of the pairs."""
    rows, _ = labelled(pairs, raters_at(share), 1, n, rng)
    return rows, alpha(labelled(pairs[:OVERLAP_PAIRS], raters_at(share), 3, None, rng)[1])


def agreement_ladder(engine, folder: Path, size: dict, pairs, heldout: Dataset, seed: int) -> dict:
    """Experiment 3: the same number of pairs, one judgment each, at rising agreement; each rung against the lowest."""
    rng, figures = random.Random(seed), {}
    truth = {(p.response_a, p.response_b): int(np.sign(p.preference)) for p in pairs}
    for target, share in ladder_shares(size["alphas"], pairs, rng).items():
        rows, measured = one_judgment_rung(pairs, share, size["ladder_pairs"], rng)
        name = f"alpha-{target}"
        import_pairs(engine, folder, name, rows)
        figures[name] = train_and_score(engine, folder, name, name, size, heldout, seed, len(rows))
        figures[name] |= {"random_rater_share": round(share, 2), "measured_alpha": measured,
                          "label_accuracy": label_accuracy(rows, truth)}  # fmt: skip
    lowest, *higher = figures.values()
    for rung in higher:
        rung["mcnemar_p_against_lowest"] = paired_p(lowest["correct"], rung["correct"])
    return figures


def plot(figures: dict, path: Path) -> None:
    """Accuracy against training pairs (excellent and mediocre labels), the ladder, and QC against naive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    def points(results: dict, x_key: str):
        xs = [r[x_key] for r in results.values()]
        ys = [r["heldout_accuracy"] for r in results.values()]
        errors = np.array([[y - r["ci95"][0], r["ci95"][1] - y] for y, r in zip(ys, results.values(), strict=True)])
        return xs, ys, errors.T

    for quality, marker in (("excellent", "o"), ("mediocre", "s")):
        results = {n: r for n, r in figures["quality_over_quantity"].items() if n.startswith(quality)}
        xs, ys, errors = points(results, "train_pairs")
        axes[0].errorbar(xs, ys, yerr=errors, marker=marker, capsize=3, label=f"{quality} labels")
    axes[0].set(xscale="log", xlabel="training pairs", ylabel="held-out pairwise accuracy",
                title="Quality over quantity")  # fmt: skip
    xs, ys, errors = points(figures["agreement_ladder"], "measured_alpha")
    axes[1].errorbar(xs, ys, yerr=errors, marker="o", capsize=3)
    axes[1].axvline(0.6, color="grey", linestyle=":", label="alpha 0.6: runs stop below it")
    rung = next(iter(figures["agreement_ladder"].values()))
    axes[1].set(xlabel="Krippendorff's alpha of the raters",
                title=f"Agreement ladder ({rung['train_pairs']} pairs, one judgment each)")  # fmt: skip
    qc = figures["qc_against_naive"]
    names = ["naive", "quality_controlled", "quality_controlled_refilled"]
    ys = [qc[n]["heldout_accuracy"] for n in names]
    errors = np.array([[y - qc[n]["ci95"][0], qc[n]["ci95"][1] - y] for y, n in zip(ys, names, strict=True)]).T
    axes[2].bar(["naive export", "quality-controlled", "QC, flagged raters'\npairs judged again"], ys, yerr=errors,
                capsize=4, color=["#bbb", "#4a7", "#276"])  # fmt: skip
    axes[2].set(ylim=(0.45, max(ys) + 0.1), title=f"Same raters: McNemar p against naive {qc['mcnemar_p']}, "
                f"{qc['refilled_mcnemar_p']}")  # fmt: skip
    for ax in axes:
        ax.axhline(0.5, color="red", linewidth=0.8, linestyle="--")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few steps: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the raters and the training")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "alignment", "storage", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")
    size, started = QUICK if args.quick else FULL, time.perf_counter()
    pairs, held = helpful_pairs(args.seed)
    heldout = heldout_rows(held[: size["heldout_pairs"]])
    figures = {"seed": args.seed, "heldout_pairs": heldout.num_rows, "training_pool_pairs": len(pairs),
               "recipe": str(RECIPE.relative_to(ROOT)), "train_overrides": " ".join(size["train"])}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="concord-proof-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/proof.db")
        upgrade_database(engine)
        for name, experiment in (("qc_against_naive", qc_against_naive),
                                 ("quality_over_quantity", quality_over_quantity),
                                 ("agreement_ladder", agreement_ladder)):  # fmt: skip
            figures[name] = experiment(engine, Path(tmp), size, pairs, heldout, args.seed)
        engine.dispose()
    plot(figures, PLOT)
    for experiment in ("qc_against_naive", "quality_over_quantity", "agreement_ladder"):
        for result in figures[experiment].values():
            for per_pair in ("correct", "longer_higher"):  # the paired tests' material, not figures to print
                if isinstance(result, dict):
                    result.pop(per_pair, None)
    figures |= {"plot": str(PLOT.relative_to(ROOT)), "total_s": round(time.perf_counter() - started)}
    command = "python benchmarks/quality_proof.py" + " --quick" * args.quick + f" --seed {args.seed}"
    report("quality_proof", figures, command)


if __name__ == "__main__":
    main()
