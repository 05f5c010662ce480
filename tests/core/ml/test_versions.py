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
    assert (
        client.post("/v1/models/intents/promote", json={"version": 0}, headers=admin).status_code
        == 422
    )


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
