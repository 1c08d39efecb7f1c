"""A finished run's metrics recomputed from its folder, and any preference file scored with a run's model.

The run's own trainer class evaluates (rebuilt from config.yaml around the saved model), so the figures mean what
they meant at the end of training: reward -> pairwise accuracy and mean margin; DPO -> implicit reward accuracy and
margins against the reference (the policy's starting point); SFT -> loss; KTO -> its eval metrics. A PPO, RLOO or
GRPO policy answers the held-out prompts beside its starting point, and the run's reward model scores both.
Results go to <run>/eval/ as JSON.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset, DatasetDict
from sqlalchemy import Engine
from sqlmodel import Session

from alignment.data import distinct_prompts, from_folder_or_name
from alignment.model import load_causal_lm, load_reward_model, load_tokenizer
from alignment.ppo_config import PPOArguments
from alignment.ppo_math import mean_interval
from alignment.ppo_state import append_jsonl
from alignment.recipe import configs_from_resolved
from alignment.rollout import answer, load_trained_roles
from alignment.source import find_run, stale_warnings
from storage.formats import parse_file

log = logging.getLogger(__name__)

ONLINE = ("ppo", "rloo", "grpo")
"""Methods whose held-out figures are a policy's answers scored by the run's reward model (``_evaluate_policy``)."""

PAIR_METRICS = {"reward": ("eval_accuracy", "eval_margin"), "dpo": ("eval_rewards/accuracies", "eval_rewards/margins")}
"""The metrics that are, for each method that can score a pair, its pairwise accuracy and mean margin."""


def find_run_folder(run: str, *, engine: Engine | None) -> Path:
    """The folder of the training run called ``run`` (warning when erasure made it or its exports stale), or ``run``
    itself when it is a run folder."""
    if engine is not None:
        with Session(engine) as session:
            found = find_run(run, session=session)
            if found is not None:
                stale_warnings(session=session, run=found, export_ids=found.export_ids)
                return Path(found.output_path)
    if (Path(run) / "config.yaml").is_file():
        return Path(run)
    raise ValueError(f"no training run is called {run!r}, and {run!r} is not a run folder (with a config.yaml)")


def run_configs(run_dir: Path):
    """The run's (data, training, model) arguments from its config.yaml, set up to evaluate on this machine."""
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    # Evaluation only: nothing is reported or saved, the reference is passed in, and a GPU run evaluates on CPU.
    resolved["training"] |= {"output_dir": str(run_dir / "eval"), "report_to": "none", "resume_from_checkpoint": None}
    if "precompute_ref_log_probs" in resolved["training"]:
        resolved["training"]["precompute_ref_log_probs"] = False
    if resolved["training"].get("steps_per_generation"):  # RLOO, GRPO: TRL derives one from the other, refuses both
        resolved["training"]["generation_batch_size"] = None
    if not torch.cuda.is_available():
        resolved["training"] |= {"use_cpu": True, "bf16": False, "fp16": False}
    data_args, training_args, model_args = configs_from_resolved(resolved)
    model_args.model_name_or_path = resolved.get("model_path") or model_args.model_name_or_path  # the start point
    return data_args, training_args, model_args


