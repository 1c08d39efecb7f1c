"""Every recipe parses; a recipe or override that cannot make a run fails naming the file and the key."""

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from trl import DPOConfig, KTOConfig, RewardConfig, SFTConfig

from alignment.online import GRPOArguments, RLOOArguments
from alignment.ppo_config import PPOArguments
from alignment.recipe import RecipeError, configs_from_resolved, parse_recipe, resolved_config, write_resolved

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CONFIGS = {"sft": SFTConfig, "reward": RewardConfig, "dpo": DPOConfig, "kto": KTOConfig, "ppo": PPOArguments,
           "rloo": RLOOArguments, "grpo": GRPOArguments}  # fmt: skip
METHOD_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if "accelerate" not in p.parts)
ACCELERATE = sorted((RECIPES / "accelerate").glob("*.yaml"))
CPU = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32"]
"""What a GPU recipe needs to parse on this CPU machine (TrainingArguments refuses bf16 without a GPU)."""
CHECKED = ("learning_rate", "max_length", "save_steps", "use_peft", "lora_r", "gguf_file", "beta", "kl_coef",
           "reward_model_path", "value_model_init", "rollout_batch_size")  # fmt: skip
"""Keys whose recipe value must reach its dataclass as written."""


def _name(path: Path) -> str:
    return str(path.relative_to(RECIPES))


@pytest.mark.parametrize("path", METHOD_RECIPES, ids=_name)
def test_every_recipe_parses(path):
    config = yaml.safe_load(path.read_text())
    gpu = not config.get("use_cpu")
    overrides = CPU + (["--load_in_4bit", "false"] if config.get("load_in_4bit") else []) if gpu else []
    data_args, training_args, model_args = parse_recipe(path, overrides)
    assert isinstance(training_args, CONFIGS[data_args.method])
    assert model_args.dtype == ("float32" if gpu else config["dtype"])
    for key in CHECKED:
        if key in config:  # every other key reached its dataclass as written
            assert getattr(training_args, key, getattr(model_args, key, None)) == config[key], key
    if "tiny" not in path.parts:  # real recipes checkpoint and log to TensorBoard (under the run folder)
        assert training_args.save_strategy == "steps" and training_args.report_to == ["tensorboard"]
        assert config["model_name_or_path"], "a real recipe names its model"
    if config.get("load_in_4bit"):
        assert model_args.use_peft and model_args.bnb_4bit_quant_type == "nf4"


@pytest.mark.parametrize("path", ACCELERATE, ids=_name)
def test_every_accelerate_config_loads(path):
    config = load_config_from_file(str(path))  # accelerate's own loader: unknown keys fail
    assert config.compute_environment == "LOCAL_MACHINE" and config.mixed_precision == "bf16"
    assert config.num_processes >= 1 and not config.use_cpu
    expected = {"single_gpu": "NO", "ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}
    assert config.distributed_type == expected[path.stem]
    if config.distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
    if config.distributed_type == "FSDP":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the saved model is whole


def test_the_accelerate_folder_holds_the_five_setups():
    assert {p.stem for p in ACCELERATE} == {"single_gpu", "ddp", "zero2", "zero3", "fsdp"}


def test_overrides_win_and_the_resolved_config_is_written(tmp_path):
    overrides = ["--learning_rate", "2e-3", "--campaign", "other", "--dtype", "bfloat16"]
    data_args, training_args, model_args = parse_recipe(RECIPES / "tiny" / "dpo.yaml", overrides)
    assert (training_args.learning_rate, data_args.campaign, model_args.dtype) == (2e-3, "other", "bfloat16")
    written = yaml.safe_load(
        write_resolved(resolved_config(data_args, training_args, model_args), tmp_path).read_text()
    )
    assert written["training"]["learning_rate"] == 2e-3 and written["data"]["campaign"] == "other"
    assert written["training"]["run_name"].startswith("dpo-")


def _recipe(tmp_path, **changes) -> Path:
    config = yaml.safe_load((RECIPES / "tiny" / "dpo.yaml").read_text()) | changes
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v != "DROP"}))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lerning_rate": 1e-3}, "unknown key 'lerning_rate' (did you mean 'learning_rate'?)"),
        ({"learning_rate": [1, 2]}, "learning_rate: [1, 2] is not a valid"),
        ({"max_steps": "many"}, "max_steps: 'many' is not a valid"),
        ({"dtype": "float64"}, "dtype: 'float64' is not one of"),
        ({"dtype": "DROP"}, "dtype is not set"),
        ({"torch_dtype": "float32", "dtype": "DROP"}, "unknown key 'torch_dtype'"),
        ({"output_dir": "elsewhere"}, "output_dir is chosen by the run"),
        ({"method": "rlhf"}, "method must be one of"),
        ({"policy": "loudest"}, "policy: 'loudest' is not one of"),
        ({"dataset": "some/name"}, "set exactly one of campaign and dataset"),
    ],
)
def test_a_bad_recipe_fails_naming_the_problem(tmp_path, changes, message):
    path = _recipe(tmp_path, **changes)
    with pytest.raises(RecipeError) as caught:
        parse_recipe(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["--learning_rate", "fast"], "invalid float value: 'fast'"), (["--lerning_rate", "1"], "--lerning_rate")],
)
def test_a_bad_override_fails_naming_it(overrides, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(RECIPES / "tiny" / "dpo.yaml", overrides)


def test_the_resolved_config_rebuilds_the_same_configs(tmp_path):
    overrides = ["--eos_token", "<|im_end|>", "--max_length", "99", "--model_name_or_path", "some/model"]
    data_args, training_args, model_args = parse_recipe(RECIPES / "tiny" / "sft.yaml", overrides)
    path = write_resolved(resolved_config(data_args, training_args, model_args), tmp_path)
    written = yaml.safe_load(path.read_text())
    assert written["training"]["eos_token"] == "<|im_end|>"  # to_dict would have masked it as "<EOS_TOKEN>"
    again = configs_from_resolved(written)
    assert again[0] == data_args and again[2] == model_args
    assert (again[1].eos_token, again[1].max_length, again[1].assistant_only_loss) == ("<|im_end|>", 99, True)


def test_an_empty_gguf_file_on_the_command_line_unsets_it():
    path = RECIPES / "smollm2-135m" / "dpo.yaml"
    assert parse_recipe(path)[2].gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert parse_recipe(path, ["--model_name_or_path", "run:sft", "--gguf_file", ""])[2].gguf_file is None
