"""The support bot's settings: `TEXTSUITE_SUPPORT_*` variables (and `.env`)."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.settings import load_app_settings


class SupportSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TEXTSUITE_SUPPORT_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
    )

    model_name: str = Field(
        default="support-intents", description="Model versions of the intent classifier."
    )
    base_model: str = Field(default="all-MiniLM-L6-v2", description="Encoder to fine-tune.")
    target_precision: Annotated[float, Field(gt=0.5, lt=1.0)] = Field(
        default=0.95,
        description="Answer only when validation shows at least this precision; else hand off.",
    )
    unfamiliar_share: Annotated[float, Field(ge=0.0, lt=0.5)] = Field(
        default=0.02,
        description="Hand off messages less like any training example than all but this "
        "share of held-out examples are (0 turns the check off; set when a model is trained).",
    )
    learn_intent_text: bool = Field(
        default=True,
        description="Train on each intent's name in words (`order_status` -> \"order "
        'status") and on its description, where it has one, as more examples of it.',
    )
    learn_from_messages: bool = Field(
        default=False,
        description="Self-training: a model trained on the catalogue labels the stored "
        "customer messages nobody has labelled, and the ones it would answer become more "
        "examples for another model, which labels them again for the next round. More "
        "messages answered, and rightly, but out-of-scope ones get answered more often too.",
    )
    learn_from_messages_rounds: Annotated[int, Field(ge=1, le=5)] = Field(
        default=2,
        description="Self-training rounds: each trains one more model (a run with messages "
        "takes this many times longer, plus one).",
    )
    learn_from_messages_limit: Annotated[int, Field(ge=1)] = Field(
        default=10_000, description="At most this many of the newest such messages."
    )
    retrain_every_h: Annotated[float, Field(ge=0, le=87_600)] = Field(
        default=0.0,
        description="Retrain the intent model this often when its examples changed (new "
        "intents, edited examples, reviewed messages), promoted only if not worse; 0: only "
        "when asked.",
    )
    retention_days: Annotated[float, Field(ge=0, le=36_500)] = Field(
        default=0.0,
        description="Delete conversations nobody wrote in for this many days (at least 1), "
        "with their messages and review items (labelled examples stay); 0: keep them.",
    )
    max_repeated_turns: Annotated[int, Field(ge=1)] = Field(
        default=2,
        description="Hand off when the same question comes back this many times in a row: "
        "the same intent, with no new value (such as another order number) in the message.",
    )
    handoff_message: str = Field(
        default="Let me pass this to a colleague from our support team; they'll reply here "
        "shortly.",
        max_length=2000,
        description="What a customer handed to a person is told when they did not ask for one "
        "(the bot was unsure, or lacks a value or an answer); one who asked is told the handoff "
        "intent's answer. Empty: nothing.",
    )
    repeat_exempt_tags: list[str] = Field(
        default=["smalltalk"],
        description="Intents with one of these tags (greetings, thanks, goodbyes) are answered "
        "however often they come, never handed off as the same question again (a JSON list).",
    )
    chatwoot_url: AnyHttpUrl | None = Field(
        default=None, description="Chatwoot base URL, e.g. https://chat.example.com"
    )
    chatwoot_api_token: SecretStr | None = Field(
        default=None, description="The agent bot's access token (`api_access_token` header)."
    )
    chatwoot_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Verify X-Chatwoot-Signature with this secret; the webhook is off without "
        "it unless unsigned webhooks are allowed.",
    )
    chatwoot_allow_unsigned: bool = Field(
        default=False,
        description="Accept unsigned Chatwoot webhooks when no secret is set: only for Chatwoot "
        "versions that do not sign, on a network that only Chatwoot reaches (anyone who can "
        "post to the webhook can make the bot write into any conversation its token reaches).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC secret of the generic helpdesk webhook (inbound)."
    )
    delivery_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0,
        description="How long a call to the helpdesk (Chatwoot, the callback URL) may take "
        "before the delivery job gives up on it and retries later.",
    )
    callback_url: AnyHttpUrl | None = Field(
        default=None, description="Where the generic webhook's answers are POSTed."
    )
    callback_secret: SecretStr | None = Field(
        default=None, description="HMAC secret that signs the generic callbacks (outbound)."
    )
    signature_tolerance_s: Annotated[int, Field(ge=1)] = Field(
        default=300, description="Reject webhook timestamps further than this from now."
    )

    @field_validator("retention_days")
    @classmethod
    def _check_retention(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("keep conversations at least 1 day, or 0 to keep them all")
        return value


def load_support_settings(**overrides: object) -> SupportSettings:
    return load_app_settings(SupportSettings, "TEXTSUITE_SUPPORT_", **overrides)


@functools.lru_cache(maxsize=1)
def get_support_settings() -> SupportSettings:
    return load_support_settings()
