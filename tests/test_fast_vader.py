"""The fast scorer gives exactly vaderSentiment 3.3.2's four numbers.

Checked on a sample of every corpus under ../shared/data (bench/scorer.py checks every
text of them), on the reference's own tricky examples, and on Hypothesis-generated text
built from the pieces VADER's rules react to. Equality is exact: ``==`` on the floats.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vaderSentiment import vaderSentiment as vader

from analytics.fast_vader import CACHE_MAX_CHARS, FastAnalyzer
from analytics.scoring import Scorer, Scores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_SIZE = 3000

REFERENCE = vader.SentimentIntensityAnalyzer()
BASE_LEXICON = dict(REFERENCE.lexicon)
FAST = FastAnalyzer(cache_size=0)


# -- the corpora -----------------------------------------------------------------------

def _tsv_texts(path: Path) -> Iterator[str]:
    """vader-groundtruth: id<TAB>rating<TAB>text, one snippet a line."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = line.rstrip("\n").split("\t", 2)
            if len(row) == 3:
                yield row[2]


def _jsonl_texts(path: Path) -> Iterator[str]:
    """twitter-care: one conversation a line, texts under turns[].text."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield from (turn["text"] for turn in json.loads(line).get("turns", []))


def _json_texts(value: object) -> Iterator[str]:
    """abcd-sample (and any other JSON): every string under a "text" key, and the text of
    every [speaker, text] pair (the "original" turns)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _json_texts(item)
    elif isinstance(value, list):
        if len(value) == 2 and all(isinstance(v, str) for v in value):
            yield value[1]
        else:
            for item in value:
                yield from _json_texts(item)


def corpus_texts(root: Path = SHARED_DATA) -> dict[str, list[str]]:
    """Every text of every corpus under ``root``, by file (relative path)."""
    corpora: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix == ".tsv":
            texts = list(_tsv_texts(path))
        elif path.suffix == ".jsonl":
            texts = list(_jsonl_texts(path))
        elif path.suffix == ".json":
            texts = list(_json_texts(json.loads(path.read_text(encoding="utf-8"))))
        else:
            continue
        corpora[str(path.relative_to(root))] = texts
    return corpora


def mismatches(texts: Iterable[str], fast: FastAnalyzer = FAST,
               reference: vader.SentimentIntensityAnalyzer = REFERENCE,
               ) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    """(text, reference scores, fast scores) for every text where they differ."""
    found = []
    for text in texts:
        expected = reference.polarity_scores(text)
        got = fast.polarity_scores(text)
        if got != expected or list(got) != list(expected):
            found.append((text, expected, got))
    return found


