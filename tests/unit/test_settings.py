"""Settings fail fast where unsafe, and only where a key is actually needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.errors import ConfigError
from shared.pipelines import build_pipeline
from shared.settings import CommonSettings, client_bootstrap
from shared.signing import write_key_pair


def test_the_old_hmac_key_is_a_migration_error_naming_what_to_do(tmp_path: Path) -> None:
    settings = CommonSettings(signing_key=SecretStr("a-shared-hmac-secret"), data_dir=tmp_path)
    for use in (lambda: settings.signer("training"), lambda: settings.verifier("registry")):
        with pytest.raises(ConfigError, match="DRIFTLOOP_SIGNING_KEY is no longer used") as err:
            use()
        assert "driftloop keys create" in str(err.value)
        assert "DRIFTLOOP_TRAINING_SIGNING_KEY_FILE" in str(err.value)


@pytest.mark.parametrize(("use", "variable"), [
    (lambda s: s.signer("training"), "DRIFTLOOP_TRAINING_SIGNING_KEY_FILE"),
    (lambda s: s.signer("registry"), "DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE"),
    (lambda s: s.verifier("training"), "DRIFTLOOP_TRAINING_PUBLIC_KEY"),
    (lambda s: s.verifier("registry"), "DRIFTLOOP_REGISTRY_PUBLIC_KEY"),
])
def test_missing_keys_fail_fast_with_a_real_cluster(tmp_path: Path, use: Any,
                                                    variable: str) -> None:
    settings = CommonSettings(kafka_bootstrap="kafka:9092", data_dir=tmp_path)
    with pytest.raises(ConfigError, match=variable):
        use(settings)
    assert not (tmp_path / "keys").exists()  # no silent development keys for a real cluster


def test_a_service_alone_on_its_embedded_broker_gets_private_dev_keys(tmp_path: Path) -> None:
    settings = CommonSettings(data_dir=tmp_path)
    signature = settings.signer("registry").sign({"kind": "x"})
    settings.verifier("registry").verify({"kind": "x"}, signature, "test")
    assert (tmp_path / "keys" / "registry.key").stat().st_mode & 0o777 == 0o600


def test_keys_come_from_the_files_and_pem_text_given(tmp_path: Path) -> None:
    files = write_key_pair(tmp_path / "k", "training")
    settings = CommonSettings(kafka_bootstrap="kafka:9092",
                              training_signing_key_file=files.private,
                              training_public_key=files.public.read_text())
    signature = settings.signer("training").sign({"kind": "x"})
    settings.verifier("training").verify({"kind": "x"}, signature, "test")
    unreadable = CommonSettings(kafka_bootstrap="k:1", registry_public_key_file=tmp_path / "no")
    with pytest.raises(ConfigError, match="DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE"):
        unreadable.verifier("registry")
    wrong = CommonSettings(kafka_bootstrap="k:1", registry_signing_key_file=files.public)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        wrong.signer("registry")


def test_kafka_security_settings_reach_the_clients() -> None:
    options = CommonSettings(kafka_security_protocol="SASL_PLAINTEXT",
                             kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
                             kafka_sasl_password=SecretStr("p")).kafka_client_options()
    assert options == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"}


def test_the_lineage_seed_reaches_estimators_that_take_one() -> None:
    forest = build_pipeline([{"estimator": "forest.ARFClassifier", "params": {"n_models": 2}}],
                            seed=123)
    assert forest.seed == 123
    own = build_pipeline([{"estimator": "forest.ARFClassifier",
                           "params": {"n_models": 2, "seed": 7}}], seed=123)
    assert own.seed == 7


def test_the_cli_finds_the_cluster_or_the_embedded_broker() -> None:
    assert client_bootstrap(CommonSettings(kafka_bootstrap="kafka:9092")) == "kafka:9092"
    assert client_bootstrap(CommonSettings(embedded_broker_host="127.0.0.2",
                                           embedded_broker_port=19092)) == "127.0.0.2:19092"
