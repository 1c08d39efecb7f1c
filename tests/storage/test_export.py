"""Export: rows seeded with the models, exported, then read back from every file format."""

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset, load_from_disk
from huggingface_hub import DatasetCard
from sqlmodel import select

from storage.db import write_session
from storage.export import export_campaign
from storage.frames import calibration_frame_for, judgment_frame_for
from storage.models import (
    Adjudication,
    AuditEvent,
    CalibrationItem,
    Campaign,
    Demonstration,
    DemonstrationReview,
    ExportRecord,
    Judgment,
    Pair,
    Prompt,
    Response,
    User,
)
from storage.quality.agreement import campaign_agreement
from storage.quality.raters import rater_table
from storage.selection import agreement_figures

KINDS_COLUMNS = {
    "sft": ["messages", "demonstration_id", "prompt_id", "author", "guideline_version", "claims"],
    "preference": ["prompt", "chosen", "rejected", "pair_id", "prompt_id", "n_judgments", "reasonings",
                   "rater_pseudonyms", "guideline_versions", "label_source", "agreement", "confidence", "strength",
                   "both_bad", "model_chosen", "model_rejected", "generation_params_chosen",
                   "generation_params_rejected"],
}  # fmt: skip
KINDS_COLUMNS["reward"] = KINDS_COLUMNS["preference"] + ["margin"]
KINDS_COLUMNS["kto"] = (
    ["prompt", "completion", "label"] + KINDS_COLUMNS["preference"][3:-4] + ["model", "generation_params"]
)


def add_prompt(session, campaign, text, **provenance):
    digest = hashlib.sha256(text.encode()).hexdigest()
    prompt = Prompt(campaign_id=campaign.id, messages=[{"role": "user", "content": text}], content_hash=digest,
                    **provenance)  # fmt: skip
    session.add(prompt)
    session.flush()
    return prompt


def add_pair(session, campaign, text, votes=(), *, prior=None, **provenance):
    """A pair answering prompt ``text`` with responses "<text> A" and "<text> B"; votes: (rater, preference[, bad])."""
    prompt = add_prompt(session, campaign, text, **provenance)
    a, b = (Response(prompt_id=prompt.id, text=f"{text} {side}", **provenance) for side in "AB")
    session.add_all([a, b])
    session.flush()
    pair = Pair(campaign_id=campaign.id, prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id,
                prior_preference=prior, content_hash=text, **provenance)  # fmt: skip
    session.add(pair)
    session.flush()
    for rater, preference, *bad in votes:
        add_judgment(session, pair, rater, preference, both_bad=bool(bad and bad[0]))
    return pair


def add_judgment(session, pair, rater, preference, *, both_bad=False, supersedes=None, version=1, left="a"):
    judgment = Judgment(pair_id=pair.id, rater_id=rater.id, preference=preference, both_bad=both_bad, left=left,
                        guideline_version=version, reasoning=f"{rater.username} says {preference}",
                        supersedes_id=supersedes and supersedes.id)  # fmt: skip
    session.add(judgment)
    session.flush()
    return judgment


@pytest.fixture
def seeded(engine):
    """Campaign "c1" with one pair per case; returns {case: pair id} and the raters."""
    with write_session(engine) as s, s.begin():
        campaign = Campaign(name="c1")
        s.add(campaign)
        raters = [User(username=f"r{i}", password_hash="-") for i in range(3)]
        s.add_all(raters)
        s.flush()
        r1, r2, r3 = raters
        pairs = {
            "b wins": add_pair(s, campaign, "b wins", [(r1, 2), (r2, 1), (r3, -1)]),
            "a wins": add_pair(s, campaign, "a wins", [(r1, -2), (r2, -1)]),
            "tie": add_pair(s, campaign, "tie", [(r1, 0), (r2, 0)]),
            "both bad": add_pair(s, campaign, "both bad", [(r1, 1, True), (r2, 2, True), (r3, 1)]),
            "one bad": add_pair(s, campaign, "one bad", [(r1, 1, True), (r2, 1)]),  # half is no majority
            "policies differ": add_pair(s, campaign, "policies differ", [(r1, -2), (r2, 1)]),
            "prior": add_pair(s, campaign, "prior", prior=2, source="hh-rlhf", license="MIT"),
            "unlabelled": add_pair(s, campaign, "unlabelled"),
        }
        pseudonyms = {rater.id: rater.pseudonym for rater in raters}
    return {"pairs": {case: pair.id for case, pair in pairs.items()}, "pseudonyms": pseudonyms}


