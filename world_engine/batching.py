"""``SessionBatcher``: the sessions of one engine that ask for frames at about the same time get
them from one batched forward per pass (``world_engine.gen_frames``).

Each session keeps calling ``next_frame`` from its own thread, as if alone. The first caller that
finds no batch running leads: it waits a few milliseconds for the other sessions that played in
the last second (each is paced by its own page, so their requests drift apart), then makes every
pending frame at once and hands each caller its own. No thread of its own, so nothing to start or
stop; a session that stops asking simply drops out of the next batch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np

from .controls import CtrlInput

ACTIVE_S = 1.0     # a session that asked within this long is waited for
# The default wait is half a frame at 20 fps: two paced streams whose frame times are up to that far
# apart still meet (the later one sets the time), at the cost of that much latency for the earlier.


@dataclass(eq=False)
class _Request:
    session: Any
    ctrl: CtrlInput | None
    done: bool = False
    frame: np.ndarray | None = None
    error: BaseException | None = None
    asked: float = field(default_factory=time.monotonic)


def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _alone(request: _Request, run_on: Callable[..., Any]) -> None:
    """Make ``request``'s frame alone; a failure goes to its caller."""
    try:
        request.frame = run_on(request.session.gen_frame, request.ctrl).cpu().numpy()
    except Exception as exc:
        request.error = exc


class SessionBatcher:
    """Batches ``next_frame`` calls of forks of one engine (``max_batch`` at most per forward;
    the leader waits at most ``gather_s`` for the others). ``stats`` counts frames per batch size.

    The gathering happens on the callers' threads; the forward itself runs through ``run_on(fn,
    *args)`` (default: right there), so a GPU owned by one thread runs it on that thread while the
    sessions wait on theirs."""

    def __init__(self, max_batch: int = 2, gather_s: float = 0.025,
                 run_on: Callable[..., Any] | None = None) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        self.max_batch, self.gather_s = max_batch, gather_s
        self._run_on = run_on or _direct
        self._cv = threading.Condition()
        self._pending: list[_Request] = []
        self._leading = False
        self._last_asked: dict[int, float] = {}   # id(session) -> when it last asked
        self.stats: dict[int, int] = {}

    def next_frame(self, session: Any, ctrl: CtrlInput | None = None) -> np.ndarray:
        """``session``'s next frame (uint8 ``[H, W, 3]`` on the host), made with whichever other
        sessions asked at about the same time."""
        request = _Request(session, ctrl)
        with self._cv:
            self._pending.append(request)
            self._last_asked[id(session)] = request.asked
            self._cv.notify_all()
            while not request.done and self._leading:
                self._cv.wait()
            if not request.done:
                self._leading = True
                batch = self._gather(request)
        if not request.done:
            self._run(batch)
        if request.error is not None:
            raise request.error
        return request.frame

    def _gather(self, leader: _Request) -> list[_Request]:
        """The leader's batch (the lock held): its own request first, then other pending ones of
        the same schedule, after waiting (bounded) for the sessions that played recently."""
        deadline = time.monotonic() + self.gather_s
        while True:
            now = time.monotonic()
            waiting_for = {sid for sid, t in self._last_asked.items() if now - t < ACTIVE_S}
            waiting_for -= {id(r.session) for r in self._pending}
            if not waiting_for or len(self._pending) >= self.max_batch or now >= deadline:
                break
            self._cv.wait(deadline - now)
        batch = [leader]
        sigmas = leader.session.config.scheduler_sigmas
        for r in self._pending:
            if len(batch) >= self.max_batch:
                break
            if r is not leader and r.session.config.scheduler_sigmas == sigmas and \
                    all(r.session is not b.session for b in batch):
                batch.append(r)
        for r in batch:
            self._pending.remove(r)
        cutoff = time.monotonic() - ACTIVE_S
        self._last_asked = {sid: t for sid, t in self._last_asked.items() if t > cutoff}
        return batch

    def _run(self, batch: list[_Request]) -> None:
        from .engine import gen_frames

        try:
            frames = self._run_on(gen_frames, [r.session for r in batch], [r.ctrl for r in batch])
            for r, f in zip(batch, frames):
                r.frame = f.cpu().numpy()
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:   # one session's bad input or closed world must not fail the others
                for r in batch:
                    _alone(r, self._run_on)
        finally:
            with self._cv:
                for r in batch:
                    r.done = True
                    if r.frame is None and r.error is None:
                        r.error = RuntimeError("the batch was interrupted")
                self.stats[len(batch)] = self.stats.get(len(batch), 0) + len(batch)
                self._leading = False
                self._cv.notify_all()
