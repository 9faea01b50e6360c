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

import ahocorasick

Signal = Literal["churn", "cancellation", "threat", "insult", "contempt", "profanity",
                 "repeated_contact", "exasperation", "intensity", "human_request",
                 "bot_failure"]

# Written as regular expressions over lower-cased words; "\s+" stands between words. Each
# names a meaning in general words (a decision to leave in any tense, being sent round in
# circles), not the phrase of one example; `docs/rules.md` says how they were judged.
_I = r"(?:i|we|i'?m|im|i am|we'?re|we are|i'?ve|we'?ve|i have|we have|i'?ll|we'?ll|i will|we will)"
_COMPANY = (r"(?:you|y'?all|you guys|your (?:\w+ )?(?:company|service|support|team|staff|"
            r"people|app|product|customer service|bank|store)|this company|they|their "
            r"(?:\w+ )?(?:service|support|company))")
# What a customer tried, counted ("three calls", "12 emails").
_TRIES = (r"(?:msg'?s|messages|e-?mails|calls|phone calls|tickets|tweets|dms|requests|"
          r"complaints|chats|attempts|times|hours on the phone)")
PATTERNS: dict[str, tuple[str, ...]] = {
    # Leaving, decided or threatened, in any tense: switching, going elsewhere, never again.
    "churn": (
        rf"{_I} (?:just |already |finally )?switch(?:ed|ing)? (?:over )?to(?= [@\w])(?! (?:the|"
        r"my|your|a new (?:version|phone|device)|dark|light|annual|monthly|a (?:new|"
        r"different) plan)\b)",
        r"(?:going|went|moved|moving|going back|went back) (?:over |back )?to @\w+",
        r"switch(?:ing|ed)? (?:providers?|banks?|carriers?|companies|brands?)",
        r"(?:switch|switched|switching|moved|moving) (?:over )?to @\w+",
        r"(?:switch|switching|switched|move|moving|moved|go|going|went|leave|leaving|left|"
        r"change|changing|changed) (?:over |(?:my|our) \w+ )?(?:to|for) (?:a|another) "
        r"(?:different |new |better )?(?:provider|bank|carrier|company|brand|service provider|"
        r"airline|isp)",
        r"(?:go|going|went|take|taking|took) (?:my (?:business|money|custom) )?elsewhere",
        r"(?:take|taking|took) my (?:business|custom)",
        r"never (?:again|(?:buy|order|shop|fly|stay|bank|use|recommend|purchas)\w* (?:again|"
        r"from|with|here|another|an?y? ?\w+ (?:again|from|product|products)))",
        r"not (?:going back|coming back|returning)",
        r"(?:will|would|i'?ll|i'?d) never (?:buy|order|use|fly|shop|recommend|purchase|trust|"
        r"go back|come back|bank)",
        r"(?:won'?t|will not|wont|not going to|never going to) (?:be )?(?:buy|order|renew|"
        r"purchas|us|shop|return|com|recommend|fly|bank)\w* (?:again|from (?:you|them)|with "
        r"(?:you|them)|another|any(?:thing)? (?:more|else|\w+ product))",
        r"(?:last|final) time (?:i|we)", r"(?:lost|losing|lose) (?:me|us|a|another|my|our) "
        r"(?:as a )?(?:customer|client|business)", r"(?:lost|losing) (?:me|us)",
        rf"{_I} (?:am |are |'?m )?(?:so |about |bout |officially |now )?done with",
        r"(?:i'?m|im|i am) so done", r"done with (?:you|y'?all|this company|them)",
        r"get rid of (?:you|these|this|them)", r"boycott\w*", r"stop (?:using|buying)",
        r"find(?:ing)? (?:a|another) (?:new |different )?(?:provider|bank|company|service|carrier)",
        r"(?:continue|keep) (?:being|to be) a customer",
        r"leav(?:e|ing) (?:you|your (?:company|service|bank|network))\b(?! (?:a|lots|plenty|"
        r"with|alone)\b)",
        rf"{_I} (?:just |already |finally )?(?:uninstall|delet|cancel+|clos)(?:ed|ing) "
        r"(?:the app|your app|my (?:\w+ )?(?:account|subscription|membership|card)s?|"
        r"(?:the |my )?(?:service|plan|contract))",
        r"(?:deleting|uninstalling|cancell?ing|closing) (?:it|the app|your app|my (?:\w+ )?"
        r"(?:account|subscription|membership|card)s?)(?: (?:now|today|right now))?[.!]",
        r"won'?t (?:be )?(?:buying|using|renewing)", r"(?:not|never) (?:be )?renew\w*",
        r"(?:i|we) (?:will|'?ll|am going to|'?m going to|are going to|'?re going to|'?m gonna|"
        r"am gonna|gonna) (?:cancel|close|delete|leave|switch|uninstall|unsubscribe|quit|"
        r"drop)",
        r"trade it (?:in )?(?:for|with) (?:a|another) (?:different )?brand",
        r"should (?:have|'?ve) (?:bought|gone with|chosen|stayed with|switched to) (?:a|an|"
        r"the)? ?\w+",
        r"(?:enough|reason|time) (?:for (?:me|us) )?to (?:close|cancel|leave|switch|drop|quit)",
    ),
    # Asking to cancel or close: a churn risk, often asked calmly (rules weigh its tone).
    "cancellation": (
        r"cancel(?:l?ing|l?ed)? (?:my|our|the|this) (?:\w+ )?(?:account|subscription|"
        r"membership|service|contract|plan|order)s?",
        r"clos(?:e|ing) (?:my|our) (?:\w+ )?accounts?",
        r"delet(?:e|ing) (?:my|our) (?:\w+ )?account", r"unsubscrib(?:e|ing) from (?:you|your)",
        r"terminat(?:e|ing) (?:my|our|the) (?:\w+ )?(?:account|subscription|contract|plan)",
    ),
    # Regulators, lawyers, the press (as words or @handles), going public in any words.
    "threat": (
        r"lawyers?", r"attorneys?", r"sue", r"suing (?:you|them|the)", r"lawsuit",
        r"legal (?:action|claim|team)", r"small claims", r"take (?:you|this|them) to court",
        r"bbb\w*", r"better business bureau", r"fcc", r"ftc", r"cfpb", r"ofcom", r"ombudsman",
        r"fbi\w{0,24}",
        r"regulators?", r"trading standards", r"consumer (?:protection|affairs|rights)",
        r"attorneys? general", r"\w{0,24}attorneygeneral\w{0,24}",
        r"\w{0,24}consumer(?:protection|affairs|rights)\w{0,24}",
        r"report(?:ing)? (?:you|this|them) to",
        r"(?:file|filing|lodge|lodging|make|making|raise|raising) a (?:formal )?complaint",
        r"formal complaint", r"chargeback", r"dispute (?:the|this) charge",
        r"(?:go|going|went) public with", rf"{_I} (?:will|'?ll|am going to|'?m going to|"
        r"gonna) go public", r"the (?:media|press)(?! (?:release|conference|kit)\b)",
        r"(?:journalists?|reporters?|news (?:station|channel|outlet|desk)s?)",
        r"(?:cnn|bbcnews|bbcbreakfast|nbcnews|cbsnews|abcnews|foxnews|nytimes|wsj|"
        r"consumerreports|watchdog\w{0,24})", r"\w{0,24}newsdesk",
        r"warn (?:people|everyone|others|other customers|every\w*)",
        r"(?:tell|telling|let) (?:everyone|everybody|all my friends|the world|the internet)",
        r"(?:post|posting|share|sharing|spread|spreading) (?:this|it|my (?:story|experience)"
        r"|the word) (?:everywhere|all over|on (?:social media|facebook|twitter|reddit|"
        r"youtube|tiktok|instagram))", r"(?:go|going|gone) viral", r"expos(?:e|ing) (?:you|"
        r"this|them)", r"(?:1|one|zero|0|no|negative)[- ]stars?", r"bad review",
        r"should be illegal",
    ),
    # Insults aimed at the company or its people.
    "insult": (
        r"incompeten(?:t|ce)", r"pathetic", r"ridiculous", r"ludicrous",
        rf"{_COMPANY} (?:is|are|'re|'s|was|were) (?:\w+ )?(?:a |such a |a total |a complete |"
        r"an absolute )?(?:joke|scam|fraud|frauds|disgrace|rip-?off|con)",
        r"(?:this|it|that) (?:is|'s|was) (?:\w+ )?(?:a |such a |a total |a complete |"
        r"an absolute )(?:joke|scam|disgrace|rip-?off)",
        r"(?:what a|such a|total|complete|absolute) (?:scam|fraud|joke|disgrace|rip-?off)",
        r"scam (?:company|artists?)", r"scamm(?:ed|ing) (?:me|us|people|customers)",
        r"thie(?:f|ves)", r"thieving", r"crooks?", r"crooked", r"morons?",
        r"idiots?(?![- ](?:proof|program|mode))",
        r"clowns?", r"liars?", r"lying (?:to|about)", r"clueless", r"lazy", r"scum\w*",
        r"greedy", r"shady", r"criminals?", r"disgrace(?:ful)?", r"shameful",
        r"(?:shame on|ashamed of) (?:you|y'?all|yourselves|this company)",
        rf"{_COMPANY} should be ashamed", r"should be ashamed",
        rf"(?:{_COMPANY}) (?:\w+ )?(?:suck|sucks|stink|stinks)",
        rf"(?:you'?re|you are|y'?all are|you guys are|{_COMPANY} (?:is|are)) the worst",
        r"why are you the worst",
        r"worst (?:\w+ )?(?:service|support|company|experience|provider|app|bank|airline|"
        r"customer service|isp|carrier)",
        r"(?:terrible|awful|horrible|horrendous|appalling|abysmal|lousy|atrocious|"
        r"shocking|disgusting|pathetic|non-?existent) (?:\w+ )?(?:customer )?(?:service|"
        r"support|company|experience|communication)",
        r"(?:customer )?(?:service|support) (?:is|was) (?:\w+ )?(?:non-?existent|a joke|"
        r"terrible|awful|horrible|pathetic|disgusting)", r"unacceptable",
        r"useless (?:company|service|support|staff|people|bank|airline)",
        rf"(?:{_COMPANY}) (?:is|are|were|'re) (?:so |completely |utterly |absolutely )?useless",
        r"(?:a|the) ?holes?", r"joke of a",
    ),
    # Contempt for what was bought or the service: worthless, a rip-off, not worth buying.
    "contempt": (
        r"sucks?(?! (?:up|in|out|it up)\b)", r"stinks?", r"useless", r"worthless",
        r"junk(?! (?:mail|folder|box|e-?mails?|filter)\b)", r"trash(?! (?:can|bin|folder)\b)",
        r"garbage(?! (?:disposal|collection|bin|can|day|truck)\b)", r"rubbish(?! bin\b)",
        r"piece of (?:junk|crap|garbage|trash|shit)", r"pieceo\w*",
        r"paperweight", r"rip-?off", r"ripped off", r"laughable",
        r"waste of (?:\w+ )?(?:money|time|space)", r"(?:money|cash) down the drain",
        r"screw(?:ed|ing) (?:me|us|over|out|customers)",
        r"(?:got|get|getting|i'?m|im|i am|we'?re|we are) (?:so |totally |royally )?screwed",
        r"(?:a |an absolute |a total |a complete |living )(?:nightmare|hell)",
        r"(?:don'?t|do not|never) (?:ever )?(?:buy|purchase|order) (?:this|these|it|one|"
        r"from|anything from|their|them|any)", r"(?:don'?t|do not) waste your",
        r"stay away", r"buyer beware", r"avoid (?:this (?:product|company|place|seller|app|"
        r"bank)|them|at all costs|like the plague)",
        r"save your (?:money|cash|time)", r"you(?:'ll| will) (?:be sorry|regret)",
        r"thanks for nothing", r"nothing but (?:trouble|hassle|problems)",
        r"more trouble than", r"(?:zero|negative|no|0) stars",
        r"(?:price[- ])?goug(?:e|ing)", r"profiteer\w*", r"capitaliz(?:e|ing) on",
        r"(?:utterly|absolutely|completely|totally) (?:terrible|horrible|awful|useless|"
        r"unacceptable|disgusting|pathetic|atrocious)",
        r"(?:worst|terrible|awful|horrible) (?:\w+ )?(?:ever|in the world|i'?ve ever)",
    ),
    "profanity": (
        r"fuu*c+k+\w*", r"\w*fuck\w*", r"f\*\**\w*", r"\*{3,}", r"sh[i1]t\w*", r"bullshit",
        r"damn\w*", r"dammit", r"goddamn\w*", r"gd", r"wtf", r"tf", r"stfu", r"ffs",
        r"crap\w*", r"ass(?:hole)?s?", r"bitch\w*", r"bastards?", r"the hell", r"piss(?:ed)?",
        r"bloody", r"clusterfuck",
    ),
    # Let down again and again, stuck in loops, unable to reach anyone, ignored.
    "repeated_contact": (
        r"(?:second|third|fourth|fifth|2nd|3rd|4th|5th|\d+th|umpteenth) time",
        r"(?:twice|\w+ times) now", r"how many times", r"yet again", r"again and again",
        r"over and over", r"every (?:single )?time (?:i|we) (?:call|contact|message|email|"
        r"reach out|ask|tweet|chat)",
        rf"(?:several|multiple|many|numerous|countless|so many|two|three|four|five) {_TRIES}",
        rf"\d+ {_TRIES}",
        r"(?:emailed|called|messaged|contacted|tweeted|asked|reached out|written|wrote|"
        r"tried|dm'?d|rang)(?: to)? (?:you|y'?all|you guys|support|them|customer service)? ?"
        r"(?:twice|\w+ times|again|repeatedly|multiple times|several times|many times)",
        r"still (?:not|no|nothing|haven'?t (?:received|gotten|got|heard|had|been)|hasn'?t "
        r"(?:arrived|been|come)|can'?t|cannot|waiting|charging|unable|didn'?t|doesn'?t "
        r"work|don'?t have|isn'?t|won'?t|have not|has not|did not|does not work|broken|down|"
        r"ignor\w+|the same|an issue|a problem|happening)",
        r"(?:no|never (?:got|received|had) an?y?) (?:answer|response|reply|solution|"
        r"call back|callback)(?: yet)?", r"no one", r"nobody", r"no help", r"(?:of |was )?no "
        r"help at all", r"(?:did|does|do) not help at all",
        r"(?:waiting|waited) (?:for )?(?:over |almost |nearly |more than |about )?(?:\d+\+?|a few|"
        r"few|two|three|four|five|six|several|many|a|an) (?:days?|weeks?|months?|years?|"
        r"hours?)", r"(?:days|weeks|months) (?:later|and still|and no)",
        r"already (?:tried|contacted|called|emailed|sent|spoke|talked|asked|reported)",
        r"on hold (?:for|forever)", r"been waiting", r"ignor(?:ed|ing) (?:me|us|my)",
        r"spent (?:hours|days|weeks)", r"(?:hours|days) on the phone",
        r"(?:can'?t|cannot|couldn'?t|unable to|no way to|impossible to|never able to) "
        r"(?:get (?:through|a response|an answer|help|any help|hold of|a hold of)|reach|"
        r"contact|talk to|speak to|speak with|get anyone|get someone)",
        r"(?:doesn'?t|does not|won'?t|will not|never) (?:ever )?(?:answer|respond|reply|"
        r"call (?:me|us) back|get back to (?:me|us))",
        r"(?:they|you|nobody|no one|support|it) (?:didn'?t|did not|don'?t|do not) (?:answer|"
        r"respond|reply|call (?:me|us) back|get back to (?:me|us))",
        r"(?:kept|keeps|keep) (?:ringing|hanging up|disconnecting|cutting off|transferring|"
        r"sending me|telling me|saying)",
        r"(?:sent|bounced|passed|transferred|shuffled|pushed) (?:me )?(?:around|back and "
        r"forth|from (?:one|department|person|agent))", r"(?:going|go|goes|went|sent|send|"
        r"sending|talking|run|running|spinning|stuck) (?:me )?(?:around )?in circles",
        r"(?:run|running|ran) me around", r"run-?around", r"(?:endless|constant|countless|"
        r"never-?ending) "
        r"(?:\w+ )?(?:troubleshooting|calls|emails|loops?|hold|transfers|excuses)",
        r"no (?:way to|one to) (?:contact|reach|talk)", r"gave up (?:on|with|trying)",
    ),
    # Fed up, desperate or helpless, whatever the cause.
    "exasperation": (
        r"(?:getting |so |sick and )?tired of", r"fed up", r"sick of", r"had enough",
        r"enough is enough", r"(?:can'?t|cannot|can not) believe (?:this|that|you|how "
        r"(?:bad|poor|terrible|awful|long|hard|difficult)|y'?all|they|it'?s|i have to)",
        r"unbelievable", r"nothing (?:works?|worked|helps?|helped)",
        r"none of (?:\w+ )+(?:work|worked|helped)",
        r"(?:this|it) is (?:a )?(?:nightmare|insane|absurd)", r"what am i paying (?:you )?for",
        r"what the hell am i paying", r"i give up", r"at my wit'?s end", r"fix (?:it|this)!",
        r"seriously[?!]", r"are you (?:kidding|serious)", r"you'?ve got to be kidding",
        r"infuriat\w+", r"frustrat(?:ing|ed)", r"furious", r"livid", r"outraged?",
        r"beg(?:ging)? (?:you|for)", r"i'?m begging", r"desperate(?:ly)?", r"devastat\w+",
        r"heartbroken", r"in tears", r"at a loss", r"last resort", r"nowhere (?:else )?to turn",
        r"(?:don'?t|do not) know what (?:else )?to do", r"please please",
        r"(?:why|how) (?:is it so|is this so) (?:hard|difficult)",
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
NEGATABLE = frozenset({"churn", "cancellation", "threat", "insult", "contempt",
                       "human_request"})
# "not only useless", "can't believe how useless", "can't even": emphasis, not negation.
NOT_NEGATING = frozenset({"only", "just", "believe", "stand", "even"})
NEGATION_REACH = 3  # words before a match in which a negator cancels it
NEGATION_CHARS = 60  # looked back at most; enough for three words
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\n]|\b(?:but|and|so|because)\b")

QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def translated(text: str, table: dict[int, str] = QUOTES) -> str:
    """``text.translate(table)``, without the copy when ``text`` holds none of the table's
    characters (most texts: a few substring checks cost a tenth of translating)."""
    for code in table:
        if chr(code) in text:
            return text.translate(table)
    return text

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


def spaced(pattern: str) -> str:
    """A pattern as written here (a space between words, " ?" for an optional one) as
    `re` reads it."""
    return pattern.replace(" ?", r"\s*").replace(" ", r"\s+")


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    body = "|".join("(?:" + spaced(p) + ")" for p in patterns)
    return re.compile(rf"(?<![\w*])(?:{body})(?![\w*])", re.IGNORECASE | re.MULTILINE)


_SPACE = [(sre.IN, [(sre.CATEGORY, sre.CATEGORY_SPACE)])]
_DIGIT = [(sre.IN, [(sre.CATEGORY, sre.CATEGORY_DIGIT)])]
_DIGIT_KEY = "#digit"  # the index key of a match that starts with any digit


def _is_space(op: Any, av: Any) -> bool:
    return (op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] >= 1
            and list(av[2]) == _SPACE) or [(op, av)] == _SPACE


