"""Real processes for tests and demos: a private ``redis-server`` and a ``celery worker``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+; type checkers ship typing_extensions


class RedisServer:
    """A private ``redis-server`` process on a free loopback port, for tests and demos.

    Tests must not share, or flush, a Redis they did not start; this one belongs to its
    creator. ``stop(signal.SIGKILL)`` and ``start()`` again simulate a crash; with
    ``appendonly=True`` every write is fsynced first, so accepted data survives it.
    """

    def __init__(self, directory: str | None = None, appendonly: bool = False, port: int = 0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.binary = binary
        self.directory = directory or tempfile.mkdtemp(prefix="bento-redis-")
        self.appendonly = appendonly
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> Self:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory, "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._pongs():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _pongs(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # (host, port) for AF_INET; typeshed says Any
        return port


class CeleryWorker:
    """A real ``celery -A APP worker`` process, for end-to-end tests and demos.

    It runs in a process group of its own, so ``kill()`` (SIGKILL) takes its pool and embedded beat
    with it, like a crashed machine: nothing is acknowledged, nothing shuts down cleanly.
    """

    def __init__(
        self,
        app: str = "bento_tasks",
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        directory: str | Path | None = None,
        name: str = "worker",
        beat: bool = True,
        concurrency: int = 2,
        loglevel: str = "info",
    ) -> None:
        directory = Path(directory or tempfile.mkdtemp(prefix="bento-worker-"))
        self.log_path = directory / f"{name}.log"
        self.args = [sys.executable, "-m", "celery", "-A", app, "worker", "-l", loglevel, "-n", f"{name}@%h"]
        self.args += ["--concurrency", str(concurrency), "--without-mingle", "--without-gossip"]
        if beat:
            self.args += ["-B", "-s", str(directory / f"{name}-beat-schedule")]
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Block until the worker logs that it is ready (needs ``loglevel="info"``)."""
        assert self.process is not None, "start() the worker first"
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.output()}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker, its pool and its beat at once."""
        self._signal(signal.SIGKILL, 10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it has not exited within 30 s."""
        try:
            self._signal(signal.SIGTERM, 30)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: int, wait: float) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(wait)

    def __enter__(self) -> Self:
        return self.start().wait_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
