"""The dataset card: imported text (sources, licenses, the campaign's name) is shown as text, never as structure."""

import re

import pytest
import yaml
from huggingface_hub import DatasetCard
from markdown_it import MarkdownIt

from storage.card import dataset_card

HOSTILE = [
    "x\n---\nlicense: evil",
    "<script>alert(1)</script>",
    "a | b |\n|---|---|",
    "# Heading\n\n- item",
    "[click](javascript:alert(1)) ![img](x.png) **bold** _it_ `code` ~~gone~~",
    "1. ordered &amp; entity \\ backslash",
    "> quoted <b>html</b>",
    "- a list",
    "+ another",
    "12) numbered",
]
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def card(campaign: str = "helpful", source: str = "hh-rlhf", license: str | None = "MIT", model: str = "gpt-2") -> str:
    return dataset_card(
        campaign=campaign, kind="preference", counts={"train": 3, "test": 1}, filters={"policy": "majority"},
        dropped={"tie": 1}, figures={"raw agreement": 0.8}, guideline_versions=[1],
        provenance={(source, license): 4}, models={model: {"responses": 8, "chosen": 4}},
    )  # fmt: skip


def front_matter(text: str) -> dict:
    head, sep, _ = text.partition("\n---\n")
    assert head.startswith("---\n") and sep
    return yaml.safe_load(head.removeprefix("---\n"))


def tokens(text: str) -> list:
    """The body's markdown tokens, inline ones included, as a renderer sees them."""
    body = text.split("\n---\n", 1)[1]
    return [t for block in MARKDOWN.parse(body) for t in [block, *(block.children or [])] if t.type != "inline"]


def structure(text: str) -> list[tuple[str, str]]:
    """Everything but the plain text: what imported text must never add to or change (HTML, links, a heading)."""
    return [(token.type, token.tag) for token in tokens(text) if token.type not in ("text", "softbreak")]


def shown_text(text: str) -> list[str]:
    """What a reader sees: each run of plain text, unescaped as markdown renders it."""
    return [token.content for token in tokens(text) if token.type == "text"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_imported_text_changes_neither_the_front_matter_nor_the_markdown(hostile):
    plain, loaded = card(), card(campaign=hostile, source=hostile, license=hostile, model=hostile)
    assert front_matter(loaded) == front_matter(plain) | {"license": "other"}  # no valid Hub id: "other"
    assert DatasetCard(loaded).data.license == "other"
    assert structure(loaded) == structure(plain)
    flat = re.sub(r"\s+", " ", hostile).strip()  # one line: a newline may not start a block of its own
    shown = shown_text(loaded)
    assert f"{flat}: preference export" in shown and f"{flat} ({flat}): 4 rows" in shown  # heading; source, license
    assert shown.count(flat) == 2  # the intro's campaign name, in bold; the model's name in its table cell


def test_a_valid_license_id_reaches_the_front_matter_and_stays_readable():
    assert front_matter(card(license="MIT"))["license"] == "mit"
    single = dataset_card(
        campaign="helpful", kind="preference", counts={"train": 1}, filters={}, dropped={}, figures={},
        guideline_versions=[], provenance={("Anthropic/hh-rlhf", "CC-BY-4.0"): 1},
    )  # fmt: skip
    assert front_matter(single)["license"] == "cc-by-4.0"
    assert "- Anthropic/hh-rlhf (CC-BY-4.0): 1 rows" in single  # ordinary names are left as they are
