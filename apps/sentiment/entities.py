"""The watchlist, and finding the companies on it in an article's text.

Matching is whole-word and case-aware: a cashtag (`$AAPL`, any case) always counts; a bare
ticker of two or more characters only in capitals (`AAPL`, never the word "aapl"); a name or
alias as it is written ("Apple" but not "apple", "Meta" but not "Meta-analysis"), with a
possessive allowed ("Apple's"), and in compounds that still name the company ("Apple-Google
deal", "Microsoft-backed"). Aliases in lower case ("alphabet inc") match in any case.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apps.sentiment.models import Entity
from core.validation import problems

# A company added to the watchlist (or given new aliases) is linked to this much history.
RELINK_HISTORY = dt.timedelta(days=7)
# Up to 15 capitals, digits, '.' or '-' with a capital among them: AAPL, BRK.B, 0700.HK.
TICKER = re.compile(r"^(?=[A-Z0-9.\-]*[A-Z])[A-Z0-9][A-Z0-9.\-]{0,14}$")
# Compounds of a name that still mean the company: "Microsoft-backed", "Apple-made".
COMPOUND_SUFFIXES = (
    "backed", "based", "owned", "led", "linked", "listed", "made", "funded", "controlled",
    "run", "operated", "branded", "related", "affiliated", "focused", "built", "bound",
)  # fmt: skip
# Not inside a word, a cashtag or a handle; after a hyphen only within a compound of words
# ("Apple-Google deal", "non-Apple").
_WORD_BOUNDARY_BEFORE = r"(?:(?<![\w$@#-])|(?<=\w-))"
# A possessive may follow; a hyphen only before another name ("Apple-Google") or one of the
# suffixes above, so "Meta-analysis" is another word.
_WORD_BOUNDARY_AFTER = (
    r"(?:['\u2019]s)?(?!\w)(?!-(?![A-Z]|(?:" + "|".join(COMPOUND_SUFFIXES) + r")\b))"
)


class EntityIn(BaseModel):
    """A watchlist entry as the API and the demo files give it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    ticker: str = Field(min_length=1, max_length=15, examples=["AAPL"])
    name: str = Field(min_length=1, max_length=200, examples=["Apple"])
    aliases: list[str] = Field(default_factory=list, max_length=50, examples=[["iPhone maker"]])
    sector: str | None = Field(default=None, max_length=100)
    active: bool = True

    @field_validator("ticker")
    @classmethod
    def _ticker(cls, value: str) -> str:
        value = value.upper().removeprefix("$")
        if not TICKER.match(value):
            raise ValueError(
                "a ticker is up to 15 capitals, digits, '.' or '-', starting with a capital or a "
                "digit and holding at least one capital (AAPL, BRK.B, 0700.HK)"
            )
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        cleaned = [alias.strip() for alias in value]
        if any(not alias or len(alias) > 200 for alias in cleaned):
            raise ValueError("aliases must be non-empty and at most 200 characters")
        return list(dict.fromkeys(cleaned))


class EntityConflict(ValueError):
    """The ticker is already on the watchlist."""


def add_entity(session: Session, entry: EntityIn) -> Entity:
    entity = Entity(**entry.model_dump())
    session.add(entity)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise EntityConflict(f"{entry.ticker} is already on the watchlist") from None
    return entity


def upsert_entities(session: Session, entries: Iterable[EntityIn]) -> list[Entity]:
    """Add or update by ticker (imports and the demo). An update changes the fields the entry
    gives and keeps the others: a file that lists a company's name only keeps its aliases,
    sector and whether it is tracked (`aliases: []` removes them)."""
    existing = {entity.ticker: entity for entity in session.scalars(select(Entity))}
    saved = []
    for entry in entries:
        entity = existing.get(entry.ticker)
        if entity is None:
            entity = Entity(**entry.model_dump())
            session.add(entity)
            existing[entry.ticker] = entity
        else:
            for key, value in entry.model_dump(exclude_unset=True).items():
                setattr(entity, key, value)
        saved.append(entity)
    session.flush()
    return saved


def entity_by_ticker(session: Session, ticker: str) -> Entity | None:
    return session.scalar(select(Entity).where(Entity.ticker == ticker.upper().removeprefix("$")))


@dataclass(frozen=True)
class _Target:
    entity_id: uuid.UUID
    ticker: str


