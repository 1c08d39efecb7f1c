"""What a PPO run keeps on disk: checkpoints it resumes from, its JSONL logs, and the trained policy.

checkpoint-N/ is accelerate's state (policy and value weights, optimiser, learning-rate schedule, KL coefficient, every
process's RNG) plus trainer_state.json (step, episodes). It is written as tmp-checkpoint-N/ and renamed once complete,
so a run killed while saving leaves no checkpoint-N/ to resume from. On resume the JSONL logs lose the lines of the
steps after the checkpoint: those steps run again.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from alignment.ppo_config import PPOArguments
from alignment.ppo_math import KLController
from alignment.rollout import Roles

log = logging.getLogger(__name__)

STATE = "trainer_state.json"
LOGS = ("metrics.jsonl", "samples.jsonl")


@dataclass
class PPORun:
    """A PPO run in progress: what every step reads and changes."""

    accelerator: Accelerator
    roles: Roles
    args: PPOArguments
    model: Any  # rollout.PolicyAndValue, prepared by accelerate (DDP, DeepSpeed)
    optimizer: Any
    kl: KLController
    output: Path  # output_dir
    scheduler: Any = None  # the learning-rate schedule, once the number of steps is known
    episodes: int = 0


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def heldout_summary(path: Path, step: int) -> dict[str, float]:
    """Mean score and KL of the held-out answers samples.jsonl holds for ``step`` (empty when none)."""
    lines = [record for record in read_jsonl(path) if record["step"] == step]
    if not lines:
        return {}
    return {"heldout_score": sum(r["score"] for r in lines) / len(lines),
            "heldout_kl": sum(r["kl"] for r in lines) / len(lines)}  # fmt: skip


def truncate_logs(run: PPORun, step: int) -> None:
    """Keep the JSONL logs' lines of steps up to ``step`` (none at all when the run starts from scratch): the steps
    after it run again."""
    if run.accelerator.is_main_process:
        for name in LOGS:
            path = run.output / name
            kept = [record for record in read_jsonl(path) if step > 0 and record["step"] <= step]
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    run.accelerator.wait_for_everyone()


def _rotate(output: Path, limit: int | None) -> None:
    if not limit:
        return
    found = sorted(output.glob(f"{PREFIX_CHECKPOINT_DIR}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for old in found[:-limit]:
        shutil.rmtree(old)


def save_checkpoint(run: PPORun, step: int) -> Path:
    """Write checkpoint-``step`` (see the module docstring), keeping at most save_total_limit of them."""
    accelerator, output = run.accelerator, run.output
    final, staging = output / f"{PREFIX_CHECKPOINT_DIR}-{step}", output / f"tmp-{PREFIX_CHECKPOINT_DIR}-{step}"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        state = {"step": step, "episodes": run.episodes, "kl_coef": run.kl.value}
        (staging / STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        staging.rename(final)
        _rotate(output, run.args.save_total_limit)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(run: PPORun, folder: str) -> int:
    """Restore the run from checkpoint ``folder``; returns the step it had reached."""
    run.accelerator.load_state(folder)
    state = json.loads((Path(folder) / STATE).read_text(encoding="utf-8"))
    run.episodes = state["episodes"]
    log.info("resumed PPO at step %d (%d episodes) from %s", state["step"], state["episodes"], folder)
    return state["step"]


def save_policy(run: PPORun) -> Path:
    """The trained policy (the LoRA adapter with use_peft) and its tokenizer, in output_dir."""
    accelerator, output = run.accelerator, run.output
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(run.model)  # gathered whole under ZeRO-3
    policy_state = {name.removeprefix("policy."): tensor for name, tensor in state.items()
                    if name.startswith("policy.")}  # fmt: skip
    policy = accelerator.unwrap_model(run.model).policy
    policy.save_pretrained(str(output), state_dict=policy_state, is_main_process=accelerator.is_main_process,
                           save_function=accelerator.save)  # fmt: skip
    if accelerator.is_main_process:
        run.roles.tokenizer.save_pretrained(str(output))
    return output