def export(engine, tmp_path, name="out", **options):
    options = {"campaign": "c1", "kind": "preference", "test_fraction": 0.0} | options
    result = export_campaign(engine=engine, out_dir=tmp_path / name, **options)
    return result, load_from_disk(str(tmp_path / name / "dataset"))


def by_pair(dataset):
    return {row["pair_id"]: row for split in dataset.values() for row in split}


def case_rows(seeded, dataset):
    names = {pair_id: case for case, pair_id in seeded["pairs"].items()}
    return {names[pair_id]: row for pair_id, row in by_pair(dataset).items()}


def test_preference_rows_are_trl_conversational_with_the_consensus_side_chosen(engine, tmp_path, seeded):
    result, dataset = export(engine, tmp_path)
    rows = case_rows(seeded, dataset)
    assert set(rows) == {"b wins", "a wins", "one bad", "prior"}  # tie, both bad, the draw and the unlabelled dropped
    assert result.counts == {"train": 4, "test": 0} and "4 preference rows" in result.summary()
    features = dataset["train"].features
    assert features["prompt"] == features["chosen"] == features["rejected"]
    for row in rows.values():
        assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
    assert (rows["b wins"]["chosen"][0]["content"], rows["b wins"]["rejected"][0]["content"]) == (
        "b wins B",
        "b wins A",
    )
    assert rows["a wins"]["chosen"][0]["content"] == "a wins A"
    b_wins = rows["b wins"]
    assert b_wins["n_judgments"] == 3 and b_wins["agreement"] == pytest.approx(2 / 3)
    assert b_wins["strength"] == pytest.approx(1.5) and b_wins["label_source"] == "judgments"
    assert b_wins["reasonings"] == ["r0 says 2", "r1 says 1", "r2 says -1"]
    assert (
        b_wins["rater_pseudonyms"] == list(seeded["pseudonyms"].values()) and b_wins["guideline_versions"] == [1] * 3
    )
    assert rows["prior"]["label_source"] == "prior" and rows["prior"]["agreement"] is None
    assert rows["prior"]["chosen"][0]["content"] == "prior B" and rows["prior"]["n_judgments"] == 0


def test_mean_policy_decides_a_draw_of_votes(engine, tmp_path, seeded):
    _, dataset = export(engine, tmp_path, policy="mean")
    row = case_rows(seeded, dataset)["policies differ"]
    assert row["chosen"][0]["content"] == "policies differ A" and row["strength"] == pytest.approx(0.5)


