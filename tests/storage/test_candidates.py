"""Generated candidates as stored responses: written once per (author, prompt, sample), and text either engine
can hold."""

from sqlmodel import Session, select

from storage.candidates import Candidate, add_candidates
from storage.db import write_session
from storage.formats_records import prompt_hash
from storage.models import Campaign, Prompt, Response


def test_a_generated_nul_is_stored_as_a_replacement_character_on_both_engines_and_a_sample_is_written_once(engine):
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name="gen")
        session.add(campaign)
        session.flush()
        messages = [{"role": "user", "content": "Say hi."}]
        prompt = Prompt(campaign_id=campaign.id, messages=messages, content_hash=prompt_hash(messages))
        session.add(prompt)
        session.flush()
        ids = campaign.id, prompt.id
    candidates = [Candidate(prompt_id=ids[1], author="tiny", sample=n, text=text, generation_params={})
                  for n, text in enumerate(["hi\x00there", "hello"])]  # fmt: skip
    with write_session(engine) as session, session.begin():  # PostgreSQL refused the NUL before
        assert add_candidates(session=session, campaign_id=ids[0], candidates=candidates, source="generate") == 2
    with write_session(engine) as session, session.begin():  # written already: nothing again
        assert add_candidates(session=session, campaign_id=ids[0], candidates=candidates, source="generate") == 0
    with Session(engine) as session:
        stored = session.exec(select(Response.text, Response.generation_params).order_by(Response.id)).all()
    assert [text for text, _ in stored] == ["hi\ufffdthere", "hello"]
    assert [params["sample"] for _, params in stored] == [0, 1]
