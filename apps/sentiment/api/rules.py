"""Alert rules and notification targets (`sentiment` scope)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apps.sentiment.alerts import AlertChange, close_rule_alerts, ensure_default_rules
from apps.sentiment.api.deps import PurgeQuery, keep_alerts
from apps.sentiment.articles import StorableUrl
from apps.sentiment.entities import entity_by_ticker
from apps.sentiment.models import Alert, AlertRule, Entity, RuleKind, WebhookTarget
from apps.sentiment.notify import notify_changes
from core.api.deps import (
    DispatcherDep,
    SessionDep,
    SessionFactoryDep,
    commit_or_conflict,
    scoped_router,
)
from core.storage.base import utcnow
from core.storage.models import Scope

router = scoped_router(Scope.SENTIMENT, "sentiment: rules and notifications")

DAY_S = 86_400


class RuleIn(BaseModel):
    """A rule over an entity's rolling window; without `ticker` it applies to every entity
    that has no rule of the same name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    ticker: str | None = Field(default=None, max_length=16)
    kind: RuleKind
    window_s: Annotated[int, Field(ge=60, le=30 * DAY_S)] = 3600
    threshold: float = Field(
        description="negative_share: a share in (0, 1), fires above; z_score: below zero, "
        "fires below; volume_spike: a ratio above 1, fires at or above"
    )
    min_articles: Annotated[int, Field(ge=1, le=100_000)] = 5
    for_s: Annotated[int, Field(ge=0, le=DAY_S)] = 0
    cooldown_s: Annotated[int, Field(ge=0, le=30 * DAY_S)] = 3600
    enabled: bool = True

    @model_validator(mode="after")
    def _threshold_fits_kind(self) -> RuleIn:
        valid = {
            RuleKind.NEGATIVE_SHARE: 0.0 < self.threshold < 1.0,
            RuleKind.Z_SCORE: self.threshold < 0.0,
            RuleKind.VOLUME_SPIKE: self.threshold > 1.0,
        }[self.kind]
        if not valid:
            raise ValueError(
                f"threshold {self.threshold:g} makes no sense for {self.kind.value}: a share in "
                "(0, 1) for negative_share, below 0 for z_score, above 1 for volume_spike"
            )
        return self


class RuleOut(BaseModel):
    id: uuid.UUID
    name: str
    ticker: str | None
    kind: RuleKind
    window_s: int
    threshold: float
    min_articles: int
    for_s: int
    cooldown_s: int
    enabled: bool
    created_at: dt.datetime


def rule_out(rule: AlertRule, ticker: str | None) -> RuleOut:
    return RuleOut(
        id=rule.id,
        name=rule.name,
        ticker=ticker,
        kind=rule.kind,
        window_s=rule.window_s,
        threshold=rule.threshold,
        min_articles=rule.min_articles,
        for_s=rule.for_s,
        cooldown_s=rule.cooldown_s,
        enabled=rule.enabled,
        created_at=rule.created_at,
    )


def _tickers(session: Session) -> dict[uuid.UUID, str]:
    return {
        entity_id: ticker for entity_id, ticker in session.execute(select(Entity.id, Entity.ticker))
    }


def _entity_id(session: Session, ticker: str | None) -> uuid.UUID | None:
    if ticker is None:
        return None
    entity = entity_by_ticker(session, ticker)
    if entity is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{ticker} is not on the watchlist")
    return entity.id


def _fields(entry: RuleIn, entity_id: uuid.UUID | None) -> dict[str, Any]:
    return {**entry.model_dump(exclude={"ticker"}), "entity_id": entity_id}


def _commit_rule(session: Session, rule: AlertRule) -> None:
    where = "this entity" if rule.entity_id else "all entities"
    commit_or_conflict(session, f"a rule named {rule.name!r} already exists for {where}")


@router.get("/rules", response_model=list[RuleOut])
def list_rules(session: SessionDep) -> list[RuleOut]:
    tickers = _tickers(session)
    rules = session.scalars(select(AlertRule).order_by(AlertRule.name, AlertRule.created_at))
    return [rule_out(r, tickers.get(r.entity_id) if r.entity_id else None) for r in rules]


