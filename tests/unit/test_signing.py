"""The chain of trust's primitives: what is signed, who can verify it, where the keys live."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from contracts.events import BinnedDistribution, LifecycleAction, ModelLifecycleChanged
from shared.errors import ConfigError, InvalidInput, SignatureInvalid
from shared.signing import (
    KEY_VARIABLES,
    STATE_SECRET,
    Signer,
    Verifier,
    canonical,
    child_key_env,
    decision_claims,
    ensure_dev_keys,
    run_claims,
    write_key_pair,
)
from tests.unit.factories import ATTACKER_KEY, REGISTRY_KEY, TRAINING_KEY, model_trained


def decision(**changes: object) -> ModelLifecycleChanged:
    run = model_trained("run-1", 0.9)
    event = ModelLifecycleChanged(model="loans-tree", version=1, action=LifecycleAction.PROMOTED,
                                  reason="first", run_id=run.run_id, artifact=run.artifact,
                                  champion_version=1, metrics=run.metrics, sequence=3)
    return REGISTRY_KEY.sign_decision(event.model_copy(update=changes))


def test_canonical_json_is_independent_of_key_order() -> None:
    assert canonical({"b": 1, "a": [1.5, "é"]}) == canonical({"a": [1.5, "é"], "b": 1})
    assert canonical({"a": 1}) == b'{"a":1}'


def test_signature_invalid_is_poison_for_the_kafka_edge() -> None:
    assert issubclass(SignatureInvalid, InvalidInput)  # dead-lettered, never retried


def test_a_signed_run_survives_the_wire() -> None:
    run = model_trained("run-1", 0.9)
    TRAINING_KEY.verifier().verify_run(run)
    TRAINING_KEY.verifier().verify_run(type(run).model_validate_json(run.model_dump_json()))


@pytest.mark.parametrize("change", [
    {"model": "other"}, {"run_id": "run-2"}, {"metrics": {"accuracy": 1.0}},
    {"baseline_version": 7},
    {"reference_profile": {"age": BinnedDistribution(edges=[1.0], fractions=[0.5, 0.5])}},
])
def test_any_change_to_a_signed_run_is_detected(change: dict[str, object]) -> None:
    tampered = model_trained("run-1", 0.9).model_copy(update=change)
    with pytest.raises(SignatureInvalid, match="does not match"):
        TRAINING_KEY.verifier().verify_run(tampered)


def test_a_decision_verifies_only_with_the_registry_key_and_unchanged() -> None:
    event = decision()
    REGISTRY_KEY.verifier().verify_decision(event)
    REGISTRY_KEY.verifier().verify_decision(
        ModelLifecycleChanged.model_validate_json(event.model_dump_json()))
    for change in ({"version": 77}, {"sequence": 9}, {"champion_version": 2},
                   {"action": LifecycleAction.ROLLED_BACK}, {"metrics": {"accuracy": 0.1}},
                   {"artifact": event.artifact.model_copy(update={"digest": "cd" * 32})}):
        with pytest.raises(SignatureInvalid):
            REGISTRY_KEY.verifier().verify_decision(event.model_copy(update=change))
    with pytest.raises(SignatureInvalid, match="registry signature"):
        REGISTRY_KEY.verifier().verify_decision(ATTACKER_KEY.sign_decision(event))
    with pytest.raises(SignatureInvalid, match="carries no"):
        REGISTRY_KEY.verifier().verify_decision(event.model_copy(update={"signature": None}))


def test_a_signature_over_one_kind_never_verifies_as_another() -> None:
    run = model_trained("run-1", 0.9)
    assert run_claims(run)["kind"] != decision_claims(decision())["kind"]
    with pytest.raises(SignatureInvalid):  # training's artifact signature is not a decision
        TRAINING_KEY.verifier().verify(decision_claims(decision()), run.artifact.signature, "x")


def test_key_files_private_mode_0600_and_never_overwritten(tmp_path: Path) -> None:
    files = write_key_pair(tmp_path, "training")
    assert stat.S_IMODE(files.private.stat().st_mode) == 0o600
    signer = Signer.from_pem(files.private.read_bytes(), "training")
    Verifier.from_pem(files.public.read_bytes(), "training").verify(
        {"k": 1}, signer.sign({"k": 1}), "test")
    with pytest.raises(ConfigError, match="exists already"):
        write_key_pair(tmp_path, "training")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        Verifier.from_pem(b"nope", "registry")


def test_dev_keys_are_made_once_per_data_dir(tmp_path: Path) -> None:
    first = ensure_dev_keys(tmp_path)
    again = ensure_dev_keys(tmp_path)
    assert first == again
    assert first["training"].private.read_bytes() != first["registry"].private.read_bytes()
    for pair in first.values():
        assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600


def test_each_service_is_given_only_the_keys_it_may_hold(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    inherited = {"DRIFTLOOP_TRAINING_SIGNING_KEY_FILE": "/leaked", "PATH": "/bin"}
    envs = {name: child_key_env(name, inherited, keys) for name in KEY_VARIABLES}
    private = {name for name, env in envs.items() if any(
        v in (str(keys["training"].private.resolve()), str(keys["registry"].private.resolve()),
              "/leaked") for v in env.values())}
    assert private == {"training", "registry"}
    assert envs["training"]["DRIFTLOOP_TRAINING_SIGNING_KEY_FILE"] == "/leaked"  # set by hand
    assert "DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE" not in envs["training"]
    assert "DRIFTLOOP_TRAINING_SIGNING_KEY_FILE" not in envs["registry"]
    assert set(envs["serving"]) - {"PATH"} == {"DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE",
                                               "DRIFTLOOP_TRAINING_PUBLIC_KEY_FILE"}
    assert set(envs["monitoring"]) - {"PATH"} == {"DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE",
                                                  "DRIFTLOOP_MONITORING_STATE_KEY_FILE"}
    secret = str((tmp_path / "keys" / STATE_SECRET).resolve())
    assert {name for name, env in envs.items() if secret in env.values()} == {"monitoring"}
    assert (tmp_path / "keys" / STATE_SECRET).stat().st_mode & 0o077 == 0
    assert set(envs["ingestion"]) == {"PATH"}
    # With a real cluster (no dev keys) nothing is invented.
    assert child_key_env("serving", {}, None) == {}


def test_keys_create_writes_pem_files_and_says_who_gets_which(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "monitoring-state.key", "registry.key", "registry.pub", "training.key", "training.pub"]
    assert "DRIFTLOOP_MONITORING_STATE_KEY_FILE" in result.output
    assert "DRIFTLOOP_TRAINING_SIGNING_KEY_FILE" in result.output
    again = CliRunner().invoke(app, ["keys", "create", "--out", str(tmp_path / "k")])
    assert again.exit_code != 0


def test_a_service_with_a_real_cluster_and_no_key_stops_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("DRIFTLOOP_DATA_DIR", str(tmp_path))
    for name in ("training", "registry"):
        monkeypatch.delenv(f"DRIFTLOOP_{name.upper()}_SIGNING_KEY_FILE", raising=False)
    result = CliRunner().invoke(app, ["run", "registry"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE is not set" in lines[0]
