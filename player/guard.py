"""What one visitor may hold, and the gate in front of Gradio that enforces it.

A public demo link meets scripts as well as browsers, and Gradio believes whatever session hash a
request carries. Anything keyed by that hash (control slots, queue entries) would be as plentiful
as made-up hashes. So the gate ties every session to a *live page*: one whose heartbeat stream
(``GET /gradio_api/heartbeat/<hash>``, opened by every Gradio page and by ``gradio_client``) is open
right now, from the client (IP address) that opened it. A page that closes its heartbeat (tab
closed) gives everything back at once; a request for someone else's session is treated as a
request for no session.

The gate (``GateMiddleware``, a plain ASGI middleware) also

* refuses request bodies over ``Limits.max_body_bytes`` on every endpoint but file uploads
  (Gradio's ``max_file_size`` caps a single upload, ``Limits.upload_bytes_per_window`` what one
  client may upload in ``upload_window_s``, counted from ``Content-Length``, which an upload
  must have),
* refuses queue joins from a session that is not a live page of the same client, and from a client
  that already has ``queued_per_client`` requests waiting in line,
* refuses queue-less calls (``/run/``, ``/api/``, ``/component_server``) that name a session which is
  not a live page of the same client (after ``page_grace_s``, the time a fresh page's first call may
  race its heartbeat): Gradio would otherwise keep a copy of the whole UI's config for every made-up
  hash (``state_session_capacity`` of them, evicting real visitors' state to make room),
* tells the app when the queue grew (``on_queue_join``), so plays in progress shorten to the
  busy allowance.

``Limits`` holds every number; docs/reliability.md explains each.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

IN_PROCESS = "in-process"       # the client of a handler called directly (tests), not over HTTP


@dataclass(frozen=True)
class Limits:
    """What one client may hold, and for how long (see docs/reliability.md)."""

    require_live_page: bool = True       # only a page with an open heartbeat may own a session
    trust_forwarded_for: bool = False    # client = first X-Forwarded-For hop (only behind a trusted proxy)
    pages_per_client: int = 16           # open heartbeats (page loads) per client
    sessions_per_client: int = 4         # worlds (control slots) per client; the oldest idle one is recycled
    queued_per_client: int = 3           # requests waiting in line per client
    plays_per_client: int = 1            # worlds streaming at once per client
    play_s: float = 600.0                # one play's length while nobody waits
    busy_play_s: float = 120.0           # ... while someone waits in line
    busy_grace_s: float = 10.0           # a play past the busy allowance still gets this long
    ack_timeout_s: float = 5.0           # a stream whose frames are not acknowledged this long ends
    hidden_timeout_s: float = 10.0       # a play in a hidden tab ends after this long
    max_body_bytes: int = 1 << 20        # any request body but a file upload
    upload_bytes_per_window: int = 200 << 20   # uploads per client ...
    upload_window_s: float = 3600.0      # ... in this sliding window (as long as Gradio keeps an upload)
    download_interval_s: float = 15.0    # between two recording downloads of a session
    page_grace_s: float = 2.0            # a page's first calls may race its heartbeat by this long

    @classmethod
    def for_concurrency(cls, concurrency: int, **changes: Any) -> "Limits":
        """Defaults for a server running ``concurrency`` worlds at once: no client may take them all."""
        return cls(plays_per_client=max(1, concurrency // 2), **changes)


def client_of(host: str | None, headers: Mapping[str, str] | None, trust_forwarded_for: bool) -> str:
    """The client a request comes from: its peer address, or behind a trusted proxy (Hugging Face
    Spaces) the first ``X-Forwarded-For`` hop, which that proxy sets to the visitor's address."""
    if trust_forwarded_for and headers:
        forwarded = headers.get("x-forwarded-for") or headers.get("X-Forwarded-For") or ""
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return host or "unknown"


def request_client(request: Any, trust_forwarded_for: bool) -> str:
    """The client of a ``gr.Request`` (or a Starlette request); ``IN_PROCESS`` without HTTP."""
    raw = getattr(request, "request", request)
    if raw is None:
        return IN_PROCESS
    client = getattr(raw, "client", None)
    host = getattr(client, "host", None) if client is not None else None
    headers = getattr(raw, "headers", None)
    return client_of(host, headers, trust_forwarded_for)


