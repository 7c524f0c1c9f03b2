"""The app's event handlers: check what the browser sends, find the session, hand over the work.

Every handler validates its input and answers bad input with a readable, escaped error
(``player.errors``); a bad message never stops the session's world. Sessions are keyed by
``request.session_hash`` so two browser tabs never share a world, and belong to the live page and
client that opened them (``player.guard``): a request naming someone else's session, or a session
whose page is gone, finds nothing. Only queued requests of a live page (Start, Run path, a control
log) claim a session; queue-less ones (controls, prompt, steps, pause, reset) never do.

The work itself lives in one piece each: ``PlayLoop`` (playing), ``StatusLine`` (the status
text), ``Downloads`` (recordings as files), the backend (frames).
"""

from __future__ import annotations

import atexit
import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import numpy as np
from PIL import Image

from player.backends import Backend, ModelChoice
from player.component import message_value
from player.controls import parse_script, parse_state
from player.downloads import Downloads
from player.errors import user_error
from player.guard import BoundedWorker, Busy, Gate, GateMiddleware, Limits, LivePages, request_client
from player.play import Outputs, PlayLoop
from player.recording import MAX_LOG_BYTES, Replay, parse_log
from player.sessions import BOARD, REGISTRY, Session, SessionFull
from player.status import StatusLine
from player.validation import (clean_model_key, clean_prompt, clean_rewind, clean_seed, clean_steps,
                               read_start_image)

T = TypeVar("T")


def _checked(title: str, check: Callable[..., T], *args: Any) -> T:
    """``check(*args)``; its ``ValueError`` reaches the player as an escaped error titled ``title``."""
    try:
        return check(*args)
    except ValueError as exc:
        raise user_error(exc, title) from exc


def _upload_path(value: object) -> str | None:
    """The server path of an uploaded file, as Gradio hands it over without preprocessing (a
    FileData dict, already checked to lie in its upload folder) or preprocessed (a path)."""
    if isinstance(value, dict):
        value = value.get("path")
    return value if isinstance(value, str) and value else None


def _read_log(path: str) -> Replay:
    if os.path.getsize(path) > MAX_LOG_BYTES:
        raise ValueError(f"That control log is larger than {MAX_LOG_BYTES // 2**20} MB.")
    return parse_log(Path(path).read_bytes())


def queued_events(demo: Any) -> Iterable[Any]:
    """The events waiting in a launched Blocks' queue (Gradio's queue internals, read defensively)."""
    queue = getattr(demo, "_queue", None)
    for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
        yield from list(getattr(event_queue, "queue", ()))


