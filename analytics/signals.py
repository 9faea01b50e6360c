"""Signals beyond sentiment: what a customer's words say that VADER's one number misses.

Each signal is a named set of whole-word patterns (or, for ``intensity``, a measure of
shouting). `detect` returns, per signal present, the phrases that matched; rules combine
signals with sentiment. Pure functions over text; `docs/rules.md` lists every pattern.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator

# The pattern index reads parsed patterns (CPython's re parser, stable since 3.11); a
# test checks the index finds exactly what the plain patterns find.
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any, Literal

Signal = Literal["churn", "threat", "insult", "profanity", "repeated_contact", "exasperation",
                 "intensity", "human_request", "bot_failure"]

# Written as regular expressions over lower-cased words; "\s+" stands between words.
PATTERNS: dict[str, tuple[str, ...]] = {
    # Leaving: cancelling, closing, switching, uninstalling, never buying again.
    "churn": (
        r"cancel(?:l?ing|l?ed)? (?:my|our|the|this) (?:\w+ )?(?:account|subscription|"
        r"membership|service|contract|plan|card)s?",
        r"clos(?:e|ing) (?:my|our) (?:\w+ )?(?:account|card)s?",
        r"delet(?:e|ing) (?:my|our) (?:\w+ )?account", r"unsubscrib(?:e|ing) from (?:you|your)",
        r"switch(?:ing)? (?:over )?to (?:another|a different|a new|a competitor|your "
        r"competitors?)", r"switch(?:ing)? (?:providers?|banks?|carriers?|companies)",
        r"(?:i'?m|im|i am|we'?re|we are|i will|i'?ll|we'?ll|gonna|going to|about to) "
        r"(?:be )?switch(?:ing)? (?:over )?to",
        r"(?:i'?m|im|i am|i will|i'?ll|gonna|going to) uninstall(?:ing)?",
        r"(?:go|going|take|taking) (?:my business |my money )?elsewhere",
        r"taking my (?:business|money)", r"never (?:again|buy(?:ing)?|order(?:ing)?|"
        r"shop(?:ping)?|recommend(?:ing)?)", r"(?:last|final) time i",
        r"(?:i'?m|im|i am|we'?re|we are|bout|about) (?:so |about )?done with",
        r"(?:i'?m|im|i am) so done", r"done with (?:you|y'?all)",
        r"get rid of (?:you|these|this)", r"los(?:e|t|ing) (?:a|another|my) (?:customer|business)",
        r"(?:won'?t|will not|not going to) (?:be )?renew(?:ing)?", r"boycott\w*",
        r"stop (?:using|buying)", r"find (?:a|another) (?:provider|bank|company|service)",
        r"(?:continue|keep) being a customer", r"leav(?:e|ing) (?:you|your company|for)",
    ),
    # Regulators, lawyers, going public.
    "threat": (
        r"lawyers?", r"attorneys?", r"sue", r"suing", r"lawsuit", r"legal (?:action|claim)",
        r"small claims", r"take (?:you|this) to court", r"bbb", r"better business bureau",
        r"fcc", r"ftc", r"cfpb", r"ombudsman", r"regulators?", r"trading standards",
        r"consumer protection", r"attorney general", r"report(?:ing)? you",
        r"(?:file|filing|lodge|lodging) a (?:formal )?complaint", r"formal complaint",
        r"chargeback", r"dispute the charge", r"go(?:ing)? public", r"the (?:media|press)",
        r"warn (?:people|everyone|others)", r"tell (?:everyone|everybody)",
        r"(?:1|one)[- ]star", r"bad review", r"should be illegal",
    ),
    # Insults aimed at the company or its staff.
    "insult": (
        r"useless", r"incompetent", r"incompetence", r"pathetic", r"ridiculous", r"ludicrous",
        r"a joke", r"(?:what a|such a|total|complete|is a|are a) scam", r"scam company",
        r"scamming (?:me|us|people|customers)", r"thie(?:f|ves)", r"crooks?", r"idiots?",
        r"morons?", r"clowns?", r"garbage", r"trash", r"rubbish", r"(?:you'?re|you are|"
        r"y'?all are|you guys are|is) the worst", r"why are you the worst",
        r"worst (?:\w+ )?(?:service|support|company|experience|provider|app|bank)",
        r"disgrace(?:ful)?", r"shameful", r"shame on (?:you|y'?all)", r"unacceptable",
        r"lazy", r"liars?", r"clueless", r"hopeless", r"disgusting", r"(?:a|the) ?holes?",
        r"scum", r"greedy", r"shady",
        r"(?:terrible|awful|horrible|horrendous|appalling|abysmal|lousy) (?:\w+ )?"
        r"(?:service|support|company|experience)", r"piece of (?:shit|crap|junk)",
        r"pieceo\w*", r"joke of a",
    ),
    "profanity": (
        r"fuu*c+k+\w*", r"\w*fuck\w*", r"f\*\**\w*", r"\*{3,}", r"sh[i1]t\w*", r"bullshit",
        r"damn\w*", r"dammit", r"goddamn\w*", r"gd", r"wtf", r"tf", r"stfu", r"ffs",
        r"crap\w*", r"ass(?:hole)?s?", r"bitch\w*", r"bastards?", r"the hell", r"piss(?:ed)?",
        r"bloody", r"clusterfuck",
    ),
    # Exasperation at repeated contact or failure: again, still, for weeks, nobody answers.
    "repeated_contact": (
        r"(?:second|third|fourth|fifth|2nd|3rd|4th|5th|\d+th|umpteenth) time",
        r"(?:twice|\w+ times) now", r"how many times", r"yet again", r"again and again",
        r"over and over", r"every (?:single )?time", r"(?:way )?too often",
        r"(?:several|multiple|many|numerous|countless|so many|\d+|two|three|four|five) "
        r"(?:msg'?s|messages|e-?mails|calls|tickets|tweets|dms|requests|complaints|chats)",
        r"(?:emailed|called|messaged|contacted|tweeted|asked|reached out|written|wrote)"
        r"(?: to)? (?:you|y'?all|you guys|support)? ?(?:twice|\w+ times|again)",
        r"still (?:not|no|nothing|haven'?t|hasn'?t|can'?t|cannot|waiting|charging|unable|"
        r"didn'?t|doesn'?t|don'?t|isn'?t|won'?t|have not|has not|did not|does not|"
        r"broken|down|ignor\w+|the same|an issue|a problem|happening)",
        r"(?:no|never (?:got|received|had) an?y?) (?:answer|response|reply|solution)(?: yet)?",
        r"no one", r"nobody", r"no help",
        r"(?:been|waiting|waited|over|almost|nearly|more than|since) (?:\d+\+?|a few|few|two|"
        r"three|four|five|six|several|many|a|one) (?:days?|weeks?|months?|years?)",
        r"(?:days|weeks|months) (?:now|later)", r"already (?:tried|contacted|called|emailed|"
        r"sent|spoke|talked|asked|reported)", r"on hold for", r"been waiting",
        r"ignor(?:ed|ing) (?:me|us|my)", r"spent (?:hours|days|weeks)",
        r"(?:can'?t|cannot|couldn'?t) get (?:through|a response|an answer|help|any help)",
    ),
    # Fed up, whatever the cause.
    "exasperation": (
        r"(?:getting |so |sick and )?tired of", r"fed up", r"sick of", r"had enough",
        r"enough is enough", r"(?:can'?t|cannot|can not) believe", r"unbelievable",
        r"nothing (?:works?|worked|helps?|helped)", r"none of (?:\w+ )+(?:work|worked|helped)",
        r"(?:this|it) is (?:a )?(?:nightmare|insane|absurd)", r"what am i paying (?:you )?for",
        r"what the hell am i paying", r"i give up", r"at my wit'?s end", r"fix (?:it|this)!",
        r"seriously[?!]", r"are you (?:kidding|serious)", r"you'?ve got to be kidding",
    ),
    # A customer asking for a person (used by the human-requested rule).
    "human_request": (
        r"(?:talk|speak|chat) (?:to|with) (?:a |an |someone|somebody|a real |an actual |"
        r"your )?(?:human|person|agent|representative|rep|someone|somebody|manager|"
        r"supervisor|operator)", r"real (?:person|human)", r"actual (?:person|human)",
        r"live (?:agent|person|chat|support)", r"human (?:agent|being|please)",
        r"representative", r"operator", r"agent please", r"speak to someone",
    ),
    # A bot saying it did not understand or cannot help.
    "bot_failure": (
        r"(?:didn'?t|did not|don'?t|do not) (?:quite )?(?:understand|get that|follow)",
        r"not sure (?:i|what you) (?:understand|mean)", r"(?:could|can) you rephrase",
        r"(?:i'?m|i am) (?:sorry, )?(?:not able|unable) to help", r"can'?t help with (?:that|this)",
        r"i don'?t know how to help", r"please try again", r"i didn'?t catch that",
    ),
}

NEGATORS = frozenset({
    "not", "no", "never", "dont", "don't", "won't", "wont", "wouldn't", "didn't",
    "doesn't", "isn't", "aren't", "cannot", "can't", "neither", "nor", "without",
})
NEGATABLE = frozenset({"churn", "threat", "insult", "human_request"})
# "not only useless", "can't believe how useless", "can't even": emphasis, not negation.
NOT_NEGATING = frozenset({"only", "just", "believe", "stand", "even"})
NEGATION_REACH = 3  # words before a match in which a negator cancels it
NEGATION_CHARS = 60  # looked back at most; enough for three words
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\n]|\b(?:but|and|so|because)\b")

QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_WORD = re.compile(r"[\w'*]+")
_CAPS_RUN = re.compile(r"[A-Z][A-Z']{2,}")
_REPEATED_MARKS = re.compile(r"[!?]{2,}|!\s*!|\?\s*!")
# Acronyms that appear in polite support requests and are not shouting.
_ACRONYMS = frozenset({  # three letters or more: shorter runs are never shouting
    "USA", "ATM", "USB", "PIN", "SMS", "PDF", "URL", "FAQ", "CEO", "APP", "IOS", "API",
    "DNS", "VPN", "WIFI", "HDMI", "SSD", "RAM", "CPU", "GPU", "HTML", "GTA", "COVID",
    "NHS", "IRS", "HBO", "NBA", "NFL", "ESPN", "AWS", "OTP", "FYI", "ASAP", "TIA", "NYC",
    "BBC", "CNN", "UPS", "USPS", "DHL", "FEDEX", "LLC", "INC", "UHD", "MAC", "DVD",
})


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    body = "|".join("(?:" + p.replace(" ", r"\s+") + ")" for p in patterns)
    return re.compile(rf"(?<![\w*])(?:{body})(?![\w*])", re.IGNORECASE | re.MULTILINE)


_SPACE = [(sre.IN, [(sre.CATEGORY, sre.CATEGORY_SPACE)])]


def _is_space(op: Any, av: Any) -> bool:
    return (op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] >= 1
            and list(av[2]) == _SPACE) or [(op, av)] == _SPACE


def _leading(items: list[Any], prefix: str = "") -> set[str] | None:
    """How a match of a parsed pattern can start, as index keys: its first three letters,
    or "=" and a whole first word shorter than that; None when that cannot be told."""
    for n, (op, av) in enumerate(items):
        if op is sre.LITERAL and chr(av) != "'":
            prefix += chr(av).lower()
            if len(prefix) == 3:
                return {prefix}
            continue
        rest = items[n + 1:]
        if _is_space(op, av) or op is sre.LITERAL:  # the first word ends here
            return {"=" + prefix} if prefix else None
        if op is sre.SUBPATTERN:
            return _leading(list(av[-1]) + rest, prefix)
        if op is sre.BRANCH:
            return _union(_leading(list(branch) + rest, prefix) for branch in av[1])
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            body = list(av[2])
            starts = _leading(body * max(av[0], 1) + rest, prefix)
            return starts if av[0] else _union([starts, _leading(rest, prefix)])
        return {prefix} if len(prefix) == 2 else None
    return {"=" + prefix} if prefix else None


def _union(options: Iterable[set[str] | None]) -> set[str] | None:
    found: set[str] = set()
    for option in options:
        if option is None:
            return None
        found |= option
    return found


def _literal(items: list[Any]) -> str | None:
    """The longest run of literal characters every match contains, if any (lower-case);
    groups that every match goes through count (a branch or a repeat ends a run)."""
    runs, run = [], ""
    for op, av in _flattened(items):
        if op is sre.LITERAL:
            run += chr(av).lower()
        else:
            runs.append(run)
            run = ""
    longest = max([*runs, run], key=len)
    return longest if len(longest) >= 2 else None


def _flattened(items: list[Any]) -> Iterator[tuple[Any, Any]]:
    for op, av in items:
        if op is sre.SUBPATTERN:
            yield from _flattened(list(av[-1]))
        else:
            yield op, av


def _gate(pattern: str) -> tuple[set[str] | None, str | None]:
    """How a match of ``pattern`` can start (see `_leading`), and a piece of text every
    match holds (see `_literal`)."""
    parsed = list(sre_parse.parse(pattern.replace(" ", r"\s+")))
    return _leading(parsed), _literal(parsed)


# Every pattern on its own, indexed by how its matches can start (else by a piece of text
# each match holds): a text runs only the few patterns that could match it. The start is
# often a common word ("i", "the", "you"): a pattern whose matches all hold a longer
# piece of text ("the hell": "hell") also runs only where that piece is.
def _compile_lowered(pattern: str) -> re.Pattern[str]:
    """For lower-cased text; the word boundary before a match is checked by `_find`, as a
    look-behind would keep `re` from skipping ahead to the pattern's first letters."""
    return re.compile("(?:" + pattern.replace(" ", r"\s+") + r")(?![\w*])", re.MULTILINE)