def _evaluate(run_dir: Path, configs, rows: Dataset) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The run's trainer around its saved model (and reference) evaluates ``rows``: its metrics, extra facts to
    report, and the method's headline metric names."""
    data_args, training_args, model_args = configs
    method, folder = data_args.method, run_dir / "model"
    saved = dataclasses.replace(model_args, model_name_or_path=str(folder), gguf_file=None, load_in_4bit=False,
                                load_in_8bit=False)  # fmt: skip
    tokenizer = load_tokenizer(saved)
    base = load_reward_model if method == "reward" else lambda args, _: load_causal_lm(args)
    if (folder / "adapter_config.json").is_file():  # LoRA: the adapter on its base (TRL's reference: adapter off)
        from peft import PeftModel

        model, ref_model = PeftModel.from_pretrained(base(model_args, tokenizer), str(folder)), None
    else:
        model = base(saved, tokenizer)
        ref_model = load_causal_lm(model_args) if method in ("dpo", "kto") else None
    module = importlib.import_module(f"alignment.{method}")
    refs = {"ref_model": ref_model} if method in ("dpo", "kto") else {}
    # The trainers need train rows to be built; evaluation reads only the test split.
    built = module.build_trainer(training_args, model_args, DatasetDict({"train": rows, "test": rows}), model=model,
                                 tokenizer=tokenizer, **refs)  # fmt: skip
    if method != "reward":
        return built.evaluate(), {}, module.HEADLINE
    trainer, extra = built  # the train split is the same rows: only the evaluated ones count
    extra = {"truncated_pairs": extra["truncated_pairs"]["test"], "max_length": extra["max_length"]}
    # Exact per-pair figures (a tie counted wrong) replace TRL's mean of per-batch accuracies.
    figures = module.pair_figures(trainer.model, tokenizer, rows, training_args.max_length)
    evaluation = trainer.evaluate() | {"eval_accuracy": figures["accuracy"], "eval_margin": figures["mean_margin"]}
    return evaluation, extra | {"pairwise": figures}, module.HEADLINE


def _online_args(method: str, training_args, reward_path: str) -> PPOArguments:
    """What answering and scoring read (alignment.rollout.answer), from a PPO, RLOO or GRPO run's config."""
    if method == "ppo":
        training_args.reward_model_path = reward_path
        return training_args
    return PPOArguments(output_dir=training_args.output_dir, use_cpu=training_args.use_cpu, report_to="none",
                        reward_model_path=reward_path, response_length=training_args.max_completion_length,
                        temperature=training_args.temperature, seed=training_args.seed,
                        per_device_eval_batch_size=training_args.per_device_eval_batch_size,
                        reward_max_length=training_args.reward_max_length)  # fmt: skip


def _evaluate_policy(run_dir: Path, configs, prompts: list, reward_path: str) -> dict[str, Any]:
    """A PPO, RLOO or GRPO run's saved policy and its start point (the reference) answer the held-out prompts with
    the same seeded sampling noise; the run's reward model scores both. The policy's answers go to
    <run>/eval/heldout-samples.jsonl."""
    data_args, training_args, model_args = configs
    args = _online_args(data_args.method, training_args, reward_path)
    roles = load_trained_roles(args, model_args, run_dir / "model")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.use_cpu else "cpu")
    for model in (roles.policy, roles.reference, roles.reward):
        if model is not None:
            model.to(device)
    log.info("answering %d held-out prompts with the policy, then with its start point, %d at a time", len(prompts),
             args.per_device_eval_batch_size)  # fmt: skip
    episodes, kl = answer(roles, prompts, args, device)
    if roles.reference is None:  # LoRA: the start is the policy with its adapter off
        with roles.policy.disable_adapter():
            start, _ = answer(roles, prompts, args, device, kl=False)
    else:
        start, _ = answer(dataclasses.replace(roles, policy=roles.reference), prompts, args, device, kl=False)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    columns = zip(prompts, episodes.texts, episodes.scores.tolist(), start.texts, start.scores.tolist(), kl.tolist(),
                  strict=True)  # fmt: skip
    lines = [{"prompt": prompt, "completion": text, "score": s, "start_completion": before, "start_score": b, "kl": k}
             for prompt, text, s, before, b, k in columns]  # fmt: skip
    append_jsonl(run_dir / "eval" / "heldout-samples.jsonl", lines)
    mean, low, high = mean_interval(episodes.scores.cpu().numpy())
    gains = (episodes.scores - start.scores).cpu().numpy()  # the same prompts and noise: a paired comparison
    gain, gain_low, gain_high = mean_interval(gains)
    return {"heldout_score": mean, "heldout_score_ci_low": low, "heldout_score_ci_high": high,
            "heldout_score_start": start.scores.mean().item(), "heldout_gain": gain, "heldout_gain_ci_low": gain_low,
            "heldout_gain_ci_high": gain_high, "heldout_prompts_improved": float((gains > 0).mean()),
            "heldout_kl": kl.mean().item(), "response_length": episodes.mask.sum(1).float().mean().item(),
            "response_length_start": start.mask.sum(1).float().mean().item(),
            "eos_rate": episodes.has_eos.float().mean().item(),
            "eos_rate_start": start.has_eos.float().mean().item()}  # fmt: skip