def _sample(corpora: dict[str, list[str]], size: int) -> list[str]:
    """Evenly spaced texts from each corpus, in proportion to its size, at least 50 each."""
    total = sum(map(len, corpora.values()))
    picked: list[str] = []
    for texts in corpora.values():
        want = min(len(texts), max(50, size * len(texts) // total))
        step = max(1, len(texts) // want) if want else 1
        picked.extend(texts[::step][:want])
    return picked


def test_same_as_reference_on_a_sample_of_every_corpus() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared corpora at {SHARED_DATA}")
    corpora = corpus_texts()
    assert {"twitter-care", "vader-groundtruth", "abcd-sample"} <= {
        name.split("/")[0] for name in corpora}
    assert all(corpora.values()), "a corpus file gave no text: its format changed?"
    sample = _sample(corpora, SAMPLE_SIZE)
    assert len(sample) >= SAMPLE_SIZE * 0.9
    assert mismatches(sample) == []


# -- hand-picked cases: the reference's demo sentences and known traps -----------------

TRICKY = [
    # the reference's own examples
    "VADER is smart, handsome, and funny.", "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.", "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.", "The book was good.",
    "At least it isn't a horrible book.", "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today SUX!", "Today only kinda sux! But I'll get by, lol", "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁", "Not bad at all",
    "Sentiment analysis has never been good.", "Sentiment analysis has never been this good!",
    "Most automated sentiment analysis tools are shit.",
    "With VADER, sentiment analysis is the shit!",
    "Other sentiment analysis tools can be quite bad.",
    "On the other hand, VADER is quite bad ass", "VADER is such a badass!",
    "Without a doubt, excellent idea.",
    "Roger Dodger is one of the most compelling variations on this theme.",
    "Roger Dodger is at least compelling as a variation on the theme.",
    "Roger Dodger is one of the least compelling variations on this theme.",
    "Not such a badass after all.", "Without a doubt, an excellent idea.",
    # ":D".isupper() is True: an emoticon makes the caps differ
    ":D great", ":D GREAT day", "XD good", "GOOD :-)", "GOOD GREAT", "good :D :D",
    # 'but': positions found by value, so equal valences before it are scaled twice
    "good good but good good", "bad, bad but bad, bad but good", "but good", "good but",
    "good BUT bad But nice", "nice nice nice but", "happy sad happy sad but happy sad",
    # ... and a value after 'but' equal to a halved one before it is halved, not * 1.5
    "I love it, but I accept it", "brave but ok", "agony but confusing",
    "love love but accept accept", "true but adequate but allow", "ok but brave but ok",
    # idioms: only with three tokens before, the first not in the lexicon
    "bad ass", "a b bad ass", "x y z bad ass", "this is the shit", "you are the bomb",
    "x y z yeah right", "it was the kiss of death", "a cake to die for", "a beating heart",
    "x y kind of good", "x y sort of bad", "x just enough good", "x y z bus stop fun",
    # never so / this, without doubt, least, no
    "never so good", "x never so good", "x never this bad", "x so good", "x y this good",
    "without doubt good", "x without doubt good", "x without a doubt good", "least good",
    "at least good", "very least good", "the least good", "no good", "no", "no no",
    "no problem", "x no or nor good", "no x or good", "no x nor bad", "kind of", "kind",
    "kind of kind", "so kind", "not kind of good",
    # negations, "n't", boosters, caps boosters
    "isn't good", "x isn't really good", "XN'T good", "x XN'T y good", "a CAN'T b c good",
    "é xn't good", "😀 XN'T so good", "very no good", "x REALLY no problem :D",
    "can't stand it", "didn't really like it",
    "wasn't very bad", "ain't nothing good", "uh-uh good", "UH-UH GOOD", "VERY good",
    "very GOOD", "VERY GOOD", "VERY good x", "x VERY good", "x x VERY good", "So good",
    "SO GOOD but BAD", "extremely bad", "EXTREMELY bad day", "barely good", "BARELY good",
    # punctuation emphasis and stripping
    "good!", "good!!!!!!", "good??", "good???", "good????", "bad?!?!", "!!!", "??", "",
    "   ", "\n\t", "...", "good.", "'good'", "\"good\"", "(good)", "ok,", "a,", ",a,",
    ":)", ":-(", ":'(", "<3", "</3", "(:", "):", "--good--", "good--", "--:)--",
    # emoji spacing and descriptions (one holds a "!")
    "😁", "😁😁", "a😁b", "a 😁 b", "a  😁", "😁 ", " 😁", "🆗", "🔛", "\U0001f51b!",
    "good🙂", "❤️", "❤ ❤", "👍🏽", "🇺🇸", "\u00a0😀\u00a0", "x\u2003😀",
    # Unicode case: final sigma, expanding lower-case, uppercase without lowercase
    "ΣΑΣ good", "İ good", "İYİ GOOD", "\u2102 good", "ǅ GOOD", "STRASSE ß good", "ÉCOLE bad",
    "\uff27\uff2f\uff2f\uff24 good", "good\u2028bad", "good\u0085bad", "good\x1cbad",
]


@pytest.mark.parametrize("text", TRICKY)
def test_same_as_reference_on_tricky_cases(text: str) -> None:
    assert FAST.polarity_scores(text) == REFERENCE.polarity_scores(text)


# -- generated text --------------------------------------------------------------------

_WORDS = sorted(w for w in BASE_LEXICON if w.isascii())
_EMOJI = sorted(REFERENCE.emojis)
_PHRASES = sorted({*vader.BOOSTER_DICT, *vader.NEGATE, *vader.SPECIAL_CASES,
                   *vader.SENTIMENT_LADEN_IDIOMS})
_RULE_WORDS = [
    "but", "BUT", "But", "least", "at least", "very least", "kind of", "sort of", "kind",
    "of", "never", "never so", "never this", "so", "this", "without", "doubt",
    "without doubt", "no", "No", "NO", "or", "nor", "not", "n't", "isn't", "ISN'T",
    "wouldn't", "xn't", "don't", "won't", "the", "at", "very", "just", "enough",
    # pairs of valences where one is half the other (love 3.2 / accept 1.6...)
    "love", "accept", "brave", "ok", "agony", "confusing"]
_EMOTICONS = [":D", ":-)", ":)", ":(", ":-(", "XD", "xD", ":P", ";)", "<3", ":'(", "D:",
              ":-D", "=)", ":/", "^_^", "-_-", "o_O", ":-|"]
_ODD_CHARS = "İıΣσςßǅℂＡ\u0130\u2126\u212a\u00b5\u0345ǈ"


def _cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.upper(), word.title(), word.lower(),
                            word.swapcase()])


_PIECE = st.one_of(
    st.sampled_from(_WORDS).flatmap(_cased),
    st.sampled_from(_PHRASES).flatmap(_cased),
    st.sampled_from(_RULE_WORDS).flatmap(_cased),
    st.sampled_from(_EMOJI),
    st.sampled_from(_EMOTICONS),
    st.text(alphabet="!?", min_size=1, max_size=7),
    st.text(alphabet=string.punctuation, max_size=3),
    st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=6),
    st.text(alphabet=_ODD_CHARS + "abcXYZ", min_size=1, max_size=4),
    st.text(max_size=4),
)
_SEPARATOR = st.sampled_from([" ", " ", " ", "  ", "", "\n", "\t", ", ", ". ", "! ", "\u00a0",
                              "\u3000", '"', "'", "(", ")", "-"])