def _leading(items: list[Any], prefix: str = "") -> set[str] | None:
    """How a match of a parsed pattern can start, as index keys: its first three letters,
    or "=" and a whole first word shorter than that, or `_DIGIT_KEY`; None when that
    cannot be told."""
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
        if not prefix and [(op, av)] == _DIGIT:
            return {_DIGIT_KEY}
        return {prefix} if len(prefix) == 2 else None
    return {"=" + prefix} if prefix else None


def _union(options: Iterable[set[str] | None]) -> set[str] | None:
    found: set[str] = set()
    for option in options:
        if option is None:
            return None
        found |= option
    return found


def _required(items: list[Any]) -> list[frozenset[str]]:
    """Sets of strings (lower-case) of which every match holds at least one: each run of
    literal characters, each branch whose every way holds one (the strings of all its
    ways), each repeat's body if it must occur (groups count; anything else ends a run)."""
    found: list[frozenset[str]] = []
    run = ""
    for op, av in _flattened(items):
        if op is sre.LITERAL:
            run += chr(av).lower()
            continue
        if len(run) >= 2:
            found.append(frozenset({run}))
        run = ""
        if op is sre.BRANCH:
            ways = [_most_telling(_required(list(way))) for way in av[1]]
            if all(ways):
                found.append(frozenset().union(*ways))  # type: ignore[arg-type]
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] >= 1:
            found += _required(list(av[2]))
    if len(run) >= 2:
        found.append(frozenset({run}))
    return found


