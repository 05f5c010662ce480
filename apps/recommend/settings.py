"""The recommender's settings: `TEXTSUITE_RECOMMEND_*` variables (and `.env`)."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from apps.recommend.events import RatingScale
from apps.recommend.index import ANN_THRESHOLD
from apps.recommend.ranking import RankingConfig
from core.settings import load_app_settings


class RecommendSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TEXTSUITE_RECOMMEND_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
    )

    model_name: str = Field(
        default="recommend-encoder",
        description="Model versions of the item encoder fine-tuned on behaviour.",
    )
    base_model: str = Field(
        default="all-MiniLM-L6-v2", description="Item encoder until one is fine-tuned."
    )
    embed_chunk: Annotated[int, Field(ge=1)] = Field(
        default=1024, description="Items embedded and stored per step of the embedding job."
    )
    embed_sweep_s: Annotated[float, Field(ge=0)] = Field(
        default=900.0,
        description="How often to look for items still without a vector when no embedding job "
        "has been started for that long (one that gave up, an import cut short), and start "
        "one; 0: never.",
    )
    import_chunk: Annotated[int, Field(ge=1, le=20_000)] = Field(
        default=5_000,
        description="Items or events of an imported file checked and stored together (one "
        "transaction each): an import's memory is this many records' worth, whatever the "
        "file's length.",
    )
    ann_threshold: Annotated[int, Field(ge=1)] = Field(
        default=ANN_THRESHOLD, description="From this many items, search an HNSW index."
    )
    refresh_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="How often the service picks up new embeddings and items."
    )
    behaviour_refresh_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="How often co-interactions and popularity are recomputed."
    )
    behaviour_process: bool = Field(
        default=True,
        description="Compute behaviour in a process of its own, so that reading a large event "
        "table never stalls requests (off: in the serving process).",
    )
    behaviour_days: Annotated[int, Field(ge=1)] = Field(
        default=180, description="Events from this many days make the collaborative signal."
    )
    popular_half_life_days: Annotated[float, Field(gt=0)] = Field(
        default=7.0, description="Popularity for new users counts recent events most."
    )
    similar_text_weight: Annotated[float, Field(ge=0)] = Field(
        default=4.0, description="Text weight of the similar-items list (alternatives first)."
    )
    retrain_every_h: Annotated[float, Field(ge=0, le=87_600)] = Field(
        default=0.0,
        description="Tune the item encoder on behaviour this often when the co-engaged pairs "
        "changed, promoted only if not worse; 0: only when asked.",
    )
    list_retention_days: Annotated[float, Field(ge=0, le=36_500)] = Field(
        default=0.0,
        description="Delete served lists older than this (one row per request; events stay, "
        "and feedback on such a list is refused as unknown); 0: keep them.",
    )
    rating_min: Annotated[float, Field(ge=0, le=1e6)] = Field(
        default=RatingScale.lowest, description="The lowest rating a user can give."
    )
    rating_max: Annotated[float, Field(gt=0, le=1e6)] = Field(
        default=RatingScale.highest,
        description="The highest rating; ratings outside the scale are refused, and a rating "
        "weighs its value / the scale's midpoint (on 1-5: a 5 counts 1.7, a 1 counts 0.3).",
    )
    half_life_events: Annotated[float, Field(gt=0)] = RankingConfig.half_life_events
    text_weight: Annotated[float, Field(ge=0)] = RankingConfig.text_weight
    neighbours: Annotated[int, Field(ge=1)] = RankingConfig.neighbours
    history: Annotated[int, Field(ge=1, le=1000)] = RankingConfig.history
    max_per_series: Annotated[int, Field(ge=1)] = Field(
        default=1, description="At most this many items of one series in a list."
    )
    max_category_share: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5, description="At most this share of a list from one category."
    )

    @model_validator(mode="after")
    def _check_scale(self) -> RecommendSettings:
        if self.rating_min >= self.rating_max:
            raise ValueError(
                f"TEXTSUITE_RECOMMEND_RATING_MIN ({self.rating_min:g}) must be below "
                f"TEXTSUITE_RECOMMEND_RATING_MAX ({self.rating_max:g})"
            )
        return self

    def ranking(self) -> RankingConfig:
        return RankingConfig(
            half_life_events=self.half_life_events,
            text_weight=self.text_weight,
            neighbours=self.neighbours,
            history=self.history,
            rating_midpoint=self.ratings().midpoint,
        )

    def ratings(self) -> RatingScale:
        return RatingScale(self.rating_min, self.rating_max)


def load_recommend_settings(**overrides: object) -> RecommendSettings:
    return load_app_settings(RecommendSettings, "TEXTSUITE_RECOMMEND_", **overrides)


@functools.lru_cache(maxsize=1)
def get_recommend_settings() -> RecommendSettings:
    return load_recommend_settings()