@pytest.mark.parametrize("kind", KINDS_COLUMNS)
def test_each_kind_has_its_columns(engine, tmp_path, seeded, kind):
    with write_session(engine) as s, s.begin():
        prompt = s.exec(select(Prompt).where(Prompt.content_hash == hashlib.sha256(b"a wins").hexdigest())).one()
        s.add(Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": "hi"}], source="oasst"))
    _, dataset = export(engine, tmp_path, kind=kind)
    assert dataset["train"].column_names == KINDS_COLUMNS[kind]


def test_kto_gives_each_pair_a_desirable_and_an_undesirable_row(engine, tmp_path, seeded):
    _, dataset = export(engine, tmp_path, kind="kto")
    rows = [(r["pair_id"], r["completion"][0]["content"], r["label"]) for r in dataset["train"]]
    b_wins = seeded["pairs"]["b wins"]
    assert [(text, label) for pair, text, label in rows if pair == b_wins] == [("b wins B", True), ("b wins A", False)]
    assert len(rows) == 8


def test_superseded_judgments_are_ignored(engine, tmp_path, seeded):
    with write_session(engine) as s, s.begin():
        pair = s.get(Pair, seeded["pairs"]["a wins"])
        r0_first, r1_first = s.exec(select(Judgment).where(Judgment.pair_id == pair.id).order_by(Judgment.id)).all()
        r0, r1 = s.get(User, r0_first.rater_id), s.get(User, r1_first.rater_id)
        r0_edit = add_judgment(s, pair, r0, 2, supersedes=r0_first, version=2)
        current = [add_judgment(s, pair, r1, 2, supersedes=r1_first), add_judgment(s, pair, r0, 1, supersedes=r0_edit)]
        current_ids = sorted(j.id for j in current)
    result, dataset = export(engine, tmp_path)
    row = case_rows(seeded, dataset)["a wins"]
    assert row["chosen"][0]["content"] == "a wins B" and row["n_judgments"] == 2
    assert row["reasonings"] == ["r1 says 2", "r0 says 1"] and row["guideline_versions"] == [1, 1]
    with write_session(engine) as s:
        others = [seeded["pairs"]["b wins"], seeded["pairs"]["one bad"]]
        others_held = s.exec(select(Judgment.id).where(Judgment.pair_id.in_(others))).all()
        record = s.get(ExportRecord, result.export_id)
    held = ",".join(map(str, sorted([*others_held, *current_ids])))
    assert record.judgment_ids_sha256 == hashlib.sha256(held.encode()).hexdigest()
    assert record.guideline_versions == [1]  # the version-2 edit was itself superseded


def test_ties_and_both_bad_are_kept_only_on_request(engine, tmp_path, seeded):
    _, dataset = export(engine, tmp_path, "reward", kind="reward", keep_ties=True, keep_both_bad=True)
    rows = case_rows(seeded, dataset)
    assert set(rows) == {"b wins", "a wins", "tie", "both bad", "one bad", "policies differ", "prior"}
    assert rows["tie"]["margin"] == 0 and rows["tie"]["chosen"][0]["content"] == "tie A"
    assert rows["both bad"]["both_bad"] and not rows["b wins"]["both_bad"]
    # (strength 1.5 - 1) x agreement 2/3: a split vote asks for a small margin
    assert rows["b wins"]["margin"] == pytest.approx(1 / 3)
    assert rows["a wins"]["margin"] == pytest.approx(0.5) and rows["prior"]["margin"] == 0
    with pytest.raises(ValueError, match="keep_ties applies to kind 'reward' only"):
        export(engine, tmp_path, "pref", keep_ties=True)
    assert not (tmp_path / "pref").exists()


def test_prior_labels_count_only_with_use_prior(engine, tmp_path, seeded):
    _, dataset = export(engine, tmp_path, use_prior=False)
    assert "prior" not in case_rows(seeded, dataset)


def test_split_is_grouped_by_prompt_and_deterministic(engine, tmp_path):
    with write_session(engine) as s, s.begin():
        campaign = Campaign(name="c1")
        rater = User(username="r", password_hash="-")
        s.add_all([campaign, rater])
        s.flush()
        for i in range(40):
            pair = add_pair(s, campaign, f"prompt {i}", [(rater, 1)])
            second = Pair(campaign_id=campaign.id, prompt_id=pair.prompt_id, response_a_id=pair.response_b_id,
                          response_b_id=pair.response_a_id, content_hash=f"{i} reversed")  # fmt: skip
            s.add(second)
            s.flush()
            add_judgment(s, second, rater, -1)
    first, dataset = export(engine, tmp_path, "first", test_fraction=0.5)
    second, again = export(engine, tmp_path, "second", test_fraction=0.5)
    prompts = {split: set(dataset[split]["prompt_id"]) for split in dataset}
    assert prompts["train"] and prompts["test"] and not prompts["train"] & prompts["test"]
    assert all(len(dataset[split]) == 2 * len(prompts[split]) for split in dataset)
    assert {s: again[s]["pair_id"] for s in again} == {s: dataset[s]["pair_id"] for s in dataset}
    for row in dataset["test"]:
        digest = hashlib.sha256(hashlib.sha256(row["prompt"][0]["content"].encode()).hexdigest().encode()).digest()
        assert int.from_bytes(digest[:8], "big") / 2**64 < 0.5
    assert first.counts == second.counts


def test_every_file_reloads_and_the_card_states_the_counts(engine, tmp_path, seeded):
    result, dataset = export(engine, tmp_path, test_fraction=0.2)
    out = result.out_dir
    # "one bad" hashes to 0.89, "a wins" to 0.26, "b wins" to 0.11, "prior" to 0.006
    assert result.counts == {"train": 2, "test": 2}
    for split, n in result.counts.items():
        pair_ids = dataset[split]["pair_id"]
        assert pq.read_table(out / "parquet" / f"{split}.parquet").column("pair_id").to_pylist() == pair_ids
        lines = (out / "jsonl" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["pair_id"] for line in lines] == pair_ids and len(pair_ids) == n
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "other" and card.data.task_categories == ["text-generation"]
    assert f"| train | {result.counts['train']} |" in card.text and f"| test | {result.counts['test']} |" in card.text
    assert "hh-rlhf (MIT): 1 rows" in card.text and "dropped, pairs whose consensus is a tie: 2" in card.text
    assert "raw agreement" in card.text and "Consensus policy `majority`" in card.text
    hub_layout = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # the card's configs find the parquet
    assert {split: len(hub_layout[split]) for split in hub_layout} == result.counts


def test_the_card_leaves_an_empty_split_out_of_its_configs(engine, tmp_path, seeded):
    result, _ = export(engine, tmp_path)
    assert result.counts["test"] == 0 and (result.out_dir / "parquet" / "test.parquet").exists()
    assert list(load_dataset(str(result.out_dir), cache_dir=str(tmp_path / "cache"))) == ["train"]


def test_record_and_audit_event_fingerprint_the_export(engine, tmp_path, seeded):
    with write_session(engine) as s:
        lead = User(username="lead", password_hash="-")
        s.add(lead)
        s.commit()
    result, dataset = export(engine, tmp_path, actor_id=lead.id)
    with write_session(engine) as s:
        record = s.get(ExportRecord, result.export_id)
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "export")).all()
        exported = sorted(by_pair(dataset))
        judgments = s.exec(select(Judgment.id, Judgment.rater_id).where(Judgment.pair_id.in_(exported))).all()
    assert record.pair_ids_sha256 == hashlib.sha256(",".join(map(str, exported)).encode()).hexdigest()
    judgment_ids = ",".join(str(j) for j, _ in sorted(judgments))
    assert record.judgment_ids_sha256 == hashlib.sha256(judgment_ids.encode()).hexdigest()
    assert record.rater_ids == sorted({r for _, r in judgments}) and record.guideline_versions == [1]
    assert (record.kind, record.row_count, record.created_by) == ("preference", 4, lead.id)
    assert record.filters["policy"] == "majority" and record.out_path == str(result.out_dir.resolve())
    assert [(e.actor_id, e.target, e.details["export_id"], e.details["rows"]) for e in events] == [
        (lead.id, "c1", record.id, 4)
    ]


