"""Claims of a demonstration checked against its response text: what a lead sees beside each claim.

A rater lists the factual claims their response makes. A claim that quotes the response ("..." or “...”) must
find each quoted span in it, word for word (case, spacing and quote style aside); a claim in the rater's own words
should find most of its key words there. Neither proves a claim true: they catch a claim that does not belong to
the response, for the lead to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|«([^»]+)»')
WORD = re.compile(r"[^\W_]+")
MIN_WORD_SHARE = 0.6  # of a paraphrased claim's key words that the response must hold
STOPWORDS = frozenset(
    "about after also and are because been before but can could does from had has have into its more most not only "
    "other over same some such than that the their them then there these they this those under was were what when "
    "where which while who will with would your".split()
)


@dataclass(frozen=True)
class ClaimCheck:
    claim: str
    status: str  # the rater's verification: verified | unverifiable | false
    source: str | None
    in_text: bool  # the claim is found in the response
    detail: str  # how it was found, or what is missing


def _normal(text: str) -> str:
    text = text.replace("’", "'").replace("‘", "'").casefold()
    return " ".join(text.split())


def _stem(word: str) -> str:
    """Plural and singular alike: "tables" finds "table"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _key_words(text: str) -> dict[str, str]:
    """The text's key words, ``{stem: word as written}``."""
    words = (w for w in WORD.findall(_normal(text)) if len(w) >= 3 and w not in STOPWORDS)
    return {_stem(w): w for w in reversed(list(words))}


def check_claim(claim: str, text: str) -> tuple[bool, str]:
    """(found in ``text``, why) for one claim."""
    response = _normal(text)
    quotes = [next(group for group in match.groups() if group) for match in QUOTED.finditer(claim)]
    if quotes:
        missing = [quote for quote in quotes if _normal(quote) not in response]
        if missing:
            return False, f"quoted text not in the response: “{missing[0].strip()}”"
        return True, "every quoted span is in the response"
    words = _key_words(claim)
    if not words:
        return False, "no words to look for"
    present = {_stem(word) for word in WORD.findall(response)}
    found = [stem for stem in words if stem in present]
    share = len(found) / len(words)
    if share >= MIN_WORD_SHARE:
        return True, f"{len(found)} of its {len(words)} key words are in the response"
    absent = ", ".join(word for stem, word in reversed(words.items()) if stem not in present)
    return False, f"only {len(found)} of its {len(words)} key words are in the response (missing: {absent})"


def check_claims(claims: list[dict], text: str) -> list[ClaimCheck]:
    """Each stored claim (``storage.models.Claim`` dicts) checked against the response text."""
    checks = []
    for claim in claims:
        in_text, detail = check_claim(str(claim.get("claim", "")), text)
        checks.append(ClaimCheck(claim=str(claim.get("claim", "")), status=str(claim.get("status", "")),
                                 source=claim.get("source"), in_text=in_text, detail=detail))  # fmt: skip
    return checks
