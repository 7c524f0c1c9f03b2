"""One thread that owns a local GPU, and worlds whose engine calls run on it.

Compiled kernels and CUDA graphs belong to the thread that built them, so a local GPU's engine code
runs on one thread. Only the engine calls go there: each session's frame loop (pacing, waiting for
its page to acknowledge frames) runs on the session's own thread and hands the engine thread one
call at a time. A session whose page is slow therefore never holds the GPU while it waits, and the
engine thread serves every session's frames in the order they are asked for.

With sessions batched (``WorldEngine.batch_sessions(run_on=EngineThread.call)``) a world's frame
calls stay on the session's thread, where ``SessionBatcher`` gathers the sessions that ask together;
only the batched forward goes to the engine thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

FRAME_CALLS = ("next_frame", "next_frame_async")


class EngineThread:
    """The one thread engine code runs on."""

    def __init__(self, name: str = "engine") -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the engine thread; waits for it (exceptions come back here)."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def world(self, world: Any) -> "OnEngineThread":
        """``world`` with every method call run on this thread."""
        return OnEngineThread(world, self)


class OnEngineThread:
    """A world whose method calls run on an ``EngineThread``; attributes are read directly.

    The frame calls of a world whose engine batches its sessions run on the caller's thread (the
    batcher sends the forward to the engine thread itself)."""

    def __init__(self, world: Any, thread: EngineThread) -> None:
        self._world, self._thread = world, thread

    @property
    def wrapped(self) -> Any:
        return self._world

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._world, name)
        if not callable(value):
            return value
        if name in FRAME_CALLS and getattr(self._world, "batcher", None) is not None:
            return value
        return functools.partial(self._thread.call, value)
