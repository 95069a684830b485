"""The tasks' logic in this process, against the real Redis and the real fake Bento.

Dispatches (``post_batch.delay`` / ``apply_async``) are recorded instead of sent to a
broker (the ``dispatches`` fixture), so each test drives the pipeline step by step;
tests/test_e2e.py runs it live.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time

import pytest
from celery.exceptions import Reject
from conftest import configure, queue_events

from bento_tasks import BentoError, BrokerUnavailable, BufferUnavailable, InvalidEvent, conf, send_event, tasks, track


def test_flush_drains_a_deep_backlog_in_one_tick(monkeypatch, buffer, dispatches, fake):
    """20,000 queued events become 20 full batches from a single flush, not 20 ticks."""
    configure(monkeypatch, BENTO_FLUSH_INTERVAL="5")  # a tick may take up to one interval
    queue_events(20_000)
    counts = tasks.flush_events.run()
    assert counts["dispatched"] == 20
    assert [len(buffer.redis.lrange(buffer.batch_key(b), 0, -1)) for b, _ in dispatches.pending] == [1000] * 20
    dispatches.run_all()
    assert len(fake.events) == 20_000 and len({e["fields"]["n"] for e in fake.events}) == 20_000
    assert buffer.status()["delivered"] == 20_000 and buffer.status()["in_flight"] == 0


def test_flush_keeps_only_the_rate_share_in_flight(monkeypatch, buffer, dispatches):
    """Under a rate limit a flush claims about two ticks' worth of batches, not the whole backlog."""
    configure(monkeypatch, BENTO_RATE_LIMIT="100", BENTO_FLUSH_INTERVAL="5", BENTO_BATCH_SIZE="10")
    queue_events(1000)
    assert tasks.flush_events.run()["dispatched"] == 18
    assert tasks.flush_events.run()["dispatched"] == 0


def test_batch_is_removed_only_after_bento_accepts(buffer, dispatches, fake):
    """A 503 keeps the batch in Redis with its attempt counted and schedules a retry; only the later 200 removes it."""
    queue_events(5)
    tasks.flush_events.run()
    fake.fail(503, times=1)
    [(batch_id, _)] = dispatches.pending
    assert dispatches.run_next() == "retry"
    assert buffer.status()["in_flight"] == 5 and fake.events == []
    assert buffer.redis.hget(buffer.meta_key(batch_id), "attempts") == b"1"
    [(again, countdown)] = dispatches.pending
    assert again == batch_id and 0.1 <= countdown <= 0.2  # BENTO_RETRY_BACKOFF=0.2: half step to full step
    assert dispatches.run_next() == "delivered"
    assert buffer.status()["in_flight"] == 0 and len(fake.events) == 5
    assert not buffer.redis.exists(buffer.meta_key(batch_id))


def test_429_pauses_every_worker_until_retry_after(buffer, dispatches, fake):
    """A 429 with Retry-After pauses all POSTs that long; the batches wait in Redis and the flush sends them after."""
    queue_events(2000)
    tasks.flush_events.run()
    fake.fail(429, times=1, retry_after="1")
    assert dispatches.run_next() == "rate_limited"
    assert buffer.status()["paused_until"] is not None
    # The other batch, posted during the pause, does not reach Bento.
    assert dispatches.run_next() == "deferred"
    assert fake.count_status(200) == 0
    assert dispatches.pending == [] and buffer.status()["batches_deferred"] == 2
    time.sleep(0.6)  # now due before the next flush (0.5 s): released with the countdown left
    assert tasks.flush_events.run()["released"] == 2
    assert all(0 < countdown <= 0.5 for _, countdown in dispatches.pending)
    time.sleep(0.5)
    assert dispatches.run_all() == ["delivered", "delivered"]
    assert len(fake.events) == 2000


