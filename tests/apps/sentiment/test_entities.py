"""The watchlist: validating entries and finding companies in text."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from apps.sentiment.entities import EntityIn, EntityMatcher, read_watchlist
from apps.sentiment.models import Entity


def entity(ticker: str, name: str, *aliases: str, active: bool = True) -> Entity:
    return Entity(id=uuid.uuid4(), ticker=ticker, name=name, aliases=list(aliases), active=active)


APPLE = entity("AAPL", "Apple", "Apple Inc.", "iPhone maker")
META = entity("META", "Meta Platforms", "Meta")
ALPHABET = entity("GOOGL", "Alphabet", "alphabet inc")
AGILENT = entity("A", "Agilent Technologies")
GONE = entity("GONE", "Gone Corp", active=False)
MATCHER = EntityMatcher([APPLE, META, ALPHABET, AGILENT, GONE])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$AAPL rallies", [APPLE]),
        ("$aapl rallies", [APPLE]),  # cashtags in any case
        ("AAPL rallies", [APPLE]),  # a bare ticker in capitals
        ("aapl rallies", []),  # ...but not as a word in lower case
        ("Apple beats estimates", [APPLE]),
        ("Apple's margins widen", [APPLE]),
        ("Apple\u2019s margins widen", [APPLE]),  # typographic apostrophe
        ("apple harvest falls in Washington", []),  # the fruit, not the company
        ("Pineapple prices climb", []),  # whole words only
        ("Shares of the iPhone maker rose", [APPLE]),
        ("Meta cuts jobs", [META]),
        ("a meta-analysis of bank returns", []),
        ("Meta-analysis shows", []),  # hyphenated compounds are other words
        ("ALPHABET INC. results", [ALPHABET]),  # a lower-case alias matches in any case
        ("Alphabet and Meta Platforms both fell; $AAPL flat", [ALPHABET, META, APPLE]),
        ("A new record for Agilent Technologies", [AGILENT]),  # "A" alone is a word
        ("$A climbs", [AGILENT]),
        ("Gone Corp collapses", []),  # inactive entries are not matched
        ("#Apple and @Apple are handles, not mentions", []),
        ("Microsoft-backed startup and Apple-made chips", [APPLE]),  # compounds of the name
        ("Apple-Meta search deal under scrutiny", [APPLE, META]),
        ("$AAPL-linked funds", [APPLE]),
        ("Apple-ish design", []),  # not a compound that names the company
    ],
)
def test_matching_is_whole_word_and_case_aware(text: str, expected: list[Entity]) -> None:
    assert MATCHER.match(text) == [e.id for e in expected]


def test_a_lower_case_alias_matches_as_written_and_in_capitals() -> None:
    strasse = entity("STRS", "Strasse Holding", "straße ag")
    matcher = EntityMatcher([strasse])
    for text in ("straße ag reports record profit", "STRASSE AG reports", "Straße AG reports"):
        assert matcher.match(text) == [strasse.id], text


@pytest.mark.parametrize("ticker", ["0700.HK", "7203.T", "BRK.B", "BRK-B"])
def test_tickers_of_other_exchanges(ticker: str) -> None:
    assert EntityIn(ticker=ticker.lower(), name="X").ticker == ticker
    listed = entity(ticker, "Some Company")
    assert EntityMatcher([listed]).match(f"{ticker} shares rose") == [listed.id]


def test_order_of_first_mention_and_no_repeats() -> None:
    assert MATCHER.match("Meta, then Apple, then Meta again and $META") == [META.id, APPLE.id]


def test_a_name_two_entities_share_mentions_both() -> None:
    """Two share classes, or a parent and its unit: "Halvorsen" is each one's alias, and a
    headline that says it is linked to both, whichever was added first."""
    pharma = entity("HLVP", "Halvorsen Pharma", "Halvorsen")
    bio = entity("HLVB", "Halvorsen Biotherapeutics", "Halvorsen", "travexa")
    for order in ([pharma, bio], [bio, pharma]):
        matcher = EntityMatcher(order)
        assert matcher.match("Halvorsen shares slide") == [o.id for o in order]
        assert matcher.match("Halvorsen Pharma and TRAVEXA") == [pharma.id, bio.id]
        assert matcher.match("$HLVB up") == [bio.id]


def test_entries_are_normalised_and_checked() -> None:
    entry = EntityIn(ticker=" $aapl ", name=" Apple ", aliases=["Apple Inc.", "Apple Inc."])
    assert (entry.ticker, entry.name, entry.aliases) == ("AAPL", "Apple", ["Apple Inc."])
    with pytest.raises(ValidationError, match="ticker"):
        EntityIn(ticker="not a ticker", name="X")
    with pytest.raises(ValidationError, match="at least one capital"):
        EntityIn(ticker="7203", name="X")  # a bare number would match every such figure
    with pytest.raises(ValidationError, match="aliases"):
        EntityIn(ticker="X", name="X", aliases=[" "])
    with pytest.raises(ValidationError, match="extra"):
        EntityIn(ticker="X", name="X", exchange="NYSE")


def test_watchlist_file_errors_name_each_entry(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("- {ticker: AAPL, name: Apple, aliases: [Apple Inc.], sector: Tech}\n")
    assert [e.ticker for e in read_watchlist(good)] == ["AAPL"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {ticker: AAPL, name: Apple}\n- {ticker: '', name: X}\n- {name: Y}\n")
    with pytest.raises(ValueError, match=r"entry 2: ticker.*\n.*entry 3: ticker: Field required"):
        read_watchlist(bad)
    (tmp_path / "map.yaml").write_text("AAPL: Apple\n")
    with pytest.raises(ValueError, match="expected a list"):
        read_watchlist(tmp_path / "map.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="the file is empty"):
        read_watchlist(tmp_path / "empty.yaml")
    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "- {ticker: WLK, name: Walker}\n- {ticker: X, name: X}\n- {ticker: wlk, name: W}\n"
    )
    with pytest.raises(ValueError, match="entry 3: ticker WLK is entry 1's"):
        read_watchlist(twice)
