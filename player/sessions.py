"""Per-browser-session state: a control slot in shared memory and the main-process bookkeeping.

The control slots live in a ``multiprocessing.RawArray`` created when this module is imported,
i.e. before ZeroGPU forks its GPU worker, so a frame loop running in the worker reads the same
memory the control handler writes in the main process. Readers use a sequence lock because the
two processes share no lock; all writers are main-process threads and share a ``threading.Lock``.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from player.controls import ControlState

MAX_SLOTS = 64
PROMPT_BYTES = 2048

# Field offsets inside one slot (all doubles).
_VER, _OWNER, _RUN, _SEQ, _KEYS, _MX, _MY, _LX, _LY, _SX, _SY, _ACK, _VIS, _TRECV, _CFPS, _CLAT, \
    _PVER, _PLEN, _STEPS, _TINPUT, _DEADLINE, _RWVER, _RWTO, _SYNCVER = range(24)
_NF = 24


@dataclass(frozen=True)
class SlotSnapshot:
    """A consistent copy of one slot, as the frame loop sees it right before a frame."""

    owner: int
    run: int
    state: ControlState
    t_recv: float          # wall time of the newest control message (liveness)
    t_input: float         # wall time the player last changed an input (idleness)
    prompt_version: int
    steps: int
    deadline: float = math.inf   # wall time the current play must end by (its allowance)
    rewind_version: int = 0      # bumped by each rewind request ...
    rewind_to: int = 0           # ... to go back to this many frames of the world
    resync_version: int = 0      # bumped by each re-sync request


class ControlBoard:
    """Fixed-size table of control slots in shared memory (see module docstring)."""

    def __init__(self, n_slots: int = MAX_SLOTS) -> None:
        self.n_slots = n_slots
        self._f = mp.RawArray("d", n_slots * _NF)
        self._prompts = mp.RawArray("B", n_slots * PROMPT_BYTES)
        self._lock = threading.Lock()
        self._owners = itertools.count(1)

    def _write(self, slot: int, values: dict[int, float]) -> None:
        with self._lock:
            self._put(slot, values)

    def _put(self, slot: int, values: dict[int, float]) -> None:
        """Write ``values`` under the sequence lock; the caller holds ``self._lock``."""
        base = slot * _NF
        self._f[base + _VER] += 1          # odd: a write is in progress
        for offset, value in values.items():
            self._f[base + offset] = value
        self._f[base + _VER] += 1

    def _read(self, slot: int) -> list[float]:
        base = slot * _NF
        while True:
            before = self._f[base + _VER]
            values = self._f[base:base + _NF]
            if before % 2 == 0 and values[_VER] == before == self._f[base + _VER]:
                return values
            time.sleep(0)

    def claim(self, slot: int) -> int:
        """Reset a slot for a new session and return the owner id that guards it."""
        owner = next(self._owners)
        values = {i: 0.0 for i in range(1, _NF)}
        values.update({_OWNER: owner, _ACK: -1, _VIS: 1, _TRECV: time.time(), _TINPUT: time.time(),
                       _DEADLINE: math.inf})
        self._write(slot, values)
        return owner

    def release(self, slot: int) -> None:
        """Mark a slot free; a frame loop still holding its old owner id stops at its next frame."""
        self._write(slot, {_OWNER: 0, _RUN: 0})

    def write_state(self, slot: int, owner: int, state: ControlState) -> bool:
        """Store ``state`` unless the slot changed hands or a newer state is already there."""
        base = slot * _NF
        with self._lock:
            if self._f[base + _OWNER] != owner or state.seq <= self._f[base + _SEQ]:
                return False
            old = self._f[base + _KEYS:base + _SY + 1]
            new = [state.keys, state.move_x, state.move_y, state.look_x, state.look_y, state.stick_x,
                   state.stick_y]
            self._f[base + _VER] += 1
            if old != new:
                self._f[base + _TINPUT] = time.time()
            self._f[base + _SEQ:base + _CLAT + 1] = [
                state.seq, state.keys, state.move_x, state.move_y, state.look_x, state.look_y,
                state.stick_x, state.stick_y, state.ack, float(state.visible), time.time(),
                state.client_fps, state.client_latency_ms]
            self._f[base + _VER] += 1
        return True

    def start_run(self, slot: int) -> int:
        """Give the slot a new run id; the frame loop of any older run stops at its next frame."""
        now = time.time()
        with self._lock:    # read and increment together, so two plays never get the same id
            run = int(self._f[slot * _NF + _RUN]) + 1
            self._put(slot, {_RUN: run, _TRECV: now, _TINPUT: now})
        return run

    def stop_run(self, slot: int) -> None:
        with self._lock:
            self._put(slot, {_RUN: self._f[slot * _NF + _RUN] + 1})

    def set_deadline(self, slot: int, deadline: float) -> None:
        """The wall time the slot's play must end by; the frame loop checks it before every frame."""
        self._write(slot, {_DEADLINE: deadline})

    def shorten_deadline(self, slot: int, deadline: float) -> bool:
        """Move the deadline earlier (never later); whether it moved."""
        with self._lock:
            if deadline < self._f[slot * _NF + _DEADLINE]:
                self._put(slot, {_DEADLINE: deadline})
                return True
        return False

    def set_steps(self, slot: int, steps: int) -> None:
        self._write(slot, {_STEPS: steps})

    def request_rewind(self, slot: int, owner: int, frames: int) -> int:
        """Ask the slot's world to go back to its first ``frames`` frames; the request's version
        (0 if the slot changed hands). The frame loop applies it before its next frame."""
        with self._lock:
            if self._f[slot * _NF + _OWNER] != owner:
                return 0
            version = int(self._f[slot * _NF + _RWVER]) + 1
            self._put(slot, {_RWVER: version, _RWTO: frames})
        return version

    def request_resync(self, slot: int, owner: int) -> bool:
        """Ask the slot's split world to write the true frames into the model's history."""
        with self._lock:
            if self._f[slot * _NF + _OWNER] != owner:
                return False
            self._put(slot, {_SYNCVER: self._f[slot * _NF + _SYNCVER] + 1})
        return True

    def set_prompt(self, slot: int, text: str) -> None:
        data = text.encode("utf-8")[:PROMPT_BYTES]
        base = slot * PROMPT_BYTES
        with self._lock:
            version = self._f[slot * _NF + _PVER] + 1
            self._f[slot * _NF + _VER] += 1
            self._prompts[base:base + len(data)] = data
            self._f[slot * _NF + _PLEN] = len(data)
            self._f[slot * _NF + _PVER] = version
            self._f[slot * _NF + _VER] += 1

    def prompt(self, slot: int) -> tuple[int, str]:
        """``(version, text)`` of the slot's prompt, consistent with each other."""
        while True:
            values = self._read(slot)
            base = slot * PROMPT_BYTES
            data = bytes(self._prompts[base:base + int(values[_PLEN])])
            if self._read(slot)[_PVER] == values[_PVER]:
                return int(values[_PVER]), data.decode("utf-8", errors="ignore")

    def snapshot(self, slot: int) -> SlotSnapshot:
        v = self._read(slot)
        state = ControlState(
            seq=int(v[_SEQ]), keys=int(v[_KEYS]), move_x=v[_MX], move_y=v[_MY], look_x=v[_LX],
            look_y=v[_LY], stick_x=v[_SX], stick_y=v[_SY], ack=int(v[_ACK]), visible=bool(v[_VIS]),
            client_fps=v[_CFPS], client_latency_ms=v[_CLAT])
        return SlotSnapshot(owner=int(v[_OWNER]), run=int(v[_RUN]), state=state, t_recv=v[_TRECV],
                            t_input=v[_TINPUT], prompt_version=int(v[_PVER]), steps=int(v[_STEPS]),
                            deadline=v[_DEADLINE], rewind_version=int(v[_RWVER]), rewind_to=int(v[_RWTO]),
                            resync_version=int(v[_SYNCVER]))


