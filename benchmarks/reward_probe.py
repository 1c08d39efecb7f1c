"""What the reward recipes' backbones hold of the HH-RLHF helpful pairs, and whether label quality shows in a reward
model that can learn from labels: a linear Bradley-Terry head on each backbone's frozen features (not a recipe).

    python benchmarks/reward_probe.py            # both backbones, every helpful pair, 5 seeds (about 30 minutes)
    python benchmarks/reward_probe.py --quick    # 240 pairs, short texts, one seed: a smoke run (about a minute)

Each side of a pair is rendered and cut from the left as its reward recipe reads it (recipes/smollm2-135m/reward.yaml:
all-MiniLM-L6-v2, 256 tokens; reward-smollm2.yaml: SmolLM2-135M-Instruct, 192 tokens); the backbone's last hidden
layer is pooled two ways (the mean over tokens, and the token its recipe's head reads: MiniLM's [CLS], SmolLM2's
last). A logistic regression on chosen-minus-rejected features (both orders, no intercept) is then a reward model
whose score is linear in the features; it trains in a second, so every measurement below can use every pair.

1. **Backbones**: each pair scored out of fold (5 folds grouped by prompt), against HH-RLHF's labels; McNemar's exact
   test between the two backbones' best heads, on the same pairs.
2. **The quality proof with this head** (benchmarks/quality_proof.py's three experiments, with its split, simulated
   rater pool, exports and labels, on several seeds): QC against naive (and QC's parts: flagged raters left out,
   with majority or Dawid-Skene consensus, no contested pair dropped), then the same campaign once the lead has
   excluded the flagged raters and the others have judged the pairs that opened again (``refilled``: majority;
   ``quality_controlled_refilled``), excellent against mediocre labels by size, and the agreement ladder, twice:
   labelled by the majority of three judgments (``alpha-A``), and by one judgment from the same raters
   (``single-alpha-A``, as quality_proof.py: its alpha measured on three judgments of proof.OVERLAP_PAIRS pairs).
   Held-out pairs are those whose prompts no simulated rater saw. Discordant pairs are summed over the seeds for one
   exact test (the seeds' held-out sets overlap, so it is a pooled, not an independent, test), and each seed's own
   McNemar p is given beside it. The same paired tests ask whether each export's head scores the longer reply
   higher less often than the naive one's (``pooled_length``).

The regularisation strength of the head is chosen in 1 (out of fold, HH labels) and kept for 2. The features are
saved in ~/.cache/concord/reward_probe on the first run (``embed_s`` null: read from there). The last line printed
is one JSON object; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, disable_progress_bars
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignment.model import load_reward_model, load_tokenizer  # noqa: E402
from alignment.recipe import parse_recipe  # noqa: E402
from alignment.reward import tokenize_pairs  # noqa: E402
from alignment.source import resolve_model_path  # noqa: E402
from benchmarks import quality_proof as proof  # noqa: E402
from benchmarks import rater_pool  # noqa: E402
from benchmarks._report import report  # noqa: E402
from storage.db import make_engine, upgrade_database  # noqa: E402
from storage.export import export_campaign  # noqa: E402
from storage.formats import PairRecord, prompt_hash  # noqa: E402
from storage.quality.pairwise import longer_scored_higher, pairwise_figures  # noqa: E402

log = logging.getLogger("reward_probe")

RECIPES = {"minilm": ROOT / "recipes" / "smollm2-135m" / "reward.yaml",
           "smollm2": ROOT / "recipes" / "smollm2-135m" / "reward-smollm2.yaml"}  # fmt: skip
CACHE = Path.home() / ".cache" / "concord" / "reward_probe"  # the backbones' features: delete it to embed again
C_GRID = (0.0001, 0.001, 0.01, 0.1)  # inverse L2 strength, on standardised features
FULL = {"pairs": None, "max_length": None, "seeds": (0, 1, 2, 3, 4), "proof": proof.FULL}
QUICK = {"pairs": 240, "max_length": 48, "seeds": (0,), "proof": proof.QUICK}
# quality_proof.NAIVE and QC, typed for export_campaign rather than for the command line, and QC's parts on their own
EXPORTS = {
    "naive": {"policy": "majority"},
    "quality_controlled": {"policy": "weighted", "exclude_flagged_raters": True, "min_agreement": 0.6},
    "flagged_excluded": {"policy": "majority", "exclude_flagged_raters": True},
    "flagged_excluded_weighted": {"policy": "weighted", "exclude_flagged_raters": True},
}
# After the lead excluded the flagged raters and the others judged the pairs that opened again (rater_pool.
# exclude_flagged): the excluded raters' judgments are out of every export by then.
REFILLED = {"refilled": {"policy": "majority"}, "quality_controlled_refilled": EXPORTS["quality_controlled"]}
# The per-pair arrays of a head's held-out figures that the paired tests read, and the figure each is the mean of
PER_PAIR = {"correct": "accuracy", "longer_higher": "longer_response_scored_higher"}


def key(prompt: list[dict], first: str, second: str) -> tuple[str, str, str]:
    """What finds a pair's feature row: its prompt's hash and its two replies, in order."""
    return prompt_hash(prompt), first, second


def pair_key(pair: PairRecord) -> tuple[str, str, str]:
    return key(pair.prompt.messages, pair.response_a, pair.response_b)


def helpful(limit: int | None) -> list[PairRecord]:
    """The helpful pairs quality_proof.py uses (identical ones dropped); ``limit`` of them, a seeded sample."""
    pairs, held = proof.helpful_pairs(0)
    pairs = pairs + held
    return random.Random(0).sample(pairs, limit) if limit else pairs


@torch.inference_mode()
def features(recipe: Path, pairs: list[PairRecord], max_length: int | None) -> dict[str, np.ndarray]:
    """For each pooling, an array (2, pairs, hidden): the frozen backbone's features of response A and of B."""
    _, training_args, model_args = parse_recipe(recipe)
    model_args.model_name_or_path = resolve_model_path(model_args.model_name_or_path, engine=None)
    tokenizer = load_tokenizer(model_args)
    tokenizer.padding_side = "right"
    backbone = load_reward_model(model_args, tokenizer).base_model.eval()

    rows = Dataset.from_list([{"prompt": p.prompt.messages, "chosen": proof.reply(p.response_a),
                               "rejected": proof.reply(p.response_b)} for p in pairs])  # fmt: skip
    encoded, _ = tokenize_pairs(rows, tokenizer, max_length or training_args.max_length)
    edge = "cls" if tokenizer.cls_token is not None else "last"
    out = {"mean": np.empty((2, len(pairs), backbone.config.hidden_size), dtype=np.float32)}
    out[edge] = np.empty_like(out["mean"])
    for side, column in enumerate(("chosen_ids", "rejected_ids")):
        ids = encoded[column]
        order = np.argsort([len(i) for i in ids])
        for start in range(0, len(ids), 16):
            batch = order[start : start + 16]
            padded = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            hidden = backbone(**padded).last_hidden_state.float()
            mask = padded["attention_mask"].unsqueeze(-1).float()
            out["mean"][side, batch] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
            at = torch.zeros(len(batch), dtype=torch.long) if edge == "cls" else padded["attention_mask"].sum(1) - 1
            out[edge][side, batch] = hidden[torch.arange(len(batch)), at].numpy()
        log.info("%s: %s side of %d pairs embedded", recipe.stem, column.split("_")[0], len(ids))
    return out


