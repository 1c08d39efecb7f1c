"""PPO's pure maths for RLHF: response masks, KL estimators, per-token rewards, GAE, whitening, clipped losses.

Tensors are [batch, response tokens]; ``mask`` marks the tokens that count: the response up to and including its
first EOS. Written from the published algorithm: InstructGPT (Ouyang et al. 2022), the adaptive KL coefficient of
Ziegler et al. 2019, Schulman's k1/k3 KL estimators, and "The N+ Implementation Details of RLHF with PPO" (Huang et
al. 2024).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import Tensor

KL_ESTIMATORS = ("k1", "k3")


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is true (over ``dim``, or over everything)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``values`` where ``mask`` is true; with ``unbiased``, Bessel-corrected (n / (n - 1))."""
    centred = (values - masked_mean(values, mask)) ** 2
    variance = masked_mean(centred, mask)
    if unbiased:
        count = mask.sum()
        variance = variance * count / (count - 1).clamp(min=1)
    return variance


def whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``values`` scaled to unit variance over the masked tokens, centred on 0 when ``shift_mean`` (else the mean is
    kept: rewards are whitened without moving their level); masked-out positions become 0."""
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def response_mask(response_ids: Tensor, eos_token_ids: list[int]) -> tuple[Tensor, Tensor]:
    """The mask of each response's tokens up to and including its first EOS, and whether it has one."""
    is_eos = torch.isin(response_ids, torch.tensor(eos_token_ids, device=response_ids.device))
    seen = is_eos.long().cumsum(dim=1)
    after_eos = (seen - is_eos.long()) > 0
    return ~after_eos, is_eos.any(dim=1)


def last_index(mask: Tensor) -> Tensor:
    """Each row's last masked position (0 for a row with none)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).argmax(dim=1)


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probability of each of ``tokens`` under ``logits`` ([batch, tokens, vocabulary])."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the distribution each position's ``logits`` define: logsumexp(z) - sum(softmax(z) z)."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities: k1 is the log-ratio
    (unbiased, any sign), k3 is (r - 1) - log r with r = reference / policy (unbiased, never negative, lower
    variance)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be one of {', '.join(KL_ESTIMATORS)}; got {estimator!r}")


def missing_eos_penalty(scores: Tensor, has_eos: Tensor, penalty: float) -> Tensor:
    """``scores`` less ``penalty`` for each response that ended without EOS (cut off at the length limit)."""
    return scores - penalty * (~has_eos).to(scores.dtype)


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """The per-token reward: -kl_coef x KL on every response token, plus the sequence's score on its final token."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over each response: advantages and returns (advantages + values), 0 on
    masked-out tokens. A response ends at its last masked token: nothing after it is bootstrapped."""
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


class PolicyLoss(NamedTuple):
    loss: Tensor
    clip_fraction: Tensor  # share of tokens whose clipped objective was the one taken
    approx_kl: Tensor  # 0.5 x mean squared log-ratio between the new and the rollout policy


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> PolicyLoss:
    """PPO's clipped surrogate, as a loss: mean over masked tokens of max(-A r, -A clip(r, 1 - e, 1 + e))."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return PolicyLoss(loss, clip_fraction.detach(), 0.5 * masked_mean(log_ratio.detach() ** 2, mask))


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """The clipped value loss 0.5 x max((V - R)^2, (V_clipped - R)^2), V_clipped kept within ``cliprange_value`` of
    the rollout's values; and the share of tokens where the clipped term was taken."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked tokens: 1 is a perfect value function, 0 no better
    than a constant; NaN when the returns do not vary."""
    variance = masked_var(returns, mask).item()
    if variance == 0:
        return math.nan
    return 1.0 - masked_var(returns - values, mask).item() / variance


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` and its Student-t confidence interval (NaN bounds for fewer than two values)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - float(half), mean + float(half)


class KLController:
    """The KL coefficient: fixed, or (with ``target``) adapted as Ziegler et al. 2019 do, nudging it up when the
    measured KL is above target and down when below, by at most 20% of the error per ``horizon`` episodes."""

    def __init__(self, value: float, target: float | None = None, horizon: int = 10_000) -> None:
        self.value, self.target, self.horizon = value, target, horizon

    def update(self, kl: float, episodes: int) -> float:
        """Adapt to the mean per-sequence ``kl`` measured over ``episodes`` episodes; returns the new value."""
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * episodes / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]
