"""The quality-proof benchmark's label simulation: what its three experiments compare must differ as designed."""

import importlib
import random
from pathlib import Path

import numpy as np
import pytest

from storage.formats import PairRecord, PromptRecord

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def proof(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.quality_proof")


def pairs(n: int, seed: int = 0) -> list[PairRecord]:
    rng = random.Random(seed)

    def reply(i: int, letter: str) -> str:  # unique texts: the truth is looked up by them
        return f"{i}" + letter * rng.randint(5, 50)

    return [PairRecord(PromptRecord(i, [{"role": "user", "content": f"q{i}"}]), reply(i, "a"), reply(i, "b"),
                       preference=rng.choice((-1, 1))) for i in range(n)]  # fmt: skip


def test_excellent_labels_beat_mediocre_ones_and_the_ladder_climbs(proof):
    data, rng = pairs(1500), random.Random(1)
    truth = {(p.response_a, p.response_b): p.preference for p in data}
    excellent, _ = proof.labelled(data, ["careful"] * 3, 3, 600, rng)
    mixed = [kind for kind, n in proof.MIXED_POOL.items() for _ in range(n)]
    mediocre, _ = proof.labelled(data, mixed, 1, 600, rng)
    assert len(excellent) == len(mediocre) == 600
    # careful raters are right ~72% of the time (6% ties): three of them ~80%; one judgment of the mixed pool ~65%
    assert 0.74 <= proof.label_accuracy(excellent, truth) <= 0.86
    assert 0.58 <= proof.label_accuracy(mediocre, truth) <= 0.72
    alphas = [
        proof.alpha(proof.labelled(data[:600], proof.raters_at(share), 3, None, rng)[1]) for share in (0.6, 0.3, 0)
    ]
    assert alphas == sorted(alphas) and alphas[0] < 0.4 and alphas[-1] > 0.85, alphas


def test_on_the_ladder_one_judgment_a_pair_loses_accuracy_with_agreement_and_three_outvote_the_random_raters(proof):
    """The two ladders (quality_proof.py's, and reward_probe.py's second): the same raters labelling each pair once,
    with their alpha measured on an overlap of three judgments, or by the majority of three."""
    data, rng = pairs(1500), random.Random(2)
    truth = {(p.response_a, p.response_b): p.preference for p in data}
    rungs = {share: proof.one_judgment_rung(data, share, 600, rng) for share in (0.6, 0.3, 0)}
    assert all(len(rows) == 600 for rows, _ in rungs.values())
    alphas = [measured for _, measured in rungs.values()]
    assert alphas == sorted(alphas) and alphas[0] < 0.4 and alphas[-1] > 0.85, alphas
    single = [proof.label_accuracy(rows, truth) for rows, _ in rungs.values()]
    majority = [proof.label_accuracy(proof.labelled(data, proof.raters_at(share), 3, 600, rng)[0], truth)
                for share in rungs]  # fmt: skip
    assert single == sorted(single) and single[0] < 0.76 and single[-1] > 0.94, single
    assert all(one < three for one, three in zip(single, majority, strict=True)), (single, majority)


def test_a_simulated_judgment_is_in_pair_terms_whichever_side_was_shown_left(proof):
    """A length-biased rater picks the longer response, shown left or right: in A/B terms, always the longer one."""
    data, rng = pairs(300), random.Random(2)
    votes = np.array([proof.judge("length", rng, p) for p in data])
    longer_is_b = np.array([np.sign(len(p.response_b) - len(p.response_a)) for p in data])
    assert (votes[longer_is_b != 0] == longer_is_b[longer_is_b != 0]).all()
