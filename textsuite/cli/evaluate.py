"""`textsuite eval`: offline evaluation of an app's models, on a public data set or the
team's own labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.recommend.evaluation import evaluate, load_movielens
from apps.recommend.settings import get_recommend_settings
from apps.sentiment.settings import get_sentiment_settings
from apps.sentiment.training import load_labelled, load_twitter
from apps.support.settings import get_support_settings
from core.ml.device import configured_placement
from core.ml.evaluation import evaluate_classifier
from core.ml.loading import ModelLoadError, load_encoder
from core.ml.references import ModelNotFound, resolve_model
from core.ml.serving import load_for_serving
from core.ml.training import LabelledTexts
from core.ml.versions import VersionNotFound, get_version, production_version
from core.storage.engine import get_session_factory
from textsuite.cli.common import fail, output, settings

app = typer.Typer(help="Offline evaluation on public data sets.", no_args_is_help=True)
console = output()

VersionOption = Annotated[
    int | None, typer.Option(help="Model version to score (default: the production one)")
]


def _report_classifier(name: str, version: int | None, data: LabelledTexts, about: str) -> None:
    """Score a version of the classifier `name` as services serve it; print its metrics."""
    current = settings()
    factory = get_session_factory(current.database_url)
    with factory() as session:
        try:
            found = (
                get_version(session, name, version)
                if version is not None
                else production_version(session, name)
            )
        except VersionNotFound as exc:
            fail(str(exc))
        if found is None:
            fail(f"model {name!r} has no production version: train it, or pass --version")
        number, folder = found.version, Path(found.artifact_path)
    try:
        classifier = load_for_serving(folder, current, factory)
        metrics = evaluate_classifier(classifier, data)
    except (ModelLoadError, OSError, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"{name} v{number} on {about}: {metrics['n']} texts, "
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"weighted-F1 {metrics['weighted_f1']:.4f}",
        soft_wrap=True,
    )
    table = Table(title=f"{name} v{number}, per label")
    for column in ("label", "precision", "recall", "F1", "support"):
        table.add_column(column)
    for label, row in metrics["per_class"].items():
        if row["support"]:
            table.add_row(
                label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                str(row["support"]),
            )  # fmt: skip
    console.print(table)


@app.command("sentiment")
def evaluate_sentiment(
    data: Annotated[
        Path | None,
        typer.Option(
            help="CSV of text,label (negative/neutral/positive); default: the Twitter "
            "financial news validation split under data_dir"
        ),
    ] = None,
    version: VersionOption = None,
) -> None:
    """Accuracy, macro-F1 and weighted-F1 of the sentiment model, per label too."""
    current = settings()
    try:
        texts = load_labelled(data) if data else load_twitter(current.data_dir, "valid")
    except (OSError, ValueError) as exc:
        fail(str(exc))
    about = str(data) if data else "Twitter financial news, validation split"
    _report_classifier(get_sentiment_settings().model_name, version, texts, about)


@app.command("support")
def evaluate_support(
    data: Annotated[
        Path,
        typer.Argument(help="Labelled customer messages: CSV or JSONL with text and intent"),
    ],
    version: VersionOption = None,
) -> None:
    """Intent accuracy and F1 of the support model on messages the team labelled (every intent
    must be one the model knows)."""
    try:
        texts = LabelledTexts.from_file(data, "text", "intent")
    except (OSError, ValueError) as exc:
        fail(str(exc))
    _report_classifier(get_support_settings().model_name, version, texts, str(data))


@app.command("recommend")
def evaluate_recommend(
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding movielens-100k/ (default: data_dir)")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Item encoder (default: TEXTSUITE_RECOMMEND_BASE_MODEL)")
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="List length")] = 10,
) -> None:
    """Leave-last-out on MovieLens-100k over the full catalogue: HR@k and NDCG@k of popularity,
    item-kNN, text-only and the blended model, and of popularity vs text for cold users."""
    current, recommend = settings(), get_recommend_settings()
    try:
        data = load_movielens(data_dir or current.data_dir)
        folder = resolve_model(encoder or recommend.base_model, cache_dir=current.model_cache_dir)
    except (FileNotFoundError, ModelNotFound) as exc:
        fail(str(exc))
    model = load_encoder(folder.path, configured_placement(current))
    embeddings = model.encode(data.texts)
    config = recommend.ranking()
    results = evaluate(data, embeddings, config, k=k)
    best = max(r.ndcg for r in results if r.model in ("popularity", "item-knn"))
    table = Table(title=f"MovieLens-100k, leave last out, {len(data.histories)} users")
    for column in ("model", f"HR@{k}", f"NDCG@{k}", "NDCG vs best baseline"):
        table.add_column(column)
    for r in results:
        table.add_row(r.model, f"{r.hit_rate:.4f}", f"{r.ndcg:.4f}", f"{r.ndcg / best:.2f}x")
    console.print(table)
    cold = Table(title="Cold users: ranked from their last n training ratings only")
    for column in ("n", "popularity NDCG", "text NDCG", "text vs popularity"):
        cold.add_column(column)
    for keep in (1, 2, 4):
        popular, text = evaluate(
            data, embeddings, config, k=k, models=("popularity", "text"), keep_last=keep
        )
        cold.add_row(
            str(keep), f"{popular.ndcg:.4f}", f"{text.ndcg:.4f}", f"{text.ndcg / popular.ndcg:.2f}x"
        )
    console.print(cold)
