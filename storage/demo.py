"""The demo campaign a fresh studio starts with: written by the project, imported through the real import path."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from storage.db import write_session
from storage.formats import prompt_hash
from storage.imports import import_file
from storage.models import CalibrationItem, Campaign, Pair, Prompt, Response

DEMO = Path(__file__).parent / "demo"
NAME = "demo"


def seed_demo(engine: Engine) -> str | None:
    """On a database with no campaign at all, create the demo campaign and return its name."""
    with Session(engine) as session:
        if session.exec(select(Campaign.id)).first() is not None:
            return None
    common = {"engine": engine, "campaign": NAME, "source": "concord-demo", "license": "Apache-2.0"}
    import_file(DEMO / "pairs.jsonl", fmt="pairs", **common)
    import_file(DEMO / "calibration.jsonl", fmt="pairs", known_as="calibration", **common)
    import_file(DEMO / "prompts.jsonl", fmt="prompts", **common)
    settings = json.loads((DEMO / "settings.json").read_text())
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == NAME)).one()
        for key, value in settings["campaign"].items():
            setattr(campaign, key, value)
        for item in settings["calibration"]:
            _describe_calibration(session, campaign.id, item)
        for draft in settings["drafts"]:
            prompt = _prompt(session, campaign.id, draft["prompt"])
            session.add(
                Response(prompt_id=prompt.id, text=draft["draft"], author="demo-writer-2", source="concord-demo")
            )
    return NAME


def _prompt(session: Session, campaign_id: int, text: str) -> Prompt:
    content_hash = prompt_hash([{"role": "user", "content": text}])
    where = (Prompt.campaign_id == campaign_id, Prompt.content_hash == content_hash)
    return session.exec(select(Prompt).where(*where)).one()


def _describe_calibration(session: Session, campaign_id: int, item: dict) -> None:
    prompt = _prompt(session, campaign_id, item["prompt"])
    pair = session.exec(select(Pair).where(Pair.prompt_id == prompt.id)).one()
    calibration = session.exec(select(CalibrationItem).where(CalibrationItem.pair_id == pair.id)).one()
    calibration.expected, calibration.accepted = item["expected"], item["accepted"]
    calibration.kind, calibration.explanation = item["kind"], item["explanation"]