class EntityMatcher:
    """Which watchlist entities a text mentions; build once per watchlist, reuse per text.

    A name or alias two entities share (two share classes, a parent and its unit) mentions
    both: the text is linked to each."""

    def __init__(self, entities: Sequence[Entity]) -> None:
        self._targets: dict[str, _Target] = {}
        sensitive: dict[str, list[str]] = {}  # surface form -> group names
        insensitive: dict[str, list[str]] = {}
        cashtags: dict[str, str] = {}
        spellings: set[str] = set()  # lower-case aliases as written, beside their folded keys
        for index, entity in enumerate(e for e in entities if e.active):
            group = f"e{index}"
            self._targets[group] = _Target(entity.id, entity.ticker)
            cashtags[entity.ticker.casefold()] = group
            forms = {(entity.ticker, False)} if len(entity.ticker) >= 2 else set()  # "A": a word
            forms |= {(form, form.islower()) for form in (entity.name, *entity.aliases)}
            for form, fold in forms:
                table = insensitive if fold else sensitive
                names = table.setdefault(form.casefold() if fold else form, [])
                if group not in names:
                    names.append(group)
                if fold:  # "straße ag" as written, and "STRASSE AG" through its folded form
                    spellings.add(form)
        self._cashtags = cashtags
        self._sensitive = _alternation(sensitive)
        self._insensitive = _alternation([*insensitive, *spellings], flags=re.IGNORECASE)
        self._sensitive_groups = sensitive
        self._insensitive_groups = insensitive

    def __len__(self) -> int:
        return len(self._targets)

    def match(self, text: str) -> list[uuid.UUID]:
        """Ids of the entities `text` mentions, in order of first mention."""
        found: dict[uuid.UUID, int] = {}
        for tag in re.finditer(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9.\-]{0,14})(?![\w])", text):
            tag_text = tag.group(1).rstrip(".").casefold()
            # "$AAPL-linked": the tag is what comes before a hyphen unless a ticker has it.
            group = self._cashtags.get(tag_text) or self._cashtags.get(tag_text.split("-")[0])
            if group:
                _first(found, self._targets[group].entity_id, tag.start())
        for pattern, groups, fold in (
            (self._sensitive, self._sensitive_groups, False),
            (self._insensitive, self._insensitive_groups, True),
        ):
            if pattern is None:
                continue
            for hit in pattern.finditer(text):
                surface = hit.group("form")
                for group in groups.get(surface.casefold() if fold else surface, ()):
                    _first(found, self._targets[group].entity_id, hit.start())
        return sorted(found, key=found.__getitem__)


def _first(found: dict[uuid.UUID, int], entity_id: uuid.UUID, position: int) -> None:
    found[entity_id] = min(position, found.get(entity_id, position))


def _alternation(forms: Iterable[str], flags: int = 0) -> re.Pattern[str] | None:
    forms = set(forms)
    if not forms:
        return None
    # Longest first, so "Apple Inc" wins over "Apple" where both are listed.
    alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.compile(
        f"{_WORD_BOUNDARY_BEFORE}(?P<form>{alternatives}){_WORD_BOUNDARY_AFTER}", flags
    )


def load_matcher(session: Session) -> EntityMatcher:
    active = select(Entity).where(Entity.active.is_(True)).order_by(Entity.ticker)
    return EntityMatcher(list(session.scalars(active)))


def read_watchlist(path: Path) -> list[EntityIn]:
    """A YAML list of watchlist entries (ticker, name, aliases, sector); every error named."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML ({exc})") from None
    if raw is None:
        raise ValueError(f"{path}: the file is empty; expected a list of entries")
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of entries, got {type(raw).__name__}")
    entries, errors = [], []
    first: dict[str, int] = {}  # ticker -> the entry that named it
    for index, item in enumerate(raw, start=1):
        try:
            entry = EntityIn.model_validate(item)
        except ValidationError as exc:
            errors.append(f"entry {index}: {problems(exc, 'entry')}")
            continue
        if entry.ticker in first:
            errors.append(f"entry {index}: ticker {entry.ticker} is entry {first[entry.ticker]}'s")
            continue
        first[entry.ticker] = index
        entries.append(entry)
    if errors:
        raise ValueError(f"{path}: " + "\n  ".join(["invalid watchlist:", *errors]))
    return entries


def unlink_unmentioned(session: Session, entity: Entity, since: dt.datetime) -> int:
    """Remove `entity`'s links to articles published since `since` that no longer mention it
    (an alias taken away because it matched the wrong company); returns how many. A company
    no longer tracked keeps its links. Flushes, does not commit."""
    from apps.sentiment.models import Article, ArticleEntity

    matcher = EntityMatcher([entity])
    if not len(matcher):
        return 0
    rows = session.execute(
        select(ArticleEntity.article_id, Article.title, Article.body)
        .join(Article, Article.id == ArticleEntity.article_id)
        .where(ArticleEntity.entity_id == entity.id, ArticleEntity.published_at >= since)
    ).all()
    stale = [
        article_id
        for article_id, title, body in rows
        if not matcher.match(f"{title}\n{body}" if body else title)
    ]
    for chunk in (stale[i : i + 500] for i in range(0, len(stale), 500)):
        session.execute(
            delete(ArticleEntity).where(
                ArticleEntity.entity_id == entity.id, ArticleEntity.article_id.in_(chunk)
            )
        )
    session.flush()
    return len(stale)


def link_recent_articles(session: Session, entity: Entity, since: dt.datetime) -> int:
    """Link `entity` to the stored articles published since `since` that mention it (a company
    added to the watchlist, or given new aliases, gets its recent history); returns how many
    links were added. Flushes, does not commit."""
    from apps.sentiment.models import Article, ArticleEntity

    matcher = EntityMatcher([entity])
    if not len(matcher):
        return 0
    linked = set(
        session.scalars(
            select(ArticleEntity.article_id).where(ArticleEntity.entity_id == entity.id)
        )
    )
    rows = session.execute(
        select(Article.id, Article.title, Article.body, Article.published_at).where(
            Article.published_at >= since
        )
    )
    added = 0
    for article_id, title, body, published_at in rows:
        if article_id in linked or not matcher.match(f"{title}\n{body}" if body else title):
            continue
        session.add(
            ArticleEntity(article_id=article_id, entity_id=entity.id, published_at=published_at)
        )
        added += 1
    session.flush()
    return added
