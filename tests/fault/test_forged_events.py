"""Anyone who can write a topic gains no authority by it: forged, tampered and replayed
control events are dead-lettered with their reason and change nothing — not the champion,
not the versions, not what serving answers, not the set of model names.

The platform runs a tiny project whose retrain on flipped labels always beats the
champion, so it reaches a real v1 → v2 promotion before it is attacked.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.platform import Platform
from contracts.events import (
    DataWindow,
    LifecycleAction,
    ModelLifecycleChanged,
    ModelTrained,
    RecordValidated,
    TrainingReason,
    TrainingRequested,
)
from contracts.topics import Topic
from shared.errors import SignatureInvalid
from shared.signing import ALL_KEY_VARIABLES, KEY_VARIABLES, Signer
from tests.fault.conftest import PlatformFactory
from tests.fault.trust_helpers import (
    MODEL,
    events,
    letters,
    publish,
    publish_raw,
    read,
    serving_version,
    signs,
    state,
    toy_project,
    wait_for,
)

ATTACKER = Signer(Ed25519PrivateKey.generate(), "training")  # a valid key nobody trusts


@pytest.fixture(scope="module")
def platform(platform_factory: PlatformFactory, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Platform]:
    """The platform with v1 (sign of x) promoted, then v2 (flipped sign) promoted."""
    config = toy_project(tmp_path_factory.mktemp("project") / "trust.toml",
                         {MODEL: {"initial_training_records": 100,
                                  "max_retrains_per_hour": 20}})
    running = platform_factory(config=config)
    bootstrap = running.bootstrap or ""
    publish(bootstrap, Topic.DATA_LABELED, [(r.record_id, r) for r in signs(100, False, 1, "a")])
    wait_for(lambda: serving_version(running) == 1, "v1 served")
    publish(bootstrap, Topic.DATA_LABELED, [(r.record_id, r) for r in signs(200, True, 2, "b")])
    wait_for(lambda: len(read(bootstrap, Topic.DATA_VALIDATED)) >= 300, "300 records stored")
    publish(bootstrap, Topic.TRAINING_REQUESTS, [(MODEL, TrainingRequested(
        request_id="flip", model=MODEL, reason=TrainingReason.MANUAL,
        window=DataWindow(last=200), requested_by="test"))])
    wait_for(lambda: serving_version(running) == 2, "v2 served")
    yield running


def lifecycle(platform: Platform) -> list[ModelLifecycleChanged]:
    return events(platform.bootstrap or "", Topic.MODELS_LIFECYCLE, ModelLifecycleChanged)


def genuine(platform: Platform, event: ModelLifecycleChanged) -> bool:
    """Signed by this platform's registry: the tests publish tampered copies of decisions
    too, and dead letters of several partitions come in no set order."""
    registry = Signer.from_pem((platform.data_dir / "keys" / "registry.key").read_bytes(),
                               "registry").verifier()
    try:
        registry.verify_decision(event)
    except SignatureInvalid:
        return False
    return True


def promoted(platform: Platform, version: int) -> ModelLifecycleChanged:
    return next(e for e in lifecycle(platform) if e.version == version
                and e.action is LifecycleAction.PROMOTED and genuine(platform, e))


def refused(platform: Platform, marker: str, by: set[str]) -> dict[str, str]:
    """Wait until each service in `by` dead-lettered the message carrying `marker`;
    their reasons by service."""
    def found() -> dict[str, str]:
        reasons = {letter.rejected_by: letter.reason
                   for letter in letters(platform.bootstrap or "", marker)}
        return reasons if by <= set(reasons) else {}

    return wait_for(found, f"dead letters of {marker} from {sorted(by)}", timeout=60)


# -- models.trained: only what training signed is recorded ----------------------------------


def forged_run(platform: Platform, marker: str, **changes: Any) -> ModelTrained:
    """A run claiming accuracy 1.0 against the current champion, scored 0.0 on the same data."""
    genuine = events(platform.bootstrap or "", Topic.MODELS_TRAINED, ModelTrained)[-1]
    return genuine.model_copy(update={
        "run_id": marker, "metrics": {"accuracy": 1.0}, "baseline_version": 2,
        "baseline_metrics": {"accuracy": 0.0}, "signature": None,
        "artifact": genuine.artifact.model_copy(update={"digest": "ab" * 32}), **changes})


@pytest.mark.parametrize("case", ["unsigned", "another key", "tampered metrics"])
def test_a_forged_run_is_dead_lettered_and_never_promoted(platform: Platform,
                                                          case: str) -> None:
    before = state(platform)
    marker = f"run-forged-{case.replace(' ', '-')}"
    if case == "unsigned":
        run = forged_run(platform, marker)
    elif case == "another key":
        run = ATTACKER.sign_run(forged_run(platform, marker))
    else:  # training's real signature over its real run, then the metrics changed
        genuine = events(platform.bootstrap or "", Topic.MODELS_TRAINED, ModelTrained)[-1]
        assert genuine.signature
        run = genuine.model_copy(update={"metrics": {"accuracy": 1.0},
                                         "baseline_metrics": {"accuracy": 0.0},
                                         "request_id": marker})
    publish(platform.bootstrap or "", Topic.MODELS_TRAINED, [(MODEL, run)])
    reasons = refused(platform, marker, {"registry"})
    assert "training signature" in reasons["registry"], reasons
    assert state(platform) == before


def test_a_run_of_an_undeclared_model_is_dead_lettered(platform: Platform) -> None:
    before = state(platform)
    run = forged_run(platform, "run-ghost", model="ghost-model")
    publish(platform.bootstrap or "", Topic.MODELS_TRAINED, [("ghost-model", run)])
    assert "not declared" in refused(platform, "run-ghost", {"registry"})["registry"]
    assert state(platform) == before


# -- models.lifecycle: serving and monitoring act only on the registry's signature ----------


def test_a_forged_promotion_of_a_rejected_version_is_dead_lettered(platform: Platform) -> None:
    before = state(platform)
    v1 = promoted(platform, 1)
    forged = v1.model_copy(update={"version": 77, "champion_version": 77, "sequence": 10**6,
                                   "reason": "forged-v77", "signature": None})
    publish(platform.bootstrap or "", Topic.MODELS_LIFECYCLE, [(MODEL, forged)])
    reasons = refused(platform, "forged-v77", {"serving", "monitoring"})
    assert all("registry signature" in r for r in reasons.values()), reasons
    assert state(platform) == before


def test_a_tampered_genuine_decision_is_dead_lettered(platform: Platform) -> None:
    before = state(platform)
    v1 = promoted(platform, 1)
    tampered = v1.model_copy(update={"sequence": 10**6, "reason": "tampered-seq"})
    assert tampered.signature  # the registry's real signature, now over other content
    publish(platform.bootstrap or "", Topic.MODELS_LIFECYCLE, [(MODEL, tampered)])
    reasons = refused(platform, "tampered-seq", {"serving", "monitoring"})
    assert all("does not match" in r for r in reasons.values()), reasons
    assert state(platform) == before


def test_a_replayed_genuine_old_promotion_does_not_roll_serving_back(
        platform: Platform) -> None:
    before = state(platform)
    v1 = next(m for m in read(platform.bootstrap or "", Topic.MODELS_LIFECYCLE)
              if (e := ModelLifecycleChanged.model_validate_json(m.value)).version == 1
              and e.action is LifecycleAction.PROMOTED and genuine(platform, e))
    publish_raw(platform.bootstrap or "", Topic.MODELS_LIFECYCLE, MODEL, v1.value)  # same bytes
    marker = promoted(platform, 1).reason
    # the dead letter of exactly these bytes (a tampered copy of v1, dead-lettered earlier in
    # this module, may mention the same reason)
    reasons = wait_for(lambda: [letter.reason
                                for letter in letters(platform.bootstrap or "", marker)
                                if letter.rejected_by == "serving"
                                and base64.b64decode(letter.value_base64) == v1.value],
                       "serving's dead letter of the replay", timeout=60)
    assert all("a replay" in reason for reason in reasons), reasons
    assert state(platform) == before
    assert before[f"{MODEL}_answer"] == (200, 2)


def test_decisions_about_undeclared_models_add_no_model_names(platform: Platform) -> None:
    before = state(platform)
    v2 = promoted(platform, 2)
    ghosts = [(f"ghost-{i}", v2.model_copy(update={"model": f"ghost-{i}",
                                                  "reason": f"ghost-name-{i}"}))
              for i in range(5)]
    publish(platform.bootstrap or "", Topic.MODELS_LIFECYCLE, ghosts)
    for i in range(5):
        reasons = refused(platform, f"ghost-name-{i}", {"serving", "monitoring"})
        assert all("not declared" in r for r in reasons.values()), reasons
    assert state(platform) == before
    assert [m[0] for m in before["serving_models"]] == [MODEL]


# -- training.requests: an unknown model is refused at once -------------------------------


def test_a_training_request_for_an_unknown_model_is_refused_at_once(platform: Platform) -> None:
    before = state(platform)
    publish(platform.bootstrap or "", Topic.TRAINING_REQUESTS, [("ghost", TrainingRequested(
        request_id="req-ghost-model", model="ghost", reason=TrainingReason.MANUAL,
        requested_by="attacker"))])
    reason = refused(platform, "req-ghost-model", {"training"})["training"]
    assert "'ghost' is not declared" in reason
    assert "handler failed" not in reason  # refused as what it is, not after five retries
    assert state(platform) == before
    assert len(events(platform.bootstrap or "", Topic.DATA_VALIDATED, RecordValidated)) == 300


def test_the_keys_were_generated_per_signer_private_files_owner_only(
        platform: Platform) -> None:
    keys = Path(platform.data_dir) / "keys"
    assert sorted(p.name for p in keys.iterdir()) == [
        "monitoring-state.key", "registry.key", "registry.pub", "training.key", "training.pub"]
    for private in ("registry.key", "training.key", "monitoring-state.key"):
        assert (keys / private).stat().st_mode & 0o777 == 0o600


def test_each_service_process_holds_only_the_keys_it_may(platform: Platform) -> None:
    """Read from each running process's own environment: a private key only where it signs."""
    for name, process in platform.processes.items():
        raw = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        held = {key for key in env if key in ALL_KEY_VARIABLES}
        assert held <= set(KEY_VARIABLES[name]), (name, sorted(held))
        private = {key for key in held if "SIGNING_KEY" in key}
        assert private == ({f"DRIFTLOOP_{name.upper()}_SIGNING_KEY_FILE"}
                           if name in ("training", "registry") else set()), name
        assert ("DRIFTLOOP_MONITORING_STATE_KEY_FILE" in held) == (name == "monitoring"), name
        assert "DRIFTLOOP_SIGNING_KEY" not in env
