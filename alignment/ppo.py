"""PPO, InstructGPT's RLHF step, on a campaign's prompts and a Concord reward model: Concord's own, on transformers +
accelerate, written from the published algorithm (alignment.ppo_math says which).

Each step (alignment.ppo_step) samples responses to ``rollout_batch_size`` prompts per process, scores them with the
reward model, gives every response token the reward -kl_coef x KL(policy || reference) plus the score on its final
token, estimates advantages with GAE (whitened), then takes ``num_ppo_epochs`` passes of clipped policy and value
losses over mini-batches. Written under output_dir: metrics.jsonl (a line per logged step, also sent to report_to's
trackers), samples.jsonl (held-out prompts answered at the start, every eval_steps and at the end), checkpoint-N/
(alignment.ppo_state), and at the end the policy, its tokenizer and metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import DatasetDict
from transformers import get_scheduler

from alignment.arguments import DataArguments, ModelArguments
from alignment.data import distinct_prompts
from alignment.ppo_config import PPOArguments
from alignment.ppo_math import KLController, mean_interval
from alignment.ppo_state import (
    PPORun,
    append_jsonl,
    heldout_summary,
    load_checkpoint,
    save_checkpoint,
    save_policy,
    truncate_logs,
)
from alignment.ppo_step import ppo_step
from alignment.rollout import PolicyAndValue, answer, load_roles

log = logging.getLogger(__name__)


def _total_steps(args: PPOArguments, n_prompts: int, processes: int) -> int:
    if args.max_steps > 0:
        return args.max_steps
    return math.ceil(args.num_train_epochs * n_prompts / (args.rollout_batch_size * processes))


def _heldout(run: PPORun, prompts: list, step: int) -> dict[str, float]:
    """Answer the held-out prompts (the same sampling noise at every step: seeded apart from the training stream),
    append them with their scores to samples.jsonl; returns their mean score and KL."""
    if not prompts or not run.accelerator.is_main_process:
        return {}
    episodes, kl = answer(run.roles, prompts, run.args, run.accelerator.device)
    lines = [{"step": step, "prompt": prompt, "completion": text, "score": s, "kl": k, "tokens": n, "eos": e}
             for prompt, text, s, k, n, e in zip(prompts, episodes.texts, episodes.scores.tolist(), kl.tolist(),
                                                 episodes.mask.sum(1).tolist(), episodes.has_eos.tolist(),
                                                 strict=True)]  # fmt: skip
    append_jsonl(run.output / "samples.jsonl", lines)
    mean, low, high = mean_interval(episodes.scores.cpu().numpy())
    return {"heldout_score": mean, "heldout_score_ci_low": low, "heldout_score_ci_high": high,
            "heldout_kl": kl.mean().item()}  # fmt: skip


def _log(run: PPORun, metrics: dict[str, Any]) -> None:
    accelerator = run.accelerator
    if accelerator.is_main_process:
        append_jsonl(run.output / "metrics.jsonl", [metrics])
        log.info("PPO %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    accelerator.log({k: v for k, v in metrics.items() if k != "step" and math.isfinite(v)}, step=metrics["step"])


def _every(value: float | None, total: int) -> int:
    """A TrainingArguments interval (logging, eval, save steps) in PPO steps: below 1, a share of the run."""
    if not value:
        return total
    return max(1, math.ceil(value * total) if value < 1 else int(value))


def _train(run: PPORun, prompts: list, heldout: list, start: int, total: int) -> dict[str, Any]:
    """PPO steps start + 1 .. total, with held-out answers, logs and checkpoints at their intervals; returns the
    last step's metrics."""
    args, metrics = run.args, {}
    log_every, eval_every, save_every = (_every(v, total) for v in (args.logging_steps, args.eval_steps,
                                                                    args.save_steps))  # fmt: skip
    for step in range(start + 1, total + 1):
        metrics = ppo_step(run, step, prompts)
        evaluated = args.eval_strategy == "steps" and step % eval_every == 0 and step != total
        if evaluated:
            metrics |= _heldout(run, heldout, step)
        if step % log_every == 0 or evaluated or step == total:
            _log(run, metrics)
        if args.save_strategy == "steps" and step % save_every == 0:
            save_checkpoint(run, step)
    return metrics


def _setup(args: PPOArguments, model_args: ModelArguments) -> PPORun:
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    trackers = [name for name in args.report_to if name != "none"]
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    accelerator = Accelerator(cpu=args.use_cpu, mixed_precision=precision, log_with=trackers or None,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              project_dir=str(Path(args.output_dir) / "runs"))  # fmt: skip
    roles = load_roles(args, model_args)
    if args.activation_checkpointing:
        for trained in (roles.policy, roles.value):
            trained.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = PolicyAndValue(roles.policy, roles.value)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                  weight_decay=args.weight_decay)  # fmt: skip
    model, optimizer = accelerator.prepare(model, optimizer)
    for frozen in (roles.reference, roles.reward):
        if frozen is not None:
            frozen.to(accelerator.device)
    model.eval()
    if trackers:
        accelerator.init_trackers(args.run_name or "ppo")
    kl = KLController(args.kl_coef, args.kl_target, args.kl_horizon)
    return PPORun(accelerator, roles, args, model, optimizer, kl, Path(args.output_dir))


def main(
    data_args: DataArguments, training_args: PPOArguments, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train the policy on ``dataset``'s prompts (train) and answer its test prompts at intervals; returns the
    metrics written to metrics.json."""
    args = training_args
    prompts = distinct_prompts(dataset["train"])
    heldout = distinct_prompts(dataset["test"])[: args.num_sample_prompts] if "test" in dataset else []
    run = _setup(args, model_args)
    accelerator = run.accelerator
    total = _total_steps(args, len(prompts), accelerator.num_processes)
    updates = total * args.num_ppo_epochs * args.num_mini_batches  # optimiser steps
    run.scheduler = get_scheduler(args.lr_scheduler_type, run.optimizer, args.get_warmup_steps(updates), updates)
    # Registered, not prepared: accelerate's scheduler wrapper would step once per process.
    accelerator.register_for_checkpointing(run.scheduler, run.kl)
    start = load_checkpoint(run, args.resume_from_checkpoint) if args.resume_from_checkpoint else 0
    truncate_logs(run, start)
    first = _heldout(run, heldout, 0) if start == 0 else heldout_summary(run.output / "samples.jsonl", 0)
    log.info("PPO: %d steps of %d episodes over %d prompts (%d held out)", total,
             args.rollout_batch_size * accelerator.num_processes, len(prompts), len(heldout))  # fmt: skip
    metrics = _train(run, prompts, heldout, start, total)
    if start < total:
        last = _heldout(run, heldout, total)
        if last:
            _log(run, {"step": total, **last})
    else:  # resumed from the last step's checkpoint: its answers are already saved
        last = heldout_summary(run.output / "samples.jsonl", total)
    save_policy(run)
    summary = {"train_steps": total, "episodes": run.episodes, "kl_coef": run.kl.value}
    summary |= {k: metrics[k] for k in ("score", "kl", "entropy", "response_length", "eos_rate") if k in metrics}
    summary |= last | {f"{k}_start": v for k, v in first.items() if k in ("heldout_score", "heldout_kl")}
    if args.resume_from_checkpoint:
        summary["resumed_from"] = Path(args.resume_from_checkpoint).name
    if accelerator.is_main_process:
        (run.output / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    # Not end_training: the runner ends the process group, on every process together.
    for tracker in accelerator.trackers:
        tracker.finish()
    return summary
