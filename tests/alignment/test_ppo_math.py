"""PPO's maths against values worked out by hand on sequences of two to four tokens."""

import math

import pytest
import torch

from alignment.ppo_math import (
    KLController,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    last_index,
    masked_mean,
    mean_interval,
    missing_eos_penalty,
    policy_loss,
    response_mask,
    token_logprobs,
    token_rewards,
    value_loss,
    whiten,
)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(actual, expected, tol=1e-4) -> bool:
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float32), torch.as_tensor(expected), atol=tol)


def test_gae_on_three_tokens():
    # gamma 0.9, lambda 0.8, so gamma x lambda = 0.72; V = 0.5 everywhere, the score 1 on the last token:
    # delta_2 = 1 - 0.5 = 0.5;  delta_1 = delta_0 = 0.9 x 0.5 - 0.5 = -0.05
    # A_2 = 0.5;  A_1 = -0.05 + 0.72 x 0.5 = 0.31;  A_0 = -0.05 + 0.72 x 0.31 = 0.1732
    advantages, returns = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.5, 0.5]), t([1, 1, 1]), gamma=0.9, lam=0.8)
    assert close(advantages, [[0.1732, 0.31, 0.5]]) and close(returns, [[0.6732, 0.81, 1.0]])


def test_gae_ignores_what_follows_the_end_of_a_response():
    # The third token is padding after EOS: its reward 99 and value 7 must not leak into the two real tokens.
    # A_1 = 1 - 0.5 = 0.5 (nothing to bootstrap from);  A_0 = (0.9 x 0.5 - 0.5) + 0.72 x 0.5 = 0.31
    advantages, returns = gae(t([0.0, 1.0, 99.0]), t([0.5, 0.5, 7.0]), t([1, 1, 0]), gamma=0.9, lam=0.8)
    assert close(advantages, [[0.31, 0.5, 0.0]]) and close(returns, [[0.81, 1.0, 0.0]])


def test_gae_with_gamma_and_lambda_one_is_the_return_less_the_value():
    rewards, values = t([0.1, -0.2, 2.0]), t([1.0, 0.3, -0.4])
    advantages, returns = gae(rewards, values, t([1, 1, 1]), gamma=1.0, lam=1.0)
    assert close(returns, [[1.9, 1.8, 2.0]]) and close(advantages, returns - values)


def test_whitening_uses_the_masked_tokens_only():
    # [1, 2, 3] has mean 2 and unbiased variance 1; the masked 100 counts for nothing and becomes 0.
    values, mask = t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])
    assert close(whiten(values, mask), [[-1.0, 0.0, 1.0, 0.0]])
    assert close(whiten(values, mask, shift_mean=False), [[1.0, 2.0, 3.0, 0.0]])
    # [1, 2, 3, 4]: mean 2.5, unbiased variance 5/3, so (x - 2.5) / 1.29099
    assert close(whiten(t([1.0, 2.0, 3.0, 4.0]), t([1, 1, 1, 1])), [[-1.16190, -0.38730, 0.38730, 1.16190]])


def test_k1_and_k3_estimators():
    # policy 0.5, reference 0.25: k1 = log 2 = 0.693147; k3 = (0.25/0.5 - 1) - log(0.25/0.5) = -0.5 + log 2
    logp, ref = torch.log(t([0.5, 0.25])), torch.log(t([0.25, 0.5]))
    assert close(kl_estimate(logp, ref, "k1"), [[0.693147, -0.693147]])
    # the other token: r = 2, so (2 - 1) - log 2 = 0.306853; k3 is never negative where k1 is
    assert close(kl_estimate(logp, ref, "k3"), [[0.193147, 0.306853]])
    assert close(kl_estimate(logp, logp, "k3"), [[0.0, 0.0]])
    with pytest.raises(ValueError, match="k1, k3"):
        kl_estimate(logp, ref, "k2")


def test_k1_and_k3_estimate_the_same_kl_on_average():
    torch.manual_seed(0)
    policy, reference = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    exact = (policy * (policy / reference).log()).sum()
    tokens = torch.multinomial(policy, 200_000, replacement=True)
    logp, ref = policy.log()[tokens], reference.log()[tokens]
    for estimator in ("k1", "k3"):
        assert kl_estimate(logp, ref, estimator).mean() == pytest.approx(exact.item(), abs=0.01)


def test_response_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    mask, has_eos = response_mask(ids, [2])
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]
    assert has_eos.tolist() == [True, False, True]
    assert last_index(mask).tolist() == [1, 3, 0]
    assert response_mask(ids, [8, 7])[0][1].tolist() == [True, True, True, False]  # any of several EOS ids


def test_per_token_rewards_put_the_score_on_the_final_token():
    # kl_coef 0.5 on KL [0.1, 0.2, (0.3 masked)]: -0.05 and -0.1, with the score 2 added to the second token.
    rewards = token_rewards(torch.tensor([2.0]), t([0.1, 0.2, 0.3]), t([1, 1, 0]), kl_coef=0.5)
    assert close(rewards, [[-0.05, 1.9, 0.0]])


