"""Settings: one resolver, clear errors, secrets kept out of reprs."""

from __future__ import annotations

import pytest

from bento_tasks import BentoError, conf
from bento_tasks.exceptions import ConfigurationError

REQUIRED = {"BENTO_SITE_UUID": "site", "BENTO_PUBLISHABLE_KEY": "pub", "BENTO_SECRET_KEY": "very-secret"}


@pytest.fixture
def env(monkeypatch):
    for key in ("BENTO_API_URL", "BENTO_BATCH_SIZE", "BENTO_RATE_LIMIT", "BENTO_REDIS_URL", "BENTO_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in REQUIRED.items():
        monkeypatch.setenv(key, value)
    conf.reset_settings()
    yield monkeypatch
    conf.reset_settings()


def test_defaults_are_documented_values(env):
    """Unset optional settings take the documented defaults."""
    s = conf.get_settings()
    assert (s.api_url, s.batch_size, s.rate_limit, s.flush_interval) == (
        "https://app.bentonow.com/api/v1",
        1000,
        100,
        5.0,
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_setting_names_it(env, missing):
    """A missing site uuid or key raises ConfigurationError naming exactly that setting."""
    env.delenv(missing)
    with pytest.raises(ConfigurationError, match=missing):
        conf.get_settings()


def test_configuration_error_is_not_a_bento_error():
    """A broad `except BentoError` cannot swallow a configuration mistake."""
    assert not issubclass(ConfigurationError, BentoError)


def test_importing_the_package_reads_no_settings(env):
    """Settings are resolved at first use, so importing without them works."""
    env.delenv("BENTO_SECRET_KEY")
    import importlib

    import bento_tasks

    importlib.reload(bento_tasks)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://app.bentonow.com/api/v1", True),
        ("http://127.0.0.1:8000/api/v1", True),
        ("http://localhost:8000/api/v1", True),
        ("http://app.bentonow.com/api/v1", False),
        ("ftp://app.bentonow.com/api/v1", False),
    ],
)
def test_only_https_or_loopback_api_urls(env, url, ok):
    """Plain http is refused except on loopback hosts."""
    env.setenv("BENTO_API_URL", url)
    if ok:
        assert conf.get_settings().api_url == url
    else:
        with pytest.raises(ConfigurationError, match="BENTO_API_URL"):
            conf.get_settings()


@pytest.mark.parametrize(
    ("name", "value"), [("BENTO_BATCH_SIZE", "1001"), ("BENTO_BATCH_SIZE", "0"), ("BENTO_TIMEOUT", "soon")]
)
def test_bad_values_name_the_setting(env, name, value):
    """An out-of-range or unparsable value names its setting."""
    env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        conf.get_settings()


def test_secret_key_is_not_in_repr(env):
    """repr(settings) never shows the secret key."""
    assert "very-secret" not in repr(conf.get_settings())


def test_settings_are_resolved_once(env):
    """Later environment changes do not leak in until reset_settings()."""
    first = conf.get_settings()
    env.setenv("BENTO_BATCH_SIZE", "10")
    assert conf.get_settings() is first
    conf.reset_settings()
    assert conf.get_settings().batch_size == 10


def test_keys_are_stripped(env):
    """A key read from a file with a trailing newline still authenticates."""
    env.setenv("BENTO_SECRET_KEY", "very-secret\n")
    assert conf.get_settings().secret_key == "very-secret"


def test_one_optional_setting_needs_no_keys(env):
    """A beat process without Bento keys can still read the flush interval."""
    env.delenv("BENTO_SECRET_KEY")
    env.setenv("BENTO_FLUSH_INTERVAL", "7")
    assert conf.optional_setting("BENTO_FLUSH_INTERVAL", 5.0) == 7.0
    env.setenv("BENTO_FLUSH_INTERVAL", "soon")
    with pytest.raises(ConfigurationError, match="BENTO_FLUSH_INTERVAL"):
        conf.optional_setting("BENTO_FLUSH_INTERVAL", 5.0)


@pytest.mark.parametrize(("value", "on"), [(None, False), ("1", True), ("true", True), ("off", False), ("0", False)])
def test_the_outbox_is_off_unless_turned_on(env, value, on):
    """BENTO_OUTBOX defaults to off; 1/true turn it on, 0/false/off keep it off."""
    env.delenv("BENTO_OUTBOX", raising=False)
    if value is not None:
        env.setenv("BENTO_OUTBOX", value)
    assert conf.get_settings().outbox is on
