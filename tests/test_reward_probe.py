"""The reward-probe benchmark's linear head and its bookkeeping: the head must find a preference hidden in the
features (and fail on shuffled labels), an export's rows must map back to their pairs in either order, and the
backbones' features are embedded once per recipe, length and pairs."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from storage.formats import PairRecord, PromptRecord

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.reward_probe")


def toy(n: int, seed: int = 0) -> tuple[np.ndarray, list[PairRecord]]:
    """Features of A and B (2, n, 16) and pairs whose label follows a hidden direction, with a little noise."""
    rng = np.random.default_rng(seed)
    feats, direction = rng.normal(size=(2, n, 16)), rng.normal(size=16)
    margin = (feats[0] - feats[1]) @ direction + rng.normal(scale=0.5, size=n)
    pairs = [PairRecord(PromptRecord(i, [{"role": "user", "content": f"q{i}"}]), f"a{i}", f"b{i}" + "x" * (i % 7),
                        preference=-1 if m > 0 else 1) for i, m in enumerate(margin)]  # fmt: skip
    return feats, pairs


def test_the_head_learns_the_direction_the_labels_follow_and_not_shuffled_ones(probe):
    feats, pairs = toy(600)
    train, test = np.arange(400), np.arange(400, 600)
    a_won = np.array([p.preference < 0 for p in pairs])
    learned = probe.heldout_figures(feats[:, test] @ probe.fit(feats, train, a_won[train], 1.0), pairs, test)
    assert learned["accuracy"] > 0.85 and learned["correct"].mean() == pytest.approx(learned["accuracy"], abs=1e-3)
    longer = learned["longer_higher"]  # over the pairs whose replies differ in length: B is longer unless i % 7 == 0
    assert len(longer) == sum(i % 7 != 0 for i in test)
    assert longer.mean() == pytest.approx(learned["longer_response_scored_higher"], abs=1e-3)
    shuffled = np.random.default_rng(1).permutation(a_won[train])
    chance = probe.heldout_figures(feats[:, test] @ probe.fit(feats, train, shuffled, 1.0), pairs, test)
    assert 0.35 < chance["accuracy"] < 0.65


def test_out_of_fold_accuracy_is_over_every_pair_and_finds_the_better_backbone(probe):
    feats, pairs = toy(500)
    noise = np.random.default_rng(2).normal(size=feats.shape)
    figures, best = probe.backbones({"good": {"mean": feats}, "noise": {"mean": noise}}, pairs)
    assert len(best["good"]["correct"]) == len(best["noise"]["correct"]) == 500
    assert best["good"]["accuracy"] > 0.85 > 0.65 > best["noise"]["accuracy"]
    assert figures["mcnemar_p"] < 1e-6


def test_an_exported_row_maps_back_to_its_pair_whichever_side_was_chosen(probe, tmp_path):
    _, pairs = toy(3)
    where = {probe.key(p.prompt.messages, p.response_a, p.response_b): i for i, p in enumerate(pairs)}

    def row(p: PairRecord, a_chosen: bool) -> dict:
        chosen, rejected = (p.response_a, p.response_b) if a_chosen else (p.response_b, p.response_a)
        return {"prompt": p.prompt.messages, "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}  # fmt: skip

    (tmp_path / "jsonl").mkdir()
    rows = [row(pairs[2], False), row(pairs[0], True)]
    (tmp_path / "jsonl" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    index, a_won = probe.exported_index(tmp_path, where)
    assert index.tolist() == [2, 0] and a_won.tolist() == [False, True]


def test_seeds_pool_their_discordant_pairs_into_one_test(probe):
    def seed(a: list[bool], b: list[bool]) -> dict:
        def head(right: list[bool]) -> dict:  # the same pairs for accuracy and length: b right, and less often longer
            right = np.array(right)
            return {"accuracy": right.mean(), "correct": right,
                    "longer_response_scored_higher": 1 - right.mean(), "longer_higher": ~right}  # fmt: skip

        return {"x": {"m": head(a)}, "y": {"m": head(b)}}

    per_seed = [seed([True] * 10 + [False] * 10, [True] * 18 + [False] * 2)] * 3
    pooled = probe.pooled(per_seed, "m", "x", "y")
    assert pooled["discordant"] == [24, 0] and pooled["seeds_ahead"] == 3 and pooled["mean_gain"] == 0.4
    assert pooled["pooled_p"] < 1e-6 < pooled["seed_p"][0] < 0.05
    length = probe.pooled(per_seed, "m", "x", "y", "longer_higher")
    assert length["discordant"] == [0, 24] and length["seeds_ahead"] == 0 and length["mean_gain"] == -0.4
    assert length["pooled_p"] == pooled["pooled_p"]


def test_features_are_embedded_once_and_read_back_for_the_same_recipe_length_and_pairs(probe, tmp_path, monkeypatch):
    embedded = []

    def features(recipe, pairs, max_length):
        embedded.append(len(pairs))
        return {"mean": np.full((2, len(pairs), 4), len(embedded), dtype=np.float32)}

    monkeypatch.setattr(probe, "features", features)
    monkeypatch.setattr(probe, "CACHE", tmp_path / "cache")
    recipe = tmp_path / "reward.yaml"
    recipe.write_text("model_name_or_path: x\n")
    _, pairs = toy(5)
    first, took = probe.cached_features(recipe, pairs, 64)
    again, read = probe.cached_features(recipe, pairs, 64)
    assert took is not None and read is None and embedded == [5]
    assert np.array_equal(first["mean"], again["mean"])
    for changed in ((recipe, pairs[:4], 64), (recipe, pairs, 32)):  # other pairs, another length: embedded anew
        assert probe.cached_features(*changed)[1] is not None
    recipe.write_text("model_name_or_path: y\n")
    assert probe.cached_features(recipe, pairs, 64)[0]["mean"][0, 0, 0] == 4
    assert embedded == [5, 4, 5, 5]