def cached_features(recipe: Path, pairs: list[PairRecord], max_length: int | None) -> tuple[dict, int | None]:
    """``features``, saved in CACHE on first use (keyed by the recipe file, the length and the pairs) and read from
    there on later runs; and the seconds embedding took (None when read)."""
    digest = hashlib.sha256(recipe.read_bytes() + repr(max_length).encode())
    for pair in pairs:
        digest.update(json.dumps(pair_key(pair)).encode())
    path = CACHE / f"{recipe.stem}-{digest.hexdigest()[:16]}.npz"
    if path.exists():
        log.info("%s: features read from %s", recipe.stem, path)
        with np.load(path) as saved:
            return dict(saved), None
    began = time.perf_counter()
    out = features(recipe, pairs, max_length)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out, round(time.perf_counter() - began)


def fit(feats: np.ndarray, index: np.ndarray, a_won: np.ndarray, c: float) -> np.ndarray:
    """A Bradley-Terry head on pairs ``index`` (A won where ``a_won``): the weights a reply's features are scored
    by (score = features @ weights)."""
    diff = feats[0, index] - feats[1, index]
    diff[~a_won] *= -1  # winner minus loser
    x, y = np.vstack([diff, -diff]), np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    scaler = StandardScaler(with_mean=False).fit(x)  # both orders: the mean is already 0
    head = LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(scaler.transform(x), y)
    return head.coef_[0] / scaler.scale_