def test_sft_rows_hold_current_demonstrations(engine, tmp_path):
    with write_session(engine) as s, s.begin():
        campaign = Campaign(name="c1")
        rater = User(username="writer", password_hash="-")
        s.add_all([campaign, rater])
        s.flush()
        prompt = add_prompt(s, campaign, "question")
        claims = [{"claim": "sky is blue", "status": "verified", "source": "eyes"}]
        draft = Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": "draft"}],
                              rater_id=rater.id, guideline_version=1)  # fmt: skip
        s.add(draft)
        s.flush()
        final = Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": "final"}],
                              claims=claims, rater_id=rater.id, guideline_version=2,
                              supersedes_id=draft.id)  # fmt: skip
        s.add(final)
        s.add(Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": "imported"}],
                            source="oasst", license="Apache-2.0"))  # fmt: skip
        s.flush()
        s.add(DemonstrationReview(demonstration_id=final.id, status="accepted"))
        pseudonym = rater.pseudonym
    result, dataset = export(engine, tmp_path, kind="sft")
    rows = list(dataset["train"])
    assert [row["messages"][-1]["content"] for row in rows] == ["final", "imported"]
    assert rows[0]["messages"] == [{"role": "user", "content": "question"}, {"role": "assistant", "content": "final"}]
    assert [row["author"] for row in rows] == [pseudonym, "oasst"]
    assert [row["guideline_version"] for row in rows] == [2, None] and rows[0]["claims"] == claims
    with write_session(engine) as s:
        record = s.get(ExportRecord, result.export_id)
    current = f"{draft.id + 1},{draft.id + 2}"  # "final" and "imported"; the draft is superseded
    assert record.guideline_versions == [2] and record.judgment_ids_sha256 == hashlib.sha256(b"").hexdigest()
    assert record.demonstration_ids_sha256 == hashlib.sha256(current.encode()).hexdigest()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"kind": "dpo"}, "kind must be one of"),
        ({"policy": "vote"}, "policy must be one of"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
        ({"min_agreement": 1.5}, r"min_agreement must be in \[0, 1\]; got 1.5"),
        ({"kind": "sft", "exclude_flagged_raters": True}, "apply to judgments: kind 'sft' has none"),
        ({"campaign": "nope"}, "no campaign named 'nope'"),
        ({"campaign": "empty"}, "campaign 'empty' has no preference rows"),
    ],
)
def test_bad_requests_fail_clearly_and_write_nothing(engine, tmp_path, seeded, options, error):
    with write_session(engine) as s, s.begin():
        s.add(Campaign(name="empty"))
    with pytest.raises(ValueError, match=error):
        export(engine, tmp_path, **options)
    assert not (tmp_path / "out").exists()
    with write_session(engine) as s:
        assert s.exec(select(ExportRecord)).all() == []


def test_an_existing_export_is_never_overwritten(engine, tmp_path, seeded):
    (tmp_path / "out").mkdir()  # an empty folder is fine
    result, _ = export(engine, tmp_path)
    with pytest.raises(FileExistsError, match="already exists and is not an empty folder"):
        export(engine, tmp_path, kind="kto")
    files = ["README.md", "dataset", "export.json", "jsonl", "parquet"]
    assert sorted(p.name for p in result.out_dir.iterdir()) == files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left behind


