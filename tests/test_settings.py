"""The settings table: parsing, one-line refusals that suggest a fitting value, a safe repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import SETTINGS, ConfigError, Settings, hide_password


def read(env: dict[str, str], dotenv: Path | None = None) -> Settings:
    return Settings.from_env(env, dotenv=dotenv)


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        read(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_need_no_configuration():
    settings = read({})
    assert settings == Settings()
    assert settings.port == 8000 and settings.archive is True
    assert settings.limit_concurrency == 1000
    assert (settings.header_timeout, settings.body_timeout) == (10.0, 30.0)


def test_values_are_parsed_by_the_type_of_their_row():
    settings = read(
        {
            "PORT": "9001",
            "RECONCILE_INTERVAL": "0.5",
            "ARCHIVE": "off",
            "CALLBACK_SECRETS": " new , old ,",
            "LOG_FORMAT": "json",
        }
    )
    assert settings.port == 9001
    assert settings.reconcile_interval == 0.5
    assert settings.archive is False
    assert settings.callback_secrets == ("new", "old")
    assert settings.log_format == "json"


def test_the_environment_wins_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# local\nexport PORT=9100\nLOG_FORMAT='json'\n\nHOST=0.0.0.0\n")
    settings = read({"HOST": "127.0.0.2"}, dotenv)
    assert (settings.port, settings.log_format, settings.host) == (9100, "json", "127.0.0.2")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "abc"}, "PORT='abc' is not a whole number; set e.g. PORT=8000"),
        ({"PORT": "80000"}, "PORT='80000' is out of range (1 to 65535); set e.g. PORT=8000"),
        ({"PORT": "0"}, "PORT='0' is out of range (1 to 65535); set e.g. PORT=8000"),
        (
            {"RECONCILE_BATCH_SIZE": "lots"},
            "RECONCILE_BATCH_SIZE='lots' is not a whole number; set e.g. RECONCILE_BATCH_SIZE=50",
        ),
        (
            {"MAX_BODY_BYTES": "1MB"},
            "MAX_BODY_BYTES='1MB' is not a whole number; set e.g. MAX_BODY_BYTES=1048576",
        ),
        (
            {"RECONCILE_INTERVAL": "soon"},
            "RECONCILE_INTERVAL='soon' is not a number; set e.g. RECONCILE_INTERVAL=30",
        ),
        (
            {"RECONCILE_INTERVAL": "inf"},
            "RECONCILE_INTERVAL='inf' is not a finite number; set e.g. RECONCILE_INTERVAL=30",
        ),
        (
            {"HEADER_TIMEOUT": "0"},
            "HEADER_TIMEOUT='0' is out of range (at least 0.1); set e.g. HEADER_TIMEOUT=10",
        ),
        ({"ARCHIVE": "maybe"}, "ARCHIVE='maybe' is not on or off; set e.g. ARCHIVE=on"),
        (
            {"ARCHIVE_ALLOW_PRIVATE": "y"},
            "ARCHIVE_ALLOW_PRIVATE='y' is not on or off; set e.g. ARCHIVE_ALLOW_PRIVATE=off",
        ),
        (
            {"RECONCILER": "worker"},
            "RECONCILER='worker' is not one of embedded, off; set e.g. RECONCILER=embedded",
        ),
        (
            {"PUBLIC_URL": "example.com"},
            "PUBLIC_URL='example.com' has no http:// or https:// scheme; "
            "set e.g. PUBLIC_URL=https://example.com",
        ),
        (
            {"PUBLIC_URL": "ftp://files.example.com"},
            "PUBLIC_URL='ftp://files.example.com' has no http:// or https:// scheme; "
            "set e.g. PUBLIC_URL=https://taskhook.example.com",
        ),
        (
            {"PUBLIC_URL": "https://"},
            "PUBLIC_URL='https://' names no host; set e.g. PUBLIC_URL=https://taskhook.example.com",
        ),
        (
            {"ACEDATA_BASE_URL": "api.acedata.cloud"},
            "ACEDATA_BASE_URL='api.acedata.cloud' has no http:// or https:// scheme; "
            "set e.g. ACEDATA_BASE_URL=https://api.acedata.cloud",
        ),
        (
            {"DATABASE_URL": "data/taskhook.db"},
            "DATABASE_URL='data/taskhook.db' is not a sqlite:/// or postgresql:// URL; "
            "set e.g. DATABASE_URL=sqlite:///./data/taskhook.db",
        ),
    ],
)
def test_a_refused_value_is_named_shown_and_answered_with_a_fitting_suggestion(env, expected):
    assert refusal(env) == expected


def test_number_settings_suggest_their_own_default_not_one_shared_number():
    suggestions = {
        row.name: refusal({row.name: "abc"}).rpartition("=")[2]
        for row in SETTINGS
        if row.type in (int, float)
    }
    for name, suggestion in suggestions.items():
        default = getattr(Settings(), name.lower())
        assert float(suggestion) == default, name


def test_secrets_are_never_shown_in_a_refusal():
    message = refusal({"CALLBACK_SECRETS": " , ,"})
    assert message.startswith("CALLBACK_SECRETS holds no value")
    assert "' , ,'" not in message


def test_a_database_password_is_hidden_in_a_refusal():
    message = refusal({"DATABASE_URL": "mysql://app:hunter2@db/taskhook"})
    assert "hunter2" not in message and "mysql://app:***@db/taskhook" in message


def test_postgresql_urls_are_accepted_as_written():
    for url in ("postgresql://app:pw@db:5432/taskhook", "postgres://db/taskhook"):
        assert read({"DATABASE_URL": url}).database_url == url
    assert read({"DATABASE_URL": "postgresql://app:pw@db/x"}).database_label == (
        "postgresql://app:***@db/x"
    )
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        read({"DATABASE_URL": "postgresql://app:pw@db/x"}).database_path  # noqa: B018


def test_repr_hides_every_secret():
    settings = read(
        {
            "API_TOKEN": "api-token-value",
            "CALLBACK_SECRETS": "cb-one,cb-two",
            "ACEDATA_API_TOKEN": "acedata-token-value",
            "SEEDANCE2_API_KEY": "seedance2-key-value",
            "DATABASE_URL": "postgresql://app:db-password@db/taskhook",
        }
    )
    text = repr(settings)
    for secret in (
        "api-token-value",
        "cb-one",
        "cb-two",
        "acedata-token-value",
        "seedance2-key-value",
        "db-password",
    ):
        assert secret not in text
    assert "api_token='***'" in text and "postgresql://app:***@db/taskhook" in text
    assert str(settings) == text
    assert "api_token=''" in repr(Settings())  # an unset secret says it is unset


def test_every_secret_row_is_marked():
    secret = {row.name for row in SETTINGS if row.secret}
    assert {"API_TOKEN", "CALLBACK_SECRETS", "ACEDATA_API_TOKEN", "SEEDANCE2_API_KEY"} <= secret
    for row in SETTINGS:
        if any(word in row.name for word in ("TOKEN", "SECRET", "KEY", "PASSWORD")):
            assert row.secret, f"{row.name} looks like a secret but is not marked secret=True"


def test_the_table_has_no_dead_rows():
    assert not hasattr(Settings(), "env")
    assert [row.name for row in SETTINGS] == [n.upper() for n in Settings.__dataclass_fields__]
    for row in SETTINGS:
        assert row.help and row.example, row.name


def test_validate_checks_settings_built_in_code():
    Settings().validate()
    with pytest.raises(ConfigError, match=r"PORT='70000' is out of range"):
        Settings(port=70000).validate()


def test_hide_password_leaves_urls_without_one_alone():
    assert hide_password("https://example.com/a@b") == "https://example.com/a@b"
    assert hide_password("s3://bucket/prefix") == "s3://bucket/prefix"
    assert hide_password("postgres://u:p@h:5432/d?x=1") == "postgres://u:***@h:5432/d?x=1"
