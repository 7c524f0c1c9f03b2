"""The app's event handlers as plain functions of their inputs and a ``gr.Request``.

Every handler validates what the browser sends and answers bad input with a readable
``gr.Error``; a bad message never stops the session's world. Sessions are keyed by
``request.session_hash`` so two browser tabs never share a world.
"""

from __future__ import annotations

import html
import io
import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from player.backends import Backend, ModelChoice
from player.component import frame_value, message_value
from player.controls import parse_script, parse_state
from player.reality import REALITY
from player.recording import MAX_LOG_BYTES, Recorder, Replay, parse_log
from player.sessions import BOARD, REGISTRY, Session, SessionFull, SessionRegistry
from player.stream import Frame, Notice, SegmentArgs, WorldSpec
from player.validation import clean_prompt, clean_steps, read_start_image

Outputs = tuple[Any, Any]


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
        self.fps = fps
        self.idle_timeout_s = idle_timeout_s
        self.registry = REGISTRY
        self.registry.on_release(self._release)
        self._world_ids = itertools.count(1)
        self._downloads = Path(tempfile.mkdtemp(prefix="world-player-"))

    def _release(self, session: Session) -> None:
        """A freed session's cached world and download folder go with it."""
        self.backend.forget(session.key)
        if session.download_dir is not None:
            shutil.rmtree(session.download_dir, ignore_errors=True)

    # ---- validation -----------------------------------------------------------------------------
    def model(self, key: str | None) -> ModelChoice:
        """The picker entry for ``key``; only the allow-list, plus local folders on a private server."""
        key = (key or "").strip()
        if key in self.models:
            return self.models[key]
        if self.allow_custom_models and key and Path(key).expanduser().is_dir():
            return ModelChoice(key=key, label=Path(key).name, uri=str(Path(key).expanduser()))
        allowed = ", ".join(m.label for m in self.models.values())
        raise gr.Error(f"Unknown model {html.escape(key[:80])!r}. Choose one of: {allowed}.", title="Model")

    # ---- handlers -------------------------------------------------------------------------------
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
        try:
            text = clean_prompt(prompt)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Prompt") from exc
        session = _session(self.registry, request)
        if text != BOARD.prompt(session.slot)[1]:
            BOARD.set_prompt(session.slot, text)

    def set_steps(self, steps: float, request: gr.Request) -> None:
        steps = self._steps(steps)
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
            BOARD.stop_run(session.slot)
            session.world, session.recorder = None, None
            session.history.clear()
            self.backend.forget(session.key)
        return message_value("World reset \u2014 press Start"), self.status_text(None, "reset")

    def load_start_image(self, path: str | None) -> tuple[bytes | None, Any]:
        """Validate an upload; returns the normalised PNG (kept in gr.State) and a preview."""
        try:
            png = read_start_image(path)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Start image") from exc
        preview = None if png is None else np.asarray(Image.open(io.BytesIO(png)))
        return png, gr.update(value=preview, visible=png is not None)

    def load_log(self, path: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Read a control log; the next "Run path" replays it. Fills prompt, seed, model, steps."""
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if os.path.getsize(path) > MAX_LOG_BYTES:
            raise gr.Error(f"That control log is larger than {MAX_LOG_BYTES // 2**20} MB.", title="Control log")
        try:
            replay = parse_log(Path(path).read_bytes())
        except ValueError as exc:
            raise gr.Error(str(exc), title="Control log") from exc
        choice = self.model(replay.model)
        session = _session(self.registry, request)
        session.pending_replay = replay
        note = f"Loaded a {len(replay.ctrls)}-frame control log (seed {replay.seed}). "
        if not replay.complete:
            note += "This log was truncated: the replay stops where the recording was cut. "
        note += "Press \u25b6 Run path to replay it."
        return replay.prompt, replay.seed, choice.key, replay.steps, note

    def unload(self, request: gr.Request) -> None:
        self.registry.free(request.session_hash)

    def download(self, overlay: bool, request: gr.Request) -> tuple[str, str]:
        """The session as an animated WebP (controls optionally drawn) and its JSON control log."""
        session = self.registry.find(request.session_hash)
        recorder: Recorder | None = session.recorder if session else None
        if recorder is None or not len(recorder):
            raise gr.Error("Nothing recorded yet: press Start and walk around first.", title="Recording")
        if session.download_dir is not None:     # one folder per session, replaced on each download
            shutil.rmtree(session.download_dir, ignore_errors=True)
        # Named by the server: the session hash comes from the browser and must not become a path.
        session.download_dir = Path(tempfile.mkdtemp(prefix=f"slot{session.slot}-", dir=self._downloads))
        folder = session.download_dir
        stamp = time.strftime("%Y%m%d-%H%M%S")
        video = recorder.write_video(folder / f"world-{stamp}.webp", overlay=overlay)
        log = folder / f"world-{stamp}-controls.json"
        log.write_text(recorder.log_json(), encoding="utf-8")
        return str(video), str(log)

    def status_text(self, session: Session | None, state: str) -> str:
        """The status line: model, device, warm-up, state, fps and latency as the page measures them."""
        warm = self.backend.warmup
        parts = [f"**Device** {self.backend.kind}"]
        if session is not None and session.model_label:
            parts.insert(0, f"**Model** {html.escape(session.model_label)}")
        if warm.error:
            parts.append(f"**Warm-up failed** {html.escape(warm.error)}")
        elif not warm.done.is_set():
            parts.append(f"**Warming up** {warm.fraction:.0%} ({warm.text})")
        parts.append(f"**State** {state}")
        if session is not None and session.world is not None:
            text = BOARD.prompt(session.slot)[1]
            if text:
                short = text if len(text) <= 60 else text[:57] + "..."
                parts.append(f"**Prompt** {html.escape(short)}")
        if session is not None and state == "playing":
            snap = BOARD.snapshot(session.slot)
            if snap.state.client_fps:
                parts.append(f"**{snap.state.client_fps:.0f} fps**")
            if snap.state.client_latency_ms:
                parts.append(f"**input\u2192frame** {snap.state.client_latency_ms:.0f} ms")
        return " \u00b7 ".join(parts)

    def current_status(self, request: gr.Request) -> str:
        session = self.registry.find(request.session_hash)
        return self.status_text(session, "ready" if self.backend.warmup.done.is_set() else "warming up")

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
        try:
            masks = parse_script(script or "")
        except ValueError as exc:
            raise gr.Error(str(exc), title="Camera path") from exc
        if not masks:
            raise gr.Error("The camera path is empty; try something like w*8, a+left*4, idle*3.",
                           title="Camera path")
        yield from self._play(prompt, seed, model_key, steps, start_png, masks, request)

    def _steps(self, steps: float | None) -> int:
        try:
            return clean_steps(steps)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Steps") from exc

    def _play(self, prompt: str, seed: float, model_key: str, steps: float, start_png: bytes | None,
              script: list[int] | Replay | None, request: gr.Request) -> Iterator[Outputs]:
        try:
            prompt = clean_prompt(prompt)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Prompt") from exc
        if seed is None or not math.isfinite(seed) or not 0 <= seed < 2**63:
            raise gr.Error("The seed must be a whole number \u2265 0.", title="Seed")
        choice = self.model(model_key)
        n_steps = self._steps(steps)
        session = _session(self.registry, request)
        if start_png is not None and choice.uri == REALITY:
            gr.Warning("Reality is the simulator itself: it starts from its own map, not from a picture.")
        warm = self.backend.warmup
        while not warm.done.is_set():
            yield message_value(f"Warming up\u2026 {warm.fraction:.0%}"), self.status_text(session, "warming up")
            time.sleep(0.5)

        seed = int(seed)
        spec = session.world
        if isinstance(script, Replay) or spec is None or (spec.model, spec.seed, spec.start_image) != \
                (choice.key, seed, start_png):
            spec = WorldSpec(world_id=next(self._world_ids), model=choice.key, seed=seed, start_image=start_png)
            session.world, session.model_label = spec, choice.label
            session.history.clear()
            session.world_frames = 0
            if start_png is not None:
                session.history.append((start_png, ((), 0.0, 0.0)))
            session.recorder = Recorder(world=spec, prompt=prompt, steps=n_steps, fps=self.fps)
        BOARD.set_prompt(session.slot, prompt)
        BOARD.set_steps(session.slot, n_steps)
        run = session.run = BOARD.start_run(session.slot)
        session.running = True

        if isinstance(script, Replay):
            frames, events = script.ctrls, script.events
        else:
            frames, events = tuple(script or ()), ()
        yield message_value(f"Loading {choice.label}\u2026"), self.status_text(session, "loading")
        try:
            yield from self._stream(session, run, choice, frames, events)
        finally:
            if session.run == run:      # a newer play of this session may be streaming now
                session.running = False

    def _stream(self, session: Session, run: int, choice: ModelChoice, script: tuple[Any, ...],
                events: tuple[tuple[int, str, Any], ...]) -> Iterator[Outputs]:
        """Run segments back to back until the player pauses, leaves or idles out."""
        last_status = 0.0
        first = True
        world, recorder = session.world, session.recorder
        while True:
            snap = BOARD.snapshot(session.slot)
            if snap.run != run or snap.owner != session.owner:
                if session.world is world:      # paused (after a reset, Reset's own message stays)
                    yield message_value("Paused \u2014 press Start to continue"), self.status_text(session, "paused")
                return
            done = session.world_frames
            args = SegmentArgs(
                key=session.key, slot=session.slot, owner=session.owner, run=run, world=session.world,
                frames_done=done, history=tuple(session.history),
                first_n=session.frames_sent, script=script, script_events=events, fps=self.fps,
                max_seconds=self.backend.segment_seconds, idle_timeout_s=self.idle_timeout_s)
            seg_start = time.monotonic()
            ended: Notice | None = None
            try:
                for item in self.backend.segments(args, choice.uri):
                    if isinstance(item, Notice):
                        if item.kind == "prompt_error":
                            gr.Warning(item.message)
                            continue
                        ended = item
                        break
                    if BOARD.snapshot(session.slot).run != run:
                        break
                    self._record(session, recorder, item)
                    now = time.monotonic()
                    status = gr.skip()
                    if first or now - last_status > 1.0:
                        status, last_status = self.status_text(session, "playing"), now
                    hud = f"{item.gen_ms:.0f} ms/frame"
                    if self.backend.kind == "zerogpu":
                        left = self.backend.segment_seconds - (now - seg_start)
                        hud += f" \u00b7 GPU {max(0, left):.0f} s"
                    yield frame_value(item.n, item.seq, item.jpeg, item.width, item.height, hud=hud,
                                      msg=""), status
                    first = False
            except gr.Error as exc:
                if "quota" in str(exc).lower() or "quota" in str(getattr(exc, "title", "")).lower():
                    msg = ("Your ZeroGPU quota is used up for now. Sign in or upgrade for more GPU time, "
                           "come back later, or run the app locally with `python app.py`.")
                    yield message_value(msg), self.status_text(session, "GPU quota exhausted")
                    return
                raise
            except (ValueError, RuntimeError, OSError) as exc:
                raise gr.Error(f"The world stopped: {exc}", title="Engine") from exc
            used = session.world_frames - done
            script = script[used:]
            events = tuple((i - used, kind, value) for i, kind, value in events if i >= used)
            if ended is not None:
                yield message_value(ended.message), self.status_text(session, "paused")
                return

    def _record(self, session: Session, recorder: Recorder, frame: Frame) -> None:
        session.frames_sent = frame.n + 1
        session.world_frames += 1
        session.history.append((frame.jpeg, frame.ctrl))
        recorder.add(frame)