_PATTERNS: list[tuple[str, re.Pattern[str], set[str] | None, str | None]] = [
    (name, _compile_lowered(p), *_gate(p)) for name, patterns in PATTERNS.items()
    for p in patterns]
_ALWAYS = [i for i, entry in enumerate(_PATTERNS) if entry[2] is None and entry[3] is None]
_BY_PIECE = [(i, entry[3]) for i, entry in enumerate(_PATTERNS)
             if entry[2] is None and entry[3]]
# The piece checked after the start matched, where it says more than the start did.
_PIECE_AFTER_START = {i: entry[3] for i, entry in enumerate(_PATTERNS)
                      if entry[2] is not None and entry[3]
                      and not any(entry[3].startswith(s.lstrip("=")) for s in entry[2])}
_BY_START: dict[str, list[int]] = {}
for _i, _entry in enumerate(_PATTERNS):
    for _start in _entry[2] or ():
        _BY_START.setdefault(_start, []).append(_i)
_TOKEN = re.compile(r"[\w*]+")


@functools.lru_cache(maxsize=1 << 16)
def _started_by(start: str) -> frozenset[int]:
    """The patterns whose matches can start a token that begins with ``start`` (its first
    three characters, or all of a shorter one: all the index keys look at)."""
    keys = (start, start[:2], "=" + start) if len(start) < 3 else (start, start[:2])
    return frozenset(i for key in keys for i in _BY_START.get(key, ()))


