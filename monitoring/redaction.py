"""PII redaction (pure): payment cards, IBANs, US social security numbers, other national
identity numbers, e-mail addresses and phone numbers in a text, replaced by typed
placeholders ([CARD], [IBAN], [SSN], [NATIONAL_ID], [EMAIL], [PHONE]).

Candidates are found with patterns and kept only when they validate: a card number must
pass the Luhn check (an order number of 16 digits mostly does not), an IBAN its check
digits (python-stdnum), a national id its check digit (python-stdnum; numbers of digits
alone only in their `region`, where a random number of that length rarely passes by
chance elsewhere, ids with letters in every region), a phone number must be a valid number
of its country (phonenumbers, reading numbers without a country code as `region`'s).
Digits inside a link (`https://…`, `www.…`) are the link's (an archive's timestamp, an
article number), not PII, and do not count towards the digits a kind needs to be looked
for. Where two finds overlap, the one that starts first (then the longer) wins. The cost
is linear in the text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.au import tfn
from stdnum.be import nn
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.mx import curp
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.se import personnummer
from stdnum.us import ssn
from stdnum.za import idnr as za_idnr

PLACEHOLDERS = {"card": "[CARD]", "iban": "[IBAN]", "ssn": "[SSN]",
                "national_id": "[NATIONAL_ID]", "email": "[EMAIL]", "phone": "[PHONE]"}
DEFAULT_REGION = "US"  # how a phone number without a country code is read

# 13 to 19 digits, single spaces or dashes allowed between them.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
# Bounded parts: no pattern here can backtrack over a long run of one character.
_MAYBE = re.compile(r"[0-9@]")  # every kind holds a digit, or an @
_DIGIT = re.compile(r"\d")
# The fewest digits each kind can hold: a text with fewer is not searched for it.
_FEWEST = {"card": 13, "iban": 2, "ssn": 9}


def _grouped(*sizes: int, separators: str = " .-") -> re.Pattern[str]:
    """Digits in groups of ``sizes``, each group maybe set off by one separator."""
    between = f"[{re.escape(separators)}]?"
    return re.compile(r"(?<![\w.-])" + between.join(rf"\d{{{n}}}" for n in sizes)
                      + r"(?![\w-]|\.\d)")


Validator = Callable[[str], bool]


def _compact(valid: Validator) -> Validator:
    return lambda value: valid(re.sub(r"[\s.-]", "", value))


IdKind = tuple[re.Pattern[str], Validator, int]  # the pattern, its check, its fewest digits


def _digits_only(valid: Validator, *sizes: int) -> IdKind:
    return _grouped(*sizes), valid, sum(sizes)


# National ids with letters: distinctive enough to look for in every region.
_LETTERED_IDS: list[IdKind] = [
    (re.compile(r"\b\d{2}\.?\d{3}\.?\d{3}[ -]?[A-Z]\b", re.IGNORECASE), _compact(dni.is_valid),
     8),
    (re.compile(r"\b[XYZ][ -]?\d{7}[ -]?[A-Z]\b", re.IGNORECASE), _compact(nie.is_valid), 7),
    (re.compile(r"\b[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]\b", re.IGNORECASE),
     codicefiscale.is_valid, 7),
    (re.compile(r"\b[A-Z]{4}\d{6}[HM][A-Z]{5}[A-Z0-9]\d\b", re.IGNORECASE), curp.is_valid, 7),
]
# National ids of digits alone, looked for in their region only.
_REGIONAL_IDS: dict[str, list[IdKind]] = {
    "AU": [_digits_only(tfn.is_valid, 3, 3, 3)],
    "BE": [_digits_only(nn.is_valid, 2, 2, 2, 3, 2)],
    "BR": [_digits_only(cpf.is_valid, 3, 3, 3, 2)],
    "CA": [_digits_only(sin.is_valid, 3, 3, 3)],
    "DE": [_digits_only(idnr.is_valid, 2, 3, 3, 3)],
    "FR": [_digits_only(nir.is_valid, 1, 2, 2, 2, 3, 3, 2)],
    "GB": [_digits_only(nhs.is_valid, 3, 3, 4)],
    "IN": [_digits_only(aadhaar.is_valid, 4, 4, 4)],
    "NL": [_digits_only(bsn.is_valid, 4, 2, 3), _digits_only(bsn.is_valid, 9)],
    "PL": [_digits_only(pesel.is_valid, 11)],
    "SE": [_digits_only(personnummer.is_valid, 6, 4)],
    "ZA": [_digits_only(za_idnr.is_valid, 13)],
}
_LINK = re.compile(r"(?:https?://|www\.)\S{1,2000}", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}")


@dataclass(frozen=True, slots=True)
class Find:
    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class Redacted:
    text: str
    kinds: tuple[str, ...]  # what was replaced, in text order (empty: nothing)


def finds(text: str, region: str = DEFAULT_REGION) -> list[Find]:
    """Every PII find in ``text``, in order, none overlapping."""
    if not _MAYBE.search(text):  # (most turns: no digit, no @, nothing to look for)
        return []
    links = [(m.start(), m.end()) for m in _LINK.finditer(text)]
    # A link's digits are the link's: the kinds that need more digits than the text holds
    # outside its links are not looked for (a kept find has all its digits outside).
    digits = len(_DIGIT.findall(_LINK.sub("", text))) if links else len(_DIGIT.findall(text))
    found = sorted((f for f in _all(text, region, digits)
                    if not any(start <= f.start < end for start, end in links)),
                   key=lambda f: (f.start, -f.end))
    kept: list[Find] = []
    for find in found:
        if not kept or find.start >= kept[-1].end:
            kept.append(find)
    return kept


def redact(text: str, region: str = DEFAULT_REGION) -> Redacted:
    """``text`` with every find replaced by its placeholder."""
    kept = finds(text, region)
    if not kept:
        return Redacted(text, ())
    parts, at = [], 0
    for find in kept:
        parts += [text[at:find.start], PLACEHOLDERS[find.kind]]
        at = find.end
    parts.append(text[at:])
    return Redacted("".join(parts), tuple(f.kind for f in kept))


def redacted(text: str, region: str = DEFAULT_REGION) -> str:
    """Only the text of `redact`."""
    return redact(text, region).text


@functools.cache
def fewest_phone_digits(region: str) -> int:
    """The fewest digits of a valid phone number in a text read in ``region``: a national
    number of the region, or any number written with its country code."""
    def shortest(metadata: phonenumbers.PhoneMetadata | None) -> int:
        lengths = [n for n in metadata.general_desc.possible_length if n > 0] \
            if metadata is not None and metadata.general_desc is not None else []
        return min(lengths, default=1)

    national = shortest(phonenumbers.PhoneMetadata.metadata_for_region(region))
    international = min(
        [len(str(m.country_code)) + shortest(m) for r in phonenumbers.SUPPORTED_REGIONS
         if (m := phonenumbers.PhoneMetadata.metadata_for_region(r)) is not None]
        + [len(str(cc)) + shortest(phonenumbers.PhoneMetadata.metadata_for_nongeo_region(cc))
           for cc in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS])
    return min(national, international)


def _all(text: str, region: str, digits: int) -> Iterator[Find]:
    """Every candidate that validates; ``digits``: how many the text holds outside its
    links (a kind that needs more is not looked for: most turns hold a few, and the phone
    matcher is the costliest part)."""
    if digits >= _FEWEST["card"]:
        for match in _CARD.finditer(text):
            if luhn.is_valid(re.sub(r"[ -]", "", match.group())):
                yield Find(match.start(), match.end(), "card")
    if digits >= _FEWEST["iban"]:
        for match in _IBAN.finditer(text):
            if iban.is_valid(match.group()):
                yield Find(match.start(), match.end(), "iban")
    if digits >= _FEWEST["ssn"]:
        for match in _SSN.finditer(text):
            if ssn.is_valid(match.group()):
                yield Find(match.start(), match.end(), "ssn")
    for pattern, valid, fewest in (*_LETTERED_IDS, *_REGIONAL_IDS.get(region, ())):
        if digits >= fewest:
            for match in pattern.finditer(text):
                if valid(match.group()):
                    yield Find(match.start(), match.end(), "national_id")
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield Find(match.start(), match.end(), "email")
    if digits >= fewest_phone_digits(region):
        for number in phonenumbers.PhoneNumberMatcher(text, region):
            yield Find(number.start, number.end, "phone")
