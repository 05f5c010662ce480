"""Model versions: numbering, promotion that refuses worse models, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.ml import versions
from core.storage.models import JobStatus, ModelStage, TrainingRun


def _record(
    session: Session, macro_f1: float | None, name: str = "intents", artifact: Path = Path("/tmp/x")
):
    metrics = {} if macro_f1 is None else {"macro_f1": macro_f1, "accuracy": 0.5}
    return versions.record_version(
        session,
        name=name,
        task="classification",
        base_model="minilm",
        artifact_path=artifact,
        metrics=metrics,
        config={"primary_metric": "macro_f1"},
    )


def _stages(session: Session, name: str = "intents") -> dict[int, ModelStage]:
    return {v.version: v.stage for v in versions.list_versions(session, name)}


def test_versions_are_numbered_per_model(db_session: Session) -> None:
    assert [_record(db_session, 0.5).version for _ in range(3)] == [1, 2, 3]
    assert _record(db_session, 0.5, name="sentiment").version == 1


def test_record_is_idempotent_per_training_run(db_session: Session) -> None:
    run = TrainingRun(
        model_name="intents",
        base_model="minilm",
        params={},
        data_fingerprint="f",
        status=JobStatus.SUCCEEDED,
    )
    db_session.add(run)
    db_session.flush()
    first = versions.record_version(
        db_session,
        name="intents",
        task="classification",
        base_model="minilm",
        artifact_path=Path("/tmp/a"),
        metrics={},
        config={},
        training_run=run,
    )
    again = versions.record_version(
        db_session,
        name="intents",
        task="classification",
        base_model="minilm",
        artifact_path=Path("/tmp/a"),
        metrics={},
        config={},
        training_run=run,
    )
    assert first.id == again.id and len(versions.list_versions(db_session)) == 1


def test_first_version_is_promoted_and_a_worse_one_refused(db_session: Session) -> None:
    _record(db_session, 0.80)
    versions.promote(db_session, "intents")
    _record(db_session, 0.75)
    refusal = r"macro_f1 0\.7500, worse than production v1 \(0\.8000\)"
    with pytest.raises(versions.PromotionRefused, match=refusal):
        versions.promote(db_session, "intents")
    assert _stages(db_session) == {1: ModelStage.PRODUCTION, 2: ModelStage.CANDIDATE}


def test_production_scored_on_the_candidates_held_out_examples_is_the_bar(
    db_session: Session,
) -> None:
    """A catalogue that gained an intent: production scores 0.80 on its own examples but 0.70
    on the candidate's (it never learnt the new intent), so a 0.75 candidate goes live; the
    figure counts only for the production version it was measured on."""
    production = _record(db_session, 0.80)
    versions.promote(db_session, "intents")
    candidate = _record(db_session, 0.75)
    _measured_against(candidate, production, n=12, theirs=0.70)
    db_session.flush()
    versions.promote(db_session, "intents")
    assert _stages(db_session) == {1: ModelStage.ARCHIVED, 2: ModelStage.PRODUCTION}

    stale = _record(db_session, 0.74)  # measured against v1, which no longer serves
    _measured_against(stale, production, n=12, theirs=0.70)
    db_session.flush()
    with pytest.raises(versions.PromotionRefused, match=r"worse than production v2 \(0\.7500\)"):
        versions.promote(db_session, "intents")
    better_here = _record(db_session, 0.74)
    _measured_against(better_here, candidate, n=9, theirs=0.76)
    db_session.flush()
    refusal = r"0\.7400, worse than production v2 \(0\.7600 on 9 held-out examples v2 did not"
    with pytest.raises(versions.PromotionRefused, match=refusal):
        versions.promote(db_session, "intents", 4)


def _measured_against(version, production, *, n: int, theirs: float) -> None:
    """What a run records when it scored `production` (at `theirs`) and its own version (at
    its own macro-F1) on `n` held-out examples production did not train on."""
    same_data = {
        "version_id": str(production.id),
        "version": production.version,
        "n_examples": n,
        "production": {"macro_f1": theirs},
        "candidate": {"macro_f1": version.metrics["macro_f1"]},
    }
    version.metrics = {**version.metrics, "production_same_data": same_data}


def test_a_loss_is_better_lower(db_session: Session) -> None:
    """A version chosen by its validation loss (or nll, ece) is not worse when that is lower."""
    for loss in (0.40, 0.35):
        versions.record_version(
            db_session, name="by-loss", task="classification", base_model="minilm",
            artifact_path=Path("/tmp/x"), metrics={"nll": loss}, config={"primary_metric": "nll"},
        )  # fmt: skip
        versions.promote(db_session, "by-loss")
    versions.record_version(
        db_session, name="by-loss", task="classification", base_model="minilm",
        artifact_path=Path("/tmp/x"), metrics={"nll": 0.50}, config={"primary_metric": "nll"},
    )  # fmt: skip
    with pytest.raises(versions.PromotionRefused, match=r"nll 0\.5000, worse than production v2"):
        versions.promote(db_session, "by-loss")


def test_a_first_encoder_worse_than_its_base_model_is_refused(db_session: Session) -> None:
    """The base model serves until a tuned version beats it on the run's held-out pairs."""
    for mrr in (0.40, 0.55):
        versions.record_version(
            db_session, name="items", task="embedding", base_model="all-MiniLM-L6-v2",
            artifact_path=Path("/tmp/x"), metrics={"mrr": mrr, "base_mrr": 0.50},
            config={"primary_metric": "mrr"},
        )  # fmt: skip
    with pytest.raises(versions.PromotionRefused, match=r"worse than its base model all-Mini"):
        versions.promote(db_session, "items", 1)
    assert versions.promote(db_session, "items", 2).version == 2
    assert versions.promote(db_session, "items", 1, force=True).version == 1