def _write(run_dir: Path, name: str, result: dict[str, Any]) -> dict[str, Any]:
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    log.info("wrote %s", out / f"{name}.json")
    return result


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Recompute the run's held-out metrics from its model and rows; written to <run>/eval/heldout.json."""
    configs = run_configs(run_dir)
    data_args = configs[0]
    exported = run_dir / "data"
    dataset = from_folder_or_name(str(exported) if (exported / "dataset").is_dir() else data_args.dataset)[0]
    if "test" not in dataset or not dataset["test"].num_rows:
        raise ValueError(f"{run_dir}: the run has no held-out (test) rows to evaluate on")
    test = dataset["test"]
    if data_args.method in ONLINE:
        (run_dir / "eval" / "heldout-samples.jsonl").unlink(missing_ok=True)
        prompts = distinct_prompts(test)
        reward_path = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["reward_model_path"]
        figures = _evaluate_policy(run_dir, configs, prompts, reward_path)
        return _write(run_dir, "heldout", {"run": run_dir.name, "method": data_args.method, "prompts": len(prompts),
                                           **figures})  # fmt: skip
    evaluation, extra, headline = _evaluate(run_dir, configs, test)
    result = {"run": run_dir.name, "method": data_args.method, "rows": test.num_rows, **extra}
    result |= {name: evaluation[key] for name, key in headline.items() if key in evaluation} | {"eval": evaluation}
    return _write(run_dir, "heldout", result)


def pairs_dataset(path: str | Path) -> tuple[Dataset, int]:
    """Every pair with a known preference in ``path`` (any format storage.formats reads) as conversational
    prompt/chosen/rejected rows; and how many pairs had none (or a tie) and were skipped."""
    pairs = parse_file(path).pairs
    rows = []
    for pair in pairs:
        if pair.preference:
            chosen, rejected = (pair.response_a, pair.response_b)[:: 1 if pair.preference < 0 else -1]
            rows.append({"prompt": pair.prompt.messages, "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})  # fmt: skip
    if not rows:
        raise ValueError(f"{path}: none of its {len(pairs)} pairs says which response is preferred")
    return Dataset.from_list(rows), len(pairs) - len(rows)


def score_pairs(run_dir: Path, path: str | Path) -> dict[str, Any]:
    """Pairwise accuracy and mean margin of the run's reward model (or DPO policy against its reference) on the
    pairs of ``path``; written to <run>/eval/pairs-<file name>.json."""
    configs = run_configs(run_dir)
    method = configs[0].method
    if method not in PAIR_METRICS:
        raise ValueError(f"{run_dir.name} is a {method} run: only a reward model or a DPO policy scores pairs")
    rows, skipped = pairs_dataset(path)
    evaluation, extra, _ = _evaluate(run_dir, configs, rows)
    accuracy, margin = PAIR_METRICS[method]
    result = {"run": run_dir.name, "method": method, "file": str(path), "pairs": rows.num_rows,
              "skipped_without_preference": skipped, "pairwise_accuracy": evaluation[accuracy],
              "mean_margin": evaluation[margin], **extra, "eval": evaluation}  # fmt: skip
    return _write(run_dir, f"pairs-{Path(path).name}", result)
