"""The loop closes on a drifting stream, with real services on a real broker."""

from __future__ import annotations

import asyncio
import time

import httpx

from cli.demo import Story, StoryConfig, StoryResult
from cli.kafka_io import producer, send_all
from cli.platform import Platform
from contracts.events import AlertStatus, LifecycleAction, ModelLifecycleChanged
from contracts.topics import Topic
from shared.artifacts import ArtifactStore
from shared.signing import Signer

FEATURES = {"salary": 50_000.0, "commission": 0.0, "age": 40, "elevel": 2, "car": 3,
            "zipcode": 4, "hvalue": 200_000.0, "hyears": 10, "loan": 100_000.0}


def test_the_loop_closes_on_concept_drift(platform: Platform) -> None:
    assert platform.bootstrap is not None
    lines: list[str] = []
    result: StoryResult = asyncio.run(
        Story(platform.bootstrap, platform.url("serving"), StoryConfig(timeout=150),
              lines.append).play())
    story = "\n".join(lines)

    assert result.why_not_closed() is None, story
    # an alert was published for the concept drift ...
    firing = [a for a in result.alerts if a.kind == "concept_drift"
              and a.status is AlertStatus.FIRING]
    assert len(firing) == 1, story
    # ... v2 was promoted by policy, against v1 on the same holdout ...
    promoted = [e for e in result.lifecycle if e.action is LifecycleAction.PROMOTED]
    assert [e.version for e in promoted][:2] == [1, 2], story
    assert promoted[1].actor == "policy"
    # ... serving answers with v2, and v2 beats v1 on post-drift data.
    assert result.new_version == 2
    assert result.after_v2.value > result.drifted_v1.value + 0.1, story
    assert result.before.value > 0.9, story

    with httpx.Client(base_url=platform.url("registry")) as registry:
        audit = registry.get("/v1/models/loans-tree/audit").json()
        assert [(e["version"], e["action"]) for e in audit][:3] == [
            (1, "promoted"), (2, "promoted"), (1, "archived")]
        lineage = registry.get("/v1/models/loans-tree/lineage").json()
        retrain = lineage[1]["lineage"]
        assert retrain["window"]["since"] is not None  # trained on post-drift data only
        assert lineage[1]["baseline_version"] == 1
    with httpx.Client(base_url=platform.url("serving")) as serving:
        loaded = serving.get("/v1/models").json()
        assert loaded[0]["version"] == 2
        assert loaded[0]["digest"] == promoted[1].artifact.digest


def test_a_tampered_artifact_is_refused_and_the_champion_keeps_serving(
        platform: Platform) -> None:
    """A promotion whose artifact bytes no longer match their sha256 is never unpickled, even
    when training signed the digest and the registry signed the decision (an insider with
    both development keys and write access to the artifact store)."""
    assert platform.bootstrap is not None
    keys = platform.data_dir / "keys"
    training = Signer.from_pem((keys / "training.key").read_bytes(), "training")
    registry = Signer.from_pem((keys / "registry.key").read_bytes(), "registry")
    store = ArtifactStore(platform.data_dir / "artifacts", signer=training)
    ref = store.save_model({"not": "a model"})
    store.path(ref.digest).write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a hostile pickle
    event = registry.sign_decision(ModelLifecycleChanged(
        model="loans-tree", version=3, action=LifecycleAction.PROMOTED, reason="tampered on disk",
        run_id="run-evil", artifact=ref, champion_version=3, sequence=10**9))

    async def publish() -> None:
        async with producer(platform.bootstrap or "") as kafka:
            await send_all(kafka, Topic.MODELS_LIFECYCLE.value, [("loans-tree", event)])

    asyncio.run(publish())
    with httpx.Client(base_url=platform.url("serving")) as serving:
        deadline = time.monotonic() + 20
        while 'driftloop_serving_model_loads_total{outcome="refused"} 1.0' not in \
                serving.get("/metrics").text:
            assert time.monotonic() < deadline, "serving never processed the tampered promotion"
            time.sleep(0.2)
        assert serving.get("/v1/models").json()[0]["version"] == 2
        answer = serving.post("/v1/models/loans-tree/predict", json={"features": FEATURES})
        assert answer.status_code == 200
        assert answer.json()["version"] == 2
