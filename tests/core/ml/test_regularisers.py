"""Regularisers: text augmentation (word dropout, embedding-neighbour substitution) and
adversarial training on the input embeddings (FGM)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoTokenizer

from core.ml.device import choose_placement
from core.ml.training import LabelledTexts, TrainingArguments, train_classifier
from core.ml.training.regularisers import (
    WordNeighbours,
    adversarial_delta,
    augment_texts,
    drop_words,
    input_embeddings,
    recording_output,
    shifted_output,
)
from core.ml.training.sequence_models import ClassificationTrainer, load_model, with_lora
from tests.core.ml.conftest import keyword_intents
from tests.core.ml.conftest import quick as quick_run

CPU = choose_placement("cpu", "float32")


def quick(**overrides: object) -> TrainingArguments:
    # No dropout: the same forward pass twice gives the same numbers.
    return quick_run(**{"epochs": 1, "dropout": 0.0, **overrides})


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"augment": "synonyms"}, "unknown augment 'synonyms'; expected one of none, word_dropout"),
        ({"augment_rate": 0.0}, "augment_rate must be in"),
        ({"augment_copies": 0}, "augment_copies at least 1"),
        ({"adversarial_epsilon": -1.0}, "adversarial_epsilon must be >= 0"),
    ],
)
def test_bad_regulariser_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingArguments(**overrides)


def test_adversarial_training_is_refused_for_the_fewshot_strategy(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="sentence, full and lora strategies"):
        train_classifier(
            tiny_bert_folder,
            keyword_intents(8),
            quick(strategy="fewshot", adversarial_epsilon=1.0),
            output_dir=tmp_path / "m",
            base_reference="b",
            placement=CPU,
        )
    assert not (tmp_path / "m").exists()


# --- augmentation -----------------------------------------------------------------------------


def test_word_dropout_drops_words_and_always_keeps_one() -> None:
    rng = random.Random(0)
    text = "please send my new card to the other address today"
    dropped = [drop_words(text, 0.3, rng) for _ in range(200)]
    kept = np.array([len(d.split()) for d in dropped])
    assert 0.6 < kept.mean() / len(text.split()) < 0.8  # about 70% of the words stay
    assert all(set(d.split()) <= set(text.split()) for d in dropped)  # only removes
    assert min(kept) >= 1 and drop_words(text, 1.0, rng) in text.split()
    assert drop_words("refund", 0.9, rng) == "refund"  # one word is left as it is


def test_augment_adds_altered_copies_with_their_labels_deterministically(
    tiny_bert_folder: Path,
) -> None:
    data = keyword_intents(6)
    args = quick(augment="word_dropout", augment_copies=3, augment_rate=0.3)
    augmented = augment_texts(data, args, tiny_bert_folder)
    assert augmented.texts[: len(data)] == data.texts  # the originals first, unchanged
    extra = augmented.subset(range(len(data), len(augmented)))
    assert len(data) < len(extra) <= 3 * len(data)
    by_text = dict(zip(data.texts, data.labels, strict=True))
    for text, label in zip(extra.texts, extra.labels, strict=True):
        assert text not in by_text  # unchanged copies are left out
        sources = [s for s in data.texts if set(text.split()) <= set(s.split())]
        assert label in {by_text[s] for s in sources}  # a text of its label holds its words
    assert augment_texts(data, args, tiny_bert_folder).texts == augmented.texts
    assert augment_texts(data, quick(), tiny_bert_folder) is data  # "none": untouched


def test_training_augments_the_training_split_only(tiny_bert_folder: Path, tmp_path: Path) -> None:
    data, validation = keyword_intents(10, seed=1), keyword_intents(3, seed=2)
    result = train_classifier(
        tiny_bert_folder,
        data,
        quick(augment="word_dropout", augment_copies=2, augment_rate=0.4),
        output_dir=tmp_path / "m",
        base_reference="b",
        placement=CPU,
        validation=validation,
    )
    assert result.metrics["n_train"] == len(data)
    assert 0 < result.metrics["n_augmented"] <= 2 * len(data)
    assert result.metrics["n_validation"] == len(validation)
    assert result.params["augment"] == "word_dropout"


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_folder_path: Path) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(minilm_folder_path)


def planted_neighbours(tokenizer: transformers.PreTrainedTokenizerBase) -> WordNeighbours:
    """Random embeddings in which "money" sits right beside "bank" and "cash" next to it."""
    vocabulary = tokenizer.get_vocab()
    embeddings = np.random.default_rng(0).normal(size=(len(vocabulary), 16)).astype(np.float32)
    bank = embeddings[vocabulary["bank"]]
    embeddings[vocabulary["money"]] = bank + 0.01
    embeddings[vocabulary["cash"]] = bank + 0.05
    return WordNeighbours(tokenizer, embeddings)


def test_neighbours_are_the_nearest_whole_words_in_embedding_space(
    minilm_tokenizer: transformers.PreTrainedTokenizerBase,
) -> None:
    neighbours = planted_neighbours(minilm_tokenizer)
    assert neighbours.neighbours("bank")[:2] == ["money", "cash"]
    assert neighbours.neighbours("Bank")[:2] == ["money", "cash"]  # an uncased vocabulary
    assert "##ing" not in neighbours.words and "ing" in neighbours.words  # a piece, a word
    tokenizer = minilm_tokenizer
    assert all(len(tokenizer.tokenize(" " + word)) == 1 for word in list(neighbours.words)[::50])
    assert neighbours.neighbours("reimbursement") == []  # several tokens: no neighbours
    assert all(word.isalpha() for word in neighbours.neighbours("card"))


def test_substitution_swaps_words_keeping_capitals_and_punctuation(
    minilm_tokenizer: transformers.PreTrainedTokenizerBase,
) -> None:
    neighbours = planted_neighbours(minilm_tokenizer)
    rng = random.Random(1)
    swapped = neighbours.substitute("Bank, reimbursement 42 bank?", 1.0, rng)
    first, second, number, last = swapped.split()
    options = neighbours.neighbours("bank")
    assert first.endswith(",") and first[0].isupper() and first[:-1].lower() in options
    assert second == "reimbursement" and number == "42"  # nothing to swap them with
    assert last.endswith("?") and last[:-1] in options
    assert neighbours.substitute("bank bank bank", 1e-9, rng) == "bank bank bank"


# --- adversarial training (FGM) ---------------------------------------------------------------


def test_adversarial_delta_has_length_epsilon_per_text() -> None:
    gradient = torch.randn(3, 5, 4)
    gradient[1] = 0.0  # a text without gradient stays where it is
    delta = adversarial_delta(gradient, 0.5)
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.tensor([0.5, 0.0, 0.5]), atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(delta[0].flatten(), gradient[0].flatten(), dim=0)
    assert cosine.item() == pytest.approx(1.0, abs=1e-6)


def batch(tokenizer_folder: Path) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    encoded = tokenizer(
        ["refund my money please", "my card did not arrive", "reset my pin"],
        padding=True,
        return_tensors="pt",
    )
    return {**encoded, "labels": torch.tensor([0, 1, 1])}


def trainer_for(model: torch.nn.Module, tmp_path: Path, epsilon: float) -> ClassificationTrainer:
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], learning_rate=1e-3
    )
    trainer = ClassificationTrainer(model=model, args=arguments, adversarial_epsilon=epsilon)
    trainer.current_gradient_accumulation_steps = 1  # set by train() before its first step
    return trainer


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fgm_step_adds_the_gradient_at_embeddings_moved_uphill(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = load_model(tiny_bert_folder, ["a", "b"], quick(), pad_token_id=0)
    inputs = batch(tiny_bert_folder)
    trainer = trainer_for(model, tmp_path, epsilon=0.5)
    logged = trainer.training_step(model, inputs)
    fgm = gradients(model)

    # The same by hand: the clean loss's gradient plus the gradient at the moved embeddings.
    model.zero_grad()
    layer = input_embeddings(model)
    with recording_output(layer) as outputs:
        clean = trainer.compute_loss(model, inputs)
        clean.backward()
    delta = adversarial_delta(outputs[-1].grad, 0.5)
    with shifted_output(layer, delta):
        moved = trainer.compute_loss(model, inputs)
        moved.backward()
    by_hand = gradients(model)

    assert logged.item() == pytest.approx(clean.item(), rel=1e-5)  # the clean loss is logged
    assert moved.item() > clean.item()  # the step goes where the loss rises
    assert fgm.keys() == by_hand.keys()
    for name in fgm:
        torch.testing.assert_close(fgm[name], by_hand[name], rtol=1e-4, atol=1e-6)
    assert not layer._forward_hooks  # nothing left attached to the model


def test_fgm_works_when_lora_freezes_the_embeddings(tiny_bert_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = load_model(tiny_bert_folder, ["a", "b"], quick(), pad_token_id=0)
    model = with_lora(base, quick(strategy="lora").lora)
    assert not input_embeddings(model).weight.requires_grad
    inputs = batch(tiny_bert_folder)

    trainer_for(model, tmp_path, epsilon=0.0).training_step(model, inputs)
    clean = gradients(model)
    model.zero_grad()
    trainer_for(model, tmp_path, epsilon=0.5).training_step(model, inputs)
    adversarial = gradients(model)

    lora = [name for name in clean if "lora_" in name]
    assert lora and adversarial.keys() == clean.keys()
    assert any(not torch.allclose(adversarial[n], clean[n]) for n in lora)
    assert input_embeddings(model).weight.grad is None  # the frozen weights stay frozen


def test_sentence_head_trains_with_fgm(tiny_bert_folder: Path, tmp_path: Path) -> None:
    data, validation = keyword_intents(8, seed=1), keyword_intents(2, seed=2)
    losses = {}
    for epsilon in (0.0, 1.0):
        result = train_classifier(
            tiny_bert_folder,
            data,
            quick(strategy="sentence", adversarial_epsilon=epsilon, epochs=2),
            output_dir=tmp_path / f"m{epsilon}",
            base_reference="b",
            placement=CPU,
            validation=validation,
        )
        losses[epsilon] = result.metrics["train_loss"]
        assert result.params["adversarial_epsilon"] == epsilon
    # Same seed and data: only the adversarial passes make the second run's weights differ.
    assert losses[1.0] != pytest.approx(losses[0.0], rel=1e-6)


def test_neighbour_augmentation_reads_the_base_models_embeddings(tiny_bert_folder: Path) -> None:
    data = LabelledTexts(["send the card to my home", "what is the exchange rate"], ["a", "b"])
    augmented = augment_texts(
        data, quick(augment="neighbours", augment_copies=2, augment_rate=0.5), tiny_bert_folder
    )
    extra = augmented.subset(range(len(data), len(augmented)))
    assert len(extra) > 0 and set(extra.labels) <= {"a", "b"}
    for text, label in zip(extra.texts, extra.labels, strict=True):
        source = data.texts[data.labels.index(label)]
        assert len(text.split()) == len(source.split())  # words swapped, none dropped
        assert text != source
