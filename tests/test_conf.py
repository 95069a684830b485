"""Settings: one resolver, clear errors, secrets kept out of reprs."""

from __future__ import annotations

import os

import pytest

from bento_tasks import BentoError, conf
from bento_tasks.exceptions import ConfigurationError

REQUIRED = {"BENTO_SITE_UUID": "site", "BENTO_PUBLISHABLE_KEY": "pub", "BENTO_SECRET_KEY": "very-secret"}


@pytest.fixture
def env(monkeypatch):
    for key in [name for name in os.environ if name.startswith("BENTO_") and name not in conf.NOT_SETTINGS]:
        monkeypatch.delenv(key)
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
def test_missing_key_is_named_where_a_post_needs_it(env, missing):
    """Without a site uuid or key the settings still resolve (a producer needs none); require_keys(), which
    the code that POSTs calls, raises ConfigurationError naming exactly that setting and how to set it."""
    env.delenv(missing)
    settings = conf.get_settings()
    with pytest.raises(ConfigurationError, match=f"{missing} is not set in the environment") as raised:
        settings.require_keys()
    assert f"export {missing}=" in str(raised.value)
    assert [name for name in REQUIRED if name in str(raised.value)] == [missing]


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


def test_every_problem_is_reported_at_once_with_type_and_example(env):
    """BENTO_BATCH_SIZE=5000 and BENTO_FLUSH_INTERVAL="5s" (and more) are all in one ConfigurationError, each
    saying what is expected and giving an example in environment syntax."""
    env.setenv("BENTO_BATCH_SIZE", "5000")
    env.setenv("BENTO_FLUSH_INTERVAL", "5s")
    env.setenv("BENTO_TIMEOUT", "lots")
    with pytest.raises(ConfigurationError) as raised:
        conf.get_settings()
    problems = raised.value.problems
    assert [line.split()[0] for line in problems] == ["BENTO_FLUSH_INTERVAL", "BENTO_BATCH_SIZE", "BENTO_TIMEOUT"]
    assert "expected a whole number from 1 to 1000" in problems[1] and "BENTO_BATCH_SIZE=1000" in problems[1]
    assert "expected a number of seconds above 0" in problems[0] and "BENTO_FLUSH_INTERVAL=5" in problems[0]
    assert "3 problems with the bento-tasks settings (from the environment)" in str(raised.value)
    assert all(line in str(raised.value) for line in problems)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("Yes", True),
        ("no", False),
        ("ON", True),
        ("off", False),
        (" true ", True),
    ],
)
def test_booleans_accept_the_usual_spellings(env, value, expected):
    """true/false, 1/0, yes/no, on/off in any case are booleans."""
    env.setenv("BENTO_MASK_EMAILS", value)
    assert conf.get_settings().mask_emails is expected


@pytest.mark.parametrize("value", ["nope", "2", "y", "enabled"])
def test_other_boolean_spellings_are_refused(env, value):
    """BENTO_MASK_EMAILS="nope" is an error saying what a boolean may be, not silently true."""
    env.setenv("BENTO_MASK_EMAILS", value)
    with pytest.raises(ConfigurationError, match=r"BENTO_MASK_EMAILS is .*: expected true or false"):
        conf.get_settings()


@pytest.mark.parametrize("value", ["2.7", "1e3", "ten", ""])
def test_integers_refuse_fractions_and_words(env, value):
    """BENTO_BATCH_SIZE=2.7 is refused (it was read as 2); an empty value means the default."""
    env.setenv("BENTO_BATCH_SIZE", value)
    if value == "":
        assert conf.get_settings().batch_size == 1000
        return
    with pytest.raises(ConfigurationError, match=r"BENTO_BATCH_SIZE is .*: expected a whole number"):
        conf.get_settings()


