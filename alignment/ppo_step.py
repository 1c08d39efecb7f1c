"""One PPO step: answer this step's prompts, measure the answers, turn scores and KL into per-token rewards and
GAE advantages, then learn from them over ``num_ppo_epochs`` passes of mini-batches."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from accelerate import Accelerator

from alignment.ppo_config import PPOArguments
from alignment.ppo_math import (
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
from alignment.ppo_state import PPORun
from alignment.rollout import Episodes, measure, response_logprobs, sample


@cache
def _order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def _step_prompts(prompts: list, step: int, args: PPOArguments, accelerator: Accelerator) -> list:
    """This process's prompts for PPO step ``step`` (from 1): a function of the step alone, so a resumed run answers
    the prompts the uninterrupted run would have; each pass over the prompts is a fresh seeded shuffle."""
    first = ((step - 1) * accelerator.num_processes + accelerator.process_index) * args.rollout_batch_size
    n = len(prompts)
    return [prompts[_order(n, args.seed, i // n)[i % n]] for i in range(first, first + args.rollout_batch_size)]


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


def ppo_step(run: PPORun, step: int, prompts: list) -> dict[str, Any]:
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