def test_equal_or_better_is_promoted_and_force_overrides(db_session: Session) -> None:
    _record(db_session, 0.80)
    versions.promote(db_session, "intents")
    _record(db_session, 0.80)
    versions.promote(db_session, "intents")
    assert _stages(db_session)[2] is ModelStage.PRODUCTION
    _record(db_session, 0.10)
    versions.promote(db_session, "intents", 3, force=True)
    assert _stages(db_session) == {
        1: ModelStage.ARCHIVED,
        2: ModelStage.ARCHIVED,
        3: ModelStage.PRODUCTION,
    }


def test_missing_metric_cannot_replace_a_measured_model(db_session: Session) -> None:
    _record(db_session, 0.6)
    versions.promote(db_session, "intents")
    _record(db_session, None)
    with pytest.raises(versions.PromotionRefused, match="missing"):
        versions.promote(db_session, "intents")


def test_rollback_walks_back_through_production_history(db_session: Session) -> None:
    for score in (0.5, 0.6, 0.7):
        _record(db_session, score)
        versions.promote(db_session, "intents")
    assert versions.rollback(db_session, "intents").version == 2
    assert versions.rollback(db_session, "intents").version == 1
    with pytest.raises(versions.VersionNotFound, match="no earlier production version"):
        versions.rollback(db_session, "intents")
    assert versions.production_version(db_session, "intents").version == 1


def test_unknown_version_lists_the_known_ones(db_session: Session) -> None:
    _record(db_session, 0.5)
    with pytest.raises(versions.VersionNotFound, match=r"no v7 \(versions: v1\)"):
        versions.promote(db_session, "intents", 7)


