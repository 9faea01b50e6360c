"""Where stored things hold what people said or who they are, and those things without
it: an alert hit's evidence (its turns' text, and the matched phrases and signals, which
quote them) and the reason that quotes them; an alert's resolution note; the free text of
conversation events (a whisper, a transfer's or an end's reason) and participants' names;
the customer's contact. Pure: the pipeline and the stores do the I/O.

The recording policy leaves out the words of turns it does not keep as an alert is raised
(`evidence_without_words` with those turns); retention takes every word out later
(`alert_without_words` and the rest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitoring import codec

Kept = Callable[[dict[str, Any]], bool]
"""Whether an evidence segment's words may stay."""

EVENT_TEXT = ("text", "reason", "note")  # conversation event fields people wrote freely


def _as_said(text: str) -> str:
    return text


def evidence_without_words(evidence: dict[str, Any], kept: Kept,
                           redact: Callable[[str], str] = _as_said,
                           ) -> tuple[dict[str, Any], str | None]:
    """A hit's ``evidence`` without the words of the turns not ``kept`` (their text; and,
    if it quotes any of them, every matched phrase and signal word), the rest redacted.
    Returns it and, when quoted words were left out, the role of the first turn left out:
    the hit's reason quotes those words too, and must be replaced (None: it may stay)."""
    stored = dict(evidence)
    segments = evidence.get("segments", [])
    signals = evidence.get("signals", {})
    stored["segments"] = [{**s, "text": redact(s["text"]) if kept(s) and s.get("text")
                           is not None else None} for s in segments]
    if "signals" in evidence:
        stored["signals"] = {k: [redact(w) for w in words] for k, words in signals.items()}
    left_out = [s["role"] for s in segments if not kept(s)]
    if (evidence.get("matched") or signals) and left_out:
        stored["matched"], stored["signals"] = [], {k: [] for k in signals}
        return stored, left_out[0]
    return stored, None


def quoting_reason(role: str, kind: str, why: str) -> str:
    """The reason of a hit whose quoted words were left out."""
    return f"{role} turn matched {kind} rule ({why})"


WORDS_REMOVED = "words removed"  # why, as a reason says, after retention


def hit_without_words(hit: dict[str, Any]) -> dict[str, Any]:
    """A hit (or an alert's lead-hit fields) with every word of its evidence out."""
    evidence, quoted = evidence_without_words(hit.get("evidence") or {}, lambda _: False)
    reason = hit["reason"] if quoted is None else quoting_reason(quoted, hit["kind"],
                                                                 WORDS_REMOVED)
    return {**hit, "evidence": evidence, "reason": reason}


def alert_without_words(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert (a stored document) without words: every hit's, the lead hit's at the top
    level, and the resolution's note. Status, times, severity and who did what stay."""
    return {**hit_without_words(alert), "note": None,
            "hits": [hit_without_words(h) for h in alert["hits"]]}


def event_without_words(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored conversation event's fields without free text or a participant's name."""
    kept = {k: None if k in EVENT_TEXT else v for k, v in payload.items()}
    if isinstance(payload.get("participant"), dict):
        kept["participant"] = {**payload["participant"], "name": None}
    return kept


def customer_without_contact(customer: dict[str, Any]) -> dict[str, Any]:
    """The customer as stored, their name and e-mail out (their id, pseudonymous, stays:
    it still tells which conversations were theirs, e.g. to erase them)."""
    return {**customer, "name": None, "email": None}


def state_without_names(state: dict[str, Any]) -> dict[str, Any]:
    """A conversation's saved state without its participants' names."""
    participants = state.get("participants")
    if not isinstance(participants, dict):
        return state
    return {**state, "participants": {pid: {**p, "name": None} if isinstance(p, dict) else p
                                      for pid, p in participants.items()}}


def webhook_payload_without_words(payload: str) -> str:
    """A webhook delivery's body (`monitoring.webhooks.payload`) with its alert without
    words (signed as it is sent: a later try sends this)."""
    body = codec.loads(payload)
    alert = body.get("data", {}).get("alert")
    if isinstance(alert, dict):
        body["data"]["alert"] = alert_without_words(alert)
    return codec.dumps(body)
