"""Baseline: Segment's ``segment-analytics-python`` client (in-process queue and thread, batches of 100).

``SegmentEndpoint`` is a local server for Segment's ``POST /v1/batch`` format, run in the benchmark's
process like the fake Bento. ``python -m bench.segment URL COUNT`` is the app process: it builds COUNT
messages with Segment's own ``Client.track()``, queues them, then lets Segment's consumer thread send them.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .harness import bento_event, event_date

WRITE_KEY = "bench-write-key"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like Segment's API
    # The trap in DESIGN.md: without these, Nagle's algorithm and delayed ACKs cost ~40 ms a request.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def do_POST(self) -> None:
        received = time.time()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.endpoint.record(received, [message["userId"] for message in json.loads(body)["batch"]])
        answer = b'{"success":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, endpoint: SegmentEndpoint) -> None:
        self.endpoint = endpoint
        super().__init__(("127.0.0.1", 0), _Handler)


class SegmentEndpoint:
    """Accepts Segment batches and records who each message was for, and when the first one came."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.user_ids: list[str] = []
        self.first_post: float | None = None
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, received: float, user_ids: list[str]) -> None:
        with self._changed:
            if self.first_post is None:
                self.first_post = received
            self.user_ids.extend(user_ids)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> float:
        """Block until ``count`` messages arrived; return the time the last of them was accepted."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.user_ids) >= count, timeout):
                raise RuntimeError(f"Segment endpoint got {len(self.user_ids)} of {count} messages in {timeout:g}s")
        return time.time()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(url: str, count: int) -> None:
    from segment.analytics.client import Client
    from segment.analytics.consumer import Consumer

    # send=False: Client.track() builds and returns each message exactly as it would queue it.
    builder = Client(WRITE_KEY, send=False)
    messages: queue.Queue[dict[str, Any]] = queue.Queue()
    for n in range(count):
        event = bento_event(n)
        context = {"traits": event["fields"]} if "fields" in event else None
        _, message = builder.track(event["email"], event["type"], event.get("details"), context, event_date(n))
        messages.put(message)
    # The consumer thread that Client(host=url) would start, with the client's defaults (batches of 100);
    # started once the whole backlog is queued, so building the messages does not take its time.
    consumer = Consumer(messages, WRITE_KEY, host=url, upload_size=100)
    consumer.start()
    messages.join()
    consumer.pause()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