@st.composite
def vader_texts(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(_PIECE, max_size=25))
    parts = [draw(_SEPARATOR) + piece for piece in pieces]
    return "".join(parts) + draw(_SEPARATOR)


_OVERLAY_KEYS = st.one_of(
    st.sampled_from(_WORDS),
    st.sampled_from(sorted(vader.BOOSTER_DICT)),
    st.sampled_from(sorted(vader.NEGATE)),
    st.sampled_from([w.lower() for w in _RULE_WORDS] + [":d", "xd", "the", "bus", "stop"]),
)
_OVERLAYS = st.dictionaries(
    _OVERLAY_KEYS,
    st.one_of(st.just(0.0), st.floats(-4, 4, allow_nan=False),
              # tiny ones: the 'but' rule's * 0.5 can round them to zero (neutral)
              st.sampled_from([1.5, -1.5, 2.0, -0.3, 5e-324, -5e-324, 1e-323])),
    max_size=8)

_SETTINGS = settings(derandomize=True, max_examples=500, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.text(max_size=120))
def test_same_as_reference_on_random_unicode(text: str) -> None:
    assert FAST.polarity_scores(text) == REFERENCE.polarity_scores(text)


@_SETTINGS
@given(vader_texts())
def test_same_as_reference_on_vader_pieces(text: str) -> None:
    assert FAST.polarity_scores(text) == REFERENCE.polarity_scores(text)


@_SETTINGS
@given(st.lists(st.one_of(st.sampled_from(_RULE_WORDS + _EMOTICONS),
                          st.sampled_from(_WORDS[::25]).flatmap(_cased),
                          st.text(alphabet="!?", min_size=1, max_size=5)),
                max_size=14))
def test_same_as_reference_on_dense_rule_words(words: list[str]) -> None:
    """Short texts packed with rule words, so that the rules meet each other."""
    text = " ".join(words)
    assert FAST.polarity_scores(text) == REFERENCE.polarity_scores(text)


