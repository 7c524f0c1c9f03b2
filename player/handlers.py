"""The app's event handlers: check what the browser sends, find the session, hand over the work.

Every handler validates its input and answers bad input with a readable ``gr.Error``; a bad message
never stops the session's world. Sessions are keyed by ``request.session_hash`` so two browser tabs
never share a world. The work itself lives in one piece each: ``PlayLoop`` (playing),
``StatusLine`` (the status text), ``Downloads`` (recordings as files), the backend (frames).
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import numpy as np
from PIL import Image

from player.backends import Backend, ModelChoice
from player.component import message_value
from player.controls import parse_script, parse_state
from player.downloads import Downloads
from player.play import Outputs, PlayLoop
from player.recording import MAX_LOG_BYTES, Replay, parse_log
from player.sessions import BOARD, REGISTRY, Session, SessionFull, SessionRegistry
from player.status import StatusLine
from player.validation import clean_prompt, clean_seed, clean_steps, read_start_image

T = TypeVar("T")


def _checked(title: str, check: Callable[..., T], *args: Any) -> T:
    """``check(*args)``; its ``ValueError`` reaches the player as a ``gr.Error`` titled ``title``."""
    try:
        return check(*args)
    except ValueError as exc:
        raise gr.Error(str(exc), title=title) from exc


def _session(registry: SessionRegistry, request: gr.Request) -> Session:
    try:
        return registry.get(request.session_hash)
    except SessionFull as exc:
        raise gr.Error(str(exc), title="Server busy") from exc


class WorldApp:
    """Handlers for one app instance: its backend, model allow-list and settings."""

    def __init__(self, backend: Backend, models: list[ModelChoice], allow_custom_models: bool,
                 fps: float = 20.0, idle_timeout_s: float = 300.0) -> None:
        self.backend = backend
        self.models = {m.key: m for m in models}
        self.allow_custom_models = allow_custom_models
        self.registry = REGISTRY
        self.status = StatusLine(backend, BOARD)
        self.downloads = Downloads()
        self.plays = PlayLoop(backend, BOARD, self.status, fps=fps, idle_timeout_s=idle_timeout_s)
        self.registry.on_release(self._release)

    def _release(self, session: Session) -> None:
        """A freed session's resident world and download folder go with it."""
        self.backend.forget(session.key)
        self.downloads.forget(session)

    def model(self, key: str | None) -> ModelChoice:
        """The picker entry for ``key``; only the allow-list, plus local folders on a private server."""
        key = (key or "").strip()
        if key in self.models:
            return self.models[key]
        if self.allow_custom_models and key and Path(key).expanduser().is_dir():
            return ModelChoice(key=key, label=Path(key).name, uri=str(Path(key).expanduser()))
        allowed = ", ".join(m.label for m in self.models.values())
        raise gr.Error(f"Unknown model {html.escape(key[:80])!r}. Choose one of: {allowed}.", title="Model")

    # ---- input while playing --------------------------------------------------------------------
    def control(self, evt: gr.EventData, request: gr.Request) -> None:
        """The page's control state (queue=False, every edge and <= 30 Hz); stale ones are dropped."""
        try:
            state = parse_state(evt._data)
        except ValueError as exc:
            raise gr.Error(f"Ignored a control message: {exc}", title="Controls") from exc
        session = self.registry.find(request.session_hash)   # only Start and friends claim a slot
        if session is not None:
            BOARD.write_state(session.slot, session.owner, state)

    def set_prompt(self, prompt: str, request: gr.Request) -> None:
        """Apply a new prompt to the running world from its next frame, without a reset."""
        text = _checked("Prompt", clean_prompt, prompt)
        session = _session(self.registry, request)
        if text != BOARD.prompt(session.slot)[1]:
            BOARD.set_prompt(session.slot, text)

    def set_steps(self, steps: float, request: gr.Request) -> None:
        steps = _checked("Steps", clean_steps, steps)
        session = _session(self.registry, request)
        BOARD.set_steps(session.slot, steps)

    def pause(self, request: gr.Request) -> None:
        """Stop the frame loop; the world is kept and Start continues it."""
        session = self.registry.find(request.session_hash)
        if session is not None:
            BOARD.stop_run(session.slot)

    def reset(self, request: gr.Request) -> Outputs:
        """Forget the world (next Start builds a fresh one from the seed); keep the session."""
        session = self.registry.find(request.session_hash)
        if session is not None:
            self.plays.forget(session)
        return message_value("World reset \u2014 press Start"), self.status.text(None, "reset")

    # ---- uploads and downloads ------------------------------------------------------------------
    def load_start_image(self, path: str | None) -> tuple[bytes | None, Any]:
        """Validate an upload; returns the normalised PNG (kept in gr.State) and a preview."""
        png = _checked("Start image", read_start_image, path)
        preview = None if png is None else np.asarray(Image.open(io.BytesIO(png)))
        return png, gr.update(value=preview, visible=png is not None)

    def load_log(self, path: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Read a control log; the next "Run path" replays it. Fills prompt, seed, model, steps."""
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if os.path.getsize(path) > MAX_LOG_BYTES:
            raise gr.Error(f"That control log is larger than {MAX_LOG_BYTES // 2**20} MB.", title="Control log")
        replay = _checked("Control log", parse_log, Path(path).read_bytes())
        choice = self.model(replay.model)
        session = _session(self.registry, request)
        session.pending_replay = replay
        note = f"Loaded a {len(replay.ctrls)}-frame control log (seed {replay.seed}). "
        if not replay.complete:
            note += "This log was truncated: the replay stops where the recording was cut. "
        note += "Press \u25b6 Run path to replay it."
        return replay.prompt, replay.seed, choice.key, replay.steps, note

    def download(self, overlay: bool, request: gr.Request) -> tuple[str, str]:
        """The session as an animated WebP (controls optionally drawn) and its JSON control log."""
        session = self.registry.find(request.session_hash)
        recorder = session.recorder if session else None
        if recorder is None or not len(recorder):
            raise gr.Error("Nothing recorded yet: press Start and walk around first.", title="Recording")
        return self.downloads.write(session, recorder, overlay)

    def unload(self, request: gr.Request) -> None:
        self.registry.free(request.session_hash)

    # ---- status ---------------------------------------------------------------------------------
    def current_status(self, request: gr.Request) -> str:
        return self.status.idle(self.registry.find(request.session_hash))

    def warmup_status(self, request: gr.Request) -> tuple[Any, Any]:
        """Timer tick: show warm-up progress until it is done, then stop ticking."""
        if self.backend.warmup.done.is_set():
            return self.current_status(request), gr.Timer(active=False)
        return self.current_status(request), gr.skip()

    # ---- play -----------------------------------------------------------------------------------
    def play(self, prompt: str, seed: float, model_key: str, steps: float, start_png: bytes | None,
             request: gr.Request) -> Iterator[Outputs]:
        """Stream the session's world, driven by live input."""
        yield from self._play(prompt, seed, model_key, steps, start_png, None, request)

    def play_path(self, script: str, prompt: str, seed: float, model_key: str, steps: float,
                  start_png: bytes | None, request: gr.Request) -> Iterator[Outputs]:
        """Stream the world driven by a scripted camera path (or a loaded control log), then live input."""
        session = _session(self.registry, request)
        pending = session.pending_replay
        if pending is not None and not (script or "").strip():
            session.pending_replay = None
            yield from self._play(pending.prompt, pending.seed, pending.model, pending.steps,
                                  pending.start_image, pending, request)
            return
        masks = _checked("Camera path", parse_script, script or "")
        if not masks:
            raise gr.Error("The camera path is empty; try something like w*8, a+left*4, idle*3.",
                           title="Camera path")
        yield from self._play(prompt, seed, model_key, steps, start_png, masks, request)

    def _play(self, prompt: str, seed: float, model_key: str, steps: float, start_png: bytes | None,
              script: list[int] | Replay | None, request: gr.Request) -> Iterator[Outputs]:
        prompt = _checked("Prompt", clean_prompt, prompt)
        seed = _checked("Seed", clean_seed, seed)
        choice = self.model(model_key)
        n_steps = _checked("Steps", clean_steps, steps)
        session = _session(self.registry, request)
        yield from self.plays.play(session, choice, seed, prompt, n_steps, start_png, script)
