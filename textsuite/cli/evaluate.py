"""`textsuite eval`: offline evaluation of an app on a public data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from apps.recommend.evaluation import evaluate, load_movielens
from apps.recommend.settings import get_recommend_settings
from core.ml.device import configured_placement
from core.ml.loading import load_encoder
from core.ml.references import ModelNotFound, resolve_model
from textsuite.cli.common import fail, settings

app = typer.Typer(help="Offline evaluation on public data sets.", no_args_is_help=True)
console = Console()


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
