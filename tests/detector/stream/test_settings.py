"""Settings precedence: a flag over the environment over the config file, librdkafka properties included."""

from __future__ import annotations

import re

import pytest

from detector.stream.settings import RunSettings, SettingsError, load_settings


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('max_batch = 64\n[kafka]\n"client.id" = "from-file"\n"linger.ms" = "7"\n')
    return path


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(config_file, monkeypatch):
    assert load_settings(RunSettings, {}, config_file).max_batch == 64
    monkeypatch.setenv("FLOWWARDEN_MAX_BATCH", "128")
    assert load_settings(RunSettings, {}, config_file).max_batch == 128
    assert load_settings(RunSettings, {"max_batch": 256}, config_file).max_batch == 256


def test_a_kafka_property_keeps_the_same_precedence_whichever_way_each_source_spells_it(config_file, monkeypatch):
    monkeypatch.setenv("FLOWWARDEN_KAFKA__CLIENT_ID", "from-env")  # client_id: the environment's spelling
    assert load_settings(RunSettings, {}, config_file).kafka == {"client.id": "from-env", "linger.ms": "7"}
    flagged = load_settings(RunSettings, {"kafka": {"client.id": "from-flag"}}, config_file)
    assert flagged.kafka == {"client.id": "from-flag", "linger.ms": "7"}


def test_an_owned_property_in_any_spelling_is_refused(config_file, monkeypatch):
    monkeypatch.setenv("FLOWWARDEN_KAFKA__GROUP_ID", "sneaky")
    with pytest.raises(SettingsError, match=r"group\.id is not a pass-through property"):
        load_settings(RunSettings, {}, config_file)


def test_a_bad_value_names_where_it_came_from(config_file, monkeypatch):
    config_file.write_text("max_batch = 0\n")
    with pytest.raises(SettingsError, match=rf"max_batch: .* \(from config file {re.escape(str(config_file))}\)"):
        load_settings(RunSettings, {}, config_file)
    monkeypatch.setenv("FLOWWARDEN_MAX_BATCH", "-1")
    with pytest.raises(SettingsError, match=r"max_batch: .* \(from FLOWWARDEN_MAX_BATCH\)"):
        load_settings(RunSettings, {}, config_file)
    with pytest.raises(SettingsError, match=r"max_batch: .* \(from --max-batch\)"):
        load_settings(RunSettings, {"max_batch": 0}, config_file)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_batch = true", "max_batch: must be an integer, not true"),
        ('max_batch = "64"', 'max_batch: must be an integer, not "64"'),
        ("create_topics = 1", "create_topics: must be true or false, not 1"),
        ('guarantee = "maybe"', 'guarantee: must be one of "exactly-once", "at-least-once", not "maybe"'),
        ('threads = "4"', 'threads: must be an integer, not "4"'),
        ("input_topic = 5", "input_topic: must be a string, not 5"),
    ],
)
def test_a_file_value_of_the_wrong_toml_type_is_an_error_not_a_conversion(config_file, line, message):
    config_file.write_text(f"{line}\n")
    with pytest.raises(SettingsError, match=re.escape(f"{message} (from config file {config_file})")):
        load_settings(RunSettings, {}, config_file)


def test_the_environment_is_text_and_converts_while_the_file_takes_its_own_types(config_file, monkeypatch):
    config_file.write_text('registry_poll_seconds = 1\nbundle = "."\ncreate_topics = true\n')
    monkeypatch.setenv("FLOWWARDEN_MAX_BATCH", "128")
    settings = load_settings(RunSettings, {}, config_file)
    assert settings.max_batch == 128 and settings.registry_poll_seconds == 1.0 and settings.create_topics is True
