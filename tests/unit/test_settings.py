"""Settings fail fast where unsafe, and only where a key is actually needed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from shared.errors import ConfigError
from shared.pipelines import build_pipeline
from shared.settings import DEV_SIGNING_KEY, CommonSettings, client_bootstrap


def test_the_public_dev_key_is_refused_with_a_real_cluster() -> None:
    settings = CommonSettings(kafka_bootstrap="kafka:9092")  # the CLI can build this
    with pytest.raises(ConfigError, match="DRIFTLOOP_SIGNING_KEY"):
        settings.signing_key_bytes()


def test_the_dev_key_is_fine_on_the_embedded_broker() -> None:
    assert CommonSettings().signing_key_bytes() == DEV_SIGNING_KEY.encode()


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        CommonSettings(signing_key=SecretStr("short")).signing_key_bytes()


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
