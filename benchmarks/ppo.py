"""Concord's PPO side by side with TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer`` on the tiny toy task (issue 10).

    python benchmarks/ppo.py            # 3 seeds x 30 PPO steps each (~7 min on 2 busy cores, once the venv exists)
    python benchmarks/ppo.py --quick    # 1 seed x 8 steps: a smoke run (~1 min once the venv exists)

Both train the same tiny Llama policy (tests/alignment/conftest.py's ``tiny_llama``, built here from seed 0) against
the same hand-set toy reward model (``_toy_reward``: 4 f / sqrt(1 + f^2), f the share of tokens holding an "e"); they
share one tokenizer, as TRL 1.12's PPO needs, and both start the value model from the reward model. The prompts are
the 19 train prompts of ``seed_campaign``'s 20 (TEST_FRACTION holds one out: TRL's prompt loader drops a last batch
smaller than the rollout batch, so it needs at least 16); each step draws 16 of them. Hyperparameters come from
recipes/tiny/ppo.yaml; ``trl_config`` maps them field by field (its docstring says how the batch sizes map).

Each run is its own subprocess, with torch on one thread: ours runs ``alignment.runner.train`` on a temporary SQLite
campaign (this script with ``--ours JOB``); TRL's runs benchmarks/ppo_trl_runner.py with the Python of a virtual
environment this script makes once (trl 1.12.0 and the versions it resolves, pinned below) under
~/.cache/concord-bench/trl112 and reuses. Figures per implementation and seed: the score (the reward model's mean
over the step's 16 responses, as each implementation logs it) at step 1, before any update, and over the last 5
steps; its gain; the KL (summed over the response, k1, as each logs it) over the last 5 steps; episodes per second
from the wall time between the logs of step 1 and the last step; optimiser steps per PPO step (counted on the torch
optimiser); peak RSS of the subprocess. The plot (docs/images/ppo_vs_trl.png) shows score and KL per step and score
against KL, means over seeds. A section is appended to docs/benchmarks.md; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import report  # noqa: E402

RECIPE = ROOT / "recipes" / "tiny" / "ppo.yaml"
PLOT = ROOT / "docs" / "images" / "ppo_vs_trl.png"
TRL_RUNNER = ROOT / "benchmarks" / "ppo_trl_runner.py"
VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "concord-bench" / "trl112"
# What pip resolves for trl==1.12.0 on this mirror, pinned so a rebuilt venv is the same; torch is the local CPU
# wheel (an unpinned torch would pull CUDA).
PINS = ["trl==1.12.0", "torch==2.13.0", "transformers==5.25.0", "accelerate==1.16.0", "datasets==5.2.0"]
CAMPAIGN = "ppo-bench"
TEST_FRACTION = 0.15  # holds out 1 of seed_campaign's 20 prompts (0 would leave an empty test split, which fails)
TAIL = 5  # steps averaged for the final score and KL
FULL = {"seeds": [0, 1, 2], "steps": 30}
QUICK = {"seeds": [0], "steps": 8}
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip

log = logging.getLogger("ppo_bench")


def trl_config(args, steps: int, output_dir: str) -> dict[str, Any]:
    """TRL 1.12 PPOConfig fields for our PPOArguments ``args`` (one process, ``steps`` PPO steps).

    TRL's rollout batch is per_device_train_batch_size x gradient_accumulation_steps, split into num_mini_batches;
    ours is rollout_batch_size, split into num_mini_batches optimiser steps of per_device_train_batch_size x
    gradient_accumulation_steps. So TRL gets per_device_train_batch_size = our mini-batch (rollout / num_mini_batches)
    and gradient_accumulation_steps = num_mini_batches: the same rollout batch and mini-batches, one micro-batch each.
    TRL's accelerate then steps the optimiser once per num_mini_batches micro-batches, except while its prompt loader
    sits on its last batch, when every micro-batch steps (accelerate syncs at a loader's end); with one loader batch
    (as here) that is always, which gives our num_ppo_epochs x num_mini_batches optimiser steps: both counted."""
    if args.kl_target is not None:
        raise ValueError("TRL 1.12's PPO has no adaptive KL coefficient: unset kl_target")
    same = ("num_mini_batches", "num_ppo_epochs", "response_length", "temperature", "kl_coef", "kl_estimator",
            "cliprange", "cliprange_value", "vf_coef", "gamma", "lam", "whiten_rewards", "missing_eos_penalty",
            "learning_rate", "warmup_steps", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay",
            "seed")  # fmt: skip
    config = {name: getattr(args, name) for name in same}
    return config | {
        "output_dir": output_dir,
        "per_device_train_batch_size": args.mini_batch_size,
        "gradient_accumulation_steps": args.num_mini_batches,
        "total_episodes": steps * args.rollout_batch_size,
        "lr_scheduler_type": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        "local_rollout_forward_batch_size": args.per_device_eval_batch_size,  # our sampling and scoring chunks
        "stop_token": "eos",  # ours always ends a response at its first EOS
        "num_sample_generations": 0, "report_to": "none", "logging_steps": 1, "save_strategy": "no",
        "use_cpu": True, "bf16": False, "disable_tqdm": True,
    }  # fmt: skip


def ensure_venv(folder: Path) -> Path:
    """The Python of a virtual environment holding PINS, made on first use (a few minutes), reused after."""
    python, done = folder / "bin" / "python", folder / ".complete"
    if done.is_file() and done.read_text(encoding="utf-8") == " ".join(PINS):
        return python
    print(f"making {folder} with {' '.join(PINS)} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)
    done.write_text(" ".join(PINS), encoding="utf-8")
    return python


def prepare(work: Path) -> dict[str, Any]:
    """The two tiny models, the campaign's SQLite database and its prompts (all train)."""
    import torch
    from transformers import AutoTokenizer

    from alignment.data import distinct_prompts, write_prompts
    from storage.db import make_engine, upgrade_database
    from tests.alignment.conftest import _toy_reward, seed_campaign, tiny_llama

    torch.manual_seed(0)
    policy, reward = tiny_llama(_mkdir(work / "policy")), work / "reward"
    _toy_reward(_mkdir(reward), AutoTokenizer.from_pretrained(policy))
    url = f"sqlite:///{work / 'concord.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    seed_campaign(engine, work, CAMPAIGN)
    prompts = _mkdir(work / "prompts")
    data = write_prompts(engine=engine, campaign=CAMPAIGN, test_fraction=TEST_FRACTION, data_dir=prompts)
    engine.dispose()
    return {"policy": str(policy), "reward": str(reward), "database": url,
            "prompts": distinct_prompts(data.dataset["train"])}  # fmt: skip


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ours_overrides(setup: dict[str, Any], seed: int, steps: int, output_root: str) -> list[str]:
    """The recipe overrides of our run: the models, campaign, seed and steps; no held-out answers (TRL's have none)."""
    return ["--model_name_or_path", setup["policy"], "--reward_model_path", setup["reward"], "--campaign", CAMPAIGN,
            "--test_fraction", str(TEST_FRACTION), "--num_sample_prompts", "0", "--output_root", output_root,
            "--run_name", f"ppo-seed{seed}", "--seed", str(seed), "--max_steps", str(steps)]  # fmt: skip


class _StepTimes(logging.Handler):
    """When each PPO step's metrics were logged (alignment.ppo logs them once per step)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[int, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        metrics = record.args if isinstance(record.args, dict) else {}
        if "score" in metrics:
            self.times[metrics["step"]] = time.perf_counter()


def run_ours_here(job: dict[str, Any]) -> dict[str, Any]:
    """Our PPO run (in this, a fresh subprocess): alignment.runner.train on the job's campaign; its results."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from alignment.runner import train
    from storage.db import make_engine

    torch.set_num_threads(1)
    updates = [0]
    register_optimizer_step_post_hook(
        lambda optimizer, *_: updates.__setitem__(0, updates[0] + isinstance(optimizer, torch.optim.AdamW))
    )
    times = _StepTimes()
    logging.getLogger("alignment.ppo").addHandler(times)
    logging.getLogger("alignment.ppo").setLevel(logging.INFO)
    engine = make_engine(job["database"])
    start = time.perf_counter()
    run = train(RECIPE, job["overrides"], engine=engine)
    wall = time.perf_counter() - start
    lines = (Path(run.output_path) / "model" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    steps = [json.loads(line) for line in lines]
    steps = [{"step": s["step"], "score": s["score"], "kl": s["kl"], "time": times.times[s["step"]] - start}
             for s in steps if "score" in s]  # fmt: skip
    return {"steps": steps, "train_s": wall, "optimizer_steps": updates[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def _subprocess(command: list[str], job: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    """Run ``command`` on ``job`` (written as JSON, its path appended); returns the results JSON it writes."""
    job_path, job["output"] = work / f"{name}.job.json", str(work / f"{name}.result.json")
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = os.environ | ENV | {"PYTHONPATH": ""}
    done = subprocess.run([*command, str(job_path)], cwd=work, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(Path(job["output"]).read_text(encoding="utf-8"))


def run_pair(setup: dict[str, Any], python: Path, seed: int, steps: int, work: Path) -> dict[str, dict]:
    """Ours, then TRL's, on one seed."""
    from alignment.recipe import parse_recipe

    overrides = ours_overrides(setup, seed, steps, str(work / "runs"))
    _, args, _ = parse_recipe(RECIPE, overrides)
    ours = _subprocess([sys.executable, __file__, "--ours"], {**setup, "overrides": overrides}, work, f"ours{seed}")
    trl_job = {"policy": setup["policy"], "reward": setup["reward"], "prompts": setup["prompts"], "seed": seed,
               "config": trl_config(args, steps, str(work / f"trl-seed{seed}"))}  # fmt: skip
    theirs = _subprocess([str(python), str(TRL_RUNNER)], trl_job, work, f"trl{seed}")
    return {"concord": ours, "trl_1_12": theirs, "rollout": args.rollout_batch_size, "steps": steps}


def figures_of(result: dict[str, Any], rollout: int, steps: int) -> dict[str, float]:
    """One run's figures (see the module docstring)."""
    logged = result["steps"]
    scores, kls = [s["score"] for s in logged], [s["kl"] for s in logged]
    first, last = logged[0], logged[-1]
    return {
        "score_start": round(scores[0], 4),
        "score_end": round(statistics.fmean(scores[-TAIL:]), 4),
        "reward_gain": round(statistics.fmean(scores[-TAIL:]) - scores[0], 4),
        "kl_end": round(statistics.fmean(kls[-TAIL:]), 4),
        "episodes_per_s": round(rollout * (last["step"] - first["step"]) / (last["time"] - first["time"]), 2),
        "optimizer_steps_per_ppo_step": result["optimizer_steps"] / steps,
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
    }


def summarise(pairs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Per-seed figures of both implementations and their means over seeds."""
    out: dict[str, Any] = {}
    for impl in ("concord", "trl_1_12"):
        per_seed = {f"seed{seed}": figures_of(pair[impl], pair["rollout"], pair["steps"])
                    for seed, pair in zip(seeds, pairs, strict=True)}  # fmt: skip
        names = next(iter(per_seed.values()))
        mean = {name: round(statistics.fmean(f[name] for f in per_seed.values()), 4) for name in names}
        out[impl] = {"mean": mean, **per_seed}
    ours, theirs = out["concord"]["mean"], out["trl_1_12"]["mean"]
    out["ratios"] = {
        "reward_gain_ours_over_trl": _ratio(ours["reward_gain"], theirs["reward_gain"]),
        "gain_per_kl_ours": _ratio(ours["reward_gain"], ours["kl_end"]),
        "gain_per_kl_trl": _ratio(theirs["reward_gain"], theirs["kl_end"]),
        "episodes_per_s_ours_over_trl": _ratio(ours["episodes_per_s"], theirs["episodes_per_s"]),
    }
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _mean_curve(pairs: list[dict[str, Any]], impl: str, key: str) -> list[float]:
    runs = [[s[key] for s in pair[impl]["steps"]] for pair in pairs]
    return [statistics.fmean(values) for values in zip(*runs, strict=True)]


def plot(pairs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Score and KL against step, and score against KL, for both implementations (means over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for impl, label in (("concord", "Concord PPO"), ("trl_1_12", "TRL 1.12.0 PPOTrainer")):
        steps = [s["step"] for s in pairs[0][impl]["steps"]]
        score, kl = _mean_curve(pairs, impl, "score"), _mean_curve(pairs, impl, "kl")
        axes[0].plot(steps, score, label=label)
        axes[1].plot(steps, kl, label=label)
        axes[2].plot(kl, score, marker=".", label=label)
    labels = (("PPO step", "toy reward (mean of 16)"), ("PPO step", "KL to reference (nats / response)"),
              ("KL (nats / response)", "toy reward"))  # fmt: skip
    for ax, (x, y) in zip(axes, labels, strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 8 steps")
    parser.add_argument("--steps", type=int, help="PPO steps per run (default 30, 8 with --quick)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2, 0 with --quick)")
    parser.add_argument("--venv", type=Path, default=VENV, help="TRL 1.12's virtual environment (made if missing)")
    parser.add_argument("--no-report", action="store_true", help="print the figures only: no plot, no docs section")
    parser.add_argument("--ours", type=Path, help=argparse.SUPPRESS)  # internal: run our PPO on this job
    cli = parser.parse_args()
    if cli.ours:
        job = json.loads(cli.ours.read_text(encoding="utf-8"))
        Path(job["output"]).write_text(json.dumps(run_ours_here(job)), encoding="utf-8")
        return
    plan = QUICK if cli.quick else FULL
    seeds, steps = cli.seeds or plan["seeds"], cli.steps or plan["steps"]
    os.environ.update(ENV)
    python = ensure_venv(cli.venv)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp:
        work = Path(tmp)
        setup = prepare(work)
        pairs = []
        for seed in seeds:
            pairs.append(run_pair(setup, python, seed, steps, work))
            print(f"seed {seed} done", flush=True)
    figures = {"seeds": seeds, "steps": steps, "rollout_batch": pairs[0]["rollout"], **summarise(pairs, seeds),
               "trl_versions": pairs[0]["trl_1_12"]["versions"]}  # fmt: skip
    if cli.no_report:
        print(json.dumps(figures))
        return
    plot(pairs, PLOT, f"Toy reward PPO on CPU, {len(seeds)} seed(s) x {steps} steps: Concord vs TRL 1.12.0")
    figures["plot"] = str(PLOT.relative_to(ROOT))
    command = "python benchmarks/ppo.py" + (" --quick" if cli.quick else "")
    report("PPO: Concord vs TRL 1.12.0 PPOTrainer (tiny toy task)", figures, command)


if __name__ == "__main__":
    main()