def _most_telling(options: list[frozenset[str]]) -> frozenset[str] | None:
    """Of several requirements, the one a text most rarely meets: its shortest string the
    longest, then the fewest strings."""
    return max(options, key=lambda o: (min(map(len, o)), -len(o)), default=None)


def _flattened(items: list[Any]) -> Iterator[tuple[Any, Any]]:
    for op, av in items:
        if op is sre.SUBPATTERN:
            yield from _flattened(list(av[-1]))
        else:
            yield op, av


def _gate(pattern: str) -> tuple[set[str] | None, tuple[str, ...] | None]:
    """How a match of ``pattern`` can start (see `_leading`), and strings of which every
    match holds one (see `_required`)."""
    parsed = list(sre_parse.parse(spaced(pattern)))
    need = _most_telling(_required(parsed))
    return _leading(parsed), None if need is None else tuple(sorted(need))


# Every pattern on its own, indexed by how its matches can start (else by strings one of
# which each match holds): a text runs only the few patterns that could match it. The
# start is often a common word ("i", "the", "you"): a pattern whose matches all hold a
# longer piece of text ("the hell": "hell"; "i will cancel": "cancel" or "leave" ...) also
# runs only where one of those is.
def _compile_lowered(pattern: str) -> re.Pattern[str]:
    """For lower-cased text; the word boundary before a match is checked by `_find`, as a
    look-behind would keep `re` from skipping ahead to the pattern's first letters."""
    return re.compile("(?:" + spaced(pattern) + r")(?![\w*])", re.MULTILINE)


