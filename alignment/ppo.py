"""PPO, InstructGPT's RLHF step, on a campaign's prompts and a Concord reward model: Concord's own, on transformers +
accelerate, written from the published algorithm (alignment.ppo_math says which).

Each step samples responses to ``rollout_batch_size`` prompts per process, scores them with the reward model, gives
every response token the reward -kl_coef x KL(policy || reference) plus the score on its final token, estimates
advantages with GAE (whitened), then takes ``num_ppo_epochs`` passes of clipped policy and value losses over
mini-batches. Written under output_dir: metrics.jsonl (a line per logged step, also sent to report_to's trackers),
samples.jsonl (held-out prompts answered at the start, every eval_steps and at the end), checkpoint-N/ (alignment.
ppo_state), and at the end the policy, its tokenizer and metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import DatasetDict
from transformers import get_scheduler

from alignment.arguments import DataArguments, ModelArguments
from alignment.ppo_config import PPOArguments
from alignment.ppo_math import (
    KLController,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    mean_interval,
    missing_eos_penalty,
    policy_loss,
    token_rewards,
    value_loss,
    whiten,
)
from alignment.ppo_state import (
    PPORun,
    append_jsonl,
    heldout_summary,
    load_checkpoint,
    save_checkpoint,
    save_policy,
    truncate_logs,
)
from alignment.rollout import Episodes, PolicyAndValue, load_roles, measure, response_logprobs, sample

log = logging.getLogger(__name__)


def _prompts(rows) -> list[list[dict]]:
    """Each distinct prompt once (a preference export repeats a prompt for each of its pairs), in first-seen order."""
    seen = {json.dumps(prompt, sort_keys=True): prompt for prompt in rows["prompt"]} if rows.num_rows else {}
    return list(seen.values())


@cache
def _order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def _step_prompts(prompts: list, step: int, args: PPOArguments, accelerator: Accelerator) -> list:
    """This process's prompts for PPO step ``step`` (from 1): a function of the step alone, so a resumed run answers
    the prompts the uninterrupted run would have; each pass over the prompts is a fresh seeded shuffle."""
    first = ((step - 1) * accelerator.num_processes + accelerator.process_index) * args.rollout_batch_size
    n = len(prompts)
    return [prompts[_order(n, args.seed, i // n)[i % n]] for i in range(first, first + args.rollout_batch_size)]


def _total_steps(args: PPOArguments, n_prompts: int, processes: int) -> int:
    if args.max_steps > 0:
        return args.max_steps
    return math.ceil(args.num_train_epochs * n_prompts / (args.rollout_batch_size * processes))


def _advantages(episodes: Episodes, kl_coef: float, args: PPOArguments) -> dict[str, torch.Tensor]:
    """Per-token rewards, then GAE's advantages (whitened) and returns."""
    mask = episodes.mask
    kl = kl_estimate(episodes.logprobs, episodes.ref_logprobs, args.kl_estimator) * mask
    scores = episodes.scores
    if args.missing_eos_penalty is not None:
        scores = missing_eos_penalty(scores, episodes.has_eos, args.missing_eos_penalty)
    rewards = token_rewards(scores, kl, mask, kl_coef)
    if args.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, episodes.values, mask, args.gamma, args.lam)
    return {"advantages": whiten(advantages, mask), "returns": returns, "rewards": rewards, "kl": kl}


def _losses(model, episodes: Episodes, rows: torch.Tensor, targets: dict, args: PPOArguments):
    context, mask = episodes.query_ids.shape[1], episodes.mask[rows]
    logits, values = model(episodes.input_ids[rows], episodes.attention_mask[rows])
    logprobs = response_logprobs(logits, episodes.response_ids[rows], context, args.temperature)
    values = values[:, context - 1 : -1]
    pg = policy_loss(logprobs, episodes.logprobs[rows], targets["advantages"][rows], mask, args.cliprange)
    vf, vf_clipped = value_loss(values, episodes.values[rows], targets["returns"][rows], mask, args.cliprange_value)
    entropy = masked_mean(entropy_from_logits(logits[:, context - 1 : -1].detach() / args.temperature), mask)
    stats = {"policy_loss": pg.loss.detach(), "value_loss": vf.detach(), "clip_fraction": pg.clip_fraction,
             "value_clip_fraction": vf_clipped, "approx_kl": pg.approx_kl, "entropy": entropy}  # fmt: skip
    return pg.loss + args.vf_coef * vf, stats