@pytest.fixture
def quality(engine):
    """Campaign "q": reliable raters g0..g2, a rater who always picks the left response and one who fails calibration.

    24 regular pairs where the reliable raters agree with the truth (the guesser judges half of them); 6 calibration
    pairs (B right) the guesser gets wrong; pair "target", where the two bad raters outvote g0. g1 judged pair p0
    twice: only the first counts for agreement. Returns the pair ids, rater ids and pseudonyms by name.
    """
    with write_session(engine) as s, s.begin():
        campaign = Campaign(name="q")
        raters = {name: User(username=name, password_hash="-") for name in ("g0", "g1", "g2", "lefty", "guesser")}
        s.add_all([campaign, *raters.values()])
        s.flush()
        g0, g1, g2, lefty, guesser = raters.values()
        pairs = {}
        for i in range(24):
            pair = pairs[f"p{i}"] = add_pair(s, campaign, f"regular {i}")
            truth, left = (1 if i % 2 else -1), ("a" if i // 2 % 2 else "b")
            for rater, preference in ((g0, 2 * truth), (g1, truth), (g2, truth * (1 + i % 3 % 2))):
                add_judgment(s, pair, rater, preference, left=left)
            add_judgment(s, pair, lefty, -1 if left == "a" else 1, left=left)
            if i % 2 == 0:  # 19 judgments in all: too few for any flag but calibration's
                add_judgment(s, pair, guesser, [-1, 0, 1][i % 3], left=left)
        add_judgment(s, pairs["p0"], g1, 2, left="b")  # a repeat, not an edit
        for i in range(6):
            pair = pairs[f"c{i}"] = add_pair(s, campaign, f"calibration {i}")
            s.add(CalibrationItem(pair_id=pair.id, expected=2, accepted=[1, 2], kind="safety"))
            for rater, preference in ((g0, 2), (g1, 1), (g2, 2), (guesser, -1)):
                add_judgment(s, pair, rater, preference, left="a")
        pairs["target"] = add_pair(s, campaign, "target", [(g0, -2), (lefty, 1), (guesser, 2)])
        return {"pairs": {name: pair.id for name, pair in pairs.items()},
                "raters": {name: rater.id for name, rater in raters.items()},
                "pseudonyms": {name: rater.pseudonym for name, rater in raters.items()}}  # fmt: skip


def q_rows(quality, dataset):
    names = {pair_id: name for name, pair_id in quality["pairs"].items()}
    return {names[pair_id]: row for pair_id, row in by_pair(dataset).items()}


def test_weighted_policy_trusts_the_reliable_rater_over_two_unreliable_ones(engine, tmp_path, quality):
    _, majority = export(engine, tmp_path, "majority", campaign="q")
    result, weighted = export(engine, tmp_path, "weighted", campaign="q", kind="reward", policy="weighted")
    assert q_rows(quality, majority)["target"]["chosen"][0]["content"] == "target B"
    target = q_rows(quality, weighted)["target"]
    assert target["chosen"][0]["content"] == "target A" and target["agreement"] == pytest.approx(1 / 3)
    assert target["strength"] == 2 and target["margin"] == pytest.approx(1 / 3) and 0.5 < target["confidence"] < 1
    for name, row in q_rows(quality, weighted).items():  # elsewhere the reliable raters carry the label
        side = "B" if name.startswith("c") or (name[0] == "p" and int(name[1:]) % 2) else "A"
        assert row["chosen"][0]["content"].endswith(side), name
    with write_session(engine) as s:
        assert s.get(ExportRecord, result.export_id).filters["policy"] == "weighted"
    assert "Consensus policy `weighted`: Dawid-Skene" in (result.out_dir / "README.md").read_text()


def test_min_agreement_drops_exactly_the_pairs_below_it(engine, tmp_path, seeded):
    _, everything = export(engine, tmp_path, "all")
    result, dataset = export(engine, tmp_path, "filtered", min_agreement=0.7)
    rows = case_rows(seeded, dataset)
    below = {case for case, row in case_rows(seeded, everything).items() if (row["agreement"] or 1.0) < 0.7}
    assert below == {"b wins"} and set(rows) == set(case_rows(seeded, everything)) - below
    assert rows["prior"]["agreement"] is None and rows["prior"]["confidence"] is None  # a prior label is kept
    card = (result.out_dir / "README.md").read_text()
    assert "dropped, pairs whose agreement is below min_agreement: 1" in card and "- min_agreement: 0.7" in card
    _, boundary = export(engine, tmp_path, "boundary", min_agreement=2 / 3)
    assert "b wins" in case_rows(seeded, boundary)  # agreement 2/3 is not below 2/3


def test_the_newest_adjudication_overrides_the_consensus(engine, tmp_path, seeded):
    pairs = seeded["pairs"]
    with write_session(engine) as s, s.begin():
        s.add_all([
            Adjudication(pair_id=pairs["b wins"], preference=2, note="first thought"),
            Adjudication(pair_id=pairs["b wins"], preference=-1, note="on reflection A"),  # newest wins
            Adjudication(pair_id=pairs["tie"], preference=2, note="B is right"),
            Adjudication(pair_id=pairs["a wins"], preference=-2, both_bad=True, note="both wrong"),
            Adjudication(pair_id=pairs["unlabelled"], preference=1, note="nobody judged it"),
        ])  # fmt: skip
    result, dataset = export(engine, tmp_path, min_agreement=0.9)
    rows = case_rows(seeded, dataset)
    # "a wins" was adjudicated both bad; min_agreement drops no adjudicated pair, though "b wins" agrees 1/3.
    assert set(rows) == {"b wins", "tie", "unlabelled", "one bad", "prior"}
    b_wins = rows["b wins"]
    assert b_wins["chosen"][0]["content"] == "b wins A" and b_wins["label_source"] == "adjudication"
    assert b_wins["strength"] == 1 and b_wins["agreement"] == pytest.approx(1 / 3) and b_wins["confidence"] is None
    assert rows["tie"]["chosen"][0]["content"] == "tie B" and rows["tie"]["agreement"] == 0
    assert rows["unlabelled"]["n_judgments"] == 0 and rows["unlabelled"]["agreement"] is None
    assert rows["prior"]["label_source"] == "prior"
    facts = json.loads((result.out_dir / "export.json").read_text())
    assert facts["figures"]["rows labelled by a lead's adjudication"] == 3
    assert "rows labelled by a lead's adjudication: 3" in (result.out_dir / "README.md").read_text()


def test_exclude_flagged_raters_leaves_their_judgments_out_before_consensus(engine, tmp_path, quality):
    result, dataset = export(engine, tmp_path, campaign="q", exclude_flagged_raters=True)
    rows = q_rows(quality, dataset)
    assert rows["target"]["chosen"][0]["content"] == "target A" and rows["target"]["n_judgments"] == 1
    pseudonyms, ids = quality["pseudonyms"], quality["raters"]
    good = {pseudonyms[name] for name in ("g0", "g1", "g2")}
    assert set().union(*(row["rater_pseudonyms"] for row in rows.values())) == good
    with write_session(engine) as s:
        record = s.get(ExportRecord, result.export_id)
    assert record.rater_ids == sorted(ids[name] for name in ("g0", "g1", "g2"))
    assert record.filters["excluded_raters"] == [
        {"rater_id": ids["lefty"], "pseudonym": pseudonyms["lefty"], "reasons": ["position_bias", "low_competence"],
         "n_judgments": 25},
        {"rater_id": ids["guesser"], "pseudonym": pseudonyms["guesser"], "reasons": ["low_calibration"],
         "n_judgments": 19},
    ]  # fmt: skip
    assert record.filters["flag_settings"] == {"min_calibration_accuracy": 0.7, "calibration_window": 20}
    card = (result.out_dir / "README.md").read_text()
    assert f"excluded rater {pseudonyms['lefty']} (position_bias, low_competence): 25 judgments left out" in card
    assert f"excluded rater {pseudonyms['guesser']} (low_calibration): 19 judgments left out" in card
    assert "lefty" not in card and "guesser" not in card  # pseudonyms only, never usernames
    facts = json.loads((result.out_dir / "export.json").read_text())  # the card's machine-readable twin
    assert facts["filters"]["excluded_raters"] == record.filters["excluded_raters"] and "lefty" not in str(facts)
    with write_session(engine) as s, s.begin():
        s.exec(select(Campaign).where(Campaign.name == "q")).one().calibration_threshold = 0.0
    result, _ = export(engine, tmp_path, "lenient", campaign="q", exclude_flagged_raters=True)
    with write_session(engine) as s:
        excluded = s.get(ExportRecord, result.export_id).filters["excluded_raters"]
    assert [rater["rater_id"] for rater in excluded] == [ids["lefty"]]  # the campaign's own threshold decides


def test_the_card_states_the_quality_engines_figures_for_exactly_the_exported_judgments(engine, tmp_path, quality):
    result, dataset = export(engine, tmp_path, campaign="q", min_agreement=0.65)
    exported = sorted(by_pair(dataset))
    assert quality["pairs"]["p0"] in exported  # holding g1's repeat, of which alpha counts the first judgment
    with write_session(engine) as s:
        campaign_id = s.exec(select(Campaign.id).where(Campaign.name == "q")).one()
        frame = judgment_frame_for(session=s, campaign_id=campaign_id)
        calibration = calibration_frame_for(session=s, campaign_id=campaign_id)
    kept = frame[frame["item"].isin(exported)]
    assert 0 < len(exported) < len(quality["pairs"]) and kept["item"].nunique() == len(exported)
    agreement = campaign_agreement(kept, n_boot=0)
    card = (result.out_dir / "README.md").read_text()
    assert f"- raters whose judgments were exported: {kept['rater'].nunique()}" in card
    assert f"- pairs judged by two or more raters: {agreement.n_items}" in card
    assert f"- Krippendorff's alpha, ordinal (-2..2): {round(agreement.alpha_ordinal.value, 4)}" in card
    assert f"- Krippendorff's alpha, nominal (A / tie / B): {round(agreement.alpha_nominal.value, 4)}" in card
    assert f"giving one A / tie / B label): {round(agreement.raw_agreement.value, 4)}" in card
    table = rater_table(frame, calibration=calibration).loc[sorted(kept["rater"].unique())]
    answers = table["calibration_n"].sum()
    accuracy = (table["calibration_accuracy"].fillna(0) * table["calibration_n"]).sum() / answers
    assert f"- calibration accuracy of the exported raters: {accuracy:.1%} over {answers} calibration answers" in card


def test_the_card_says_when_agreement_cannot_be_measured(engine, tmp_path):
    with write_session(engine) as s, s.begin():
        campaign = Campaign(name="c1")
        rater = User(username="solo", password_hash="-")
        s.add_all([campaign, rater])
        s.flush()
        add_pair(s, campaign, "judged once", [(rater, 1)])
        add_pair(s, campaign, "prior only", prior=-1)
    result, _ = export(engine, tmp_path)
    card = (result.out_dir / "README.md").read_text()
    assert "- agreement between raters: cannot be measured: no exported pair was judged by two raters" in card
    assert "- calibration accuracy of the exported raters: no calibration answers by these raters" in card


def test_card_agreement_figures_match_the_quality_engine_on_simulated_judgments():
    rng = np.random.default_rng(5)
    item = np.sort(rng.integers(0, 300, 1500))
    rater, truth = rng.integers(0, 12, 1500), rng.integers(-2, 3, 300)
    preference = np.where(rng.random(1500) < 0.6, truth[item], rng.integers(-2, 3, 1500))
    n_judgments = np.bincount(item, minlength=300)
    figures = agreement_figures(item, rater, preference, n_judgments, np.ones(300))
    agreement = campaign_agreement(pd.DataFrame({"item": item, "rater": rater, "preference": preference}), n_boot=0)
    assert figures["pairs judged by two or more raters"] == agreement.n_items
    assert figures["Krippendorff's alpha, ordinal (-2..2)"] == round(agreement.alpha_ordinal.value, 4)
    assert figures["Krippendorff's alpha, nominal (A / tie / B)"] == round(agreement.alpha_nominal.value, 4)
    raw = "raw agreement (share of rater pairs giving one A / tie / B label)"
    assert (
        figures[raw] == round(agreement.raw_agreement.value, 4)
        and figures["raters whose judgments were exported"] == 12
    )


def test_prior_labels_give_the_reward_loss_no_margin_unless_asked(engine, tmp_path, seeded):
    """An import says which response is preferred, never by how much: a constant margin would dominate the loss."""
    result, dataset = export(engine, tmp_path, "reward", kind="reward")
    prior = case_rows(seeded, dataset)["prior"]
    assert prior["label_source"] == "prior" and prior["strength"] == 2 and prior["margin"] == 0
    assert "prior_margin" in (result.out_dir / "README.md").read_text()
    _, asked = export(engine, tmp_path, "asked", kind="reward", prior_margin=0.5)
    assert case_rows(seeded, asked)["prior"]["margin"] == 0.5
    assert case_rows(seeded, asked)["b wins"]["margin"] == pytest.approx(1 / 3)  # judged rows keep theirs
    with pytest.raises(ValueError, match="prior_margin applies to kind 'reward' only"):
        export(engine, tmp_path, "pref", prior_margin=0.5)


def test_calibration_items_leave_training_exports_or_carry_their_gold_label(engine, tmp_path, quality):
    """Every rater voted B on c0 (gold: A much better); c1..c5 follow the gold. The wrong vote never labels c0."""
    with write_session(engine) as s:
        c0 = s.get(CalibrationItem, s.exec(select(CalibrationItem.id).where(
            CalibrationItem.pair_id == quality["pairs"]["c0"])).one())  # fmt: skip
    with write_session(engine) as s, s.begin():
        s.get(CalibrationItem, c0.id).expected = -2
    result, default = export(engine, tmp_path, "default", campaign="q")
    assert not {name for name in q_rows(quality, default) if name.startswith("c")}
    card = (result.out_dir / "README.md").read_text()
    assert "Calibration (gold) items are not in this export" in card and "calibration (gold) items" in card
    _, gold = export(engine, tmp_path, "gold", campaign="q", include_calibration="gold")
    row = q_rows(quality, gold)["c0"]
    assert row["chosen"][0]["content"] == "calibration 0 A" and row["label_source"] == "gold"
    assert q_rows(quality, gold)["c1"]["chosen"][0]["content"] == "calibration 1 B"
    _, votes = export(engine, tmp_path, "votes", campaign="q", include_calibration="votes")
    assert q_rows(quality, votes)["c0"]["chosen"][0]["content"] == "calibration 0 B"
    assert q_rows(quality, votes)["c0"]["label_source"] == "judgments"
    with pytest.raises(ValueError, match="include_calibration must be one of none, gold, votes"):
        export(engine, tmp_path, "bad", campaign="q", include_calibration="all")


def test_sft_exports_accepted_demonstrations_and_imported_ones_unless_rejected(engine, tmp_path):
    """A studio demonstration exports once accepted (or, asked, while unreviewed); a rejected one never does; the
    newest review counts; imported writing exports unless rejected. One row lands in train, with a note."""
    with write_session(engine) as s, s.begin():
        campaign, rater, lead = Campaign(name="c1"), User(username="writer", password_hash="-"), User(
            username="lead", password_hash="-")  # fmt: skip
        s.add_all([campaign, rater, lead])
        s.flush()
        demos = {}
        for text in ("accepted", "rejected", "unreviewed", "flipped", "imported", "imported-rejected"):
            prompt = add_prompt(s, campaign, f"question {text}")
            writer = {"source": "oasst"} if text.startswith("imported") else {"rater_id": rater.id}
            demos[text] = Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": text}],
                                        **writer)  # fmt: skip
            s.add(demos[text])
        s.flush()
        for text, status in [("accepted", "accepted"), ("rejected", "rejected"), ("flipped", "accepted"),
                             ("flipped", "rejected"), ("imported-rejected", "rejected")]:  # fmt: skip
            s.add(DemonstrationReview(demonstration_id=demos[text].id, status=status, note="n", reviewer_id=lead.id))
            s.flush()

    runs = iter(range(10))

    def exported(**options) -> list[str]:
        result = export_campaign(
            engine=engine, campaign="c1", kind="sft", out_dir=tmp_path / str(next(runs)), **options
        )
        splits = load_from_disk(str(result.out_dir / "dataset"))
        return sorted(row["messages"][-1]["content"] for split in splits.values() for row in split), result

    texts, result = exported(test_fraction=0.0)
    assert texts == ["accepted", "imported"]
    card = (result.out_dir / "README.md").read_text()
    assert (
        "demonstrations a lead rejected: 3" in card
        and "no lead has reviewed yet (include_unreviewed false): 1" in card
    )
    assert exported(include_unreviewed=True, test_fraction=0.0)[0] == ["accepted", "imported", "unreviewed"]
    with pytest.raises(ValueError, match="include_unreviewed applies to kind 'sft' only"):
        export_campaign(
            engine=engine, campaign="c1", kind="preference", out_dir=tmp_path / "p", include_unreviewed=True
        )

    # Every prompt hashed into test (fraction 0.99): train would be empty, so all go to train, and the card says so.
    texts, result = exported(test_fraction=0.99)
    assert result.counts == {"train": 2, "test": 0} and result.notes and "test split is empty" in result.summary()
    assert "**Note:** All 2 rows are in train" in (result.out_dir / "README.md").read_text()


def test_the_cards_label_counts_add_up_to_the_rows(engine, tmp_path, seeded):
    """A judged pair a lead decided counts once, as decided, not also as labelled by judgments."""
    with write_session(engine) as s, s.begin():
        pair = s.get(Pair, seeded["pairs"]["a wins"])
        s.add(Adjudication(pair_id=pair.id, preference=2, note="sure"))
    result, _ = export(engine, tmp_path, kind="preference")
    facts = json.loads((result.out_dir / "export.json").read_text())
    by_source = [value for name, value in facts["figures"].items() if name.startswith("rows labelled by")]
    assert (
        sum(by_source) == sum(result.counts.values())
        and facts["figures"]["rows labelled by a lead's adjudication"] == 1
    )