def heldout_figures(scores: np.ndarray, pairs: list[PairRecord], index: np.ndarray) -> dict:
    """pairwise_figures of the scores (2, len(index)) of A and B of pairs ``index`` against HH-RLHF's labels, and, for
    the paired tests, which pairs the head got right (``correct``) and where it scored the longer reply higher
    (``longer_higher``, over the pairs whose replies differ in length)."""
    a_won = np.array([pairs[i].preference < 0 for i in index])
    chosen, rejected = np.where(a_won, scores[0], scores[1]), np.where(a_won, scores[1], scores[0])
    lengths = np.array([[len(pairs[i].response_a), len(pairs[i].response_b)] for i in index])
    lengths = np.where(a_won, lengths[:, 0], lengths[:, 1]), np.where(a_won, lengths[:, 1], lengths[:, 0])
    figures = pairwise_figures(chosen, rejected, *lengths)
    keep = ("accuracy", "ci95", "longer_response_scored_higher")
    return {name: figures[name] for name in keep} | {
        "correct": chosen > rejected, "longer_higher": longer_scored_higher(chosen, rejected, *lengths)}  # fmt: skip


def backbones(feats: dict, pairs: list[PairRecord]) -> tuple[dict, dict]:
    """Experiment 1: every pooling and strength, out of fold; the best head of each backbone."""
    groups = [prompt_hash(p.prompt.messages) for p in pairs]
    a_won, everything = np.array([p.preference < 0 for p in pairs]), np.arange(len(pairs))
    folds = list(GroupKFold(5).split(everything, groups=groups))
    figures, best = {"C": list(C_GRID)}, {}
    for backbone, pooled in feats.items():
        for pooling, f in pooled.items():
            runs = []
            for c in C_GRID:
                scores = np.empty((2, len(pairs)))
                for train, test in folds:
                    scores[:, test] = f[:, test] @ fit(f, train, a_won[train], c)
                runs.append(heldout_figures(scores, pairs, everything) | {"pooling": pooling, "C": c})
            figures[f"{backbone}.{pooling}"] = {what: [run[what] for run in runs]
                                                for what in ("accuracy", "longer_response_scored_higher")}  # fmt: skip
            top = max(runs, key=lambda run: run["accuracy"])
            if top["accuracy"] > best.get(backbone, {"accuracy": -1})["accuracy"]:
                best[backbone] = top
    figures["best"] = {b: {k: v for k, v in run.items() if k not in PER_PAIR} for b, run in best.items()}
    if len(best) == 2:
        figures["mcnemar_p"] = proof.paired_p(*(run["correct"] for run in best.values()))
    return figures, best