_PATTERNS: list[tuple[str, re.Pattern[str], set[str] | None, tuple[str, ...] | None]] = [
    (name, _compile_lowered(p), *_gate(p)) for name, patterns in PATTERNS.items()
    for p in patterns]
_TOKEN_START = re.compile(r"(?<![\w*])[\w*]{1,3}")  # each word's first three characters


class _Index:
    """The patterns of some signals, indexed (see above)."""

    def __init__(self, signals: frozenset[str] | None) -> None:
        chosen = [i for i, entry in enumerate(_PATTERNS)
                  if signals is None or entry[0] in signals]
        self.always = frozenset(i for i in chosen
                                if _PATTERNS[i][2] is None and _PATTERNS[i][3] is None)
        self.by_need = frozenset(i for i in chosen
                                 if _PATTERNS[i][2] is None and _PATTERNS[i][3])
        # Started patterns whose needs are checked too, where they say more than the start.
        self.checked = frozenset(
            i for i in chosen if _PATTERNS[i][2] is not None and _PATTERNS[i][3]
            and not all(any(n.startswith(s.lstrip("=")) for s in _PATTERNS[i][2] or ())
                        for n in _PATTERNS[i][3] or ()))
        needed_by: dict[str, set[int]] = {}
        for i in self.by_need | self.checked:
            for need in _PATTERNS[i][3] or ():
                needed_by.setdefault(need, set()).add(i)
        # One pass over the text finds every need present, however many there are.
        self.needs: ahocorasick.Automaton | None = None
        if needed_by:
            self.needs = ahocorasick.Automaton()
            for need, ids in needed_by.items():
                self.needs.add_word(need, frozenset(ids))
            self.needs.make_automaton()
        self.by_start: dict[str, list[int]] = {}
        for i in chosen:
            for start in _PATTERNS[i][2] or ():
                self.by_start.setdefault(start, []).append(i)
        self.started_by = functools.lru_cache(maxsize=1 << 13)(self._started_by)

    def _started_by(self, start: str) -> frozenset[int]:
        """The patterns whose matches can start a token that begins with ``start`` (its
        first three characters, or all of a shorter one: all the index keys look at)."""
        keys: tuple[str, ...] = ((start, start[:2], "=" + start) if len(start) < 3
                                 else (start, start[:2]))
        if start[0].isdecimal():  # (what `\d` matches)
            keys += (_DIGIT_KEY,)
        return frozenset(i for key in keys for i in self.by_start.get(key, ()))

    def candidates(self, lowered: str) -> list[int]:
        """Indexes into _PATTERNS of the patterns that could match ``lowered``, in order."""
        met: frozenset[int] = frozenset()
        if self.needs is not None:
            met = met.union(*(ids for _, ids in self.needs.iter(lowered)))
        started = frozenset().union(*map(self.started_by, set(_TOKEN_START.findall(lowered))))
        return sorted((started - self.checked) | (met & (started | self.by_need)) | self.always)


@functools.lru_cache(maxsize=16)  # (a set per role and rule set in force)
def _index(signals: frozenset[str] | None) -> _Index:
    """The index of these signals' patterns (None: all)."""
    return _Index(signals)


def _candidates(lowered: str, only: frozenset[str] | None = None) -> list[int]:
    """Indexes into _PATTERNS of the patterns of ``only`` (None: all) that could match
    ``lowered``, in order."""
    return _index(only).candidates(lowered)


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
    text = translated(text)
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
    text = translated(text)
    lowered = text.lower()
    if len(lowered) != len(text):  # rare letters that lower-case to two: go slowly
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    found: dict[str, list[str]] = {}
    for i in _candidates(lowered, only):
        name, pattern, _, _ = _PATTERNS[i]
        if pattern.search(lowered) is None:
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
