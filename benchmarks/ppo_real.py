"""PPO on real models on CPU (issue 10): SmolLM2-135M-Instruct against a MiniLM reward model trained on HH pairs.

    # once: the HH helpful pairs in a campaign, and the MiniLM reward model of recipes/smollm2-135m/reward.yaml
    python launch.py import ../shared/data/hh-rlhf/helpful-online/test.jsonl.gz --campaign helpful --drop-identical
    python launch.py train recipes/smollm2-135m/reward.yaml --campaign helpful --run_name minilm-helpful
    # then (the same $CONCORD_DATABASE_URL):
    python benchmarks/ppo_real.py --campaign helpful --reward run:minilm-helpful            # 30 PPO steps
    python benchmarks/ppo_real.py --campaign helpful --reward run:minilm-helpful --steps 20 -- --num_ppo_epochs 2
    python benchmarks/ppo_real.py --campaign helpful --reward run:minilm-helpful --quick    # 2 short steps
    python benchmarks/ppo_real.py --run-folder runs/NAME    # the figures of a PPO run that already finished

It runs ``launch.py train recipes/smollm2-135m/ppo.yaml`` as a user would (``--quick``: 2 steps of 4 prompts, 16
tokens each), then reads the run's logs. Figures: the reward model's mean score of the held-out answers (the same
16 prompts, the same seeded sampling noise, at step 0 and at the end) with 95% intervals, and its gain prompt by
prompt (paired) with a 95% t interval; the KL per response from the start model; the training score (mean of the
first and of the last 5 steps); and a check, without reading the answers, that they did not collapse: mean length,
EOS rate, distinct answers, distinct word bigrams over all answers, and the share of repeated word 3-grams inside an
answer, at step 0 and at the end. Also wall time, seconds per step and how each step's time splits between
generation, scoring and optimisation. A section is appended to docs/benchmarks.md; the last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from alignment.ppo_math import mean_interval  # noqa: E402
from benchmarks._report import report  # noqa: E402

QUICK = ["--max_steps", "2", "--rollout_batch_size", "4", "--per_device_train_batch_size", "2",
         "--per_device_eval_batch_size", "4", "--response_length", "16", "--num_sample_prompts", "4",
         "--eval_steps", "1", "--save_strategy", "no"]  # fmt: skip


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _words(text: str) -> list[str]:
    return text.lower().split()


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def shape(answers: list[dict]) -> dict[str, float]:
    """What the answers of one step look like, without reading them: enough to see a collapse onto one reply, onto
    a loop, or onto empty or cut-off replies."""
    texts = [answer["completion"] for answer in answers]
    bigrams = [gram for text in texts for gram in _ngrams(_words(text), 2)]
    repeated = []
    for text in texts:
        grams = _ngrams(_words(text), 3)
        if grams:
            repeated.append(1 - len(set(grams)) / len(grams))
    return {"answers": len(texts), "mean_tokens": round(statistics.fmean(a["tokens"] for a in answers), 1),
            "eos_rate": round(statistics.fmean(float(a["eos"]) for a in answers), 3),
            "distinct_answers": round(len(set(texts)) / len(texts), 3),
            "distinct_bigrams": round(len(set(bigrams)) / len(bigrams), 3) if bigrams else None,
            "repeated_trigrams": round(statistics.fmean(repeated), 3) if repeated else None}  # fmt: skip


def figures(folder: Path) -> dict:
    """The figures of a finished PPO run's folder (see the module docstring)."""
    model = folder / "model" if (folder / "model" / "metrics.jsonl").is_file() else folder
    logs, samples = _jsonl(model / "metrics.jsonl"), _jsonl(model / "samples.jsonl")
    final = json.loads((model / "metrics.json").read_text(encoding="utf-8"))
    steps = [line for line in logs if "score" in line]
    last = max(line["step"] for line in samples)
    heldout = [line for line in logs if "heldout_score" in line]
    start, end = ({json.dumps(a["prompt"], sort_keys=True): a["score"] for a in samples if a["step"] == step}
                  for step in (0, last))  # fmt: skip
    gains = [end[prompt] - score for prompt, score in start.items()]  # the same prompts and sampling noise: paired
    gain, low, high = mean_interval(np.array(gains))
    times = {name: round(statistics.fmean(line[f"time_{name}"] for line in steps), 1)
             for name in ("generation", "scoring", "optimisation")}  # fmt: skip
    return {
        "run": folder.name, "steps": final["train_steps"], "episodes": final["episodes"],
        "heldout_score_start": round(final["heldout_score_start"], 4),
        "heldout_score_end": round(final["heldout_score"], 4),
        "heldout_score_end_ci95": [round(final["heldout_score_ci_low"], 4), round(final["heldout_score_ci_high"], 4)],
        "heldout_kl_end": round(final["heldout_kl"], 3),
        "heldout_gain_paired": round(gain, 4), "heldout_gain_paired_ci95": [round(low, 4), round(high, 4)],
        "heldout_prompts_improved": f"{sum(g > 0 for g in gains)} of {len(gains)}",
        "heldout_by_step": {str(line["step"]): [round(line["heldout_score"], 4), round(line["heldout_kl"], 3)]
                            for line in heldout},
        "train_score_first5": round(statistics.fmean(line["score"] for line in steps[:5]), 4),
        "train_score_last5": round(statistics.fmean(line["score"] for line in steps[-5:]), 4),
        "train_kl_last5": round(statistics.fmean(line["kl"] for line in steps[-5:]), 3),
        "kl_max": round(max(line["kl"] for line in steps), 3),
        "seconds_per_step": round(statistics.fmean(sum(line[f"time_{n}"] for n in times) for line in steps), 1),
        "seconds_by_part": times,
        "answers_start": shape([line for line in samples if line["step"] == 0]),
        "answers_end": shape([line for line in samples if line["step"] == last]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", help="the campaign whose prompts PPO answers")
    parser.add_argument("--reward", help="the reward model: run:NAME of a MiniLM reward run, or its folder")
    parser.add_argument("--steps", type=int, default=30, help="PPO steps (default 30)")
    parser.add_argument("--quick", action="store_true", help="2 steps of 4 prompts and 16 tokens: a smoke run")
    parser.add_argument("--run-folder", type=Path, help="report a PPO run that already finished, training nothing")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="after --: more recipe overrides (--key value)")
    args = parser.parse_args()
    wall = None
    if args.run_folder is None:
        if not (args.campaign and args.reward):
            sys.exit("--campaign and --reward are needed to train (or --run-folder to report a finished run)")
        name = f"ppo-real-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        steps = QUICK if args.quick else ["--max_steps", str(args.steps), "--eval_steps", "10", "--save_steps", "10"]
        recipe = ROOT / "recipes" / "smollm2-135m" / "ppo.yaml"
        command = [sys.executable, str(ROOT / "launch.py"), "train", str(recipe), "--campaign", args.campaign,
                   "--reward_model_path", args.reward, "--run_name", name, *steps,
                   *(o for o in args.overrides if o != "--")]  # fmt: skip
        env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        began = time.monotonic()
        subprocess.run(command, check=True, env=env)
        wall = round(time.monotonic() - began)
        args.run_folder = Path("runs") / name
    result = {"quick": args.quick, "wall_seconds": wall, **figures(args.run_folder)}
    report("PPO on real models on CPU (SmolLM2-135M-Instruct, MiniLM reward)", result,
           "python benchmarks/ppo_real.py " + " ".join(sys.argv[1:]))  # fmt: skip


if __name__ == "__main__":
    main()