def _candidates(lowered: str) -> list[int]:
    """Indexes into _PATTERNS of the patterns that could match ``lowered``, in order."""
    found = set(_ALWAYS)
    found.update(i for i, piece in _BY_PIECE if piece in lowered)
    starts = {token[:3] for token in _TOKEN.findall(lowered)}
    for i in frozenset().union(*map(_started_by, starts)):
        piece = _PIECE_AFTER_START.get(i)
        if piece is None or piece in lowered:
            found.add(i)
    return sorted(found)


def negated(text: str, start: int) -> bool:
    """Whether one of the NEGATION_REACH words before ``start``, in the same clause, is a
    negator ("I do not want to cancel"; not "No. I am cancelling")."""
    before = _CLAUSE_BREAK.split(text[max(0, start - NEGATION_CHARS):start].lower())[-1]
    words = _WORD.findall(before)[-NEGATION_REACH:]
    return any(w in NEGATORS and (i + 1 == len(words) or words[i + 1] not in NOT_NEGATING)
               for i, w in enumerate(words))


def _find(pattern: re.Pattern[str], lowered: str) -> Iterator[re.Match[str]]:
    """Matches of ``pattern`` that start a word."""
    at = 0
    while (m := pattern.search(lowered, at)) is not None:
        start = m.start()
        if start and (lowered[start - 1].isalnum() or lowered[start - 1] in "_*"):
            at = start + 1
            continue
        yield m
        at = max(m.end(), start + 1)


