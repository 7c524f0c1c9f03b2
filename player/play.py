"""One play of a session: open or continue its world, then stream segments back to back.

Each segment (``player.stream.run_segment``, run by the backend) ends after a bounded time or when
play stops; this loop starts the next one with what the session kept (the snapshot the last
segment handed back, the rest of a scripted path), records every frame and turns the stream into
page values. Rewinds go to the world through the board; when one is answered the recording drops
the frames the world no longer has, so the control log still replays the world exactly.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gradio as gr

from player.backends import Backend, ModelChoice
from player.component import frame_value, jpeg_size, message_value
from player.errors import user_error, user_warning
from player.guard import Limits
from player.recording import Recorder, Replay
from player.sessions import ControlBoard, Session
from player.status import StatusLine
from player.stream import (KEEP_SECONDS, RESYNC_NEEDS_SPLIT, TIME_UP, EncodedFrame, Notice, Resume, Rewound,
                           SegmentArgs, WorldRecipe)

Outputs = tuple[Any, Any]     # (player value, status line)
SUPERSEDE_WAIT_S = 2.0        # a new play waits at most this long for the one it replaces to hand back


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
        self.keep_frames = round(KEEP_SECONDS * fps) + 1     # the kept history: 30 s back from now
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
        # The superseded play's loop stops at its next frame; wait (bounded) until its segment has
        # handed back the frames it made, or this play would find the world "elsewhere" and rebuild it.
        session.segment_idle.wait(SUPERSEDE_WAIT_S)
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
        session.resume, session.rewind_pending, session.rewind_limit = None, None, 0
        self.backend.forget(session.key)

    def rewind(self, session: Session, seconds: float) -> dict[str, Any] | None:
        """Ask the session's world to go back ``seconds`` (at most as far as its kept history
        reaches; presses add up until the world answers). While it plays, the next frame comes
        from there; while paused, returns the recorded frame of that point to show now."""
        if session.recipe is None or session.recorder is None or not session.world_frames:
            raise ValueError("Nothing to rewind yet: press Start and play a little first.")
        base = session.rewind_pending[1] if session.rewind_pending else session.world_frames
        target = max(base - max(1, round(seconds * self.fps)), session.world_frames - session.rewind_limit, 0)
        if target >= base:                      # already as far back as the kept history reaches
            raise ValueError("That is as far back as this world remembers.")
        version = self.board.request_rewind(session.slot, session.owner, target)
        session.rewind_pending = (version, target)
        if session.rewind_seen >= version:     # the frame loop answered it before the line above
            session.rewind_pending = None
        if session.running:
            return None
        ago = (session.world_frames - target) / self.fps
        note = f"Rewound {ago:.1f} s \u2014 press Start to go on from here"
        jpeg = session.recorder.jpeg(target - 1)
        if jpeg is None:
            return message_value(note)
        n, session.frames_sent = session.frames_sent, session.frames_sent + 1
        return frame_value(n, -1, jpeg, *jpeg_size(jpeg), msg=note, back=0.0)

    def resync(self, session: Session) -> None:
        """Ask the session's split world to write the simulator's true frames into the model."""
        if session.recipe is None:
            raise ValueError("Nothing to re-sync yet: press Start first.")
        if not session.recipe.split:
            raise ValueError(RESYNC_NEEDS_SPLIT)
        self.board.request_resync(session.slot, session.owner)

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
        recipe = WorldRecipe(world_id=next(self._world_ids), model=choice.key, seed=seed, start_image=start_png,
                             split=choice.split)
        session.recipe, session.model_label = recipe, choice.label
        session.resume, session.rewind_pending, session.rewind_limit = None, None, 0
        session.world_frames = 0
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
            ended, used = yield from self._segment(session, run, choice, recorder, script, events, status_due)
            script = script[used:]
            events = tuple((i - used, kind, value) for i, kind, value in events if i >= used)
            if ended is not None:
                yield message_value(ended.message), self.status.text(session, ended.state)
                return

    def _segment(self, session: Session, run: int, choice: ModelChoice, recorder: Recorder,
                 script: tuple[Any, ...], events: tuple[tuple[int, str, Any], ...],
                 status_due: _Every) -> Iterator[Outputs]:
        """Stream one segment; returns the notice that ended play (if one did) and how many frames
        it made. The segment is read to its end, past the notice or a newer play, so the snapshot
        it hands back last (``Resume``) is kept; the world stops at its next frame anyway."""
        args = SegmentArgs(
            key=session.key, slot=session.slot, owner=session.owner, run=run, recipe=session.recipe,
            frames_done=session.world_frames, first_n=session.frames_sent,
            script=script, script_events=events, fps=self.fps, max_seconds=self.backend.segment_seconds,
            idle_timeout_s=self.idle_timeout_s, ack_timeout_s=self.limits.ack_timeout_s,
            hidden_timeout_s=self.limits.hidden_timeout_s, resume=session.resume, keep_frames=self.keep_frames,
            rewind_seen=session.rewind_seen)
        start, made, ended, superseded = time.monotonic(), 0, None, False
        session.segment_idle.clear()
        try:
            for item in self.backend.segments(args, choice.uri):
                if session.recipe is not args.recipe and isinstance(item, (Resume, Rewound)):
                    continue                                 # a newer world has taken the session's place
                if isinstance(item, Resume):
                    session.resume = item
                elif isinstance(item, Rewound):
                    self._rewound(session, recorder, item)
                elif isinstance(item, Notice):
                    if item.kind == "time" and session.busy_turn:
                        ended = Notice("time", TIME_UP + " Others are waiting in line, so turns are shorter now.")
                    elif item.ends_play:
                        ended = item
                    else:
                        user_warning(item.message)
                else:
                    made += 1
                    if session.recipe is args.recipe:        # the world made it, shown or not
                        self._record(session, recorder, item)
                    superseded = superseded or ended is not None or self.board.snapshot(session.slot).run != run
                    if superseded:
                        continue
                    status = self.status.text(session, "playing") if status_due.due() else gr.skip()
                    yield self._frame_value(item, start), status
        except (ValueError, RuntimeError, OSError) as exc:
            raise user_error(f"The world stopped: {exc}", "Engine") from exc
        finally:
            session.segment_idle.set()
        return ended, made

    def _frame_value(self, item: EncodedFrame, start: float) -> dict[str, Any]:
        """The page value of a frame: the picture, its timing and, for a split world, the PSNR."""
        hud = f"{item.gen_ms:.0f} ms/frame" + self.backend.hud_note(time.monotonic() - start)
        if item.psnr is not None:
            hud += f" \u00b7 PSNR {item.psnr:.1f} dB" if item.psnr < 100 else " \u00b7 PSNR \u221e"
        return frame_value(item.n, item.seq, item.jpeg, item.width, item.height, hud=hud, msg="",
                           back=item.back / self.fps, psnr=item.psnr)

    @staticmethod
    def _record(session: Session, recorder: Recorder, frame: EncodedFrame) -> None:
        session.frames_sent = max(session.frames_sent, frame.n + 1)
        session.world_frames += 1
        session.rewind_limit = frame.back
        recorder.add(frame)

    @staticmethod
    def _rewound(session: Session, recorder: Recorder, rewound: Rewound) -> None:
        """The world went back: so do the recording and the session's count of its frames."""
        session.rewind_limit -= session.world_frames - rewound.frames_done
        session.world_frames = rewound.frames_done
        recorder.truncate(rewound.frames_done)
        session.rewind_seen = max(session.rewind_seen, rewound.version)
        if session.rewind_pending and session.rewind_pending[0] <= rewound.version:
            session.rewind_pending = None
