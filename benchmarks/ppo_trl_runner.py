"""One PPO run of TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer``, for benchmarks/ppo.py.

Run by the Python of the benchmark's own virtual environment (TRL 1.12 cannot live beside Concord's TRL), so it imports
TRL, transformers and torch only, never Concord:

    <venv>/bin/python benchmarks/ppo_trl_runner.py job.json

job.json holds ``policy`` and ``reward`` (model folders sharing one tokenizer), ``prompts`` (each a list of chat
messages), ``seed``, ``output`` (a results JSON to write) and ``config`` (PPOConfig's fields). The value model starts
from the reward model, as TRL's PPO example does. The results: each step's mean score and KL as TRL logs them, the
time of each log, the optimiser steps really taken (counted on the torch optimiser), and the peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
import transformers
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
    set_seed,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer


class StepLog(TrainerCallback):
    """Each logged PPO step's score and KL, with the time it was logged."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "objective/scores" in logs:
            self.steps.append({"step": state.global_step, "score": logs["objective/scores"],
                               "kl": logs["objective/kl"], "time": time.perf_counter()})  # fmt: skip


def _prompts(tokenizer, prompts: list[list[dict]]) -> Dataset:
    """The prompts through the policy's chat template, assistant turn opened (what Concord's PPO answers)."""
    ids = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"] for messages in prompts]  # fmt: skip
    return Dataset.from_dict({"input_ids": ids})


def run(job: dict) -> dict:
    """Train as ``job`` says; returns the results (see the module docstring)."""
    torch.set_num_threads(1)
    set_seed(job["seed"])  # PPOTrainer does not seed numpy, which orders its mini-batches
    tokenizer = AutoTokenizer.from_pretrained(job["policy"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(job["policy"], dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(job["policy"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(job["reward"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(job["reward"], num_labels=1, dtype=torch.float32)
    dataset = _prompts(tokenizer, job["prompts"])
    config = PPOConfig(**job["config"])  # its seed is job["seed"]
    steps = StepLog()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference,
                         reward_model=reward, value_model=value, train_dataset=dataset, eval_dataset=dataset,
                         callbacks=[steps])  # fmt: skip
    updates = [0]
    trainer.optimizer.optimizer.register_step_post_hook(lambda *_: updates.__setitem__(0, updates[0] + 1))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    return {"steps": [s | {"time": s["time"] - start} for s in steps.steps], "train_s": wall,
            "optimizer_steps": updates[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "torch": torch.__version__}}  # fmt: skip


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    Path(spec["output"]).write_text(json.dumps(run(spec), indent=2), encoding="utf-8")
