"""The nearest-example index and the unfamiliar threshold (core.ml.novelty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.ml import novelty
from core.ml.novelty import EXAMPLES_FILE, ExampleIndex, unfamiliar_threshold


def brute_force(examples: np.ndarray, queries: np.ndarray) -> np.ndarray:
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return np.array([max(float(q @ e) for e in unit(examples)) for q in unit(queries)])


@pytest.mark.parametrize("chunk_rows", [1_000, 7, 1])
def test_similarity_is_the_cosine_to_the_nearest_example(
    chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(novelty, "_CHUNK_ROWS", chunk_rows)  # also across chunk borders
    rng = np.random.default_rng(0)
    examples, queries = rng.normal(size=(50, 16)), rng.normal(size=(9, 16)) * 5
    index = ExampleIndex(examples)
    np.testing.assert_allclose(index.similarity(queries), brute_force(examples, queries), atol=1e-5)
    # An example is its own nearest neighbour, whatever its length.
    np.testing.assert_allclose(index.similarity(examples[[3, 17]] * 4), [1.0, 1.0], atol=1e-5)


def test_index_saves_into_the_model_folder_and_loads_back(tmp_path: Path) -> None:
    assert ExampleIndex.load(tmp_path) is None  # a model trained without one
    vectors = np.random.default_rng(1).normal(size=(20, 8))
    assert ExampleIndex(vectors).save(tmp_path) == tmp_path / EXAMPLES_FILE
    loaded = ExampleIndex.load(tmp_path)
    assert loaded is not None and len(loaded) == 20
    np.testing.assert_allclose(loaded.vectors, ExampleIndex(vectors).vectors, rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 8), (8,)])
def test_an_index_needs_a_matrix_of_examples(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="needs \\(N, D\\) embeddings"):
        ExampleIndex(np.zeros(shape))


@pytest.mark.parametrize("share", [0.02, 0.1, 0.25])
def test_the_threshold_leaves_the_chosen_share_of_held_out_examples_under_it(
    share: float,
) -> None:
    similarities = np.random.default_rng(2).uniform(0.2, 0.95, size=2_000)
    threshold = unfamiliar_threshold(similarities, share)
    assert (similarities < threshold).mean() == pytest.approx(share, abs=0.001)


def test_too_few_held_out_examples_place_no_threshold() -> None:
    # 2 % needs 49 held-out examples: one of 50 new in-scope texts falls under the lowest.
    assert unfamiliar_threshold(np.linspace(0.3, 0.9, 48), 0.02) is None
    assert unfamiliar_threshold(np.linspace(0.3, 0.9, 49), 0.02) == pytest.approx(0.3)
    assert unfamiliar_threshold(np.array([]), 0.02) is None


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1])
def test_the_share_must_be_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="must lie in"):
        unfamiliar_threshold(np.array([0.5, 0.6]), share)
