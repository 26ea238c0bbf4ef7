from __future__ import annotations

from pathlib import Path

import pytest

from mailcore import Settings, ValidationError
from mailcore.config import parse_nameserver


def test_defaults() -> None:
    s = Settings.load(env={}, path=None)
    assert s.database_url == "sqlite:///./mailcore.db"
    assert s.port == 8025


def test_toml_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "mailcore.toml"
    cfg.write_text('smtp_url = "smtp://relay:587"\nport = 9000\npublic_url = "https://m.example"\n')
    env = {"MAILCORE_PORT": "9100", "MAILCORE_SECRET_KEY": "k", "UNRELATED": "x"}
    s = Settings.load(cfg, env=env, host="0.0.0.0")
    assert (s.smtp_url, s.port, s.secret_key, s.host) == ("smtp://relay:587", 9100, "k", "0.0.0.0")
    assert s.public_url == "https://m.example"
    # MAILCORE_CONFIG points at the file too.
    assert Settings.load(env={"MAILCORE_CONFIG": str(cfg)}).port == 9000


def test_settings_are_frozen() -> None:
    s = Settings.load(env={})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "env",
    [{"MAILCORE_PORT": "http"}, {"MAILCORE_PORT": "70000"}, {"MAILCORE_MAX_BODY_BYTES": "-1"}],
)
def test_bad_values_are_clear_errors(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings.load(env=env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "mailcore.toml"
    cfg.write_text('databse_url = "typo"\n')
    with pytest.raises(ValidationError, match="databse_url"):
        Settings.load(cfg, env={})
    with pytest.raises(ValidationError):
        Settings.load(tmp_path / "missing.toml", env={})


def test_dns_nameservers_and_mx_port_from_env() -> None:
    s = Settings.load(env={})
    assert (s.dns_nameservers, s.mx_port, s.dns_timeout_seconds) == ((), 25, 5.0)
    env = {
        "MAILCORE_DNS_NAMESERVERS": "127.0.0.1:5353, 9.9.9.9,[::1]:53,,",
        "MAILCORE_MX_PORT": "2525",
        "MAILCORE_DNS_TIMEOUT_SECONDS": "0.5",
    }
    s = Settings.load(env=env)
    assert s.dns_nameservers == ("127.0.0.1:5353", "9.9.9.9", "[::1]:53")
    assert (s.mx_port, s.dns_timeout_seconds) == (2525, 0.5)


def test_dns_nameservers_from_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "mailcore.toml"
    cfg.write_text('dns_nameservers = ["10.0.0.53", "2001:db8::53"]\n')
    assert Settings.load(cfg, env={}).dns_nameservers == ("10.0.0.53", "2001:db8::53")


@pytest.mark.parametrize(
    "env",
    [
        {"MAILCORE_DNS_NAMESERVERS": "dns.example"},  # a name would need DNS to be found
        {"MAILCORE_DNS_NAMESERVERS": "127.0.0.1:0"},
        {"MAILCORE_DNS_NAMESERVERS": "127.0.0.1:"},
        {"MAILCORE_DNS_NAMESERVERS": "[::1"},
        {"MAILCORE_MX_PORT": "0"},
        {"MAILCORE_MX_PORT": "65536"},
        {"MAILCORE_DNS_TIMEOUT_SECONDS": "0"},
    ],
)
def test_bad_direct_delivery_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings.load(env=env)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[2001:db8::1]:5300", ("2001:db8::1", 5300)),
    ],
)
def test_parse_nameserver(entry: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == expected
