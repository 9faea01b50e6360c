"""Signals beyond sentiment: what a customer's words say that VADER's one number misses.

Each signal is a named set of whole-word patterns (or, for ``intensity``, a measure of
shouting). `detect` returns, per signal present, the phrases that matched; rules combine
signals with sentiment. Pure functions over text; `docs/rules.md` lists every pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

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
        r"switch(?:ing)? (?:to (?:a |another )?\w+|over|providers?|banks?|carriers?)",
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
        r"f+u+c+k+\w*", r"\w*fuck\w*", r"f\*+\w*", r"\*{3,}", r"sh[i1]t\w*", r"bullshit",
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
    "not", "no", "never", "dont", "don't", "do not", "won't", "wont", "wouldn't", "didn't",
    "doesn't", "isn't", "aren't", "cannot", "can't", "neither", "nor", "without",
})
NEGATION_REACH = 3  # words before a match in which a negator cancels it

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_WORD = re.compile(r"[\w'*]+")
_CAPS_WORD = re.compile(r"(?<![@#/\w])[A-Z][A-Z']{2,}(?![\w])")
_REPEATED_MARKS = re.compile(r"[!?]{2,}|!\s*!|\?\s*!")
# Acronyms that appear in polite support requests and are not shouting.
_ACRONYMS = frozenset({
    "USA", "ATM", "USB", "PIN", "SMS", "PDF", "URL", "FAQ", "CEO", "TV", "PC", "APP", "ID",
    "IOS", "API", "DNS", "VPN", "WIFI", "HDMI", "SSD", "RAM", "CPU", "GPU", "HTML", "DM",
    "PS4", "PS5", "GTA", "UK", "EU", "COVID", "NHS", "IRS", "HBO", "NBA", "NFL", "ESPN",
    "AT&T", "AWS", "OTP", "IT", "OK", "FYI", "ASAP", "TIA", "NYC", "LA", "BBC", "CNN",
    "UPS", "USPS", "DHL", "FEDEX", "LLC", "INC", "HD", "UHD", "OS", "MAC", "DVD", "CD",
})


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    body = "|".join("(?:" + p.replace(" ", r"\s+") + ")" for p in patterns)
    return re.compile(rf"(?<![\w*])(?:{body})(?![\w*])", re.IGNORECASE | re.MULTILINE)


def phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    """Literal phrases as one whole-word, case-insensitive pattern."""
    return _compile(r"\s+".join(re.escape(w) for w in p.split()) for p in phrases)


_COMPILED = {name: _compile(p) for name, p in PATTERNS.items()}


def negated(text: str, start: int) -> bool:
    """Whether one of the NEGATION_REACH words before ``start`` is a negator."""
    before = _WORD.findall(text[:start].lower())[-NEGATION_REACH:]
    if any(w in NEGATORS for w in before):
        return True
    return "do not" in " ".join(before)


def matches(pattern: re.Pattern[str], text: str, negation_aware: bool = False) -> list[str]:
    """Distinct matches of ``pattern`` in ``text`` (lower-cased, first seen first)."""
    found = (m for m in pattern.finditer(text)
             if not (negation_aware and negated(text, m.start())))
    return list(dict.fromkeys(" ".join(m.group(0).lower().split()) for m in found))


def intensity(text: str) -> list[str]:
    """Shouting: two or more different all-caps words, or repeated ! and ? marks."""
    caps = list(dict.fromkeys(w for w in _CAPS_WORD.findall(text)
                              if w.strip("'") not in _ACRONYMS))
    found = caps[:3] if len(caps) >= 2 else []
    marks = _REPEATED_MARKS.findall(text)
    if marks:
        found.append(marks[0])
    return found


def detect(text: str, negation_aware: bool = True) -> dict[str, list[str]]:
    """Every signal present in ``text``, with what matched."""
    text = text.translate(_QUOTES)
    found = {name: matches(pattern, text, negation_aware and name in ("churn", "threat"))
             for name, pattern in _COMPILED.items()}
    found["intensity"] = intensity(text)
    return {name: hits for name, hits in found.items() if hits}