def test_python_values_are_checked_by_type():
    """Values from Django settings keep their Python type: True is a boolean, 2.7 no count, 250.0 is 250."""
    parse = conf.SPECS["BENTO_BATCH_SIZE"].parse
    assert parse(250) == parse(250.0) == 250
    for refused in (2.7, True, "2.7", None):
        with pytest.raises((TypeError, ValueError)):
            parse(refused)
    assert conf.SPECS["BENTO_MASK_EMAILS"].parse(False) is False


def test_unknown_names_get_the_closest_known_name(env):
    """A misspelled BENTO_* variable is a warning naming the setting it was probably meant to be."""
    env.setenv("BENTO_RATE_LIMT", "50")
    env.setenv("BENTO_SOMETHING_ELSE", "1")
    resolution = conf.resolve()
    hints = {problem.setting: (problem.id, problem.hint) for problem in resolution.warnings}
    assert hints["BENTO_RATE_LIMT"] == ("bento_tasks.W005", "Did you mean BENTO_RATE_LIMIT?")
    assert hints["BENTO_SOMETHING_ELSE"][0] == "bento_tasks.W005"
    assert conf.get_settings().rate_limit == 100  # the typo changed nothing


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("https://app.bentonow.com", True),
        ("https://app.bentonow.com/api/v1/batch/events", True),
        ("https://app.bentonow.com/api/v1/", False),
        ("http://127.0.0.1:8765/api/v1", False),
    ],
)
def test_api_url_that_is_not_an_api_base_is_warned(env, url, warned):
    """An API URL whose path does not end in /api/v1 gets a warning showing where events would go."""
    env.setenv("BENTO_API_URL", url)
    warnings = [problem for problem in conf.resolve().warnings if problem.setting == "BENTO_API_URL"]
    assert bool(warnings) is warned
    assert all(p.id == "bento_tasks.W006" and "/batch/events" in p.message for p in warnings)


def test_the_redis_url_is_never_echoed(env):
    """A refused BENTO_REDIS_URL is named without its value, which may hold a password."""
    env.setenv("BENTO_REDIS_URL", "http://:hunter2@example.com:6379/0")
    with pytest.raises(ConfigurationError, match="BENTO_REDIS_URL") as raised:
        conf.get_settings()
    assert "hunter2" not in str(raised.value)


def test_isolation_and_copy_limits_are_settings(env):
    """BENTO_ISOLATE_AFTER, BENTO_MAX_UNANSWERED and BENTO_MAX_WORKER_DEATHS default to 3 and are read; the POST
    deadline is connect + read timeout and the lease adds the margin to it."""
    s = conf.get_settings()
    assert (s.isolate_after, s.max_unanswered, s.max_worker_deaths) == (3, 3, 3)
    assert (s.post_deadline, s.lease_seconds) == (35.0, 65.0)
    for name in ("BENTO_ISOLATE_AFTER", "BENTO_MAX_UNANSWERED", "BENTO_MAX_WORKER_DEATHS"):
        env.setenv(name, "5")
    conf.reset_settings()
    s = conf.get_settings()
    assert (s.isolate_after, s.max_unanswered, s.max_worker_deaths) == (5, 5, 5)


@pytest.mark.parametrize("name", ["BENTO_ISOLATE_AFTER", "BENTO_MAX_UNANSWERED", "BENTO_MAX_WORKER_DEATHS"])
def test_isolation_and_copy_limits_must_be_at_least_one(env, name):
    """0 would dead-letter or cut every batch at its first failure: refused, naming the setting."""
    env.setenv(name, "0")
    with pytest.raises(ConfigurationError, match=f"{name} is '0': expected a whole number, 1 or more"):
        conf.get_settings()


@pytest.mark.parametrize(("value", "on"), [(None, False), ("1", True), ("true", True), ("off", False), ("0", False)])
def test_the_outbox_is_off_unless_turned_on(env, value, on):
    """BENTO_OUTBOX defaults to off; 1/true turn it on, 0/false/off keep it off."""
    env.delenv("BENTO_OUTBOX", raising=False)
    if value is not None:
        env.setenv("BENTO_OUTBOX", value)
    assert conf.get_settings().outbox is on
