"""Every recipe parses; a recipe or override that cannot make a run fails naming the file and the key."""

from pathlib import Path

import pytest
import yaml
from trl import DPOConfig, KTOConfig, RewardConfig, SFTConfig

from alignment.recipe import RecipeError, parse_recipe, resolved_config, write_resolved

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CONFIGS = {"sft": SFTConfig, "reward": RewardConfig, "dpo": DPOConfig, "kto": KTOConfig}


@pytest.mark.parametrize("path", sorted(RECIPES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_parses(path):
    data_args, training_args, model_args = parse_recipe(path)
    assert isinstance(training_args, CONFIGS[data_args.method])
    assert model_args.dtype == yaml.safe_load(path.read_text())["dtype"]


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
        ({"method": "ppo"}, "method must be one of"),
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
