"""Recipe YAML + command-line overrides -> (DataArguments, <Method>Config, ModelConfig), through TRL's TrlParser.

TrlParser turns the YAML into argparse defaults, which argparse neither type-checks (unless they are strings) nor
checks against choices: so every YAML value is checked here against its field's type first, and a misspelled key is
named with the closest real one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError
from trl import DPOConfig, KTOConfig, RewardConfig, SFTConfig, TrlParser

from alignment.arguments import METHODS, DataArguments, ModelArguments
from alignment.online import GRPOArguments, RLOOArguments
from alignment.ppo_config import PPOArguments

CONFIGS = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    "dpo": DPOConfig,
    "kto": KTOConfig,
    "ppo": PPOArguments,
    "rloo": RLOOArguments,
    "grpo": GRPOArguments,
}


class RecipeError(ValueError):
    """A recipe or an override that cannot make a run; the message names the file and the key."""


def _load(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise RecipeError(f"{path}: cannot read the recipe: {error}") from error
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of key: value")
    return config


def _override(overrides: list[str], key: str) -> str | None:
    """The value ``--key value`` or ``--key=value`` sets on the command line, if any."""
    for i, arg in enumerate(overrides):
        if arg == f"--{key}" and i + 1 < len(overrides):
            return overrides[i + 1]
        if arg.startswith(f"--{key}="):
            return arg.split("=", 1)[1]
    return None


def _check_values(config: dict[str, Any], classes: tuple[type, ...], path: Path) -> None:
    fields = {f.name: (f, typing.get_type_hints(cls)[f.name]) for cls in classes for f in dataclasses.fields(cls)}
    for key, value in config.items():
        if key not in fields or not fields[key][0].init:
            close = difflib.get_close_matches(key, fields, n=1)
            raise RecipeError(f"{path}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        field, hint = fields[key]
        try:
            TypeAdapter(hint).validate_python(value)
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise RecipeError(f"{path}: {key}: {value!r} is not a valid {hint} ({reason})") from error
        choices = field.metadata.get("choices")
        if choices and value not in choices:
            raise RecipeError(f"{path}: {key}: {value!r} is not one of {choices}")


def parse_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[DataArguments, Any, ModelArguments]:
    """Parse ``path`` with ``overrides`` (``--key value`` strings) into the three argument dataclasses."""
    path, overrides = Path(path), list(overrides)
    config = _load(path)
    method = _override(overrides, "method") or config.get("method")
    if method not in METHODS:
        raise RecipeError(f"{path}: method must be one of {', '.join(METHODS)}; got {method!r}")
    classes = (DataArguments, CONFIGS[method], ModelArguments)
    _check_values(config, classes, path)
    if "dtype" not in config and _override(overrides, "dtype") is None:
        raise RecipeError(f"{path}: dtype is not set: every recipe declares it (float32, bfloat16 or float16)")
    if "output_dir" in config or _override(overrides, "output_dir") is not None:
        raise RecipeError(f"{path}: output_dir is chosen by the run (<output_root>/<run_name>/model): set those")
    parser = TrlParser(classes, exit_on_error=False)
    parser.set_defaults_with_config(**config)
    try:
        data_args, training_args, model_args = parser.parse_args_into_dataclasses(args=overrides)
    except Exception as error:  # noqa: BLE001  (argparse, HfArgumentParser and the __post_init__ checks all land here)
        raise RecipeError(f"{path}: {error}") from error
    # TRL's run_name names the run everywhere: the TrainingRun row, the run folder, trackers.
    training_args.run_name = training_args.run_name or f"{method}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    return data_args, training_args, model_args


def resolved_config(data_args: DataArguments, training_args: Any, model_args: ModelArguments) -> dict[str, Any]:
    """The three configurations as plain JSON-able data: what the run's config.yaml and TrainingRun.recipe hold."""
    training = training_args.to_dict()
    # to_dict masks every *_token field as "<NAME>"; only hub_token is a secret, eos_token/pad_token are settings.
    training |= {
        name: getattr(training_args, name) for name in training if name.endswith("_token") and name != "hub_token"
    }
    resolved = {"data": dataclasses.asdict(data_args), "training": training, "model": dataclasses.asdict(model_args)}
    return json.loads(json.dumps(resolved, default=str))


def configs_from_resolved(resolved: dict[str, Any]) -> tuple[DataArguments, Any, ModelArguments]:
    """The three dataclasses back from a run's config.yaml (what resolved_config wrote)."""
    data_args = DataArguments(**resolved["data"])
    init = {f.name for f in dataclasses.fields(CONFIGS[data_args.method]) if f.init}
    training = {k: v for k, v in resolved["training"].items() if k in init and k != "hub_token"}
    return data_args, CONFIGS[data_args.method](**training), ModelArguments(**resolved["model"])


def write_resolved(resolved: dict[str, Any], run_dir: Path) -> Path:
    """Write ``config.yaml`` into the run folder, so the run can be repeated."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    return path
