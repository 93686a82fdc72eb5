from __future__ import annotations

import pytest

from tessera.config import ConfigError, load_settings


def test_defaults():
    s = load_settings(env={})
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.clickhouse_url == ""
    assert s.topic("requests.v1") == "tessera.requests.v1"


def test_precedence_override_env_file(tmp_path):
    f = tmp_path / "tessera.toml"
    f.write_text('[tessera]\ntopic_prefix = "fromfile"\nkafka_port = 19000\nmetrics_port = 1\n')
    env = {"TESSERA_CONFIG": str(f), "TESSERA_KAFKA_PORT": "19001"}
    s = load_settings(env=env, metrics_port=2)
    assert (s.topic_prefix, s.kafka_port, s.metrics_port) == ("fromfile", 19001, 2)


def test_errors_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="TESSERA_KAFKA_PORT.*integer"):
        load_settings(env={"TESSERA_KAFKA_PORT": "ninety"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"TESSERA_CONFIG": str(tmp_path / "missing.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("kafka_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'kafka_prot'"):
        load_settings(config_file=bad, env={})
    with pytest.raises(ConfigError, match="SASL needs"):
        load_settings(env={"TESSERA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="http"):
        load_settings(env={"TESSERA_CLICKHOUSE_URL": "tcp://x:9000"})


def test_secrets_are_masked():
    s = load_settings(env={"TESSERA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TESSERA_KAFKA_SASL_USERNAME": "u",
                           "TESSERA_KAFKA_SASL_PASSWORD": "hunter2"})
    assert s.shown()["kafka_sasl_password"] == "********"
    assert "hunter2" not in repr(s.shown())