# Allocated at import, before any ZeroGPU fork (see module docstring).
BOARD = ControlBoard()


def _idle_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class Session:
    """Main-process state of one browser session (one page load)."""

    key: str
    slot: int
    owner: int
    client: str = ""                # who opened it (player.guard.client_of); only they may use it
    last_seen: float = field(default_factory=time.monotonic)
    recipe: Any = None              # player.stream.WorldRecipe of the current world, None before Start
    model_label: str = ""
    world_frames: int = 0           # frames generated in the current world
    frames_sent: int = 0            # page-facing frame numbers keep growing across plays (acks)
    recorder: Any = None            # player.recording.Recorder of the current world
    pending_replay: Any = None      # player.recording.Replay waiting for "Run path"
    resume: Any = None              # player.stream.Resume: where the world was when a segment ended
    rewind_seen: int = 0            # the newest rewind request the world has answered
    rewind_pending: tuple[int, int] | None = None   # (version, frames) of a rewind not answered yet
    rewind_limit: int = 0           # frames the world could go back at its newest frame
    run: int = 0                    # run id of the newest play; only that play clears ``running``
    running: bool = False
    segment_idle: threading.Event = field(default_factory=_idle_event, repr=False)   # no segment streaming
    play_started: float = 0.0       # wall time the newest play started (its allowance counts from here)
    busy_turn: bool = False         # the newest play's allowance is the shorter one (people were waiting)
    last_download: float = -math.inf   # monotonic time of the newest recording download


