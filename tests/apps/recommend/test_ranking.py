"""The blended model's pieces on small hand-made data."""

from __future__ import annotations

import numpy as np
import pytest

from apps.recommend.ranking import (
    RankingConfig,
    UserHistory,
    blend,
    co_interaction_similarity,
    collaborative_scores,
    event_weights,
    popularity,
    top_k,
    user_profile,
)


def history(positions: list[int], types: list[str], values: list[float | None] | None = None):
    return UserHistory(np.array(positions), types, values or [None] * len(positions))


def test_recent_and_stronger_events_weigh_more() -> None:
    config = RankingConfig(half_life_events=2.0)
    weights = event_weights(history([0, 1, 2], ["view", "view", "purchase"]), config)
    assert weights[2] == pytest.approx(3.0)  # the latest event: its type weight
    assert weights[1] == pytest.approx(0.5**0.5)  # one event back: half a half-life
    assert weights[0] == pytest.approx(0.5)
    rated = event_weights(history([0, 1], ["rating", "rating"], [4.0, 5.0]), config)
    assert rated[1] / rated[0] == pytest.approx(5.0 / (4.0 * 0.5**0.5))
    assert rated[1] == pytest.approx(5.0 / 3.0)  # on 1-5, a 3 weighs as much as a view
    disliked = event_weights(history([0, 1], ["rating", "rating"], [1.0, 2.9]), config)
    assert disliked.tolist() == [0.0, 0.0]  # under the midpoint: no interest at all
    out_of_ten = RankingConfig(half_life_events=2.0, rating_midpoint=5.0)
    assert event_weights(history([0], ["rating"], [10.0]), out_of_ten)[0] == pytest.approx(2.0)


def test_co_interaction_cosine_keeps_the_strongest_neighbours() -> None:
    # users 0,1 take items 0 and 1; user 2 takes items 1 and 2; item 3 is taken alone.
    users = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 0, 1, 1, 1, 2, 3])  # user 1's repeat of item 1 counts once
    similarity = co_interaction_similarity(users, items, 4, neighbours=1).toarray()
    assert similarity[0, 1] == pytest.approx(2 / np.sqrt(2 * 3))
    assert similarity[2, 1] == pytest.approx(1 / np.sqrt(1 * 3))
    assert similarity[1, 2] == 0.0  # item 1 keeps only its strongest neighbour (item 0)
    assert np.all(np.diag(similarity) == 0) and not similarity[3].any()
    assert co_interaction_similarity(np.array([]), np.array([], dtype=int), 3, 5).nnz == 0


def test_collaborative_text_and_blend() -> None:
    similarity = co_interaction_similarity(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 2]), 3, 10)
    past = history([0], ["view"])
    weights = event_weights(past, RankingConfig())
    collaborative = collaborative_scores(similarity, past, weights)
    assert collaborative[1] > 0 and collaborative[2] > 0 and collaborative[0] == 0
    embeddings = np.eye(3, dtype=np.float32)
    profile = user_profile(embeddings, past, weights)
    assert profile.tolist() == [1.0, 0.0, 0.0]
    assert not user_profile(embeddings, history([], []), np.zeros(0)).any()
    scores = blend(
        np.array([0.0, 2.0, 1.0]), np.array([0.1, 0.0, 0.2]), RankingConfig(text_weight=1)
    )
    assert scores.tolist() == pytest.approx([0.1, 1.0, 0.7])


def test_popularity_counts_users_decays_and_top_k_excludes() -> None:
    users = np.array([0, 1, 0])
    counts = popularity(users, np.array([0, 0, 1]), np.array([0.0, 0.0, 0.0]), 3)
    assert counts.tolist() == [2, 1, 0]
    recent = popularity(
        users, np.array([0, 0, 1]), np.array([20.0, 20.0, 0.0]), 3, half_life_s=10.0
    )
    assert recent.tolist() == pytest.approx([0.5, 1.0, 0.0])
    # One user's 30 views of an item count once, at the newest; two users' single views twice.
    bot = popularity(
        np.array([7] * 30 + [1, 2]),
        np.array([0] * 30 + [1, 1]),
        np.array([*range(30, 0, -1), 0, 0], dtype=float),
        2,
        half_life_s=10.0,
    )
    assert bot.tolist() == pytest.approx([0.5**0.1, 2.0])  # fmt: skip
    assert not popularity(np.array([]), np.array([], dtype=int), np.array([]), 2).any()
    assert top_k(np.array([0.1, 0.9, 0.5, 0.7]), 2).tolist() == [1, 3]
    assert top_k(np.array([0.1, 0.9, 0.5, 0.7]), 2, exclude=np.array([1])).tolist() == [3, 2]
    assert top_k(np.array([0.1]), 5, exclude=np.array([0])).tolist() == []


def test_invalid_settings_are_refused() -> None:
    from apps.recommend.settings import load_recommend_settings
    from core.settings import SettingsError

    with pytest.raises(ValueError, match="half_life_events"):
        RankingConfig(half_life_events=0)
    with pytest.raises(
        SettingsError, match=r"RATING_MIN \(5\) must be below TEXTSUITE_RECOMMEND_RATING_MAX \(5\)"
    ):
        load_recommend_settings(_env_file=None, rating_min=5)
    scale = load_recommend_settings(_env_file=None, rating_min=0, rating_max=10)
    assert scale.ranking().rating_midpoint == 5.0 and scale.ratings().problem(10.5)


@pytest.mark.parametrize(
    ("k", "share", "jackets"), [(5, 0.5, 2), (4, 0.5, 2), (10, 0.3, 3), (1, 0.5, 1), (3, 0.2, 1)]
)
def test_a_personal_list_holds_at_most_its_share_of_one_category(
    k: int, share: float, jackets: int
) -> None:
    import datetime as dt
    from types import SimpleNamespace

    from apps.recommend.recommending import _diversify
    from apps.recommend.settings import RecommendSettings
    from apps.recommend.state import ItemFacts

    def facts(key: str, category: str) -> ItemFacts:
        created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        return ItemFacts(key, key, key, category, None, True, created)

    ranked = [f"jacket{n}" for n in range(k)] + [f"other{n}" for n in range(k)]
    category = {key: "jackets" if key.startswith("jacket") else key for key in ranked}
    state = SimpleNamespace(items={key: facts(key, category[key]) for key in ranked})
    recommend = RecommendSettings(_env_file=None, max_category_share=share)
    chosen = _diversify(state, ranked, k, recommend, cap_categories=True)
    assert len(chosen) == k and sum(key.startswith("jacket") for key in chosen) == jackets
    # With nothing else to offer, the cap gives way rather than leave the list short.
    only = _diversify(state, ranked[:k], k, recommend, cap_categories=True)
    assert only == ranked[:k]