def matches(pattern: re.Pattern[str], text: str, negation_aware: bool = False) -> list[str]:
    """Distinct matches of ``pattern`` in ``text`` (lower-cased, first seen first)."""
    text = text.translate(QUOTES)
    found = (m for m in pattern.finditer(text)
             if not (negation_aware and negated(text, m.start())))
    return list(dict.fromkeys(" ".join(m.group(0).lower().split()) for m in found))


def intensity(text: str) -> list[str]:
    """Shouting: two or more different all-caps words, or repeated ! and ? marks."""
    caps = list(dict.fromkeys(
        m.group() for m in _CAPS_RUN.finditer(text)
        if m.group().strip("'") not in _ACRONYMS
        # a whole word, not part of a handle, hashtag, path or mixed-case word
        and (m.start() == 0 or not (text[m.start() - 1].isalnum()
                                    or text[m.start() - 1] in "@#/_"))
        and (m.end() == len(text) or not (text[m.end()].isalnum() or text[m.end()] == "_"))))
    found = caps[:3] if len(caps) >= 2 else []
    marks = _REPEATED_MARKS.findall(text)
    if marks:
        found.append(marks[0])
    return found


def detect(text: str, negation_aware: bool = True,
           only: frozenset[str] | None = None) -> dict[str, list[str]]:
    """Every signal present in ``text`` (or those of ``only``), with what matched."""
    text = text.translate(QUOTES)
    lowered = text.lower()
    if len(lowered) != len(text):  # rare letters that lower-case to two: go slowly
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    found: dict[str, list[str]] = {}
    for i in _candidates(lowered):
        name, pattern, _, _ = _PATTERNS[i]
        if (only is not None and name not in only) or pattern.search(lowered) is None:
            continue  # (most candidates: one search, no match)
        negatable = negation_aware and name in NEGATABLE
        hits = [" ".join(m.group().split()) for m in _find(pattern, lowered)
                if not (negatable and negated(lowered, m.start()))]
        if hits:
            found[name] = list(dict.fromkeys(found.get(name, []) + hits))
    shouting = intensity(text) if only is None or "intensity" in only else []
    if shouting:
        found["intensity"] = shouting
    return found