class LivePages:
    """Session hashes whose page is open right now (heartbeat connected), and their clients."""

    def __init__(self) -> None:
        self._pages: dict[str, list[Any]] = {}     # hash -> [client, open heartbeat connections]
        self._lock = threading.Lock()

    def open(self, key: str, client: str, limit: int | None = None) -> str | None:
        """Count a heartbeat connection of ``key``; the reason it is refused, if it is."""
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                if page[0] != client:
                    return "this session belongs to another client"
                page[1] += 1
                return None
            if limit is not None and sum(1 for c, _ in self._pages.values() if c == client) >= limit:
                return f"at most {limit} open pages per client"
            self._pages[key] = [client, 1]
            return None

    def close(self, key: str) -> bool:
        """Uncount one heartbeat connection; True when the page has no connection left."""
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return False
            page[1] -= 1
            if page[1] > 0:
                return False
            del self._pages[key]
            return True

    def client_of(self, key: str | None) -> str | None:
        with self._lock:
            page = self._pages.get(key) if key else None
            return page[0] if page else None

    def is_live(self, key: str | None, client: str) -> bool:
        return self.client_of(key) == client

    async def wait_live(self, key: str, client: str, timeout: float) -> bool:
        """Whether ``key`` is (or within ``timeout`` becomes) a live page of ``client``."""
        deadline = time.monotonic() + timeout
        while not self.is_live(key, client):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def count(self, client: str) -> int:
        with self._lock:
            return sum(1 for c, _ in self._pages.values() if c == client)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)