def labelled_index(rows: list[PairRecord], where: dict) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of labelled pairs and whether A won by their labels."""
    found = [where[pair_key(p)] for p in rows]
    return np.array(found, dtype=int), np.array([p.preference < 0 for p in rows])


def exported_index(out_dir: Path, where: dict) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of an export's training rows and whether the export chose A."""
    index, a_won = [], []
    for line in (out_dir / "jsonl" / "train.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        if (found := where.get(key(row["prompt"], chosen, rejected))) is not None:
            index.append(found), a_won.append(True)
        else:
            index.append(where[key(row["prompt"], rejected, chosen)]), a_won.append(False)
    return np.array(index, dtype=int), np.array(a_won)


def proof_with_head(feats: dict, best: dict, pairs: list[PairRecord], size: dict, seed: int) -> dict:
    """quality_proof.py's three experiments on one seed, each label set training every backbone's best head."""
    where = {pair_key(p): i for i, p in enumerate(pairs)}
    pool, held = proof.helpful_pairs(seed)
    pool = [p for p in pool if pair_key(p) in where]
    held_index = np.array([where[k] for k in map(pair_key, held) if k in where])
    label_sets = {}
    with tempfile.TemporaryDirectory(prefix="concord-probe-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/probe.db")
        upgrade_database(engine)
        rated, judged = proof.judged_pool(engine, Path(tmp), size, pool, seed)

        def export(exports: dict) -> None:
            for name, options in exports.items():
                out = Path(tmp) / name
                export_campaign(engine=engine, campaign=rater_pool.POOL, kind="reward", out_dir=out,
                                test_fraction=0, **options)  # fmt: skip
                label_sets[name] = exported_index(out, where)

        export(EXPORTS)
        refill = rater_pool.exclude_flagged(engine, rated, seed)
        export(REFILLED)
        engine.dispose()
    label_sets["hh_labels"] = labelled_index(pool[: judged["pool_pairs"]], where)  # the same pairs, HH-RLHF's labels
    rng, mixed = random.Random(seed), [kind for kind, n in proof.MIXED_POOL.items() for _ in range(n)]
    for quality, sizes, raters, k in (("excellent", size["excellent"], ["careful"] * 3, 3),
                                      ("mediocre", size["mediocre"], mixed, 1)):  # fmt: skip
        for n in sizes:
            label_sets[f"{quality}-{n}"] = labelled_index(proof.labelled(pool, raters, k, n, rng)[0], where)
    shares = proof.ladder_shares(size["alphas"], pool, rng)
    for target, share in shares.items():
        rows, judgments = proof.labelled(pool, proof.raters_at(share), 3, size["ladder_pairs"], rng)
        label_sets[f"alpha-{target}"] = labelled_index(rows, where)
        label_sets[f"alpha-{target}"] += (proof.alpha(judgments),)
    for target, share in shares.items():  # the same raters, one judgment a pair: nothing outvotes a wrong one
        rows, measured = proof.one_judgment_rung(pool, share, size["ladder_pairs"], rng)
        label_sets[f"single-alpha-{target}"] = labelled_index(rows, where) + (measured,)
    truth = np.array([p.preference < 0 for p in pairs])
    figures = {}
    for name, (index, a_won, *measured) in label_sets.items():
        figures[name] = {"train_pairs": len(index), "label_accuracy": round(float((a_won == truth[index]).mean()), 3)}
        figures[name] |= {"measured_alpha": measured[0]} if measured else {}
        for backbone, head in best.items():
            f = feats[backbone][head["pooling"]]
            scores = f[:, held_index] @ fit(f, index, a_won, head["C"])
            figures[name][backbone] = heldout_figures(scores, pairs, held_index)
    return {"heldout_pairs": len(held_index), "judgments": judged["judgments"], "refill": refill,
            "label_sets": figures}  # fmt: skip


def pooled(per_seed: list[dict], backbone: str, a: str, b: str, per_pair: str = "correct") -> dict:
    """``b`` against ``a`` over the seeds, on ``per_pair`` (PER_PAIR: accuracy, or how often the longer reply scored
    higher): the mean gain, seeds where ``b`` was ahead, each seed's McNemar p, and one exact test on the discordant
    pairs summed over the seeds."""
    figure = PER_PAIR[per_pair]
    gains = [s[b][backbone][figure] - s[a][backbone][figure] for s in per_seed]
    x = [(s[a][backbone][per_pair], s[b][backbone][per_pair]) for s in per_seed]
    only_b, only_a = sum(int((~ca & cb).sum()) for ca, cb in x), sum(int((ca & ~cb).sum()) for ca, cb in x)
    return {
        "mean_gain": round(float(np.mean(gains)), 4),
        "seeds_ahead": sum(g > 0 for g in gains),
        "seed_p": [proof.paired_p(ca, cb) for ca, cb in x],
        "discordant": [only_b, only_a],
        "pooled_p": proof.paired_p(*(np.concatenate([seed[i] for seed in x]) for i in (0, 1))),  # every seed's pairs
    }


def by_seed(per_seed: list[dict], name: str, best: dict) -> dict:
    """One label set's figures as a list over the seeds, and each head's mean held-out accuracy."""
    figures = {what: [s[name][what] for s in per_seed] for what in per_seed[0][name] if what not in best}
    for backbone in best:
        accuracy = [s[name][backbone]["accuracy"] for s in per_seed]
        longer = [s[name][backbone]["longer_response_scored_higher"] for s in per_seed]
        figures[backbone] = {"mean_accuracy": round(float(np.mean(accuracy)), 4), "accuracy": accuracy,
                             "longer_response_scored_higher": longer}  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few pairs, short texts, one seed: a smoke run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "alignment", "storage", "httpx", "quality_proof", "rater_pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")
    size, started = QUICK if args.quick else FULL, time.perf_counter()
    pairs = helpful(size["pairs"])
    feats, timing = {}, {}
    for backbone, recipe in RECIPES.items():
        feats[backbone], timing[backbone] = cached_features(recipe, pairs, size["max_length"])
    figures = {"pairs": len(pairs), "embed_s": timing}
    figures["backbones"], best = backbones(feats, pairs)
    per_seed = [proof_with_head(feats, best, pairs, size["proof"], seed) for seed in size["seeds"]]
    label_sets = [s["label_sets"] for s in per_seed]
    figures |= {"seeds": list(size["seeds"]), "rater_pool": proof.MIXED_POOL,
                "heldout_pairs": [s["heldout_pairs"] for s in per_seed],
                "judgments": [s["judgments"] for s in per_seed], "refill": [s["refill"] for s in per_seed],
                "label_sets": {name: by_seed(label_sets, name, best) for name in label_sets[0]}}  # fmt: skip
    comparisons = {f"{name}_against_naive": ("naive", name) for name in [*EXPORTS, *REFILLED] if name != "naive"}
    comparisons["refilled_against_flagged_excluded"] = ("flagged_excluded", "refilled")
    for good in size["proof"]["excellent"]:
        for many in size["proof"]["mediocre"]:
            comparisons[f"excellent-{good}_against_mediocre-{many}"] = (f"mediocre-{many}", f"excellent-{good}")
    alphas = size["proof"]["alphas"]
    for ladder in ("alpha", "single-alpha"):
        comparisons[f"{ladder}-{alphas[-1]}_against_{ladder}-{alphas[0]}"] = (f"{ladder}-{alphas[0]}",
                                                                              f"{ladder}-{alphas[-1]}")  # fmt: skip
    for target in alphas:  # what the majority of three buys over one judgment, at each agreement
        comparisons[f"alpha-{target}_against_single-alpha-{target}"] = (f"single-alpha-{target}", f"alpha-{target}")
    figures["pooled"] = {f"{name}.{backbone}": pooled(label_sets, backbone, a, b)
                         for name, (a, b) in comparisons.items() for backbone in best}  # fmt: skip
    figures["pooled_length"] = {f"{name}.{backbone}": pooled(label_sets, backbone, "naive", name, "longer_higher")
                                for name in [*EXPORTS, *REFILLED] if name != "naive" for backbone in best}  # fmt: skip
    figures["total_s"] = round(time.perf_counter() - started)
    report("reward_probe", figures, "python benchmarks/reward_probe.py" + " --quick" * args.quick)


if __name__ == "__main__":
    main()