class WorldApp:
    """Handlers for one app instance: its backend, model allow-list, limits and settings."""

    def __init__(self, backend: Backend, models: list[ModelChoice], allow_custom_models: bool,
                 fps: float = 20.0, idle_timeout_s: float = 300.0, limits: Limits | None = None) -> None:
        self.backend = backend
        self.models = {m.key: m for m in models}
        self.allow_custom_models = allow_custom_models
        self.limits = limits or Limits()
        self.pages = LivePages()
        self.registry = REGISTRY
        self.status = StatusLine(backend, BOARD)
        self.downloads = Downloads(interval_s=self.limits.download_interval_s)
        atexit.register(self.downloads.close)
        self.uploads = BoundedWorker(threads=1, backlog=4, name="uploads")   # log and image parsing
        self.waiting: Callable[[], int] = lambda: 0        # plays waiting in line (wired by ``attach``)
        self.plays = PlayLoop(backend, BOARD, self.status, fps=fps, idle_timeout_s=idle_timeout_s,
                              limits=self.limits, waiting=lambda: self.waiting())
        self._play_lock = threading.Lock()
        self.registry.on_release(self._release)

    def _release(self, session: Session) -> None:
        """A freed session's resident world and download folder go with it."""
        self.backend.forget(session.key)
        self.downloads.forget(session)

    # ---- the gate: live pages, clients, the queue -----------------------------------------------
    def attach(self, demo: gr.Blocks, play_queue: str = "play") -> dict[str, Any]:
        """Wire the app to ``demo``'s queue; returns the ``launch()`` arguments that install the gate."""
        from starlette.middleware import Middleware

        trust = self.limits.trust_forwarded_for
        self.waiting = lambda: sum(1 for e in queued_events(demo) if getattr(e, "concurrency_id", None) == play_queue)
        gate = Gate(self.limits, self.pages, on_page_closed=self.page_closed, on_queue_join=self.queue_changed,
                    waiting_clients=lambda: (request_client(getattr(e, "request", None), trust)
                                             for e in queued_events(demo)))
        return {"app_kwargs": {"middleware": [Middleware(GateMiddleware, gate=gate)]}}

    def page_closed(self, key: str) -> None:
        """The page's heartbeat closed (tab closed, reload, network gone): free what it held."""
        self.registry.free(key)

    def queue_changed(self) -> None:
        """Someone joined the queue: plays in progress shorten to the busy allowance."""
        if self.waiting():
            self.plays.shorten_turns(self.registry.sessions())

    def _client(self, request: gr.Request) -> str:
        return request_client(request, self.limits.trust_forwarded_for)

    def _own(self, request: gr.Request) -> Session | None:
        """The caller's session if it exists (never claims one)."""
        return self.registry.find(request.session_hash, self._client(request))

    def _session(self, request: gr.Request) -> Session:
        """The caller's session, claimed if need be; only for a live page."""
        client = self._client(request)
        if self.limits.require_live_page and not self.pages.is_live(request.session_hash, client):
            raise user_error("This page is not connected to the demo any more; reload the page to play.", "Session")
        try:
            return self.registry.get(request.session_hash, client, self.limits.sessions_per_client)
        except SessionFull as exc:
            raise user_error(exc, "Server busy") from exc

    def model(self, key: object) -> ModelChoice:
        """The picker entry for ``key``; only the allow-list, plus local folders on a private server."""
        key = _checked("Model", clean_model_key, key)
        if key in self.models:
            return self.models[key]
        if self.allow_custom_models and key:
            try:
                folder = Path(key).expanduser()
                if folder.is_dir():
                    return ModelChoice(key=key, label=folder.name, uri=str(folder))
            except (OSError, ValueError):
                pass
        allowed = ", ".join(m.label for m in self.models.values())
        raise user_error(f"Unknown model {key[:80]!r}. Choose one of: {allowed}.", "Model")

    # ---- input while playing --------------------------------------------------------------------
    def control(self, evt: gr.EventData, request: gr.Request) -> None:
        """The page's control state (queue=False, every edge and <= 30 Hz); stale ones are dropped."""
        try:
            state = parse_state(evt._data)
        except ValueError as exc:
            raise user_error(f"Ignored a control message: {exc}", "Controls") from exc
        session = self._own(request)
        if session is not None:
            BOARD.write_state(session.slot, session.owner, state)

    def set_prompt(self, prompt: object, request: gr.Request) -> None:
        """Apply a new prompt to the running world from its next frame, without a reset (before
        Start nothing is stored: Start sends the prompt itself)."""
        text = _checked("Prompt", clean_prompt, prompt)
        session = self._own(request)
        if session is not None and text != BOARD.prompt(session.slot)[1]:
            BOARD.set_prompt(session.slot, text)

    def set_steps(self, steps: object, request: gr.Request) -> None:
        steps = _checked("Steps", clean_steps, steps)
        session = self._own(request)
        if session is not None:
            BOARD.set_steps(session.slot, steps)

    def rewind(self, evt: gr.EventData, request: gr.Request) -> Any:
        """The Rewind button, Backspace or a point on the timeline: ``{"seconds": s}`` back. While
        paused the page shows the frame it went back to at once."""
        seconds = _checked("Rewind", clean_rewind, evt._data)
        session = self._own(request)
        if session is None:
            raise user_error("Nothing to rewind yet: press Start and play a little first.", "Rewind")
        value = _checked("Rewind", self.plays.rewind, session, seconds)
        return gr.skip() if value is None else value

    def resync(self, request: gr.Request) -> None:
        """Re-sync the split view: the simulator's true frames go into the model's history."""
        session = self._own(request)
        if session is None:
            raise user_error("Nothing to re-sync yet: press Start first.", "Re-sync")
        _checked("Re-sync", self.plays.resync, session)

    def pause(self, request: gr.Request) -> None:
        """Stop the frame loop; the world is kept and Start continues it."""
        session = self._own(request)
        if session is not None:
            BOARD.stop_run(session.slot)

    def reset(self, request: gr.Request) -> Outputs:
        """Forget the world (next Start builds a fresh one from the seed); keep the session."""
        session = self._own(request)
        if session is not None:
            self.plays.forget(session)
        return message_value("World reset \u2014 press Start"), self.status.text(None, "reset")

    # ---- uploads and downloads ------------------------------------------------------------------
    def _upload(self, title: str, fn: Callable[..., T], *args: Any) -> T:
        """Parse an upload on the bounded upload worker, off the frame loops' threads."""
        try:
            return self.uploads.run(fn, *args)
        except Busy as exc:
            raise user_error(str(exc).capitalize() + ".", title) from exc
        except ValueError as exc:
            raise user_error(exc, title) from exc

    def load_start_image(self, upload: object) -> tuple[bytes | None, Any]:
        """Validate an upload; returns the normalised PNG (kept in gr.State) and a preview."""
        path = _upload_path(upload)
        if not path:
            return None, gr.update(value=None, visible=False)
        png = self._upload("Start image", read_start_image, path)
        preview = np.asarray(Image.open(io.BytesIO(png)))
        return png, gr.update(value=preview, visible=True)

    def load_log(self, upload: object, request: gr.Request) -> tuple[Any, ...]:
        """Read a control log; the next "Run path" replays it. Fills prompt, seed, model, steps."""
        path = _upload_path(upload)
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        replay = self._upload("Control log", _read_log, path)
        choice = self.model(replay.model)
        self._check_buttons(replay, choice)
        session = self._session(request)
        session.pending_replay = replay
        note = f"Loaded a {len(replay.ctrls)}-frame control log (seed {replay.seed}). "
        if not replay.complete:
            note += "This log was truncated: the replay stops where the recording was cut. "
        note += "Press \u25b6 Run path to replay it."
        return replay.prompt, replay.seed, choice.key, replay.steps, note

    def _check_buttons(self, replay: Replay, choice: ModelChoice) -> None:
        """A log's buttons must be ones its model knows: refused now, not at play."""
        source = self.backend.call(self.backend.engines.get, choice.uri)
        convention = getattr(source, "convention", None)
        top = replay.ctrls.max_button()
        if convention is not None and top >= convention.n_buttons:
            raise user_error(f"This control log presses button {top}, which {choice.label} does not have "
                             f"(it knows 0..{convention.n_buttons - 1}).", "Control log")

    def download(self, overlay: bool, request: gr.Request) -> tuple[str, str, str]:
        """The session as an animated WebP and an MP4 (controls optionally drawn) and its JSON
        control log."""
        session = self._own(request)
        recorder = session.recorder if session else None
        if recorder is None or not len(recorder):
            raise user_error("Nothing recorded yet: press Start and walk around first.", "Recording")
        try:
            return self.downloads.write(session, recorder, bool(overlay))
        except (ValueError, RuntimeError) as exc:
            raise user_error(exc, "Recording") from exc

    def unload(self, request: gr.Request) -> None:
        """Gradio's unload (the page's heartbeat closed); usually the gate has freed it already. It
        frees only the caller's own session, and only once its page is really gone."""
        if self.pages.client_of(request.session_hash) is None:
            self.registry.free(request.session_hash, self._client(request))

    # ---- status ---------------------------------------------------------------------------------
    def current_status(self, request: gr.Request) -> str:
        return self.status.idle(self._own(request))

    def warmup_status(self, request: gr.Request) -> tuple[Any, Any]:
        """Timer tick: show warm-up progress until it is done, then stop ticking."""
        if self.backend.warmup.done.is_set():
            return self.current_status(request), gr.Timer(active=False)
        return self.current_status(request), gr.skip()

    # ---- play -----------------------------------------------------------------------------------
    def play(self, prompt: object, seed: object, model_key: object, steps: object, start_png: bytes | None,
             request: gr.Request) -> Iterator[Outputs]:
        """Stream the session's world, driven by live input."""
        yield from self._play(prompt, seed, model_key, steps, start_png, None, request)

    def play_path(self, script: object, prompt: object, seed: object, model_key: object, steps: object,
                  start_png: bytes | None, request: gr.Request) -> Iterator[Outputs]:
        """Stream the world driven by a scripted camera path (or a loaded control log), then live input."""
        if script is not None and not isinstance(script, str):
            raise user_error("The camera path must be text.", "Camera path")
        session = self._own(request)
        pending = session.pending_replay if session else None
        if pending is not None and not (script or "").strip():
            session.pending_replay = None
            yield from self._play(pending.prompt, pending.seed, pending.model, pending.steps,
                                  pending.start_image, pending, request)
            return
        masks = _checked("Camera path", parse_script, script or "")
        if not masks:
            raise user_error("The camera path is empty; try something like w*8, a+left*4, idle*3.", "Camera path")
        yield from self._play(prompt, seed, model_key, steps, start_png, masks, request)

    def _play(self, prompt: object, seed: object, model_key: object, steps: object, start_png: bytes | None,
              script: list[int] | Replay | None, request: gr.Request) -> Iterator[Outputs]:
        prompt = _checked("Prompt", clean_prompt, prompt)
        seed = _checked("Seed", clean_seed, seed)
        choice = self.model(model_key)
        n_steps = _checked("Steps", clean_steps, steps)
        if start_png is not None and not isinstance(start_png, bytes):
            start_png = None
        session = self._session(request)
        with self._play_lock:      # check and reserve together: two plays of one client never both pass
            playing = sum(1 for s in self.registry.sessions()
                          if s.client == session.client and s.running and s is not session)
            if playing >= self.limits.plays_per_client:
                raise user_error("Another world from your address is playing right now; stop it (or close its "
                                 "tab) to start this one.", "One at a time")
            was_running, reserved = session.running, session.run
            session.running = True
        try:
            yield from self.plays.play(session, choice, seed, prompt, n_steps, start_png, script)
        finally:
            if session.run == reserved and not was_running:     # it never got as far as starting its run
                session.running = False
