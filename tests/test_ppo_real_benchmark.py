"""benchmarks/ppo_real.py's check that a policy's answers did not collapse, on answers counted by hand."""

from benchmarks.ppo_real import shape


def test_the_shape_of_answers_shows_a_collapse_onto_one_looping_reply():
    looping = {"completion": "A b a b a b", "tokens": 7, "eos": True}
    varied = {"completion": "owls hunt at night", "tokens": 5, "eos": False}
    collapsed = shape([looping, dict(looping)])
    # words a b a b a b: bigrams ab ba ab ba ab (2 distinct of 5, twice); trigrams aba bab aba bab (half repeated)
    assert collapsed == {"answers": 2, "mean_tokens": 7.0, "eos_rate": 1.0, "distinct_answers": 0.5,
                         "distinct_bigrams": 0.2, "repeated_trigrams": 0.5}  # fmt: skip
    healthy = shape([looping, varied])
    assert healthy["distinct_answers"] == 1.0 and healthy["eos_rate"] == 0.5 and healthy["mean_tokens"] == 6.0
    assert healthy["distinct_bigrams"] == round(5 / 8, 3) and healthy["repeated_trigrams"] == 0.25
