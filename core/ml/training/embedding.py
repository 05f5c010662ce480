"""Embedding fine-tuning from positive pairs with in-batch negatives.

Each (anchor, positive) pair is trained against every other positive in its batch
(`MultipleNegativesRankingLoss`, as sentence-transformers trains its own models); batches
never hold one text twice, which would make it its own negative. A held-out share of the
pairs measures retrieval (accuracy@1, MRR) before and after, so a run shows what it gained.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import set_seed

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

from core.ml.artifacts import ArtifactInfo
from core.ml.device import Placement
from core.ml.evaluation import retrieval_metrics
from core.ml.loading import MODEL_BUILD_LOCK, is_decoder, load_encoder
from core.ml.predictors import TextEncoder
from core.ml.training.arguments import EmbeddingTrainingArguments, TrainingResult
from core.ml.training.progress import ProgressCallback, ProgressFn, report
from core.ml.training.sentence_pairs import (
    PairCollator,
    SentenceLossTrainer,
    TextPairs,
    order_without_duplicates,
)
from core.ml.training.sequence_models import with_lora
from core.ml.training.trainer_setup import (
    checkpoint_folder,
    hf_arguments,
    placement_or_default,
    quiet,
)


def split_pairs(
    pairs: Sequence[tuple[str, str]], fraction: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, validation); no validation when it would hold fewer than two pairs."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = round(fraction * len(pairs))
    if held < 2:
        return list(pairs), []
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]


def _retrieval(encoder: TextEncoder, pairs: list[tuple[str, str]]) -> dict[str, float]:
    anchors = encoder.encode([anchor for anchor, _ in pairs])
    positives = encoder.encode([positive for _, positive in pairs])
    return retrieval_metrics(anchors, positives)


def train_embeddings(
    base: Path,
    pairs: Sequence[tuple[str, str]],
    args: EmbeddingTrainingArguments,
    *,
    output_dir: Path,
    base_reference: str,
    placement: Placement | None = None,
    progress: ProgressFn | None = None,
) -> TrainingResult:
    """Fine-tune the sentence encoder in `base` on (anchor, positive) pairs; save an `encoder`
    folder to `output_dir`. The primary metric is validation MRR."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if len(pairs) < 2:
        raise ValueError(f"need at least two pairs for in-batch negatives, got {len(pairs)}")
    placement = placement_or_default(placement)
    started = time.perf_counter()
    train, validation = split_pairs(pairs, args.validation_fraction, args.seed)
    metrics: dict[str, object] = {}
    if validation:
        report(progress, 0.0, "measuring the base model")
        base_scores = _retrieval(load_encoder(base, placement), validation)
        metrics.update({f"base_{key}": value for key, value in base_scores.items()})

    set_seed(args.seed)
    model = _sentence_model(base, placement)
    model.max_seq_length = min(model.max_seq_length or args.max_length, args.max_length)
    transformer = model[0]  # sentence-transformers' Transformer module: the model in `.model`
    if args.lora is not None:
        transformer.model = with_lora(transformer.model, args.lora, "FEATURE_EXTRACTION")
    ordered = [train[i] for i in order_without_duplicates(train, args.batch_size, args.seed)]
    with checkpoint_folder(output_dir) as scratch:
        trainer = SentenceLossTrainer(
            model=model,
            args=hf_arguments(
                scratch,
                placement,
                epochs=args.epochs,
                learning_rate=args.learning_rate_used,
                batch_size=args.batch_size,
                gradient_accumulation_steps=args.gradient_accumulation_steps,
                weight_decay=args.weight_decay,
                warmup_ratio=args.warmup_ratio,
                seed=args.seed,
                max_steps=args.max_steps,
                remove_unused_columns=False,
                train_sampling_strategy="sequential",  # keeps the duplicate-free batches
            ),
            train_dataset=TextPairs(ordered),
            data_collator=PairCollator(model),
            callbacks=[ProgressCallback(progress, 0.05, 0.85)],
            loss=MultipleNegativesRankingLoss(model, scale=args.scale),
        )
        outcome = quiet(trainer).train()
    if args.lora is not None:  # saved as a plain encoder: the adapters merged into its weights
        transformer.model = transformer.model.merge_and_unload()
    model.save(str(output_dir), create_model_card=False)

    encoder = load_encoder(output_dir, placement)
    if validation:
        report(progress, 0.95, "measuring the tuned model")
        metrics.update(_retrieval(encoder, validation))
    ArtifactInfo(
        architecture="encoder",
        base_model=base_reference,
        max_length=encoder.max_length,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
    ).save(output_dir)
    metrics.update(
        strategy="embedding",
        train_loss=float(outcome.training_loss),
        n_train=len(train),
        n_validation=len(validation),
        train_seconds=round(time.perf_counter() - started, 3),
    )
    report(progress, 1.0, "done")
    return TrainingResult(
        output_dir=output_dir,
        architecture="encoder",
        labels=[],
        metrics=metrics,
        primary_metric="mrr",
        params={
            **args.to_dict(),
            "learning_rate": args.learning_rate_used,
            "base_reference": base_reference,
        },
    )


def _sentence_model(base: Path, placement: Placement) -> SentenceTransformer:
    """`base` as a sentence-transformers model that pools as `load_encoder` reads it: a
    sentence-transformers folder as it says, a plain Hugging Face decoder (Llama and the like)
    on its last token, any other plain model by the mean. A decoder's tokenizer has no pad
    token, so its end-of-sequence token pads (the attention mask leaves it out)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    device = str(placement.device)
    with MODEL_BUILD_LOCK:
        if (base / "modules.json").is_file() or not is_decoder(base):
            model = SentenceTransformer(str(base), device=device)
        else:
            transformer = Transformer(str(base))
            pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
            model = SentenceTransformer(modules=[transformer, pooling], device=device)
    tokenizer = model.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model
