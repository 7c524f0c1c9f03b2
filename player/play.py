"""One play of a session: open or continue its world, then stream segments back to back.

Each segment (``player.stream.run_segment``, run by the backend) ends after a bounded time or when
play stops; this loop starts the next one with what the session kept (frames for re-priming, the
rest of a scripted path), records every frame and turns the stream into page values.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gradio as gr

from player.backends import Backend, ModelChoice
from player.component import frame_value, message_value
from player.errors import user_error, user_warning
from player.guard import Limits
from player.recording import Recorder, Replay
from player.sessions import ControlBoard, Session
from player.status import StatusLine
from player.stream import TIME_UP, EncodedFrame, Notice, SegmentArgs, WorldRecipe

Outputs = tuple[Any, Any]     # (player value, status line)


class _Every:
    """True at most once per ``seconds``: the status line need not change with every frame."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last > self.seconds:
            self.last = now
            return True
        return False


class PlayLoop:
    """Plays sessions' worlds on one backend at ``fps``, pausing after ``idle_timeout_s`` idle.

    Every play has one allowance (``Limits.play_s``, or ``busy_play_s`` while someone waits in
    line), kept as a deadline in the session's slot: live input, a scripted path, a replay, a
    hidden tab and a page that stopped acknowledging frames all count against it.
    """

    def __init__(self, backend: Backend, board: ControlBoard, status: StatusLine, fps: float,
                 idle_timeout_s: float, limits: Limits | None = None,
                 waiting: Callable[[], int] = lambda: 0) -> None:
        self.backend, self.board, self.status = backend, board, status
        self.fps, self.idle_timeout_s = fps, idle_timeout_s
        self.limits, self.waiting = limits or Limits(), waiting
        self._world_ids = itertools.count(1)

    def allowance(self) -> float:
        """How long a play starting now may last."""
        return self.limits.busy_play_s + self.limits.busy_grace_s if self.waiting() else self.limits.play_s

    def shorten_turns(self, sessions: Iterable[Session]) -> None:
        """Someone is waiting: plays in progress end at the busy allowance (with a little grace)."""
        now = time.time()
        for session in sessions:
            if session.running and session.play_started:
                end = max(now + self.limits.busy_grace_s, session.play_started + self.limits.busy_play_s)
                if self.board.shorten_deadline(session.slot, end):
                    session.busy_turn = True

    def play(self, session: Session, choice: ModelChoice, seed: int, prompt: str, steps: int,
             start_png: bytes | None, script: list[int] | Replay | None) -> Iterator[Outputs]:
        """Stream the session's world until it stops; a replay always starts a fresh world."""
        yield from self._wait_for_warm_up(session)
        replay = isinstance(script, Replay)
        self._open(session, choice, seed, start_png, prompt, steps, fresh=replay)
        self.board.set_prompt(session.slot, prompt)
        self.board.set_steps(session.slot, steps)
        run = session.run = self.board.start_run(session.slot)
        session.running = True
        session.play_started = time.time()
        session.busy_turn = bool(self.waiting())
        self.board.set_deadline(session.slot, session.play_started + self.allowance())
        frames, events = (script.ctrls, script.events) if replay else (tuple(script or ()), ())
        frames = frames[:self._frames_allowed()]
        yield message_value(f"Loading {choice.label}\u2026"), self.status.text(session, "loading")
        try:
            yield from self._stream(session, run, choice, frames, events)
        finally:
            if session.run == run:      # a newer play of this session may be streaming now
                session.running = False

    def _frames_allowed(self) -> int:
        """A scripted path or replay never holds more frames than one allowance plays."""
        return int(self.limits.play_s * self.fps) + 1

    def forget(self, session: Session) -> None:
        """Stop the session's play and forget its world; the next play builds a fresh one."""
        self.board.stop_run(session.slot)
        session.recipe, session.recorder = None, None
        session.history.clear()
        self.backend.forget(session.key)

    def _wait_for_warm_up(self, session: Session) -> Iterator[Outputs]:
        warm = self.backend.warmup
        while not warm.done.is_set():
            yield message_value(f"Warming up\u2026 {warm.fraction:.0%}"), self.status.text(session, "warming up")
            time.sleep(0.5)

    def _open(self, session: Session, choice: ModelChoice, seed: int, start_png: bytes | None, prompt: str,
              steps: int, fresh: bool) -> None:
        """Keep the session's world if it is the one asked for, else start a new one."""
        recipe = session.recipe
        if not fresh and recipe is not None and (recipe.model, recipe.seed, recipe.start_image) == \
                (choice.key, seed, start_png):
            return
        recipe = WorldRecipe(world_id=next(self._world_ids), model=choice.key, seed=seed, start_image=start_png)
        session.recipe, session.model_label = recipe, choice.label
        session.history.clear()
        session.world_frames = 0
        if start_png is not None:
            session.history.append((start_png, ((), 0.0, 0.0)))
        session.recorder = Recorder(recipe=recipe, prompt=prompt, steps=steps, fps=self.fps)

    def _stream(self, session: Session, run: int, choice: ModelChoice, script: tuple[Any, ...],
                events: tuple[tuple[int, str, Any], ...]) -> Iterator[Outputs]:
        """Run segments back to back until the player pauses, leaves or idles out."""
        recipe, recorder, status_due = session.recipe, session.recorder, _Every(1.0)
        while True:
            snap = self.board.snapshot(session.slot)
            if snap.run != run or snap.owner != session.owner:
                if session.recipe is recipe:      # paused (after a reset, Reset's own message stays)
                    yield message_value("Paused \u2014 press Start to continue"), self.status.text(session, "paused")
                return
            done = session.world_frames
            ended = yield from self._segment(session, run, choice, recorder, script, events, status_due)
            used = session.world_frames - done
            script = script[used:]
            events = tuple((i - used, kind, value) for i, kind, value in events if i >= used)
            if ended is not None:
                yield message_value(ended.message), self.status.text(session, ended.state)
                return

    def _segment(self, session: Session, run: int, choice: ModelChoice, recorder: Recorder,
                 script: tuple[Any, ...], events: tuple[tuple[int, str, Any], ...],
                 status_due: _Every) -> Iterator[Outputs]:
        """Stream one segment; returns the notice that ended play, if one did."""
        args = SegmentArgs(
            key=session.key, slot=session.slot, owner=session.owner, run=run, recipe=session.recipe,
            frames_done=session.world_frames, history=tuple(session.history), first_n=session.frames_sent,
            script=script, script_events=events, fps=self.fps, max_seconds=self.backend.segment_seconds,
            idle_timeout_s=self.idle_timeout_s, ack_timeout_s=self.limits.ack_timeout_s,
            hidden_timeout_s=self.limits.hidden_timeout_s)
        start = time.monotonic()
        try:
            for item in self.backend.segments(args, choice.uri):
                if isinstance(item, Notice):
                    if item.kind == "time" and session.busy_turn:
                        return Notice("time", TIME_UP + " Others are waiting in line, so turns are shorter now.")
                    if item.ends_play:
                        return item
                    user_warning(item.message)
                    continue
                if self.board.snapshot(session.slot).run != run:
                    return None
                self._record(session, recorder, item)
                status = self.status.text(session, "playing") if status_due.due() else gr.skip()
                hud = f"{item.gen_ms:.0f} ms/frame" + self.backend.hud_note(time.monotonic() - start)
                yield frame_value(item.n, item.seq, item.jpeg, item.width, item.height, hud=hud, msg=""), status
        except (ValueError, RuntimeError, OSError) as exc:
            raise user_error(f"The world stopped: {exc}", "Engine") from exc
        return None

    @staticmethod
    def _record(session: Session, recorder: Recorder, frame: EncodedFrame) -> None:
        session.frames_sent = frame.n + 1
        session.world_frames += 1
        session.history.append((frame.jpeg, frame.ctrl))
        recorder.add(frame)