@router.post("/rules", response_model=RuleOut, status_code=status.HTTP_201_CREATED)
def create_rule(entry: RuleIn, session: SessionDep) -> RuleOut:
    rule = AlertRule(**_fields(entry, _entity_id(session, entry.ticker)))
    session.add(rule)
    _commit_rule(session, rule)
    return rule_out(rule, entry.ticker.upper().removeprefix("$") if entry.ticker else None)


@router.post("/rules/defaults", response_model=list[RuleOut])
def install_default_rules(session: SessionDep) -> list[RuleOut]:
    """Add the default global rules that are missing (by name); returns those added."""
    try:
        added = ensure_default_rules(session)
        session.commit()
    except IntegrityError:  # a request at the same moment added them: nothing left to add
        session.rollback()
        added = ensure_default_rules(session)
        session.commit()
    return [rule_out(rule, None) for rule in added]


def _rule(session: Session, rule_id: uuid.UUID) -> AlertRule:
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rule {rule_id}")
    return rule


@router.put("/rules/{rule_id}", response_model=RuleOut)
def replace_rule(
    rule_id: uuid.UUID,
    entry: RuleIn,
    session: SessionDep,
    factory: SessionFactoryDep,
    dispatcher: DispatcherDep,
) -> RuleOut:
    """Replace a rule. Disabled, or moved to another company, its open alerts resolve (and
    are announced so) at once: nothing would judge them again."""
    rule = _rule(session, rule_id)
    for key, value in _fields(entry, _entity_id(session, entry.ticker)).items():
        setattr(rule, key, value)
    changes: list[AlertChange] = []
    if not rule.enabled or rule.entity_id is not None:
        keep = rule.entity_id if rule.enabled else None
        # Not flushed by the alerts' query: a name taken is the 409 of the commit below.
        with session.no_autoflush:
            changes = close_rule_alerts(session, rule.id, utcnow(), keep=keep)
    _commit_rule(session, rule)
    notify_changes(factory, dispatcher, changes)
    return rule_out(rule, entry.ticker.upper().removeprefix("$") if entry.ticker else None)


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "the rule has alerts; purge=true deletes them too"}},
)
def delete_rule(
    rule_id: uuid.UUID,
    session: SessionDep,
    purge: PurgeQuery = False,
) -> Response:
    """Remove a rule. A rule with alerts is refused (409) unless `purge=true`: its alerts are
    the team's record of what happened; `enabled: false` stops it and keeps them."""
    rule = _rule(session, rule_id)
    alerts = session.scalar(select(func.count(Alert.id)).where(Alert.rule_id == rule.id))
    keep_alerts(f"rule {rule.name!r}", alerts or 0, purge, instead="set enabled: false (PUT)")
    session.delete(rule)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StorableUrl = Field(
        description="Receives Slack-compatible JSON for each fired/resolved alert"
    )
    secret: str | None = Field(
        default=None, min_length=16, max_length=200, description="Sign the body (HMAC-SHA256)"
    )
    enabled: bool = True


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    signed: bool
    enabled: bool
    created_at: dt.datetime


def webhook_out(target: WebhookTarget) -> WebhookOut:
    return WebhookOut(
        id=target.id,
        url=target.url,
        signed=target.secret is not None,
        enabled=target.enabled,
        created_at=target.created_at,
    )


@router.get("/webhooks", response_model=list[WebhookOut])
def list_webhooks(session: SessionDep) -> list[WebhookOut]:
    return [
        webhook_out(t) for t in session.scalars(select(WebhookTarget).order_by(WebhookTarget.url))
    ]


@router.post("/webhooks", response_model=WebhookOut, status_code=status.HTTP_201_CREATED)
def create_webhook(entry: WebhookIn, session: SessionDep) -> WebhookOut:
    target = WebhookTarget(url=str(entry.url), secret=entry.secret, enabled=entry.enabled)
    session.add(target)
    commit_or_conflict(session, f"{entry.url} is already a target")
    return webhook_out(target)


@router.delete("/webhooks/{target_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(target_id: uuid.UUID, session: SessionDep) -> Response:
    target = session.get(WebhookTarget, target_id)
    if target is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook target {target_id}")
    session.delete(target)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
