"""Real data in, TRL rows out, nothing changed: every prompt, chosen and rejected text survives import and export."""

import gzip
import json

from datasets import load_from_disk

from storage.export import export_campaign
from storage.formats import render_hh
from storage.imports import import_file

HH = ("helpful-online", "helpful-rejection-sampled", "harmless-base")


def exported_rows(engine, campaign, out_dir):
    export_campaign(engine=engine, campaign=campaign, kind="preference", out_dir=out_dir, test_fraction=0.2)
    dataset = load_from_disk(str(out_dir / "dataset"))
    assert dataset["train"].num_rows and dataset["test"].num_rows
    return [*dataset["train"], *dataset["test"]]


def test_hh_rlhf_round_trips_exactly(engine, shared_data, tmp_path):
    originals = set()
    for name in HH:
        path = shared_data / "hh-rlhf" / name / "test.jsonl.gz"
        import_file(path, engine=engine, campaign="hh", drop_identical=True)
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            originals |= {(r["chosen"], r["rejected"]) for r in map(json.loads, lines) if r["chosen"] != r["rejected"]}
    rows = exported_rows(engine, "hh", tmp_path / "hh")
    rendered = [(render_hh(r["prompt"] + r["chosen"]), render_hh(r["prompt"] + r["rejected"])) for r in rows]
    assert len(rendered) == len(originals) == 6164
    assert set(rendered) == originals  # every prompt, chosen and rejected text, exactly; the chosen side kept
    assert {r["label_source"] for r in rows} == {"prior"}


def test_oasst_ranked_siblings_round_trip_with_their_order(engine, shared_data, tmp_path):
    path = shared_data / "oasst_en_100" / "en_100_tree.jsonl"
    import_file(path, engine=engine, campaign="oasst")
    replies = {}  # reply text -> (parent text, rank)

    def walk(node):
        ranked = [child for child in node.get("replies", []) if child.get("rank") is not None]
        for child in ranked:
            if child["role"] == "assistant" and not child.get("deleted"):
                replies[child["text"]] = (node["text"], child["rank"])
        for child in node.get("replies", []):
            walk(child)

    for line in path.read_text(encoding="utf-8").splitlines():
        walk(json.loads(line)["prompt"])
    rows = exported_rows(engine, "oasst", tmp_path / "oasst")
    assert len(rows) == 754
    for row in rows:
        (parent, better), (other_parent, worse) = (
            replies[row["chosen"][0]["content"]],
            replies[row["rejected"][0]["content"]],
        )
        assert parent == other_parent == row["prompt"][-1]["content"]
        assert better < worse  # rank 0 is the best