def test_missing_eos_penalty():
    assert close(missing_eos_penalty(torch.tensor([1.0, 1.0]), torch.tensor([True, False]), 2.0), [1.0, -1.0])


def test_clipped_policy_loss():
    # ratio 1.5 on both tokens, clip 0.2. A = +1: -1.5 unclipped, -1.2 clipped -> the max, -1.2, is clipped.
    # A = -1: 1.5 unclipped, 1.2 clipped -> 1.5 unclipped. Loss (-1.2 + 1.5) / 2 = 0.15; half the tokens clipped;
    # approx KL 0.5 x log(1.5)^2 = 0.082199.
    logp, old = torch.log(t([1.5, 1.5])), t([0.0, 0.0])
    out = policy_loss(logp, old, t([1.0, -1.0]), t([1, 1]), cliprange=0.2)
    assert close(out.loss, 0.15) and close(out.clip_fraction, 0.5) and close(out.approx_kl, 0.082199)
    # A masked token with a huge advantage changes nothing.
    masked = policy_loss(torch.log(t([1.5, 1.5, 3.0])), t([0.0, 0.0, 0.0]), t([1.0, -1.0, 1e6]), t([1, 1, 0]), 0.2)
    assert close(masked.loss, 0.15)


def test_clipped_policy_loss_gradient_vanishes_where_clipped():
    logp = torch.log(t([1.5, 1.5])).requires_grad_()
    policy_loss(logp, t([0.0, 0.0]), t([1.0, -1.0]), t([1, 1]), cliprange=0.2).loss.backward()
    # token 0 is clipped (no gradient); token 1: d/dlogp of mean(-A r) = -(-1) x 1.5 / 2 = 0.75
    assert close(logp.grad, [[0.0, 0.75]])


def test_clipped_value_loss():
    # old values 0.5, clip 0.2. Token 0: V 1.0 -> (1 - 2)^2 = 1; clipped V 0.7 -> (0.7 - 2)^2 = 1.69, taken.
    # Token 1: V 0.4 is within the clip -> 0.16 both ways, not counted as clipped. 0.5 x (1.69 + 0.16) / 2 = 0.4625
    loss, clipped = value_loss(t([1.0, 0.4]), t([0.5, 0.5]), t([2.0, 0.0]), t([1, 1]), cliprange_value=0.2)
    assert close(loss, 0.4625) and close(clipped, 0.5)


def test_entropy_and_log_probs_from_logits():
    uniform = torch.zeros(1, 2, 4)
    assert close(entropy_from_logits(uniform), [[math.log(4), math.log(4)]])
    assert close(entropy_from_logits(torch.tensor([[[100.0, 0.0, 0.0]]])), [[0.0]])
    # logits log([0.5, 0.25, 0.25]): the chosen tokens' log-probabilities come back
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]]))
    assert close(token_logprobs(logits, torch.tensor([[0, 2]])), [[math.log(0.5), math.log(0.25)]])


def test_explained_variance():
    returns, mask = t([1.0, 2.0, 3.0, 50.0]), t([1, 1, 1, 0])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(t([2.0, 2.0, 2.0, 0.0]), returns, mask) == pytest.approx(0.0)
    # residuals [1, 0, -1] around values [0, 2, 4]: variance 1 against 1 -> 0
    assert explained_variance(t([0.0, 2.0, 4.0, 0.0]), returns, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(t([1.0, 1.0]), t([1.0, 1.0]), t([1, 1])))


def test_masked_mean_per_row():
    assert close(masked_mean(t([1.0, 3.0], [5.0, 7.0]), t([1, 0], [1, 1]), dim=1), [1.0, 6.0])


def test_mean_interval_is_students_t():
    # mean 3, sd 1.5811, se 0.7071; t(0.975, 4) = 2.7764 -> half-width 1.9632
    mean, low, high = mean_interval([1, 2, 3, 4, 5])
    assert (mean, low, high) == pytest.approx((3.0, 1.0368, 4.9632), abs=1e-4)
    assert math.isnan(mean_interval([2.0])[1])


def test_adaptive_kl_controller():
    # target 6, horizon 10000, 64 episodes: KL 12 is 100% over -> capped at +20%: x (1 + 0.2 x 64 / 10000)
    controller = KLController(0.1, target=6.0, horizon=10_000)
    assert controller.update(12.0, episodes=64) == pytest.approx(0.1 * 1.00128)
    controller.load_state_dict({"value": 0.1})
    assert controller.update(3.0, episodes=64) == pytest.approx(0.1 * 0.99872)  # 50% under -> capped at -20%
    controller.load_state_dict({"value": 0.1})
    assert controller.update(6.6, episodes=100) == pytest.approx(0.1 * (1 + 0.1 * 100 / 10_000))  # 10% over
    fixed = KLController(0.05)
    assert fixed.update(100.0, episodes=64) == 0.05 and fixed.state_dict() == {"value": 0.05}
