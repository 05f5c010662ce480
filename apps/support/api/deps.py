"""Dependencies of the support routes: the bot, the app's settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from apps.support.messages import AnswersMessages
from apps.support.settings import SupportSettings


async def get_bot(request: Request) -> AnswersMessages:
    return request.app.state.support_bot


async def get_support_settings(request: Request) -> SupportSettings:
    return request.app.state.support_settings


BotDep = Annotated[AnswersMessages, Depends(get_bot)]
SupportSettingsDep = Annotated[SupportSettings, Depends(get_support_settings)]
