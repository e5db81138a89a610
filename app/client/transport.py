"""HTTP transport with retries: exponential backoff + jitter on connection errors, 429 and 5xx.

delay_n = min(max_backoff, backoff · 2ⁿ) · U(0.5, 1.0)   (n = 0, 1, …), unless the server sends `Retry-After`
(seconds or an HTTP date), which is honoured instead (capped at `max_backoff` · 4). A `503 server_busy` (the
server's prediction slots and wait queue are full) is retried up to `busy_retries` times (default 30; none when
`retries` is 0): it says "come back later", not "failed"; each wait is Retry-After · U(1, 1.5), so that clients told
the same delay do not all return at once. Other 4xx are never
retried: they raise `ClientError(status, message)` with the server's own message. The API key is only ever
placed in the `Authorization` header; every message raised from here is scrubbed of it.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger("steph.client")


def should_retry(status: int) -> bool:
    """429 and every 5xx except 501 (Not Implemented never heals by waiting)."""
    return status == 429 or (500 <= status < 600 and status != 501)


class ClientError(Exception):
    """A request the server refused (4xx), or that kept failing (5xx / connection) after every retry.

    `status` is the HTTP status (0 when no response arrived); `message` is the server's message.
    """

    def __init__(self, status: int, message: str, *, detail: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.detail = detail

    @property
    def code(self) -> str | None:
        """The server's machine-readable error code (`{"error": {"code": …}}`), e.g. "bad_bag"."""
        err = self.detail.get("error") if isinstance(self.detail, dict) else None
        return err.get("code") if isinstance(err, dict) else None

    @property
    def is_input_error(self) -> bool:
        """True for 4xx other than auth and rate limiting: the request itself was wrong."""
        return 400 <= self.status < 500 and self.status not in (401, 403, 429)


class AuthError(ClientError):
    """401 (missing or unknown key) or 403 (the key's scope does not allow this operation)."""


class ConnectionFailed(ClientError):
    """No response from the server after every retry (refused, DNS, timeout)."""


def server_message(response: httpx.Response) -> tuple[str, Any]:
    """Extract a human message from an error response: `detail`, `message` or `error` field, else the text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:500] or response.reason_phrase or "no message"), None
    msg: Any = body
    if isinstance(body, dict):
        msg = body.get("detail") or body.get("message") or body.get("error") or body
        if isinstance(msg, dict):
            msg = msg.get("message") or msg.get("detail") or msg
    if isinstance(msg, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        msg = "; ".join(
            f"{'.'.join(str(p) for p in m.get('loc', []))}: {m.get('msg')}" if isinstance(m, dict) else str(m)
            for m in msg
        )
    return str(msg), body


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a `Retry-After` header: delta-seconds or an HTTP date; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_server_busy(response: httpx.Response) -> bool:
    """A 503 whose body says `server_busy` (all prediction slots and the wait queue are full)."""
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and err.get("code") == "server_busy"


class Transport:
    """An httpx.Client plus the retry policy. `request` returns a successful (2xx/3xx) response or raises."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        busy_retries: int = 30,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key or ""
        headers = {"User-Agent": "steph-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max_backoff
        self._sleep = sleep
        self.busy_retries = max(0, int(busy_retries))

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r}, retries={self.retries})"

    def close(self) -> None:
        self._http.close()

    def scrub(self, text: str) -> str:
        """Remove the API key from any text that might be shown or logged."""
        return text.replace(self._key, "***") if self._key else text

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff * 4)
        return min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.5, 1.0)

    def busy_delay(self, retry_after: float | None) -> float:
        """Wait after a 503 server_busy: Retry-After (default 1 s) · U(1, 1.5), never shorter than asked."""
        base = 1.0 if retry_after is None else retry_after
        return min(base * random.uniform(1.0, 1.5), self.max_backoff * 4)

    def request(
        self,
        method: str,
        path: str,
        *,
        open_files: Callable[[ExitStack], Any] | None = None,
        open_content: Callable[[ExitStack], Any] | None = None,
        sink: Callable[[httpx.Response], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries. `open_files(stack)` returns fresh multipart `files` for every attempt,
        `open_content(stack)` a fresh raw body (e.g. an open file, streamed with its Content-Length);
        `sink(response)` consumes a successful response as a stream (e.g. to write a download to disk)."""
        attempt = 0
        while True:
            try:
                response = self._send_once(method, path, open_files, sink, kwargs, open_content)
            except httpx.TransportError as exc:
                reason = self.scrub(f"{type(exc).__name__}: {exc}")
                if attempt >= self.retries:
                    raise ConnectionFailed(0, f"cannot reach {self.base_url}: {reason}") from None
                wait = self.delay(attempt, None)
                log.warning("%s %s failed (%s); retry %d in %.1fs", method, path, reason, attempt + 1, wait)
            else:
                if response.status_code < 400:
                    return response
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                busy = is_server_busy(response)
                limit = max(self.retries, self.busy_retries) if busy and self.retries else self.retries
                if not should_retry(response.status_code) or attempt >= limit:
                    raise self._error(response)
                wait = self.busy_delay(retry_after) if busy else self.delay(attempt, retry_after)
                log.warning(
                    "%s %s answered %d; retry %d in %.1fs",
                    method,
                    path,
                    response.status_code,
                    attempt + 1,
                    wait,
                )
            self._sleep(wait)
            attempt += 1

    def _send_once(
        self,
        method: str,
        path: str,
        open_files: Callable[[ExitStack], Any] | None,
        sink: Callable[[httpx.Response], None] | None,
        kwargs: dict[str, Any],
        open_content: Callable[[ExitStack], Any] | None = None,
    ) -> httpx.Response:
        with ExitStack() as stack:
            if open_files is not None:
                kwargs = {**kwargs, "files": open_files(stack)}
            if open_content is not None:
                kwargs = {**kwargs, "content": open_content(stack)}
            if sink is None:
                return self._http.request(method, path, **kwargs)
            response = stack.enter_context(self._http.stream(method, path, **kwargs))
            if response.status_code < 400:
                sink(response)
            else:
                response.read()
            return response

    def _error(self, response: httpx.Response) -> ClientError:
        message, body = server_message(response)
        message = self.scrub(message)
        cls = AuthError if response.status_code in (401, 403) else ClientError
        return cls(response.status_code, message, detail=body)