@settings(derandomize=True, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_OVERLAYS, st.lists(vader_texts(), min_size=1, max_size=3))
def test_same_as_reference_with_an_overlay(overlay: dict[str, float],
                                           texts: list[str]) -> None:
    reference = vader.SentimentIntensityAnalyzer.__new__(vader.SentimentIntensityAnalyzer)
    reference.lexicon = {**BASE_LEXICON, **overlay}
    reference.emojis = REFERENCE.emojis
    fast = FastAnalyzer(cache_size=4)
    fast.update_lexicon(overlay)
    for text in [*texts, " ".join(overlay)]:
        assert fast.polarity_scores(text) == reference.polarity_scores(text)


@pytest.mark.parametrize(("overlay", "texts"), [
    # a valence the 'but' rule's * 0.5 rounds to zero counts as neutral
    ({"$:": 5e-324}, ["$: but", "$: $: good but", "$: BUT $:", "$: good but bad $:"]),
    # "İ" lower-cases to two characters: tokens are stripped before lower-casing
    ({"i\u0307x": 3.0, "i\u0307": 2.0}, ["\u0130x, good", "\u0130X: good", "(\u0130) ok"]),
    ({"σας": 2.0, "ας": -1.0}, ["ΣΑΣ good", "ΑΣ. ok", "ΣΑΣ'"]),
    ({"but": 2.0, "least": -1.0, "so": 1.0, "kind": 0.0}, ["good but least so kind of nice"]),
])
def test_overlay_edge_cases(overlay: dict[str, float], texts: list[str]) -> None:
    reference = vader.SentimentIntensityAnalyzer.__new__(vader.SentimentIntensityAnalyzer)
    reference.lexicon = {**BASE_LEXICON, **overlay}
    reference.emojis = REFERENCE.emojis
    fast = FastAnalyzer(lexicon=reference.lexicon)
    for text in texts:
        assert fast.polarity_scores(text) == reference.polarity_scores(text)


# -- the cache and the Scorer ----------------------------------------------------------

def test_cache_gives_the_same_scores_and_stays_bounded() -> None:
    cached = FastAnalyzer(cache_size=32)
    short = [f"good {i} :)" for i in range(100)] + ["bad", "ok!", "bad"]
    for text in short + short:
        assert cached.polarity_scores(text) == FAST.polarity_scores(text)
    info = cached.cache_info()
    assert info is not None and info.currsize == 32 and info.hits > 0

    long_text = "great " * (CACHE_MAX_CHARS // 6 + 1)  # longer texts are not cached
    assert len(long_text) > CACHE_MAX_CHARS
    assert cached.polarity_scores(long_text) == REFERENCE.polarity_scores(long_text)
    after = cached.cache_info()
    assert after is not None and after.currsize == 32 and after.misses == info.misses

    assert cached.polarity_scores("my account is blocked")["compound"] < 0
    cached.update_lexicon({"blocked": 2.0})  # an overlay must not meet stale scores
    assert cached.polarity_scores("my account is blocked")["compound"] > 0
    cleared = cached.cache_info()
    assert cleared is not None and cleared.currsize == 1
    assert FastAnalyzer(cache_size=0).cache_info() is None


def test_returned_dicts_are_fresh() -> None:
    cached = FastAnalyzer()
    first = cached.polarity_scores("fine")
    first["compound"] = 99.0
    assert cached.polarity_scores("fine") == REFERENCE.polarity_scores("fine")


def test_scorer_engines_agree_and_fast_is_default() -> None:
    overlay = {"blocked": 0.0, "error": -0.5}
    fast, reference = Scorer(overlay), Scorer(overlay, engine="reference")
    assert fast.engine == "fast" and reference.engine == "reference"
    for text in [*TRICKY, "my account is blocked", "an ERROR again!!"]:
        assert fast.score(text) == reference.score(text)
        assert isinstance(fast.score(text), Scores)
    with pytest.raises(ValueError, match="engine"):
        Scorer(engine="numba")  # type: ignore[arg-type]


def test_the_setting_picks_the_engine_and_fast_is_the_default() -> None:
    from contact_center.runtime import scorer_for
    from contact_center.settings import Settings

    assert scorer_for(Settings()).engine == "fast"
    reference = scorer_for(Settings(scorer="reference"))
    assert reference.engine == "reference"
    assert reference.score("I HATE waiting!!! :(") == scorer_for(Settings()).score(
        "I HATE waiting!!! :(")
