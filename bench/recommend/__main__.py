"""Recommender benchmark: ranking quality on MovieLens-100k, the ANN index, serving latency.

    .venv/bin/python -m bench.recommend [--parts quality,ann,serving] [--sizes 100000,1000000]

- quality: leave-last-out over the full catalogue (as `textsuite eval recommend`): HR@10 and
  NDCG@10 of popularity, item-kNN, text-only and the blended model in the same run; text-only
  vs popularity for cold users (ranked from their last 1, 2 or 4 ratings);
- ann: at each size, HNSW (FAISS) against exact search on synthetic items with the structure
  of real MiniLM vectors: build time, recall@10 of HNSW vs exact, p50/p99 per search;
- serving: at each size, a scratch PostgreSQL database of synthetic items, vectors and events;
  the service's state loaded from it; p50/p99 of the three lists (k=10) as the API computes
  them, one request at a time;
- encoding: embedding a free-text query with MiniLM, which `POST /v1/recommend/query` adds to
  the search above.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, data_dir, percentile_ms, table

TARGET_BLEND = 1.20  # NDCG@10 vs the best of popularity and item-kNN
TARGET_P99_MS = {100_000: 20.0, 1_000_000: 50.0}
TARGET_RECALL = 0.95


def quality_part(options: argparse.Namespace) -> dict:
    from apps.recommend.evaluation import evaluate, load_movielens
    from apps.recommend.settings import load_recommend_settings
    from core.ml.device import choose_placement
    from core.ml.loading import load_encoder
    from core.ml.packaged import minilm_folder

    data = load_movielens(data_dir())
    encoder = load_encoder(minilm_folder(REPO_ROOT / "var" / "models"), choose_placement())
    embeddings = encoder.encode(data.texts)
    config = load_recommend_settings(_env_file=None).ranking()
    started = time.perf_counter()
    results = evaluate(data, embeddings, config)
    seconds = time.perf_counter() - started
    best = max(r.ndcg for r in results if r.model in ("popularity", "item-knn"))
    print(f"\n## MovieLens-100k, leave last out, full ranking ({len(data.histories)} users)\n")
    table(
        ["model", "HR@10", "NDCG@10", "NDCG vs best baseline"],
        [[r.model, f"{r.hit_rate:.4f}", f"{r.ndcg:.4f}", f"{r.ndcg / best:.2f}x"] for r in results],
    )
    blended = next(r for r in results if r.model == "blended")
    print(f"target: blended >= {TARGET_BLEND:.2f}x the best baseline; ({seconds:.1f} s)")
    cold = []
    for keep in (1, 2, 4):
        popular, text = evaluate(
            data, embeddings, config, models=("popularity", "text"), keep_last=keep
        )
        cold.append({"keep": keep, "popularity": popular.ndcg, "text": text.ndcg})
    print("\n## Cold users: ranked from their last n training ratings\n")
    table(
        ["n", "popularity NDCG@10", "text NDCG@10", "ratio"],
        [
            [
                str(c["keep"]),
                f"{c['popularity']:.4f}",
                f"{c['text']:.4f}",
                f"{c['text'] / c['popularity']:.2f}x",
            ]
            for c in cold
        ],
    )
    return {
        "models": [r.__dict__ for r in results],
        "blended_vs_best": blended.ndcg / best,
        "cold": cold,
    }


def ann_part(options: argparse.Namespace, seeds: np.ndarray) -> list[dict]:
    from apps.recommend.index import IndexSettings, VectorIndex
    from bench.recommend.synthetic import queries, variants

    rows = []
    for size in options.sizes:
        rng = np.random.default_rng(size)
        vectors, _ = variants(seeds, size, rng)
        keys = [str(i) for i in range(size)]
        probes = queries(seeds, options.queries, rng)
        exact = VectorIndex(vectors.shape[1], IndexSettings(ann_threshold=10**12))
        exact.upsert(keys, vectors)
        started = time.perf_counter()
        ann = VectorIndex(vectors.shape[1], IndexSettings(ann_threshold=1))
        ann.upsert(keys, vectors)
        build_s = time.perf_counter() - started
        mask = np.ones(size, dtype=bool)
        mask[rng.choice(size, size // 100, replace=False)] = False  # 1% inactive
        recall, exact_s, ann_s = [], [], []
        for probe in probes:
            started = time.perf_counter()
            truth = {key for key, _ in exact.search(probe, 10, mask)}
            exact_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            found = {key for key, _ in ann.search(probe, 10, mask)}
            ann_s.append(time.perf_counter() - started)
            recall.append(len(truth & found) / 10)
        row = {
            "items": size,
            "build_s": build_s,
            "recall@10": float(np.mean(recall)),
            "exact_p50_ms": percentile_ms(exact_s, 50),
            "exact_p99_ms": percentile_ms(exact_s, 99),
            "hnsw_p50_ms": percentile_ms(ann_s, 50),
            "hnsw_p99_ms": percentile_ms(ann_s, 99),
        }
        rows.append(row)
        print(f"[ann {size}] {json.dumps(row)}", flush=True)
        del exact, ann, vectors
    print("\n## Vector index: HNSW (FAISS) vs exact search, k=10, 1% of items masked out\n")
    table(
        ["items", "HNSW build s", "recall@10", "exact p50/p99 ms", "HNSW p50/p99 ms"],
        [
            [
                f"{r['items']:,}",
                f"{r['build_s']:.0f}",
                f"{r['recall@10']:.3f}",
                f"{r['exact_p50_ms']:.1f} / {r['exact_p99_ms']:.1f}",
                f"{r['hnsw_p50_ms']:.2f} / {r['hnsw_p99_ms']:.2f}",
            ]
            for r in rows
        ],
    )
    print(f"target: recall@10 >= {TARGET_RECALL}")
    return rows


def serving_part(options: argparse.Namespace, seeds: np.ndarray) -> list[dict]:
    from bench.recommend.serving import build_world, http_latency, measure
    from bench.recommend.synthetic import queries, user_events, variants
    from bench.support.load import drop_database, scratch_postgres

    rows = []
    for size in options.sizes:
        rng = np.random.default_rng(size + 1)
        vectors, family = variants(seeds, size, rng)
        users = max(1000, size // 20)
        events = user_events(family, users, rng)
        url = scratch_postgres(options.postgres_url)
        try:
            started = time.perf_counter()
            build_world(url, vectors, family, events)
            insert_s = time.perf_counter() - started
            del vectors
            with tempfile.TemporaryDirectory(prefix="bench-recommend-") as scratch:
                result = measure(
                    url,
                    Path(scratch),
                    queries(seeds, 200, rng),
                    users,
                    size,
                    len(events),
                    options.ann_threshold,
                    options.requests,
                )
                over_http = (
                    http_latency(url, Path(scratch), users, size, options.requests)
                    if size in options.http_sizes
                    else {}
                )
        finally:
            drop_database(options.postgres_url, url)
        row = {**result.__dict__, "insert_s": insert_s, **over_http}
        rows.append(row)
        print(f"[serving {size}] {json.dumps(row)}", flush=True)
    for r in rows:
        if "http_p99_ms" in r:
            print(
                f"[serving {r['items']} over HTTP] user p50/p99 {r['http_p50_ms']['user']:.1f} / "
                f"{r['http_p99_ms']['user']:.1f} ms, similar {r['http_p50_ms']['similar']:.1f} / "
                f"{r['http_p99_ms']['similar']:.1f} ms"
            )
    print("\n## Serving latency, k=10, one request at a time (PostgreSQL, in process)\n")
    table(
        [
            "items",
            "events",
            "index",
            "load s",
            "user p50/p99",
            "similar p50/p99",
            "query p50/p99",
            "target p99",
        ],
        [
            [
                f"{r['items']:,}",
                f"{r['events']:,}",
                r["index_kind"],
                f"{r['load_s']:.0f}",
                *(
                    f"{r['p50_ms'][name]:.1f} / {r['p99_ms'][name]:.1f}"
                    for name in ("user", "similar", "query")
                ),
                f"< {TARGET_P99_MS.get(r['items'], 50):.0f} ms",
            ]
            for r in rows
        ],
    )
    return rows


QUERIES = [
    "a warm sleeping bag for winter camping",
    "light tent for bikepacking",
    "waterproof jacket for hiking in the rain",
    "stove that boils water fast at altitude",
    "kids hiking boots",
]


def encoding_part(options: argparse.Namespace) -> dict:
    """What `POST /v1/recommend/query` adds to a search: embedding the text (MiniLM, one
    query per call, as the API does)."""
    from core.ml.device import choose_placement
    from core.ml.loading import load_encoder
    from core.ml.packaged import minilm_folder

    encoder = load_encoder(minilm_folder(REPO_ROOT / "var" / "models"), choose_placement())
    for text in QUERIES:
        encoder.encode([text])  # warm-up
    seconds = []
    for n in range(options.requests):
        started = time.perf_counter()
        encoder.encode([QUERIES[n % len(QUERIES)]])
        seconds.append(time.perf_counter() - started)
    row = {"p50_ms": percentile_ms(seconds, 50), "p99_ms": percentile_ms(seconds, 99)}
    print(
        f"\nquery text embedding, one at a time: p50 {row['p50_ms']:.1f} ms, "
        f"p99 {row['p99_ms']:.1f} ms"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recommend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--parts", default="quality,ann,serving,encoding")
    parser.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[100_000, 1_000_000],
        help="catalogue sizes for ann and serving",
    )
    parser.add_argument("--queries", type=int, default=500, help="ann: searches per size")
    parser.add_argument(
        "--http-sizes",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[100_000],
        help="serving: sizes also measured over HTTP against `textsuite serve`",
    )
    parser.add_argument("--requests", type=int, default=300, help="serving: requests per list")
    parser.add_argument("--ann-threshold", type=int, default=20_000)
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results")
    options = parser.parse_args()
    parts = {part.strip() for part in options.parts.split(",")}
    report: dict = {"sizes": options.sizes}
    if "quality" in parts:
        report["quality"] = quality_part(options)
    if parts & {"ann", "serving"}:
        from bench.recommend.synthetic import seed_vectors

        seeds = seed_vectors()
        if "ann" in parts:
            report["ann"] = ann_part(options, seeds)
        if "serving" in parts:
            report["serving"] = serving_part(options, seeds)
    if "encoding" in parts:
        report["encoding"] = encoding_part(options)
    options.output.mkdir(parents=True, exist_ok=True)
    path = options.output / f"recommend-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
