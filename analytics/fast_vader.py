"""vaderSentiment 3.3.2's ``polarity_scores``, re-implemented to run several times faster
with exactly the same four numbers for every input.

Same tables (the lexicon, emoji descriptions, boosters, negations and idioms are taken
from the installed ``vaderSentiment``), same rules, same float operations in the same
order where the order can change a bit of the result. What makes it faster:

- each token is lower-cased and checked for ALL CAPS once per text (the reference
  lower-cases the whole token list again for every rule it checks, for every lexicon
  word: quadratic in the text's length);
- only the tokens found in the lexicon do any per-token Python work; splitting,
  stripping, lower-casing and the lexicon look-ups run as C-level ``map`` calls;
- a lexicon word with none of the words the rules react to among its three preceding
  tokens (boosters, negations, "no", "least", "never", "so", "this") and no idiom
  around it takes its valence straight from the lexicon: the rules would not change it;
- emoji are looked for only in texts with a non-ASCII character, visiting only those
  characters instead of every one;
- an optional LRU cache holds the scores of short texts, which repeat ("ok", "thanks").

Quirks of the reference that are reproduced on purpose (each is marked where it is):
the 'but' rule finds list positions by *value* (``list.index``), so a valence equal to
one already scaled (1.6 after 'but', 3.2 halved before it) scales that earlier one again
and is itself left as it was; the idiom check only runs for words with at least three
tokens before them, the first of which is not a lexicon word; "so"/"this" just before a
word boosts it by 1.25 without any "never"; boosters that are themselves lexicon words
never boost; ``":D".isupper()`` is True, so emoticons count as ALL CAPS words; emoji
descriptions are joined with one space only when the previous character was not an
ASCII space, and the punctuation count ("!", "?") is taken on the text *after* emoji
replacement (some descriptions hold a "!"); lower-casing is per token, after the
punctuation strip (what "İ" or a final "Σ" becomes depends on it).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from functools import cache, lru_cache
from itertools import compress, repeat
from operator import ne
from typing import TYPE_CHECKING

from vaderSentiment import vaderSentiment as _vader

if TYPE_CHECKING:
    from functools import _CacheInfo, _lru_cache_wrapper

Quad = tuple[float, float, float, float]  # neg, neu, pos, compound: the reference's order

_PUNCT = string.punctuation
_N_SCALAR: float = _vader.N_SCALAR
_C_INCR: float = _vader.C_INCR
_BOOSTERS: dict[str, float] = dict(_vader.BOOSTER_DICT)
_NEGATIONS = frozenset(_vader.NEGATE)
_SO_THIS = ("so", "this")
_OR_NOR = ("or", "nor")

# Multi-word phrases keyed by their words. Tokens never contain a space (they come from
# str.split(), and no character lower-cases to one), so "a b" equals a phrase exactly
# when ("a", "b") equals the phrase split on spaces: a tuple look-up instead of a format.
_IDIOMS: dict[tuple[str, ...], float] = {
    tuple(k.split(" ")): v for k, v in _vader.SPECIAL_CASES.items()}
_BOOSTER_NGRAMS: dict[tuple[str, ...], float] = {
    tuple(k.split(" ")): v for k, v in _BOOSTERS.items() if " " in k}

# Tokens that can change the valence of a lexicon word up to three places after them:
# boosters, negations (and any word with "n't"), "no", "least", "never", "so", "this".
# ("without"/"doubt" only cancel a negation, and "without" is one.) Idioms are found
# separately, by their first two words.
_TRIGGERS = frozenset(
    {w for w in _BOOSTERS if " " not in w}
    | _NEGATIONS
    | {"no", "least", "never", "so", "this"})
_IDIOM_PAIRS = frozenset(
    phrase[:2] for phrase in (*_IDIOMS, *_BOOSTER_NGRAMS) if len(phrase) > 1)
_IDIOM_FIRST = frozenset(pair[0] for pair in _IDIOM_PAIRS)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_EMPTY: Quad = (0.0, 0.0, 0.0, 0.0)
_NEUTRAL: Quad = (0.0, 1.0, 0.0, 0.0)  # tokens, none with a valence: what the reference gives

CACHE_SIZE = 8192
CACHE_MAX_CHARS = 64


@cache
def reference_tables() -> tuple[dict[str, float], dict[str, str]]:
    """The lexicon and the emoji descriptions, read by the installed vaderSentiment itself
    (so the files, their parsing and any duplicate lines are the reference's)."""
    analyzer = _vader.SentimentIntensityAnalyzer()
    return dict(analyzer.lexicon), dict(analyzer.emojis)


def _negated(word: str) -> bool:
    """The reference's ``negated([word])``: a negation word, or any word with "n't"."""
    return word in _NEGATIONS or "n't" in word


def _strip_tokens(words: list[str]) -> list[str]:
    """SentiText's ``_strip_punc_if_word`` on every word: leading and trailing ASCII
    punctuation goes, unless what is left has two characters or fewer (":)", "a,")."""
    stripped = list(map(str.strip, words, repeat(_PUNCT)))
    for i in compress(range(len(words)), map(ne, stripped, words)):
        if len(stripped[i]) <= 2:
            stripped[i] = words[i]
    return stripped


def _booster_scalar(word: str, emphasised: bool, valence: float) -> float:
    """The reference's ``scalar_inc_dec`` with the token already lower-cased;
    ``emphasised``: the token is ALL CAPS and the text's caps differ (is_cap_diff)."""
    scalar = 0.0
    boost = _BOOSTERS.get(word)
    if boost is not None:
        scalar = boost
        if valence < 0:
            scalar *= -1
        if emphasised:
            if valence > 0:
                scalar += _C_INCR
            else:
                scalar -= _C_INCR
    return scalar


def _negation_check(valence: float, lw: list[str], start_i: int, i: int) -> float:
    if start_i == 0:
        if _negated(lw[i - 1]):
            valence = valence * _N_SCALAR
    elif start_i == 1:
        if lw[i - 2] == "never" and lw[i - 1] in _SO_THIS:
            valence = valence * 1.25
        elif lw[i - 2] == "without" and lw[i - 1] == "doubt":
            pass
        elif _negated(lw[i - 2]):
            valence = valence * _N_SCALAR
    else:
        # Quirk kept: by operator precedence "so"/"this" right before the word boosts it
        # whether or not "never" comes first.
        if (lw[i - 3] == "never" and lw[i - 2] in _SO_THIS) or lw[i - 1] in _SO_THIS:
            valence = valence * 1.25
        elif lw[i - 3] == "without" and (lw[i - 2] == "doubt" or lw[i - 1] == "doubt"):
            pass
        elif _negated(lw[i - 3]):
            valence = valence * _N_SCALAR
    return valence


def _special_idioms_check(valence: float, lw: list[str], i: int) -> float:
    """Only called with i >= 3 (the reference calls it from the third look-back step)."""
    three, two, one, zero = lw[i - 3], lw[i - 2], lw[i - 1], lw[i]
    for seq in ((one, zero), (two, one, zero), (two, one), (three, two, one), (three, two)):
        idiom = _IDIOMS.get(seq)
        if idiom is not None:
            valence = idiom
            break
    n = len(lw)
    if n - 1 > i:
        idiom = _IDIOMS.get((zero, lw[i + 1]))
        if idiom is not None:
            valence = idiom
    if n - 1 > i + 1:
        idiom = _IDIOMS.get((zero, lw[i + 1], lw[i + 2]))
        if idiom is not None:
            valence = idiom
    for gram in ((three, two, one), (three, two), (two, one)):
        boost = _BOOSTER_NGRAMS.get(gram)
        if boost is not None:
            valence = valence + boost
    return valence


def _near_idiom(lw: list[str], i: int) -> bool:
    """Whether the idiom check (run for lexicon words with i >= 3) could match: every
    phrase it looks up starts with a pair of consecutive tokens from i - 3 to i + 1."""
    if _IDIOM_FIRST.isdisjoint(lw[i - 3:i + 1]):
        return False
    pairs = _IDIOM_PAIRS
    return ((lw[i - 3], lw[i - 2]) in pairs or (lw[i - 2], lw[i - 1]) in pairs
            or (lw[i - 1], lw[i]) in pairs or (i + 1 < len(lw) and (lw[i], lw[i + 1]) in pairs))


def _but_check(positions: list[int], values: list[float], but_at: int) -> None:
    """The reference's ``_but_check`` on the non-zero sentiments only (zeros stay zero and
    are never equal to a non-zero value, so leaving them out changes nothing).

    Quirk kept: each value is looked up by equality (``list.index``), so the *first*
    equal value is the one scaled, possibly again, and its position decides the factor."""
    for k in range(len(values)):
        value = values[k]
        first = values.index(value)
        if positions[first] < but_at:
            values[first] = value * 0.5
        elif positions[first] > but_at:
            values[first] = value * 1.5


def _punctuation_emphasis(text: str) -> float:
    ep_count = text.count("!")
    if ep_count > 4:
        ep_count = 4
    ep_amplifier = ep_count * 0.292
    qm_count = text.count("?")
    qm_amplifier: float = 0
    if qm_count > 1:
        qm_amplifier = qm_count * 0.18 if qm_count <= 3 else 0.96
    return ep_amplifier + qm_amplifier


def _normalize(score: float, alpha: float = 15) -> float:
    norm_score = score / math.sqrt((score * score) + alpha)
    if norm_score < -1.0:
        return -1.0
    if norm_score > 1.0:
        return 1.0
    return norm_score


def _score_valence(values: list[float], n_tokens: int, text: str) -> Quad:
    """The reference's ``score_valence``; ``values`` are the sentiments that were non-zero
    before the 'but' rule, in token order; the other ``n_tokens - len(values)`` were zero.
    Adding a zero to a float sum leaves it unchanged, so the sums are the reference's to
    the last bit."""
    sum_s = float(sum(values))
    punct_emph_amplifier = _punctuation_emphasis(text)
    if sum_s > 0:
        sum_s += punct_emph_amplifier
    elif sum_s < 0:
        sum_s -= punct_emph_amplifier
    compound = _normalize(sum_s)

    pos_sum = 0.0
    neg_sum = 0.0
    neu_count = n_tokens - len(values)
    for value in values:
        if value > 0:
            pos_sum += (float(value) + 1)
        elif value < 0:
            neg_sum += (float(value) - 1)
        else:  # a tiny overlay valence that the 'but' rule's * 0.5 rounded to zero
            neu_count += 1

    if pos_sum > math.fabs(neg_sum):
        pos_sum += punct_emph_amplifier
    elif pos_sum < math.fabs(neg_sum):
        neg_sum -= punct_emph_amplifier

    total = pos_sum + math.fabs(neg_sum) + neu_count
    pos = math.fabs(pos_sum / total)
    neg = math.fabs(neg_sum / total)
    neu = math.fabs(neu_count / total)
    return (round(neg, 3), round(neu, 3), round(pos, 3), round(compound, 4))


class FastAnalyzer:
    """Drop-in for ``SentimentIntensityAnalyzer.polarity_scores``; thread-safe.

    ``lexicon`` is the word -> valence dict the rules read (a copy of VADER's unless one
    is given). Change it through ``update_lexicon`` so that the cache is cleared; after
    editing the dict directly, call ``clear_cache``.
    """

    def __init__(self, lexicon: Mapping[str, float] | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        vader_lexicon, emojis = reference_tables()
        self.lexicon: dict[str, float] = dict(vader_lexicon if lexicon is None else lexicon)
        self.emojis: dict[str, str] = emojis
        # The reference tests one character at a time, so only one-character keys match,
        # and none of them is ASCII: ASCII texts skip the replacement.
        if any(len(k) == 1 and k.isascii() for k in emojis):
            raise ValueError("an ASCII emoji key would break the ASCII fast path")
        self.cache_size = cache_size
        self._cached: _lru_cache_wrapper[Quad] | None = (
            lru_cache(maxsize=cache_size)(self._compute) if cache_size > 0 else None)

    def update_lexicon(self, overlay: Mapping[str, float]) -> None:
        """Apply an overlay on top of the lexicon (as the Scorer does) and forget cached
        scores."""
        self.lexicon.update(overlay)
        self.clear_cache()

    def clear_cache(self) -> None:
        if self._cached is not None:
            self._cached.cache_clear()

    def cache_info(self) -> _CacheInfo | None:
        """functools' hits/misses/maxsize/currsize, or None without a cache."""
        return self._cached.cache_info() if self._cached is not None else None

    def polarity_scores(self, text: str) -> dict[str, float]:
        neg, neu, pos, compound = self.polarity_tuple(text)
        return {"neg": neg, "neu": neu, "pos": pos, "compound": compound}

    def polarity_tuple(self, text: str) -> Quad:
        """(neg, neu, pos, compound), without building a dict."""
        if self._cached is not None and len(text) <= CACHE_MAX_CHARS:
            return self._cached(text)
        return self._compute(text)

    # -- the algorithm -------------------------------------------------------------------

    def _replace_emoji(self, text: str) -> str:
        """The reference's emoji loop: each emoji character becomes its description,
        preceded by a space unless the previous character was an ASCII space or there is
        none. Leading/trailing whitespace is kept: nothing downstream sees it. Only the
        non-ASCII characters are visited (all emoji keys are non-ASCII; a one-character
        class of ~1,200 astral characters would make the regex scan a list per character).
        """
        emojis = self.emojis
        parts: list[str] = []
        prev_space = True
        last = 0
        for match in _NON_ASCII.finditer(text):
            description = emojis.get(match.group())
            if description is None:
                continue
            start = match.start()
            if start > last:
                parts.append(text[last:start])
                prev_space = text[start - 1] == " "
            if not prev_space:
                parts.append(" ")
            parts.append(description)
            prev_space = False
            last = start + 1
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    def _compute(self, text: str) -> Quad:
        if not text.isascii():
            text = self._replace_emoji(text)
        words = text.split()
        n = len(words)
        if n == 0:
            return _EMPTY

        upper: list[bool] | None = None
        if text.isascii():
            # For ASCII, lower-casing commutes with the punctuation strip and keeps
            # lengths, so the whole text is lower-cased in one call.
            lowered = text.lower()
            if lowered == text:  # no capital letter: no token can be ALL CAPS
                lw = _strip_tokens(words)
            else:
                lw = _strip_tokens(lowered.split())
                upper = list(map(str.isupper, words))
            # The strip never cuts into "n't" ("'" sits between two letters).
            has_nt = "n't" in lowered
        else:
            # Per token: lower-casing can change lengths ("İ") and depends on context
            # (final sigma), so it follows the strip as in the reference.
            lw = list(map(str.lower, _strip_tokens(words)))
            upper = list(map(str.isupper, words))
            has_nt = "n't" in " ".join(lw)
        # The strip only removes punctuation, which has no case, so a token is ALL CAPS
        # exactly when its unstripped word is (":D" is, as in the reference).
        if upper is not None and not 0 < n - upper.count(True) < n:
            upper = None  # caps only add emphasis when some tokens are ALL CAPS, some not

        lexicon = self.lexicon
        hits = list(compress(range(n), map(lexicon.__contains__, lw)))
        if not hits:
            return _NEUTRAL

        positions: list[int] = []
        values: list[float] = []
        triggers = _TRIGGERS
        for i in hits:
            word = lw[i]
            if word in _BOOSTERS:
                continue  # boosters score 0 themselves, even when in the lexicon
            if word == "kind" and i < n - 1 and lw[i + 1] == "of":
                continue
            before = lw[i - 3 if i >= 3 else 0:i]
            if (word == "no"
                    or not triggers.isdisjoint(before)
                    or (has_nt and "n't" in " ".join(before))
                    or (i >= 3 and _near_idiom(lw, i))):
                valence = self._valence(i, lw, upper)
            else:
                # Nothing near that any rule reacts to: the lexicon value stands.
                valence = lexicon[word]
                if upper is not None and upper[i]:
                    valence = valence + _C_INCR if valence > 0 else valence - _C_INCR
            if valence:
                positions.append(i)
                values.append(valence)

        if "but" in lw:
            _but_check(positions, values, lw.index("but"))
        return _score_valence(values, n, text)

    def _valence(self, i: int, lw: list[str], upper: list[bool] | None) -> float:
        """The reference's ``sentiment_valence`` for the lexicon word at ``i``, every rule
        in its order. ``upper`` (ALL CAPS flags) is None unless some tokens are ALL CAPS
        and some are not: the only case where caps add emphasis."""
        lexicon = self.lexicon
        n = len(lw)
        word = lw[i]
        valence = lexicon[word]
        # "no" before another lexicon word is a negation, not a sentiment of its own.
        if word == "no" and i != n - 1 and lw[i + 1] in lexicon:
            valence = 0.0
        if ((i > 0 and lw[i - 1] == "no") or (i > 1 and lw[i - 2] == "no")
                or (i > 2 and lw[i - 3] == "no" and lw[i - 1] in _OR_NOR)):
            valence = lexicon[word] * _N_SCALAR

        if upper is not None and upper[i]:
            if valence > 0:
                valence += _C_INCR
            else:
                valence -= _C_INCR

        for start_i in range(3):
            j = i - (start_i + 1)
            if j < 0:
                break
            if lw[j] in lexicon:
                continue  # quirk kept: a booster that is a lexicon word never boosts
            s = _booster_scalar(lw[j], upper is not None and upper[j], valence)
            if start_i == 1 and s != 0:
                s = s * 0.95
            if start_i == 2 and s != 0:
                s = s * 0.9
            valence = valence + s
            valence = _negation_check(valence, lw, start_i, i)
            if start_i == 2:
                valence = _special_idioms_check(valence, lw, i)

        return self._least_check(valence, lw, i)

    def _least_check(self, valence: float, lw: list[str], i: int) -> float:
        if i > 1 and lw[i - 1] not in self.lexicon and lw[i - 1] == "least":
            if lw[i - 2] != "at" and lw[i - 2] != "very":
                valence = valence * _N_SCALAR
        elif i > 0 and lw[i - 1] not in self.lexicon and lw[i - 1] == "least":
            valence = valence * _N_SCALAR
        return valence