@pytest.fixture(scope="module")
def served_artifact(tiny_bert_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real classifier folder (a tiny BERT trained for a few seconds) that services can load."""
    from core.ml.device import choose_placement
    from core.ml.training import TrainingArguments, train_classifier
    from tests.core.ml.conftest import keyword_intents

    output = tmp_path_factory.mktemp("served") / "model"
    arguments = TrainingArguments(strategy="full", epochs=1, batch_size=8, max_length=32)
    train_classifier(
        tiny_bert_folder,
        keyword_intents(8),
        arguments,
        output_dir=output,
        base_reference=str(tiny_bert_folder),
        placement=choose_placement("cpu", "float32"),
    )
    return output


def test_models_api(client, api_key, service_settings, served_artifact: Path) -> None:
    from core.storage.engine import get_session_factory, session_scope

    with session_scope(get_session_factory(service_settings.database_url)) as session:
        _record(session, 0.8, artifact=served_artifact)
        _record(session, 0.7, artifact=served_artifact)
    admin = {"X-API-Key": api_key("admin")}
    assert client.get("/v1/models", headers={"X-API-Key": api_key("support")}).status_code == 403
    listed = client.get("/v1/models/intents", headers=admin).json()
    assert [v["version"] for v in listed] == [2, 1]
    ok = client.post("/v1/models/intents/promote", json={"version": 1}, headers=admin)
    assert ok.status_code == 200 and ok.json()["stage"] == "production"
    refused = client.post("/v1/models/intents/promote", json={}, headers=admin)
    assert refused.status_code == 409 and "worse than production" in refused.json()["detail"]
    forced = client.post("/v1/models/intents/promote", json={"force": True}, headers=admin)
    assert forced.json()["version"] == 2
    back = client.post("/v1/models/intents/rollback", headers=admin)
    assert back.status_code == 200 and back.json()["version"] == 1
    assert client.get("/v1/models/nothing", headers=admin).status_code == 404
    unknown = client.post("/v1/models/nothing/rollback", headers=admin)
    assert unknown.status_code == 404 and "no model named 'nothing'" in unknown.text
    assert (
        client.post("/v1/models/intents/promote", json={"version": 0}, headers=admin).status_code
        == 422
    )


def _trained(
    session: Session, fingerprint: str, params: dict, metrics: dict, base: str = "minilm"
) -> versions.ModelVersion:
    run = TrainingRun(
        model_name="intents",
        base_model=base,
        params=params,
        data_fingerprint=fingerprint,
        status=JobStatus.SUCCEEDED,
    )
    session.add(run)
    session.flush()
    return versions.record_version(
        session,
        name="intents",
        task="classification",
        base_model=base,
        artifact_path=Path("/tmp/x"),
        metrics=metrics,
        config={"primary_metric": "macro_f1"},
        training_run=run,
    )


def _classes(**f1: float) -> dict:
    return {label: {"precision": 1.0, "recall": 1.0, "f1": value, "support": 4}
            for label, value in f1.items()}  # fmt: skip


def test_compare_puts_metrics_classes_and_differing_parameters_side_by_side(
    db_session: Session,
) -> None:
    first = {"macro_f1": 0.80, "accuracy": 0.85, "n_validation": 40, "strategy": "sentence",
             "per_class": _classes(refund=0.9, cancel=0.7, track=0.8)}  # fmt: skip
    second = {"macro_f1": 0.84, "accuracy": 0.86, "n_validation": 44, "strategy": "sentence",
              "per_class": _classes(refund=0.6, cancel=0.95, track=0.8, greet=1.0)}  # fmt: skip
    _trained(db_session, "a", {"epochs": 4, "seed": 42, "strategy": "sentence"}, first)
    _trained(db_session, "b", {"epochs": 8, "seed": 42, "strategy": "sentence"}, second)
    versions.promote(db_session, "intents", 1)

    comparison = versions.compare(db_session, "intents")  # production first, then the newest
    assert (comparison.numbers, comparison.stages) == ([1, 2], ["production", "candidate"])
    assert comparison.primary_metric == "macro_f1"
    assert comparison.metrics == {"accuracy": [0.85, 0.86], "macro_f1": [0.80, 0.84],
                                  "n_validation": [40.0, 44.0]}  # fmt: skip
    assert comparison.per_class_f1["greet"] == [None, 1.0]
    assert comparison.largest_class_changes(2) == [
        ("refund", pytest.approx(-0.3)),
        ("cancel", pytest.approx(0.25)),
    ]
    assert comparison.params == {"epochs": [4, 8]}
    assert comparison.same_training_data is False
    assert "scored on different held-out examples" in comparison.notes[0]

    _trained(db_session, "b", {"epochs": 8, "seed": 42, "strategy": "sentence"}, first, "mpnet")
    same = versions.compare(db_session, "intents", [2, 3])
    assert same.same_training_data is True and same.params == {}
    assert same.notes == ["the versions were tuned from different base models"]


def test_compare_refuses_what_cannot_be_compared(db_session: Session) -> None:
    _record(db_session, 0.5)
    with pytest.raises(versions.VersionNotFound, match="nothing to compare it with"):
        versions.compare(db_session, "intents")
    _record(db_session, 0.6)
    assert versions.compare(db_session, "intents").numbers == [1, 2]  # no production: two newest
    assert versions.compare(db_session, "intents").same_training_data is None
    with pytest.raises(versions.VersionNotFound, match="has no v7"):
        versions.compare(db_session, "intents", [1, 7])
    with pytest.raises(ValueError, match="compare 2 to 10 different versions"):
        versions.compare(db_session, "intents", [1, 1])
    with pytest.raises(ValueError, match="version numbers run from 1 to 1000000000"):
        versions.compare(db_session, "intents", [1, 2**64])


def test_compare_over_the_api(client, api_key, service_settings) -> None:
    from core.storage.engine import get_session_factory, session_scope

    with session_scope(get_session_factory(service_settings.database_url)) as session:
        _trained(session, "a", {"epochs": 4}, {"macro_f1": 0.8, "per_class": _classes(x=0.8)})
        _trained(session, "a", {"epochs": 6}, {"macro_f1": 0.9, "per_class": _classes(x=0.9)})
        _trained(session, "a", {"epochs": 8}, {"macro_f1": 0.7})
    admin = {"X-API-Key": api_key("admin")}
    found = client.get("/v1/models/intents/compare?versions=1&versions=2", headers=admin)
    assert found.status_code == 200, found.text
    assert found.json() == {
        "name": "intents",
        "versions": [1, 2],
        "stages": ["candidate", "candidate"],
        "primary_metric": "macro_f1",
        "metrics": {"macro_f1": [0.8, 0.9]},
        "per_class_f1": {"x": [0.8, 0.9]},
        "params": {"epochs": [4, 6]},
        "same_training_data": True,
        "notes": [],
    }
    assert client.get("/v1/models/intents/compare", headers=admin).json()["versions"] == [2, 3]
    many = "&".join(f"versions={n}" for n in range(1, 12))
    for query, code in [("versions=1&versions=9", 404), ("versions=1&versions=1", 422),
                        ("versions=0&versions=1", 422), (many, 422)]:  # fmt: skip
        answer = client.get(f"/v1/models/intents/compare?{query}", headers=admin)
        assert answer.status_code == code, (query, answer.text)
    assert client.get("/v1/models/none/compare", headers=admin).status_code == 404
    support_key = {"X-API-Key": api_key("support")}
    assert client.get("/v1/models/intents/compare", headers=support_key).status_code == 403


def test_damaged_files_never_reach_production(
    client, api_key, service_settings, served_artifact: Path, tmp_path: Path
) -> None:
    import shutil

    import numpy as np

    from core.ml.novelty import ExampleIndex
    from core.storage.engine import get_session_factory, session_scope

    damaged = tmp_path / "damaged"
    shutil.copytree(served_artifact, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a cut-off copy
    missing = tmp_path / "gone"
    misfit = tmp_path / "misfit"  # an example index no embedding of this model can be held to
    shutil.copytree(served_artifact, misfit)
    ExampleIndex(np.ones((3, 8), dtype=np.float32)).save(misfit)
    factory = get_session_factory(service_settings.database_url)
    with session_scope(factory) as session:
        _record(session, 0.80, artifact=served_artifact)
        _record(session, 0.90, artifact=damaged)
        _record(session, 0.95, artifact=missing)
        _record(session, 0.97, artifact=misfit)
    admin = {"X-API-Key": api_key("admin")}
    assert client.post("/v1/models/intents/promote", json={"version": 1}, headers=admin).is_success
    for version in (2, 3, 4):
        refused = client.post(
            "/v1/models/intents/promote", json={"version": version, "force": True}, headers=admin
        )
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert f"intents v{version} was not put in production" in detail
        assert "Production is unchanged" in detail
    with factory() as session:
        assert versions.production_version(session, "intents").version == 1
