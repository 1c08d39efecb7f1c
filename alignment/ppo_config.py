"""PPOArguments: transformers' TrainingArguments (optimiser, schedule, batch sizes, seed, logging, saving) plus PPO's.

One PPO step: ``rollout_batch_size`` prompts per process are answered by sampling, scored, and learned from over
``num_ppo_epochs`` passes, each split into ``num_mini_batches`` optimiser steps of ``per_device_train_batch_size`` x
``gradient_accumulation_steps`` episodes. ``max_steps`` counts PPO steps (otherwise ``num_train_epochs`` passes over
the prompts); ``eval_steps`` (with ``eval_strategy: steps``) is how often held-out prompts are answered and saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from alignment.ppo_math import KL_ESTIMATORS

VALUE_INITS = ("reward", "policy")


@dataclass
class PPOArguments(TrainingArguments):
    """The PPO run's settings; defaults follow Huang et al. 2024 where they say, TrainingArguments' elsewhere."""

    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "The reward model: a Concord reward run (run:NAME), a folder or a hub id of a one-score "
                          "sequence classifier. It keeps its own tokenizer and chat template: responses are decoded "
                          "and re-encoded for it."},
    )  # fmt: skip
    value_model_init: str = field(
        default="reward",
        metadata={"help": "Where the value model starts: the reward model (a decoder sharing the policy's tokenizer: "
                          "per-token values from its backbone and score head), or the policy's backbone with a new "
                          "value head (needed when the reward model is an encoder or has another tokenizer).",
                  "choices": list(VALUE_INITS)},
    )  # fmt: skip
    rollout_batch_size: int = field(
        default=64, metadata={"help": "Prompts answered per process in each PPO step (episodes per step / processes)."}
    )
    num_mini_batches: int = field(default=1, metadata={"help": "Optimiser steps per pass over a rollout batch."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    response_length: int = field(default=53, metadata={"help": "Most tokens sampled per response."})
    max_prompt_length: int = field(
        default=512, metadata={"help": "Prompts longer than this (in policy tokens) are cut from the left."}
    )
    temperature: float = field(
        default=0.7,
        metadata={"help": "Sampling temperature; log-probabilities are taken at the same temperature everywhere."},
    )
    kl_coef: float = field(
        default=0.05, metadata={"help": "Weight of the per-token KL penalty against the reference (the start value "
                                        "when kl_target makes it adaptive)."}
    )  # fmt: skip
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "KL estimator in the penalty: k1 (log-ratio) or k3 (non-negative, lower variance).",
                  "choices": list(KL_ESTIMATORS)},
    )  # fmt: skip
    kl_target: float | None = field(
        default=None,
        metadata={"help": "Target KL per response (nats): set, the coefficient adapts towards it (Ziegler et al. "
                          "2019); unset, it stays kl_coef."},
    )  # fmt: skip
    kl_horizon: int = field(default=10_000, metadata={"help": "Episodes over which the adaptive coefficient moves."})
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy's probability ratio."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "How far a value may move from its rollout value before it is clipped."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss against the policy loss."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE."})
    lam: float = field(default=0.95, metadata={"help": "Lambda of GAE (bias / variance trade-off of advantages)."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Whiten the per-token rewards (their level kept) before GAE."}
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of a response cut off at response_length without an EOS."},
    )
    reward_max_length: int | None = field(
        default=512, metadata={"help": "Longest reward-model input (its tokens); longer dialogues are cut from the "
                                       "left, as reward training cut them."}
    )  # fmt: skip
    num_sample_prompts: int = field(
        default=16,
        metadata={"help": "Held-out prompts answered at the start, every eval_steps and at the end, saved with "
                          "their scores in samples.jsonl (0: none)."},
    )  # fmt: skip
    # TrainingArguments' defaults that do not suit PPO.
    learning_rate: float = field(default=3e-6, metadata={"help": "Initial learning rate (AdamW)."})
    gradient_accumulation_steps: int = field(
        default=8, metadata={"help": "Micro-batches per optimiser step (accelerate's gradient accumulation)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every X PPO steps."})

    def __post_init__(self) -> None:
        if self.value_model_init not in VALUE_INITS:
            raise ValueError(
                f"value_model_init must be one of {', '.join(VALUE_INITS)}; got {self.value_model_init!r}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}; got {self.kl_estimator!r}")
        self._check_batches()
        positive = ("response_length", "max_prompt_length", "temperature", "cliprange", "cliprange_value",
                    "num_ppo_epochs", "kl_horizon")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} must be positive; got {value}")
        if self.kl_coef < 0 or self.vf_coef < 0 or self.num_sample_prompts < 0:
            raise ValueError("kl_coef, vf_coef and num_sample_prompts cannot be negative")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError(f"kl_target must be positive (or unset for a fixed coefficient); got {self.kl_target}")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma must be in (0, 1] and lam in [0, 1]; got {self.gamma} and {self.lam}")
        if self.reward_max_length is not None and self.reward_max_length < 2:
            raise ValueError(f"reward_max_length must be at least 2 tokens; got {self.reward_max_length}")
        super().__post_init__()

    def _check_batches(self) -> None:
        if self.rollout_batch_size < 1 or self.num_mini_batches < 1:
            raise ValueError("rollout_batch_size and num_mini_batches must be at least 1")
        mini_batch = self.rollout_batch_size / self.num_mini_batches
        per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if mini_batch != per_step:
            raise ValueError(
                f"rollout_batch_size {self.rollout_batch_size} / num_mini_batches {self.num_mini_batches} = "
                f"{mini_batch:g} episodes per optimiser step, but per_device_train_batch_size "
                f"{self.per_device_train_batch_size} x gradient_accumulation_steps {self.gradient_accumulation_steps}"
                f" = {per_step}: make them equal"
            )

    @property
    def mini_batch_size(self) -> int:
        """Episodes per optimiser step on each process."""
        return self.rollout_batch_size // self.num_mini_batches
