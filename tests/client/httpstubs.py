"""Real local HTTP servers for client tests: a scripted server, and a flaky proxy in front of the service."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Server:
    """Base: a ThreadingHTTPServer on a free port in a daemon thread; context manager; `.url`, `.requests`."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner.lock:
                    owner.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, payload = owner.respond(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _any

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, method, path, headers, body):  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ScriptedServer(_Server):
    """Answers requests from a list of (status, headers, body) in order; the last one repeats."""

    def __init__(self, script: list[tuple[int, dict, object]]) -> None:
        super().__init__()
        self.script = list(script)

    def respond(self, method, path, headers, body):
        with self.lock:
            status, hdrs, payload = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
            hdrs = {"Content-Type": "application/json", **hdrs}
        return status, hdrs, payload


class FlakyProxy(_Server):
    """Forwards to `upstream`, but answers 503 (Retry-After: 0) to the first `fail_first` requests, and waits
    `delay_s` before forwarding each request (a slow service)."""

    def __init__(self, upstream: str, fail_first: int, delay_s: float = 0.0) -> None:
        super().__init__()
        self.upstream = urlsplit(upstream)
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.failed = 0

    def respond(self, method, path, headers, body):
        with self.lock:
            fail = self.failed < self.fail_first
            self.failed += fail
        if fail:
            return 503, {"Retry-After": "0", "Content-Type": "application/json"}, b'{"detail": "restarting"}'
        time.sleep(self.delay_s)
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        keep = {
            k: v
            for k, v in resp.getheaders()
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")
        }
        conn.close()
        return resp.status, keep, payload