def test_retry_after_http_date_is_honoured(buffer, dispatches, fake):
    """Retry-After given as an HTTP date pauses until that moment; the wait lives in Redis, not in a countdown."""
    import email.utils

    queue_events(1)
    tasks.flush_events.run()
    fake.fail(503, times=1, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    dispatches.run_next()
    assert 28 <= float(buffer.redis.get(buffer.paused_key)) - buffer.now() <= 30
    assert dispatches.pending == [] and buffer.status()["batches_deferred"] == 1
    assert tasks.flush_events.run()["released"] == 0
    assert fake.count_status(503) == 1 and fake.count_status(200) == 0


def test_resume_ends_a_pause_and_sends_waiting_batches_at_the_next_flush(monkeypatch, buffer, dispatches, fake):
    """After a 401 pause, resume (the CLI's) makes every waiting batch go at the next flush, not when the pause ends."""
    from bento_tasks import cli

    configure(monkeypatch, BENTO_CONFIG_ERROR_PAUSE="3600")
    queue_events(2000)
    tasks.flush_events.run()
    fake.fail(401, times=1)
    assert dispatches.run_all() == ["config", "deferred"]
    assert tasks.flush_events.run()["released"] == 0
    assert cli.main(["resume"]) == 0
    assert buffer.status()["paused_until"] is None
    assert tasks.flush_events.run()["released"] == 2
    assert dispatches.run_all() == ["delivered", "delivered"] and len(fake.events) == 2000


def test_poison_event_is_isolated_and_the_rest_delivered(buffer, dispatches, fake):
    """A 422 on a batch halves it until the one bad event stands alone in the dead letters."""
    queue_events(100)
    fake.reject_events(lambda event: event["email"] == "user37@example.com")
    tasks.flush_events.run()
    dispatches.run_all()
    assert len(fake.events) == 99
    [letter] = buffer.dead_letters()
    assert json.loads(letter.event)["email"] == "user37@example.com"
    assert letter.status == 422 and "Bento refused" in letter.reason
    assert buffer.status()["in_flight"] == 0


def test_config_fault_keeps_events_pauses_and_logs_once(monkeypatch, buffer, dispatches, fake, caplog):
    """A 401 keeps every event, pauses delivery and logs one error that names the settings to check."""
    configure(monkeypatch, BENTO_SECRET_KEY="wrong-secret", BENTO_CONFIG_ERROR_PAUSE="60")
    queue_events(2000)
    tasks.flush_events.run()
    with caplog.at_level(logging.INFO, logger="bento_tasks"):
        assert dispatches.run_next() == "config"
        assert dispatches.run_next() == "deferred"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "BENTO_SECRET_KEY" in errors[0].getMessage() and "resume" in errors[0].getMessage()
    assert "wrong-secret" not in caplog.text
    status = buffer.status()
    assert status["in_flight"] == 2000 and status["dead"] == 0 and status["paused_until"]


def test_every_post_that_does_not_deliver_logs_a_warning_with_the_next_try(buffer, dispatches, fake, caplog):
    """A failed POST is one WARNING with its status and when it is tried again; dead-lettering is an ERROR."""
    queue_events(1)
    tasks.flush_events.run()
    fake.fail(503, times=1)
    fake.fail(422, times=1)
    with caplog.at_level(logging.WARNING, logger="bento_tasks"):
        assert dispatches.run_next() == "retry"
    [warning] = caplog.records
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert "status=503" in message and "retry in" in message and "(at 20" in message and "1 failed attempt" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bento_tasks"):
        assert dispatches.run_next() == "refused"
    [error] = caplog.records
    assert (
        error.levelno == logging.ERROR and "dead-lettered" in error.getMessage() and "status=422" in error.getMessage()
    )


def test_exhausted_retries_dead_letter_the_batch(monkeypatch, buffer, dispatches, fake):
    """After BENTO_MAX_RETRIES retries the batch goes to dead letters with status and attempts."""
    configure(monkeypatch, BENTO_MAX_RETRIES="2")
    queue_events(3)
    tasks.flush_events.run()
    fake.fail(500, times=10)
    assert dispatches.run_all() == ["retry", "retry", "retry"]
    letters = buffer.dead_letters()
    assert len(letters) == 3 and {(lt.status, lt.attempts) for lt in letters} == {(500, 3)}
    assert buffer.status()["in_flight"] == 0


def test_invalid_raw_entries_never_reach_bento(buffer, dispatches, fake):
    """Entries another producer pushed are validated before the POST; the bad ones are dead-lettered."""
    queue_events(3)
    buffer.push(b"not json", b'{"type":"t","email":"nope"}', b'{"type":"t","email":"a@example.com","x":1}')
    tasks.flush_events.run()
    assert dispatches.run_all() == ["delivered"]
    assert len(fake.events) == 3
    reasons = sorted(letter.reason for letter in buffer.dead_letters())
    assert len(reasons) == 3
    assert any("email" in r for r in reasons) and any("x: Unknown field" in r for r in reasons)


def test_a_batch_of_only_invalid_entries_is_never_posted(buffer, dispatches, fake, caplog):
    """When nothing in a batch is valid, its events are dead-lettered (one ERROR line) and no request is made."""
    buffer.push(b"not json", b'{"type":"t","email":"nope"}')
    tasks.flush_events.run()
    with caplog.at_level(logging.WARNING, logger="bento_tasks"):
        assert dispatches.run_all() == ["rejected"]
    [error] = caplog.records
    assert error.levelno == logging.ERROR and "2 invalid event(s) dead-lettered" in error.getMessage()
    assert fake.requests == []
    status = buffer.status()
    assert (status["dead"], status["in_flight"], status["queued"]) == (2, 0, 0)


def test_bento_reported_failures_are_counted(buffer, dispatches, fake, monkeypatch):
    """A 200 whose 'failed' is above zero is recorded in status, and the batch is not resent."""
    queue_events(4)
    tasks.flush_events.run()
    monkeypatch.setattr("bento_tasks.tasks.post_events", _answer_with_failures(tasks.post_events))
    assert dispatches.run_next() == "delivered"
    status = buffer.status()
    assert (status["delivered"], status["failed"], status["in_flight"], status["failure_reports"]) == (3, 1, 0, 1)
    _, [report] = buffer.failure_reports()
    assert (report["batch_size"], report["failed"], report["results"]) == (4, 1, 3) and report["time"]
    assert fake.count_status(200) == 1


def _answer_with_failures(real):
    def post(settings, events):
        from dataclasses import replace

        outcome = real(settings, events)
        return replace(outcome, accepted=len(events) - 1, failed=1)

    return post


def test_two_concurrent_flushes_never_send_an_event_twice(buffer, dispatches, fake):
    """Two flushes racing over one backlog dispatch disjoint batches; Bento sees each event once."""
    queue_events(10_000)
    threads = [threading.Thread(target=tasks.flush_events.run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(dispatches.pending) == 10
    dispatches.run_all()
    numbers = [e["fields"]["n"] for e in fake.events]
    assert len(numbers) == 10_000 and len(set(numbers)) == 10_000


def test_send_event_delay_stamps_the_date_and_validates_in_the_caller(buffer, celery_app):
    """.delay() raises InvalidEvent for a bad event and sends a message carrying the call time."""
    with pytest.raises(InvalidEvent, match="email"):
        send_event.delay(type="signup", email="not-an-address")
    send_event.delay("signup", "a@example.com", fields={"plan": "pro"})
    broker = celery_app.connection_for_write().default_channel.client
    [message] = broker.lrange("celery", 0, -1)
    body = json.loads(base64.b64decode(json.loads(message)["body"]))
    args, kwargs, _ = body
    assert args == [] and kwargs["email"] == "a@example.com" and kwargs["date"]


def test_send_event_task_body_queues_the_event(buffer):
    """The worker side pushes the encoded event onto the Redis queue."""
    send_event.run("signup", "a@example.com", date="2024-01-01T00:00:00+00:00")
    [raw] = buffer.redis.lrange(buffer.queue_key, 0, -1)
    assert json.loads(raw) == {"type": "signup", "email": "a@example.com", "date": "2024-01-01T00:00:00.000000+00:00"}


def test_a_send_event_message_run_twice_queues_its_event_once(buffer):
    """A send_event message run a second time (redelivered: its worker died after queuing the event and before
    acknowledging, and kombu restored it, or reject_on_worker_lost requeued it) queues nothing more; another
    message with the same event is queued."""
    kwargs = {"type": "signup", "email": "a@example.com", "date": "2024-01-01T00:00:00+00:00"}
    send_event.apply(kwargs=kwargs, task_id="message-1")
    send_event.apply(kwargs=kwargs, task_id="message-1")
    send_event.apply(kwargs=kwargs, task_id="message-2")
    assert buffer.redis.llen(buffer.queue_key) == 2


def test_track_with_redis_down_raises_buffer_unavailable(monkeypatch, bento_env):
    """track() never drops an event silently: an unreachable Redis raises BufferUnavailable."""
    from bento_tasks import BufferUnavailable

    configure(monkeypatch, BENTO_REDIS_URL="redis://127.0.0.1:1/0")
    with pytest.raises(BufferUnavailable):
        track("signup", "a@example.com")


def retry_rejected(kwargs: dict) -> Reject:
    """What send_event.retry() raises, run as a worker runs it, for a message with these kwargs whose push failed."""
    send_event.push_request(id="message-1", args=(), kwargs=kwargs, retries=0, is_eager=False, called_directly=False)
    try:
        with pytest.raises(Reject) as rejected:
            send_event.retry(exc=BufferUnavailable("Redis is down"), countdown=1)
    finally:
        send_event.pop_request()
    return rejected.value


def test_a_send_event_retry_the_broker_cannot_take_puts_the_message_back(bento_env):
    """When the event's push fails and its retry cannot be published either (buffer and broker on one Redis that
    is down), the message is rejected with requeue, never acknowledged and dropped as Celery does by default."""
    from celery import Celery, _state

    previous = _state.get_current_app()
    app = Celery("broker-down", broker="redis://127.0.0.1:1/1", set_as_current=True)
    try:
        rejected = retry_rejected({"type": "signup", "email": "a@example.com", "date": "2024-01-01T00:00:00+00:00"})
    finally:
        previous.set_current()
        app.close()
    assert rejected.requeue is True and isinstance(rejected.reason, BrokerUnavailable)


def test_a_send_event_retry_that_fails_for_another_reason_is_not_requeued(bento_env):
    """A retry that cannot be published for a reason other than the broker (here a message whose arguments no
    longer fit the task) is dropped as Celery does: requeued, it would fail again at once, in a loop."""
    rejected = retry_rejected({"type": "signup", "email": "a@example.com", "unknown": 1})
    assert rejected.requeue is False and isinstance(rejected.reason, TypeError)


def test_send_event_delay_with_the_broker_down_raises_broker_unavailable(bento_env):
    """send_event.delay() that cannot reach the broker raises BrokerUnavailable (a BentoError and a
    ConnectionError, like track()'s BufferUnavailable) saying the event was not queued, not kombu's error."""
    from celery import Celery, _state

    previous = _state.get_current_app()
    app = Celery("broker-down", broker="redis://127.0.0.1:1/1", set_as_current=True)
    try:
        with pytest.raises(BrokerUnavailable, match="not queued") as raised:
            send_event.delay("signup", "a@example.com")
    finally:
        previous.set_current()
        app.close()
    assert isinstance(raised.value, BentoError) and isinstance(raised.value, ConnectionError)


def test_a_worker_without_the_secret_key_fails_at_the_first_post_and_keeps_the_events(
    monkeypatch, buffer, dispatches, fake
):
    """Keys are required where a POST is made: post_batch raises ConfigurationError naming BENTO_SECRET_KEY
    and how to set it, without taking the batch, so leases that run out meanwhile count no worker death;
    nothing is posted, dead-lettered or lost, and the events go once the key is set."""
    secret = os.environ["BENTO_SECRET_KEY"]
    monkeypatch.delenv("BENTO_SECRET_KEY")
    conf.reset_settings()
    queue_events(3)
    tasks.flush_events.run()
    for _ in range(conf.get_settings().max_worker_deaths + 2):
        with pytest.raises(conf.ConfigurationError, match="BENTO_SECRET_KEY is not set in the environment"):
            dispatches.run_next()
        [batch_id] = buffer.redis.zrange(buffer.inflight_key, 0, -1)
        buffer.redis.zadd(buffer.inflight_key, {batch_id: 1})  # its lease ran out
        assert tasks.flush_events.run()["recovered"] == 1
    status = buffer.status()
    assert (status["in_flight"], status["dead"], status["worker_deaths"], fake.requests) == (3, 0, 0, [])
    monkeypatch.setenv("BENTO_SECRET_KEY", secret)
    conf.reset_settings()
    dispatches.run_next()
    assert (buffer.status()["delivered"], len(fake.events)) == (3, 3)


def test_partial_batch_waits_while_others_are_in_flight(buffer, dispatches, fake):
    """While a batch is in flight, a flush leaves a partial batch to fill; once it lands, the tail goes."""
    queue_events(1500)
    assert tasks.flush_events.run()["dispatched"] == 1
    queue_events(300, start=1500)
    assert tasks.flush_events.run()["dispatched"] == 0
    dispatches.run_all()
    assert tasks.flush_events.run()["dispatched"] == 1
    dispatches.run_all()
    assert len(fake.events) == 1800
    assert [len(r.events) for r in fake.requests] == [1000, 800]


def test_a_batch_in_backoff_does_not_hold_back_a_quiet_sites_events(monkeypatch, buffer, dispatches, fake):
    """While one batch waits out a long backoff, a partial batch still goes at the next flush."""
    configure(monkeypatch, BENTO_RETRY_BACKOFF="100", BENTO_RETRY_BACKOFF_MAX="200")
    queue_events(5)
    tasks.flush_events.run()
    fake.fail(503)
    assert dispatches.run_next() == "retry"
    assert dispatches.pending == [] and buffer.status()["batches_deferred"] == 1  # waits 50-100 s in Redis
    queue_events(3, start=5)
    assert tasks.flush_events.run()["dispatched"] == 1
    assert dispatches.run_next() == "delivered" and len(fake.events) == 3


def test_send_event_masks_the_address_in_celerys_logged_arguments(buffer, celery_app):
    """The kwargsrepr Celery logs and Flower shows carries j***@example.com, not the address."""
    send_event.delay("signup", "jesse@example.com")
    broker = celery_app.connection_for_write().default_channel.client
    [message] = broker.lrange("celery", 0, -1)
    headers = json.loads(message)["headers"]
    assert "j***@example.com" in headers["kwargsrepr"] and "jesse@" not in headers["kwargsrepr"]
