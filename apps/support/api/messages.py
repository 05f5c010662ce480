"""`/v1/support`: answer messages, inspect and release conversations, customers, training."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from apps.support.api.deps import BotDep
from apps.support.messages import (
    MAX_TEXT,
    BotReply,
    Channel,
    HandoffReason,
    IncomingMessage,
    SlotValues,
)
from apps.support.models import Conversation, ConversationStatus, Customer, Message
from apps.support.training import TRAIN_JOB, SupportTrainParams
from core import jobs
from core.api.deps import (
    DispatcherDep,
    SessionDep,
    SessionFactoryDep,
    scoped_router,
    unavailable,
)
from core.api.jobs import JobPublic
from core.storage.models import Scope

router = scoped_router(Scope.SUPPORT, "support")


def blank_as_none(name: str | None) -> str | None:
    """A name with its outer spaces taken off; a blank one is no name."""
    return (name or "").strip() or None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=MAX_TEXT, description=f"At most {MAX_TEXT} characters")
    customer_id: str | None = Field(default=None, min_length=1, max_length=200)
    customer_name: str | None = Field(default=None, max_length=200)
    message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Your id for this message: sending it again returns the same answer",
    )
    metadata: SlotValues = Field(
        default_factory=dict, max_length=50, description="Slot values, e.g. {'order_id': ...}"
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value

    @field_validator("customer_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return blank_as_none(value)


class AlternativeOut(BaseModel):
    intent: str
    confidence: float


class MessageOut(BaseModel):
    message_id: uuid.UUID
    conversation_id: str
    intent: str | None
    confidence: float | None
    alternatives: list[AlternativeOut]
    answer: str | None
    handoff: bool
    handoff_reason: HandoffReason | None
    duplicate: bool

    @classmethod
    def of(cls, reply: BotReply, conversation_id: str) -> MessageOut:
        return cls(
            message_id=reply.message_id,
            conversation_id=conversation_id,
            intent=reply.intent,
            confidence=reply.confidence,
            alternatives=[AlternativeOut(**a.__dict__) for a in reply.alternatives],
            answer=reply.answer,
            handoff=reply.handoff,
            handoff_reason=reply.handoff_reason,
            duplicate=reply.duplicate,
        )


@router.post(
    "/messages",
    response_model=MessageOut,
    summary="Answer a customer's message",
    responses={409: {"description": "the message_id was used for another text before"}},
)
async def post_message(body: MessageIn, bot: BotDep) -> MessageOut:
    reply = await bot.handle(
        IncomingMessage(
            channel=Channel.API,
            conversation_id=body.conversation_id,
            text=body.text,
            customer_id=body.customer_id,
            customer_name=body.customer_name,
            message_id=body.message_id,
            metadata=dict(body.metadata),
        )
    )
    if reply.other_text:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"message_id {body.message_id!r} was used for another message in conversation "
            f"{body.conversation_id!r}; a new message needs a new message_id",
        )
    return MessageOut.of(reply, body.conversation_id)


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    role: str
    text: str
    intent: str | None
    confidence: float | None
    handoff: bool
    handoff_reason: str | None
    created_at: dt.datetime


class ConversationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel: str
    external_id: str
    status: ConversationStatus
    slots: dict[str, Any]
    created_at: dt.datetime
    messages: list[MessagePublic] = []


def _conversation(session: SessionDep, conversation_id: str, channel: Channel) -> Conversation:
    found = session.scalars(
        select(Conversation).where(
            Conversation.channel == channel, Conversation.external_id == conversation_id
        )
    ).first()
    if found is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no {channel.value} conversation {conversation_id!r}"
        )
    return found


@router.get(
    "/conversations/{conversation_id:path}",
    response_model=ConversationPublic,
    summary="A conversation with its messages (personal data masked)",
)
def read_conversation(
    conversation_id: str, session: SessionDep, channel: Channel = Channel.API
) -> ConversationPublic:
    return _with_messages(session, _conversation(session, conversation_id, channel))


def _with_messages(session: SessionDep, conversation: Conversation) -> ConversationPublic:
    messages = session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at)
    ).all()
    public = ConversationPublic.model_validate(conversation)
    public.messages = [MessagePublic.model_validate(m) for m in messages]
    return public


@router.post(
    "/conversations/{conversation_id:path}/release",
    response_model=ConversationPublic,
    summary="Give a handed-off conversation back to the bot",
)
def release_conversation(
    conversation_id: str, session: SessionDep, channel: Channel = Channel.API
) -> ConversationPublic:
    conversation = _conversation(session, conversation_id, channel)
    conversation.give_back_to_bot()
    session.commit()
    return _with_messages(session, conversation)


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    attributes: SlotValues = Field(default_factory=dict, max_length=100)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return blank_as_none(value)


class CustomerPublic(CustomerIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    external_id: str


@router.put(
    "/customers/{external_id:path}",
    response_model=CustomerPublic,
    summary="Create or update a customer record (used for answer slots)",
)
def put_customer(
    external_id: Annotated[str, Field(min_length=1, max_length=200)],
    body: CustomerIn,
    session: SessionDep,
) -> Customer:
    for last_try in (False, True):
        found = select(Customer).where(Customer.external_id == external_id)
        customer = session.scalars(found).first()
        if customer is None:
            customer = Customer(external_id=external_id)
            session.add(customer)
        customer.name, customer.attributes = body.name, dict(body.attributes)
        try:
            session.commit()
            break
        except IntegrityError:  # another request created the customer first: update it
            session.rollback()
            if last_try:
                raise
    return customer


@router.post(
    "/train",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Retrain the intent model on the catalogue (a job on the gpu queue)",
)
def train(body: SupportTrainParams, factory: SessionFactoryDep, dispatcher: DispatcherDep) -> Any:
    try:
        job, _ = jobs.submit_job(factory, dispatcher, TRAIN_JOB, body.model_dump(mode="json"))
    except jobs.InvalidJobParams as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except jobs.DispatchError as exc:
        raise unavailable(str(exc), 5) from None
    return JobPublic.model_validate(job)
