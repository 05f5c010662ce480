"""The support bot: classify a message, answer from the intent's template or hand off.

One `SupportBot` per process. It serves the production version of the intent model through
the core batching engine, notices a newly promoted version within `refresh_s`, and stores
every turn (masked) with its outcome, so a redelivered message gets the same answer and every
unsure or handed-off message reaches the review queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from apps.support.messages import Alternative, BotReply, HandoffReason, IncomingMessage
from apps.support.models import (
    Conversation,
    ConversationStatus,
    Customer,
    Intent,
    Message,
    MessageRole,
    ReviewItem,
)
from apps.support.policy import Decision, decide
from apps.support.settings import SupportSettings
from apps.support.slots import slot_values, slots_from_text
from apps.support.templates import render
from core.metrics import SUPPORT_MESSAGES
from core.ml.batching import BatchingConfig, DynamicBatcher, packs_rows, retire_later
from core.ml.loading import Classifier
from core.ml.novelty import ExampleIndex, with_similarity
from core.ml.serving import describe, load_for_serving
from core.ml.versions import production_version
from core.privacy import mask_personal_data
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.engine import session_scope

log = logging.getLogger(__name__)

ACTIVE = dt.timedelta(hours=1)


@dataclass
class IntentModel:
    """A loaded production version: its predictor behind a batcher, and its thresholds.

    With an example index (`core.ml.novelty`), each batcher row is the probabilities followed
    by the similarity to the nearest training example."""

    version_id: uuid.UUID
    version: int
    classifier: Classifier
    batcher: DynamicBatcher[str]
    thresholds: dict[str, float] = field(default_factory=dict)
    index: ExampleIndex | None = None

    async def score(self, text: str) -> tuple[np.ndarray, float | None]:
        """The message's probabilities (C,) and its similarity to the nearest example."""
        row = await self.batcher.submit(text)
        return (row[:-1], float(row[-1])) if self.index is not None else (row, None)


@dataclass(frozen=True)
class _Turn:
    """What the bot knows about a message before classifying it."""

    conversation_id: uuid.UUID
    status: ConversationStatus
    duplicate: BotReply | None = None