def _optimise(accelerator: Accelerator, model, optimizer, scheduler, episodes: Episodes, targets: dict,
              args: PPOArguments) -> dict[str, float]:  # fmt: skip
    """num_ppo_epochs shuffled passes over the rollout batch; accelerate accumulates the micro-batches of each
    mini-batch into one optimiser step. Returns the mean of each loss statistic."""
    stats = defaultdict(list)
    model.train(bool(args.activation_checkpointing))  # checkpointing works in train mode only; dropout is off anyway
    for _ in range(args.num_ppo_epochs):
        order = torch.randperm(args.rollout_batch_size, device=accelerator.device)
        for start in range(0, args.rollout_batch_size, args.per_device_train_batch_size):
            with accelerator.accumulate(model):
                loss, micro = _losses(model, episodes, order[start : start + args.per_device_train_batch_size],
                                      targets, args)  # fmt: skip
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            for name, value in micro.items():
                stats[name].append(value)
    model.eval()
    means = torch.stack([torch.stack(values).mean() for values in stats.values()])
    return dict(zip(stats, accelerator.reduce(means, reduction="mean").tolist(), strict=True))


def _rollout_stats(accelerator: Accelerator, episodes: Episodes, targets: dict) -> dict[str, float]:
    gather = accelerator.gather
    scores = gather(episodes.scores).float().cpu().numpy()
    mean, low, high = mean_interval(scores)
    per_response = {"kl": targets["kl"].sum(1), "reward": (targets["rewards"] * episodes.mask).sum(1),
                    "response_length": episodes.mask.sum(1).float(), "eos_rate": episodes.has_eos.float()}  # fmt: skip
    stats = {"score": mean, "score_ci_low": low, "score_ci_high": high}
    stats |= {name: gather(value).float().mean().item() for name, value in per_response.items()}
    variance = explained_variance(episodes.values, targets["returns"], episodes.mask)
    return stats | {"explained_variance": variance}


@contextmanager
def _timed(times: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start


def _ppo_step(run: PPORun, step: int, prompts: list) -> dict[str, Any]:
    """One PPO step: rollout, scoring, advantages, optimisation, KL coefficient update; returns its metrics."""
    accelerator, roles, args = run.accelerator, run.roles, run.args
    times: dict[str, float] = {}
    with _timed(times, "generation"):
        episodes = sample(roles, _step_prompts(prompts, step, args, accelerator), args, accelerator.device)
    with _timed(times, "scoring"):
        measure(roles, episodes, args)
    kl_coef = run.kl.value
    targets = _advantages(episodes, kl_coef, args)
    with _timed(times, "optimisation"):
        losses = _optimise(accelerator, run.model, run.optimizer, run.scheduler, episodes, targets, args)
    stats = _rollout_stats(accelerator, episodes, targets) | losses
    run.kl.update(stats["kl"], episodes=args.rollout_batch_size * accelerator.num_processes)
    run.episodes += args.rollout_batch_size * accelerator.num_processes
    wall = sum(times.values())
    return {"step": step, "episodes": run.episodes, **stats, "kl_coef": kl_coef,
            "learning_rate": run.scheduler.get_last_lr()[0],
            "episodes_per_second": args.rollout_batch_size * accelerator.num_processes / wall,
            **{f"time_{name}": seconds for name, seconds in times.items()}}  # fmt: skip


def _heldout(run: PPORun, prompts: list, step: int) -> dict[str, float]:
    """Answer the held-out prompts (the same sampling noise at every step: seeded apart from the training stream),
    append them with their scores to samples.jsonl; returns their mean score and KL."""
    accelerator, roles, args = run.accelerator, run.roles, run.args
    if not prompts or not accelerator.is_main_process:
        return {}
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(args.seed)
        episodes = sample(roles, prompts, args, accelerator.device)
        measure(roles, episodes, args, values=False)
    kl = (kl_estimate(episodes.logprobs, episodes.ref_logprobs, "k1") * episodes.mask).sum(1)
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
        metrics = _ppo_step(run, step, prompts)
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
    prompts = _prompts(dataset["train"])
    heldout = _prompts(dataset["test"])[: args.num_sample_prompts] if "test" in dataset else []
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
    accelerator.end_training()
    return summary