class UploadBudget:
    """Bytes each client uploaded in a sliding window, kept in ``bucket_s`` buckets: a client's
    record stays small however many tiny uploads it makes."""

    def __init__(self, limit: int, window_s: float, bucket_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.bucket_s, self._clock = limit, window_s, bucket_s, clock
        self._log: dict[str, deque] = defaultdict(deque)     # client -> [bucket start, bytes], oldest first
        self._lock = threading.Lock()

    def take(self, client: str, size: int) -> bool:
        """Spend ``size`` bytes of ``client``'s budget; False (nothing spent) when it would overflow
        or ``size`` is negative (a stated length no server should have let through)."""
        if size < 0:
            return False
        now = self._clock()
        with self._lock:
            if len(self._log) > 4096:        # forget clients with nothing in the window (bounded memory)
                for key in [k for k, v in self._log.items() if not v or now - v[-1][0] > self.window_s]:
                    del self._log[key]
            log = self._log[client]
            while log and now - log[0][0] > self.window_s:
                log.popleft()
            if sum(n for _, n in log) + size > self.limit:
                return False
            if log and now - log[-1][0] < self.bucket_s:
                log[-1][1] += size
            else:
                log.append([now, size])
            return True


_HEARTBEAT = re.compile(r"/gradio_api/heartbeat/([^/]+)/?$")
_JOINS = ("/gradio_api/queue/join", "/gradio_api/call/")
_STATEFUL = ("/gradio_api/run/", "/gradio_api/api/", "/gradio_api/component_server")  # queue-less, session state
NOT_CONNECTED = "This page is not connected to the demo any more; reload the page to play."
_UPLOAD = "/gradio_api/upload"


class Gate:
    """The policy the middleware applies; the app supplies the callbacks (see ``GateMiddleware``)."""

    def __init__(self, limits: Limits, pages: LivePages,
                 on_page_closed: Callable[[str], None] = lambda key: None,
                 on_queue_join: Callable[[], None] = lambda: None,
                 waiting_clients: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.limits, self.pages = limits, pages
        self.on_page_closed, self.on_queue_join, self.waiting_clients = on_page_closed, on_queue_join, waiting_clients
        self.uploads = UploadBudget(limits.upload_bytes_per_window, limits.upload_window_s)

    def client(self, scope: Mapping[str, Any]) -> str:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        peer = scope.get("client")
        return client_of(peer[0] if peer else None, headers, self.limits.trust_forwarded_for)

    def join_refusal(self, body: bytes, client: str, path: str) -> str | None:
        """Why a queue join is refused, or None."""
        if path.startswith("/gradio_api/queue/join") and self.limits.require_live_page:
            key = _session_hash(body)
            if key is _INVALID:
                return INVALID_JSON
            if not self.pages.is_live(key, client):
                return NOT_CONNECTED
        waiting = sum(1 for c in self.waiting_clients() if c == client)
        if waiting >= self.limits.queued_per_client:
            return (f"You already have {waiting} requests waiting in line; wait for them (or close the other "
                    f"tabs) before starting another.")
        return None

    async def stateful_refusal(self, body: bytes, client: str) -> str | None:
        """Why a queue-less call is refused (its session is no live page of this client), or None.
        A call naming no session gets no session state from Gradio, so it passes (and the app's
        handlers find no world for it)."""
        if not self.limits.require_live_page:
            return None
        key = _session_hash(body)
        if key is _INVALID:
            return INVALID_JSON
        if key is None:
            return None
        if not isinstance(key, str) or not await self.pages.wait_live(key, client, self.limits.page_grace_s):
            return NOT_CONNECTED
        return None


_INVALID = object()
INVALID_JSON = "That request is not valid JSON."


def _session_hash(body: bytes) -> Any:
    """The ``session_hash`` a JSON request body names (None if none), or ``_INVALID``."""
    try:
        return json.loads(body or b"{}").get("session_hash")
    except (ValueError, AttributeError, RecursionError):
        return _INVALID


async def _respond(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "error": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class GateMiddleware:
    """ASGI middleware applying a ``Gate`` to the Gradio app (pass as ``Middleware(GateMiddleware,
    gate=...)`` in ``launch(app_kwargs={"middleware": [...]})``)."""

    def __init__(self, app: Callable, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        gate, limits = self.gate, self.gate.limits
        heartbeat = _HEARTBEAT.search(path) if method == "GET" else None
        if heartbeat:
            await self._heartbeat(heartbeat.group(1), scope, receive, send)
            return
        if method not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        client = gate.client(scope)
        length = _content_length(scope)
        if path.startswith(_UPLOAD) or path.rstrip("/").endswith("/upload"):
            if length is None:         # a chunked upload would get past the budget uncounted
                await _respond(send, 411, "An upload must state its size (Content-Length).")
                return
            if not gate.uploads.take(client, length):
                await _respond(send, 429, f"You have uploaded {limits.upload_bytes_per_window // 2**20} MB in the "
                                          f"last {limits.upload_window_s / 60:.0f} minutes; please wait before "
                                          f"uploading more.")
                return
            await self.app(scope, receive, send)
            return
        if length is not None and length > limits.max_body_bytes:
            await _respond(send, 413, f"Request too large (at most {limits.max_body_bytes // 1024} KiB).")
            return
        try:
            body = await _read_body(receive, limits.max_body_bytes)
        except _TooLarge:
            await _respond(send, 413, f"Request too large (at most {limits.max_body_bytes // 1024} KiB).")
            return
        if path.startswith(_STATEFUL):
            reason = await gate.stateful_refusal(body, client)
            if reason is not None:
                await _respond(send, 429, reason)
                return
        joins = any(path.startswith(p) for p in _JOINS)
        if joins:
            reason = gate.join_refusal(body, client, path)
            if reason is not None:
                await _respond(send, 429, reason)
                return
        await self.app(scope, _replay(body, receive), send)
        if joins:
            gate.on_queue_join()

    async def _heartbeat(self, key: str, scope: dict, receive: Callable, send: Callable) -> None:
        """Count the page as live while its heartbeat stream is open, and notice at once when it
        closes. The disconnect is watched here rather than left to Starlette, which under an ASGI 2.4
        server only notices a closed stream at its next write (a heartbeat is written every 15 s)."""
        gate = self.gate
        reason = gate.pages.open(key, gate.client(scope), gate.limits.pages_per_client)
        if reason is not None:
            await _respond(send, 429, reason)
            return
        inbox: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()

        async def pump() -> None:
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        pump_task = asyncio.ensure_future(pump())
        app_task = asyncio.ensure_future(self.app(scope, inbox.get, send))
        gone_task = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait({app_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
            if gone.is_set() and not app_task.done():
                app_task.cancel()        # Gradio's heartbeat then runs its own unload bookkeeping
            await asyncio.gather(app_task, return_exceptions=True)
        finally:
            pump_task.cancel()
            gone_task.cancel()
            if gate.pages.close(key):
                # Off the event loop: freeing a session waits for its world's frame in progress.
                await asyncio.get_running_loop().run_in_executor(None, gate.on_page_closed, key)


def _content_length(scope: Mapping[str, Any]) -> int | None:
    for k, v in scope.get("headers", []):
        if k.lower() == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _read_body(receive: Callable, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Busy(RuntimeError):
    """A bounded worker has too much waiting already."""


class BoundedWorker:
    """A few threads with a bounded backlog, for work that must not crowd the frame loops
    (parsing an upload): at most ``threads`` run at once and at most ``backlog`` wait."""

    def __init__(self, threads: int = 1, backlog: int = 4, name: str = "worker") -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(threads + backlog)

    def run(self, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """``fn(*args)`` on a worker thread; ``Busy`` when the backlog is full."""
        if not self._slots.acquire(blocking=False):
            raise Busy("the server is busy reading other uploads; please try again in a moment")
        try:
            future: Future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future.result(timeout=timeout)
