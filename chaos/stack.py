"""The real parts a campaign runs: a private redis-server with AOF (buffer on db 0, broker on db 1), the fake
Bento, ``celery -A bento_tasks worker`` processes and a separate ``celery beat``.

The campaign process is also the producer: ``track()`` and ``send_event.delay()`` run here, with the same
``BENTO_*`` settings as the workers (put in ``os.environ`` by ``Stack.start``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bento_tasks import conf
from bento_tasks.buffer import Buffer
from bento_tasks.conf import Settings
from bento_tasks.testing import CeleryWorker, FakeBento, RedisServer

ROOT = Path(__file__).resolve().parent.parent

#: Short timeouts, leases and backoffs, so that every fault resolves in seconds: a 3 s POST deadline, an 8 s
#: lease (its 5 s margin outlasts the longest Redis outage planned), retries 0.1 s to 2 s apart.
SETTINGS = {
    "BENTO_FLUSH_INTERVAL": "0.5",
    "BENTO_BATCH_SIZE": "50",
    "BENTO_RATE_LIMIT": "600",
    "BENTO_RETRY_BACKOFF": "0.2",
    "BENTO_RETRY_BACKOFF_MAX": "2",
    "BENTO_TIMEOUT": "2",
    "BENTO_CONNECT_TIMEOUT": "1",
    "BENTO_LEASE_MARGIN": "5",
    "BENTO_CONFIG_ERROR_PAUSE": "5",
}
#: Events of this type are poison: Bento answers 500 for any batch holding one (an event it cannot take).
POISON_TYPE = "chaos_poison"
POISON_STATUS = 500


class Beat:
    """A ``celery -A bento_tasks beat`` process in its own session (SIGKILL takes it alone)."""

    def __init__(self, env: dict[str, str], directory: Path, name: str) -> None:
        self.log_path = directory / f"{name}.log"
        self.args = [sys.executable, "-m", "celery", "-A", "bento_tasks", "beat", "-l", "info"]
        self.args += ["-s", str(directory / f"{name}-schedule")]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Beat:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.running():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class Worker:
    """One worker slot: the current ``CeleryWorker`` process, restarted under a new log name each time."""

    def __init__(self, env: dict[str, str], directory: Path, index: int, concurrency: int) -> None:
        self.env, self.directory, self.index, self.concurrency = env, directory, index, concurrency
        self.incarnation = 0
        self.current: CeleryWorker | None = None

    def start(self) -> Worker:
        self.incarnation += 1
        self.current = CeleryWorker(
            env=self.env,
            cwd=ROOT,
            directory=self.directory,
            name=f"w{self.index}-{self.incarnation}",
            beat=False,
            concurrency=self.concurrency,
        ).start()
        return self

    @property
    def pid(self) -> int | None:
        return self.current.process.pid if self.current and self.current.process else None

    def running(self) -> bool:
        return bool(self.current and self.current.process and self.current.process.poll() is None)

    def kill(self) -> None:
        if self.current is not None:
            self.current.kill()


class Stack:
    def __init__(self, directory: Path, workers: int = 2, concurrency: int = 2) -> None:
        self.directory = directory
        self.redis = RedisServer(str(directory / "redis"), appendonly=True)
        self.fake = FakeBento(site_uuid="chaos-site", publishable_key="chaos-pub", secret_key="chaos-secret")
        self.worker_count, self.concurrency = workers, concurrency
        self.workers: list[Worker] = []
        self.beat: Beat | None = None
        self.second_beat: Beat | None = None
        self.beats_started = 0
        self.env: dict[str, str] = {}

    def start(self) -> Stack:
        (self.directory / "redis").mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.fake.start()
        self.fake.reject_events(lambda event: event.get("type") == POISON_TYPE, status=POISON_STATUS)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BENTO_")},
            **SETTINGS,
            "BENTO_SITE_UUID": self.fake.site_uuid,
            "BENTO_PUBLISHABLE_KEY": self.fake.publishable_key,
            "BENTO_SECRET_KEY": self.fake.secret_key,
            "BENTO_API_URL": self.fake.url,
            "BENTO_REDIS_URL": self.redis.url(0),
            "CELERY_BROKER_URL": self.redis.url(1),
        }
        # This process produces events too: the same settings, and an app publishing to the same broker.
        for key in [k for k in os.environ if k.startswith("BENTO_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("BENTO_", "CELERY_BROKER_URL"))})
        conf.reset_settings()
        from bento_tasks.celery import app

        app.conf.broker_url = self.redis.url(1)
        app.set_current()
        app.set_default()
        self.workers = [Worker(self.env, self.directory, i, self.concurrency).start() for i in range(self.worker_count)]
        for worker in self.workers:
            assert worker.current is not None
            worker.current.wait_ready(90)
        self.beat = self.new_beat().start()
        return self

    def new_beat(self) -> Beat:
        self.beats_started += 1
        return Beat(self.env, self.directory, f"beat-{self.beats_started}")

    @property
    def settings(self) -> Settings:
        return conf.get_settings()

    def buffer(self) -> Buffer:
        return Buffer(self.settings)

    @property
    def fake_port(self) -> int:
        return int(self.fake.url.split(":")[2].split("/")[0])

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        for beat in (self.beat, self.second_beat):
            if beat is not None:
                beat.kill()
        self.fake.stop()
        self.redis.stop()