class SupportBot:
    """Answers `IncomingMessage`s; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        support: SupportSettings,
        factory: sessionmaker[Session],
        *,
        batching: BatchingConfig | None = None,
        refresh_s: float = 5.0,
    ) -> None:
        self.settings, self.support, self.factory = settings, support, factory
        self.batching = batching or settings.batching()
        self.refresh_s = refresh_s
        self._model: IntentModel | None = None
        self._checked_at = -float("inf")
        self._handoff: tuple[float, frozenset[str]] = (-float("inf"), frozenset())
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # replaced models' batchers
        self._load_error: str | None = None  # why the last version tried did not load

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.current_model(force=True)

    def not_serving(self) -> str | None:
        """For readiness, from another thread and without waiting: None while a model is
        served; otherwise why not (the last load's error), trying the load again in the
        background when it is due (as a message would)."""
        if self._model is not None:
            return None
        if self._loop is None:
            return "the bot is not started"
        asyncio.run_coroutine_threadsafe(self.current_model(), self._loop)
        return self._load_error or "not loaded yet"

    async def stop(self) -> None:
        if self._model is not None:
            await self._model.batcher.stop()
            self._model = None
        if self._retiring:
            await asyncio.wait(self._retiring)

    async def current_model(self, *, force: bool = False) -> IntentModel | None:
        """The production model, reloaded when another version has been promoted. With none
        served yet, a caller waits for a load in progress rather than hand off as `no_model`."""
        fresh = time.monotonic() - self._checked_at < self.refresh_s
        if not force and fresh and self._model is not None:
            return self._model
        async with self._lock:
            if not force and time.monotonic() - self._checked_at < self.refresh_s:
                return self._model
            self._checked_at = time.monotonic()
            found = await asyncio.to_thread(self._production)
            if found is None or (self._model and self._model.version_id == found[0]):
                return self._model
            try:
                loaded = await self._load(*found)
            except Exception as exc:  # keep serving the version we have; fix the files
                log.exception(
                    "cannot load %s v%d; keeping the current model",
                    self.support.model_name,
                    found[1],
                )
                self._load_error = f"cannot load v{found[1]}: {type(exc).__name__}: {exc}"
                return self._model
            previous, self._model, self._load_error = self._model, loaded, None
            if previous is not None:  # answers the messages it holds, then stops
                retire_later(previous.batcher, self._retiring)
            log.info(
                "serving %s v%d (%s)",
                self.support.model_name, loaded.version, describe(loaded.classifier),
            )  # fmt: skip
            return loaded

    def _production(self) -> tuple[uuid.UUID, int, Path, dict[str, Any]] | None:
        with self.factory() as session:
            try:
                version = production_version(session, self.support.model_name)
            except SQLAlchemyError as exc:  # readiness reports the database; keep serving
                log.warning("cannot look up the production intent model: %s", exc)
                return None
            if version is None:
                return None
            return (
                version.id,
                version.version,
                Path(version.artifact_path),
                dict(version.config.get("thresholds", {})),
            )

    async def _load(
        self, version_id: uuid.UUID, number: int, folder: Path, thresholds: dict[str, float]
    ) -> IntentModel:
        classifier = await asyncio.to_thread(load_for_serving, folder, self.settings, self.factory)
        index = None
        if "unfamiliar" in thresholds:  # versions trained before the check have none
            index = await asyncio.to_thread(ExampleIndex.load, folder)
            if index is None or not index.fits(classifier):
                log.warning(
                    "%s v%d has an unfamiliar threshold but no example index that fits its "
                    "model in %s; answering without the unfamiliar check",
                    self.support.model_name, number, folder,
                )  # fmt: skip
                index = None
        batcher = DynamicBatcher(
            classifier.tokenize,
            classifier.run if index is None else with_similarity(classifier, index),
            self.batching,
            name=f"{self.support.model_name}-v{number}",
            packs=packs_rows(classifier),
        )
        await batcher.start()
        return IntentModel(version_id, number, classifier, batcher, thresholds, index)

    # --- answering ------------------------------------------------------------------------

    async def handle(self, message: IncomingMessage) -> BotReply:
        masked = mask_personal_data(message.text)
        turn = await asyncio.to_thread(_retry_on_conflict, self._open_turn, message)
        if turn.duplicate is not None:
            return turn.duplicate
        model = await self.current_model()
        decision: Decision | None = None
        if turn.status is not ConversationStatus.BOT:
            reason: HandoffReason | None = HandoffReason.ALREADY_HANDED_OFF
        elif model is None:
            reason = HandoffReason.NO_MODEL
        else:
            probabilities, similarity = await model.score(message.text)
            handoff_intents = await self.handoff_intents()
            decision = decide(
                probabilities,
                model.classifier.labels,
                model.thresholds,
                text=message.text,
                similarity=similarity,
                handoff_intents=handoff_intents,
            )
            reason = decision.handoff_reason
        try:
            reply = await asyncio.to_thread(
                self._close_turn,
                message,
                masked,
                turn,
                decision,
                reason,
                model.version_id if model else None,
            )
            # The reply's reason: rendering the answer may still hand off (no answer template,
            # a missing slot value, the same question again).
            outcome = reply.handoff_reason
            SUPPORT_MESSAGES.labels(outcome.value if outcome else "answered").inc()
            return reply
        except IntegrityError:
            # The same message delivered twice at once: the other delivery stored it between
            # this one's two steps. Its answer is the one the customer gets.
            again = await asyncio.to_thread(self._open_turn, message)
            if again.duplicate is None:
                raise
            return again.duplicate

    async def handoff_intents(self) -> frozenset[str]:
        """The intents that mean "a person, please", read again every `refresh_s` (as the
        production model is), not at every message."""
        checked_at, names = self._handoff
        if time.monotonic() - checked_at >= self.refresh_s:
            names = await asyncio.to_thread(self._read_handoff_intents)
            self._handoff = (time.monotonic(), names)
        return names

    def _read_handoff_intents(self) -> frozenset[str]:
        with self.factory() as session:
            return frozenset(session.scalars(select(Intent.name).where(Intent.handoff)))

    def _open_turn(self, message: IncomingMessage) -> _Turn:
        """Find or create the conversation (and customer); spot a redelivered message."""
        with session_scope(self.factory) as session:
            conversation = session.scalars(
                select(Conversation).where(
                    Conversation.channel == message.channel,
                    Conversation.external_id == message.conversation_id,
                )
            ).first()
            if conversation is None:
                conversation = Conversation(
                    channel=message.channel,
                    external_id=message.conversation_id,
                    channel_data=dict(message.channel_data),
                )
                session.add(conversation)
            if message.customer_id is not None:
                conversation.customer_id = self._customer(session, message).id
            # A message is activity, even where it changes nothing else (a person has the
            # conversation): retention counts idle time from the last one. Marked here, before
            # the model runs, for a conversation quiet for an hour (retention keeps a day at
            # least), so a purge never takes one in the middle of a turn; `_close_turn` marks
            # the rest in the write it does anyway.
            quiet_since = conversation.updated_at  # None: created just now
            if quiet_since is not None and quiet_since < utcnow() - ACTIVE:
                conversation.updated_at = utcnow()
            session.flush()
            if message.message_id is not None:
                earlier = session.scalars(
                    select(Message).where(
                        Message.conversation_id == conversation.id,
                        Message.external_id == message.message_id,
                    )
                ).first()
                if earlier is not None and earlier.reply is not None:
                    reply = _stored_reply(earlier)
                    if earlier.text != mask_personal_data(message.text):
                        reply = dataclasses.replace(reply, other_text=True)
                    return _Turn(conversation.id, conversation.status, reply)
            return _Turn(conversation.id, conversation.status)

    def _customer(self, session: Session, message: IncomingMessage) -> Customer:
        customer = session.scalars(
            select(Customer).where(Customer.external_id == message.customer_id)
        ).first()
        if customer is None:
            customer = Customer(external_id=message.customer_id, name=message.customer_name)
            session.add(customer)
        elif message.customer_name and not customer.name:
            customer.name = message.customer_name
        return customer

    def _close_turn(
        self,
        message: IncomingMessage,
        masked: str,
        turn: _Turn,
        decision: Decision | None,
        reason: HandoffReason | None,
        version_id: uuid.UUID | None,
    ) -> BotReply:
        """Render the answer (or hand off) and store the turn, in one transaction."""
        with session_scope(self.factory) as session:
            conversation = session.get(Conversation, turn.conversation_id)
            answer: str | None = None
            said = slots_from_text(masked)  # a card number is never an order number
            values = self._slot_values(session, conversation, message, said)
            if decision is not None and reason is None:
                reason, answer = self._answer(session, conversation, decision, values, said)
            if reason is HandoffReason.ASKED_FOR_HUMAN:
                answer = self._handoff_message(session, decision, values)
            elif reason not in (None, HandoffReason.ALREADY_HANDED_OFF):
                # Not left waiting in silence: told a person takes over.
                answer = self.support.handoff_message.strip() or None
            conversation.slots = {**conversation.slots, **said}
            conversation.updated_at = utcnow()
            if reason is not None:
                conversation.status = ConversationStatus.HANDED_OFF
                conversation.last_intent, conversation.repeated_turns = None, 0
            reply = BotReply(
                message_id=uuid.uuid4(),  # the stored message's id: one INSERT, reply included
                conversation_id=conversation.id,
                intent=decision.intent if decision else None,
                confidence=decision.confidence if decision else None,
                alternatives=decision.alternatives if decision else [],
                answer=answer,
                handoff=reason is not None,
                handoff_reason=reason,
            )
            session.add(
                Message(
                    id=reply.message_id,
                    conversation_id=conversation.id,
                    external_id=message.message_id,
                    role=MessageRole.CUSTOMER,
                    text=masked,
                    intent=reply.intent,
                    confidence=reply.confidence,
                    alternatives=[a.__dict__ for a in reply.alternatives],
                    handoff=reply.handoff,
                    handoff_reason=reason.value if reason else None,
                    model_version_id=version_id,
                    reply=_reply_record(reply),
                )
            )
            session.flush()  # the message before what refers to it
            if reason is not None and reason is not HandoffReason.ALREADY_HANDED_OFF:
                session.add(ReviewItem(message_id=reply.message_id, reason=reason.value))
            if answer is not None:
                session.add(
                    Message(
                        conversation_id=conversation.id,
                        role=MessageRole.BOT,
                        text=mask_personal_data(answer),
                        intent=reply.intent,
                    )
                )
            return reply

    def _slot_values(
        self,
        session: Session,
        conversation: Conversation,
        message: IncomingMessage,
        said: dict[str, str],
    ) -> dict[str, Any]:
        customer = (
            session.get(Customer, conversation.customer_id) if conversation.customer_id else None
        )
        return slot_values(
            message=said,
            conversation=conversation.slots,
            customer_name=(customer.name if customer else None) or message.customer_name,
            customer_attributes=customer.attributes if customer else {},
            metadata=message.metadata,
        )

    def _answer(
        self,
        session: Session,
        conversation: Conversation,
        decision: Decision,
        values: dict[str, Any],
        said: dict[str, str],
    ) -> tuple[HandoffReason | None, str | None]:
        """The rendered answer, or why there is none (repeated question, missing value...)."""
        intent = session.scalars(select(Intent).where(Intent.name == decision.intent)).first()
        if intent is not None and set(intent.tags) & set(self.support.repeat_exempt_tags):
            # "thanks", then "bye": said again, these are not a question the answer failed.
            conversation.last_intent, conversation.repeated_turns = None, 0
        elif conversation.last_intent == decision.intent and not _new_values(conversation, said):
            conversation.repeated_turns += 1
        else:  # another intent, or the same about something else (another order number)
            conversation.last_intent, conversation.repeated_turns = decision.intent, 1
        if conversation.repeated_turns >= self.support.max_repeated_turns:
            return HandoffReason.REPEATED_FAILURE, None
        if intent is None or not intent.answer.strip():
            return HandoffReason.NO_ANSWER, None
        rendered = render(intent.answer, values)
        if rendered.missing:
            return HandoffReason.MISSING_INFORMATION, None
        return None, rendered.text

    def _handoff_message(
        self, session: Session, decision: Decision | None, values: dict[str, Any]
    ) -> str | None:
        """What to tell a customer handed to a person: the answer of the handoff intent the
        model found likeliest for the message (of the top intent and its alternatives), else
        of the first handoff intent by name."""
        query = select(Intent).where(Intent.handoff).order_by(Intent.name)
        intents = {intent.name: intent for intent in session.scalars(query)}
        guesses = [decision.intent, *(a.intent for a in decision.alternatives)] if decision else []
        chosen = next((intents[name] for name in guesses if name in intents), None)
        chosen = chosen or next(iter(intents.values()), None)
        if chosen is None or not chosen.answer.strip():
            return None
        rendered = render(chosen.answer, values)
        return None if rendered.missing else rendered.text


def _new_values(conversation: Conversation, said: dict[str, str]) -> bool:
    """Whether the message names a value the conversation had not, or had otherwise."""
    return any(conversation.slots.get(name) != value for name, value in said.items())


def _retry_on_conflict(step: Callable[[IncomingMessage], _Turn], message: IncomingMessage) -> _Turn:
    """Run `step` again once if a concurrent request created the same row first."""
    try:
        return step(message)
    except IntegrityError:
        return step(message)


def _reply_record(reply: BotReply) -> dict[str, Any]:
    """The reply as stored with its message: the answer masked like every stored text (a slot
    may bring in an email or a phone number), so a redelivered message gets it masked."""
    return {
        "intent": reply.intent,
        "confidence": reply.confidence,
        "alternatives": [a.__dict__ for a in reply.alternatives],
        "answer": mask_personal_data(reply.answer) if reply.answer is not None else None,
        "handoff": reply.handoff,
        "handoff_reason": reply.handoff_reason.value if reply.handoff_reason else None,
    }


def _stored_reply(message: Message) -> BotReply:
    record = message.reply or {}
    reason = record.get("handoff_reason")
    return BotReply(
        message_id=message.id,
        conversation_id=message.conversation_id,
        intent=record.get("intent"),
        confidence=record.get("confidence"),
        alternatives=[Alternative(**a) for a in record.get("alternatives", [])],
        answer=record.get("answer"),
        handoff=bool(record.get("handoff")),
        handoff_reason=HandoffReason(reason) if reason else None,
        duplicate=True,
    )
