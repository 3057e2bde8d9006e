import os

import pytest

from workers.settings import Settings


def test_from_env_parses_types_and_lists():
    s = Settings.from_env({"VIGIL_KAFKA": "k:9092", "VIGIL_PARTITIONS": "12", "VIGIL_EMBEDDED": "true",
                           "VIGIL_MEDIA_ROOTS": os.pathsep.join(["/a", "/b"]), "VIGIL_BANK_POLL_SECONDS": "0.25",
                           "VIGIL_KAFKA_CONFIG": '{"security.protocol": "SASL_SSL"}'})
    assert s.kafka == "k:9092" and s.partitions == 12 and s.embedded is True
    assert s.media_roots == ("/a", "/b") and s.bank_poll_seconds == 0.25
    assert s.kafka_config == {"security.protocol": "SASL_SSL"}


def test_bad_value_names_the_variable():
    with pytest.raises(ValueError, match="VIGIL_PARTITIONS"):
        Settings.from_env({"VIGIL_PARTITIONS": "many"})


def test_cli_overrides_win_and_none_means_not_given():
    s = Settings.from_env({"VIGIL_KAFKA": "env:1"}).with_overrides(kafka=None, redis="redis://x:1/0")
    assert s.kafka == "env:1" and s.redis == "redis://x:1/0"


def test_to_env_round_trips():
    s = Settings(kafka="h:1", redis="redis://r:2/0", media_roots=("/m", "/n"), embedded=True,
                 kafka_config={"sasl.mechanism": "PLAIN"}, pdq_threshold=20)
    assert Settings.from_env(s.to_env()) == s