class SessionFull(RuntimeError):
    """Every control slot is taken by a world that is playing right now."""


class SessionRegistry:
    """Maps Gradio session hashes to sessions and control slots; frees idle ones."""

    def __init__(self, board: ControlBoard = BOARD, idle_ttl_s: float = 600.0) -> None:
        self.board = board
        self.idle_ttl_s = idle_ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._release_hooks: list[Callable[[Session], None]] = []

    def on_release(self, hook: Callable[[Session], None]) -> None:
        """Call ``hook(session)`` whenever a session is freed, to drop what it holds elsewhere."""
        self._release_hooks.append(hook)

    def get(self, key: str, client: str = "", per_client: int | None = None) -> Session:
        """The session for ``key``, created (and a slot claimed) on first use.

        A session belongs to the ``client`` that created it. A client holding ``per_client``
        sessions already, or a full board, recycles the least recently used session that is not
        playing (its world is forgotten); ``SessionFull`` only when every candidate is playing.
        """
        self.sweep()
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.client != client:
                raise SessionFull("this session belongs to another page")
            evicted = []
            if session is None:
                mine = [s for s in self._sessions.values() if s.client == client]
                if per_client is not None and len(mine) >= per_client:
                    victim = self._idlest(mine)
                    if victim is None:
                        raise SessionFull(f"you already have {len(mine)} worlds playing; stop one first")
                    evicted.append(self._sessions.pop(victim.key))
                used = {s.slot for s in self._sessions.values()}
                free = next((i for i in range(self.board.n_slots) if i not in used), None)
                if free is None:
                    victim = self._idlest(self._sessions.values())
                    if victim is None:
                        raise SessionFull("the demo is full right now; please try again in a minute")
                    evicted.append(self._sessions.pop(victim.key))
                    free = victim.slot
                for old in evicted:
                    self.board.release(old.slot)
                session = Session(key=key, slot=free, owner=self.board.claim(free), client=client)
                self._sessions[key] = session
            session.last_seen = time.monotonic()
        for old in evicted:     # outside the lock: the hooks close worlds, which waits for a frame
            self._run_hooks(old)
        return session

    @staticmethod
    def _idlest(sessions) -> Session | None:
        idle = [s for s in sessions if not s.running]
        return min(idle, key=lambda s: s.last_seen) if idle else None

    def find(self, key: str, client: str | None = None) -> Session | None:
        """The session for ``key`` if it exists and, with ``client``, belongs to that client (never
        claims a slot); marks it as still in use."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None or (client is not None and session.client != client):
                return None
            session.last_seen = time.monotonic()
            return session

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def free(self, key: str, client: str | None = None) -> None:
        """Forget a session (page closed): stop its frame loop and release its slot. With ``client``,
        only a session of that client."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None or (client is not None and session.client != client):
                return
            del self._sessions[key]
        if session is not None:
            self._release(session)

    def sweep(self) -> None:
        """Free sessions unseen for ``idle_ttl_s`` whose frame loop is not running."""
        now = time.monotonic()
        with self._lock:    # check and remove together, so a session used meanwhile is kept
            stale = [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_ttl_s and not s.running]
            freed = [self._sessions.pop(k) for k in stale]
        for session in freed:
            self._release(session)

    def _release(self, session: Session) -> None:
        self.board.release(session.slot)
        self._run_hooks(session)

    def _run_hooks(self, session: Session) -> None:
        for hook in self._release_hooks:
            hook(session)


# One registry per process: it is the only allocator of BOARD's slots.
REGISTRY = SessionRegistry(BOARD)
