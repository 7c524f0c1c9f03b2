"""Control slots in shared memory and the frame loop's mechanics (pacing, backpressure,
superseding, re-priming), with a stand-in world so these run in milliseconds."""

from __future__ import annotations

import dataclasses
import io
import multiprocessing as mp
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from player.controls import BIT, ControlState
from player.recording import Recorder
from player.sessions import ControlBoard, SessionFull, SessionRegistry
from player.stream import (EncodedFrame, Notice, ResidentWorld, ResidentWorlds, Resume, Rewound, SegmentArgs,
                           WorldRecipe, encode_jpeg, in_flight_window, run_segment)
from world_engine import VK, ControlConvention, InteractiveWorld


@dataclass(frozen=True)
class StandInSnapshot:
    ctrls: tuple
    prompt: str | None

    def portable(self) -> "StandInSnapshot":
        return self


class StandInWorld:
    """Records what the loop asks of a world; frames are flat colours (cheap to encode), numbered
    by how many frames the world has made, so a rewind shows."""

    def __init__(self, prompts: bool = True, images: bool = True) -> None:
        self.convention = ControlConvention(n_buttons=256, mouse_units_per_pixel=0.3, mouse_cap=24.0,
                                            prompted=prompts, takes_images=images)
        self.steps = 0
        self.appended: list = []
        self.ctrls: list = []
        self.prompts: list[str] = []
        self.restored: list = []
        self.kept = 10 ** 6
        self.closed = False

    def set_prompt(self, text: str) -> None:
        self.prompts.append(text)

    def set_steps(self, steps: int) -> None:
        self.steps = steps

    def append_frame(self, img, ctrl=None) -> None:
        self.appended.append((img.shape, ctrl))

    def next_frame(self, ctrl=None):
        self.ctrls.append(ctrl)
        return np.full((8, 8, 3), len(self.ctrls) % 256, np.uint8)

    def reset(self, seed=None) -> None:
        self.ctrls.clear()

    def keep_history(self, frames: int) -> None:
        self.kept = frames

    @property
    def rewind_limit(self) -> int:
        return min(len(self.ctrls), self.kept - 1)

    def snapshot(self, frames_back: int = 0) -> StandInSnapshot:
        return StandInSnapshot(tuple(self.ctrls[:len(self.ctrls) - frames_back]),
                               self.prompts[-1] if self.prompts else None)

    def restore(self, snapshot: StandInSnapshot) -> None:
        self.restored.append(snapshot)
        self.ctrls[:] = snapshot.ctrls

    def close(self) -> None:
        self.closed = True


def _setup(board: ControlBoard, slot: int = 0, **kw):
    owner = board.claim(slot)
    board.write_state(slot, owner, ControlState(seq=1))
    run = board.start_run(slot)
    args = SegmentArgs(key="s", slot=slot, owner=owner, run=run, recipe=WorldRecipe(1, "m", 0), frames_done=0,
                       first_n=0, fps=1000.0, **kw)
    return owner, run, args


def _take(gen, n):
    return [next(gen) for _ in range(n)]


def test_newer_control_state_wins_and_stale_ones_are_dropped():
    board = ControlBoard(2)
    owner = board.claim(0)
    assert board.write_state(0, owner, ControlState(seq=5, keys=BIT["w"]))
    assert not board.write_state(0, owner, ControlState(seq=4, keys=BIT["s"]))   # arrived late
    assert board.snapshot(0).state.keys == BIT["w"]


def test_a_released_slot_ignores_its_old_owner():
    board = ControlBoard(2)
    owner = board.claim(0)
    board.release(0)
    assert not board.write_state(0, owner, ControlState(seq=1))


def test_prompt_round_trips_through_shared_memory():
    board = ControlBoard(2)
    board.set_prompt(1, "a frozen cavern \u2744")
    version, text = board.prompt(1)
    assert (version, text) == (1, "a frozen cavern \u2744")


def _read_in_child(board: ControlBoard, out) -> None:
    out.put(board.snapshot(0).state.keys)


def test_a_forked_process_sees_controls_written_after_the_fork():
    board = ControlBoard(2)
    owner = board.claim(0)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    started = ctx.Event()

    def child() -> None:
        started.set()
        while board.snapshot(0).state.seq < 2:
            time.sleep(0.001)
        _read_in_child(board, out)

    proc = ctx.Process(target=child)
    proc.start()
    started.wait(10)
    board.write_state(0, owner, ControlState(seq=2, keys=BIT["d"]))
    assert out.get(timeout=10) == BIT["d"]
    proc.join(10)


def test_registry_gives_each_session_its_own_slot_and_refuses_only_when_every_slot_plays():
    registry = SessionRegistry(ControlBoard(2))
    a, b = registry.get("a"), registry.get("b")
    assert a.slot != b.slot and registry.get("a") is a
    a.running = b.running = True
    with pytest.raises(SessionFull):
        registry.get("c")
    registry.free("a")
    assert registry.get("c").slot == a.slot


def test_a_full_registry_recycles_the_idlest_session_that_is_not_playing():
    registry = SessionRegistry(ControlBoard(2))
    released = []
    registry.on_release(released.append)
    old, playing = registry.get("old"), registry.get("playing")
    old.last_seen -= 100
    playing.last_seen -= 200
    playing.running = True
    new = registry.get("new")
    assert released == [old] and registry.find("old") is None and new.slot == old.slot
    assert registry.board.snapshot(new.slot).owner == new.owner != old.owner


def test_a_session_belongs_to_the_client_that_opened_it():
    registry = SessionRegistry(ControlBoard(4))
    mine = registry.get("s", client="203.0.113.1")
    assert registry.find("s", "203.0.113.1") is mine and registry.find("s", "198.51.100.2") is None
    with pytest.raises(SessionFull):
        registry.get("s", client="198.51.100.2")
    registry.free("s", client="198.51.100.2")         # someone else's unload frees nothing
    assert registry.find("s") is mine


def test_one_client_recycles_its_own_oldest_idle_session_past_its_share():
    registry = SessionRegistry(ControlBoard(8))
    first = registry.get("1", client="c", per_client=2)
    first.last_seen -= 10
    registry.get("2", client="c", per_client=2)
    registry.get("other", client="d", per_client=2)
    registry.get("3", client="c", per_client=2)
    assert registry.find("1") is None and {s.key for s in registry.sessions()} == {"2", "3", "other"}
    for s in registry.sessions():
        s.running = True
    with pytest.raises(SessionFull, match="playing"):
        registry.get("4", client="c", per_client=2)


def test_concurrent_plays_of_one_slot_get_distinct_run_ids():
    board = ControlBoard(1)
    board.claim(0)
    runs: list[int] = []

    def start_many() -> None:
        for _ in range(5000):
            runs.append(board.start_run(0))

    threads = [threading.Thread(target=start_many) for _ in range(8)]
    sys.setswitchinterval(1e-6)     # switch threads as often as possible to expose a lost update
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(0.005)
    assert len(set(runs)) == 40_000 and board.snapshot(0).run == 40_000


def test_sweep_frees_idle_sessions_and_runs_the_release_hooks():
    registry = SessionRegistry(ControlBoard(2), idle_ttl_s=60)
    released = []
    registry.on_release(released.append)
    idle, busy = registry.get("idle"), registry.get("busy")
    idle.last_seen -= 120
    busy.last_seen -= 120
    busy.running = True
    registry.sweep()
    assert released == [idle] and registry.find("idle") is None and registry.find("busy") is busy
    assert registry.board.snapshot(idle.slot).owner == 0


def test_each_frame_uses_the_newest_control_state():
    board = ControlBoard(1)
    owner, run, args = _setup(board)
    world = StandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    first = next(gen)
    board.write_state(0, owner, ControlState(seq=2, keys=BIT["w"], look_x=0))
    second = next(gen)
    assert isinstance(first, EncodedFrame) and first.ctrl[0] == ()
    assert second.ctrl[0] == (VK["W"],) and second.seq == 2


def test_pausing_ends_the_loop_at_the_next_frame():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld())
    next(gen)
    board.stop_run(0)
    assert [type(item) for item in gen] == [Resume]         # no more frames: where the world is, and done


def test_unacknowledged_frames_hold_the_loop_back():
    board = ControlBoard(1)
    owner, _, args = _setup(board)
    board.write_state(0, owner, ControlState(seq=2, ack=0))     # the page drew frame 0, then nothing
    frames: list = []
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld())
    worker = threading.Thread(target=lambda: frames.extend(gen), daemon=True)
    worker.start()
    limit = in_flight_window(args.fps) + 1    # frames 0..window are in flight, then it waits
    deadline = time.monotonic() + 20
    while len(frames) < limit and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.join(0.3)
    assert len(frames) == limit
    board.write_state(0, owner, ControlState(seq=3, ack=limit - 1))
    while len(frames) == limit and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(frames) > limit
    board.stop_run(0)
    worker.join(5)


def test_a_hidden_tab_pauses_generation():
    board = ControlBoard(1)
    owner, _, args = _setup(board)
    board.write_state(0, owner, ControlState(seq=2, visible=False))
    frames: list = []
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld())
    worker = threading.Thread(target=lambda: frames.extend(gen), daemon=True)
    worker.start()
    worker.join(0.5)
    assert frames == []
    board.stop_run(0)
    worker.join(5)


def _ending(gen, timeout: float = 10.0):
    """Run a segment in a thread; returns what it yielded once it ended by itself, before the
    snapshot it hands back last."""
    items: list = []
    worker = threading.Thread(target=lambda: items.extend(gen), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the segment did not end by itself"
    assert isinstance(items[-1], Resume)
    return items[:-1]


def test_a_stream_nobody_acknowledges_ends_after_the_ack_timeout():
    board = ControlBoard(1)
    _, _, args = _setup(board, ack_timeout_s=0.3)        # no ack ever arrives
    started = time.monotonic()
    items = _ending(run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld()))
    frames = [i for i in items if isinstance(i, EncodedFrame)]
    assert len(frames) == in_flight_window(args.fps) and items[-1].kind == "gone"
    assert time.monotonic() - started < 5


def test_a_frozen_ack_ends_play_even_while_control_messages_keep_coming():
    board = ControlBoard(1)
    owner, _, args = _setup(board, ack_timeout_s=0.3)
    stop = threading.Event()

    def frozen() -> None:
        seq = 2
        while not stop.wait(0.02):
            board.write_state(0, owner, ControlState(seq=seq, ack=0))
            seq += 1
    threading.Thread(target=frozen, daemon=True).start()
    try:
        items = _ending(run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld()))
    finally:
        stop.set()
    assert items[-1].kind == "gone"


def test_a_hidden_tab_ends_play_after_the_hidden_timeout():
    board = ControlBoard(1)
    owner, _, args = _setup(board, hidden_timeout_s=0.3)
    board.write_state(0, owner, ControlState(seq=2, visible=False))
    items = _ending(run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld()))
    assert [i.kind for i in items] == ["hidden"]


@pytest.mark.parametrize("script", [(), (BIT["w"],) * 10_000, ((((), 1.0, 0.0)),) * 10_000])
def test_the_deadline_ends_live_scripted_and_replayed_play_alike(script):
    board = ControlBoard(1)
    owner, _, args = _setup(board, script=script)
    board.set_deadline(0, time.time() + 0.2)
    stop = threading.Event()

    def ack() -> None:       # an attentive page, so only the deadline can end it
        seq = 2
        while not stop.wait(0.005):
            board.write_state(0, owner, ControlState(seq=seq, ack=10**6))
            seq += 1
    threading.Thread(target=ack, daemon=True).start()
    try:
        items = _ending(run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld()))
    finally:
        stop.set()
    assert items[-1].kind == "time" and sum(isinstance(i, EncodedFrame) for i in items) > 0


def test_replayed_controls_pass_the_gate_live_ones_do():
    board = ControlBoard(1)
    _, _, args = _setup(board, script=(((87, 300), 500.0, -1e6), ((), 3.0, 0.0)))
    world = StandInWorld()
    world.convention = ControlConvention(n_buttons=256, mouse_units_per_pixel=0.3, mouse_cap=24.0,
                                         prompted=True, takes_images=True)
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    _take(gen, 2)
    assert world.ctrls[0].mouse == (24.0, -24.0) and world.ctrls[0].button == {87}    # clamped, known keys only
    assert world.ctrls[1].mouse == (3.0, 0.0)


def test_a_scripted_path_drives_the_first_frames_then_live_input_takes_over():
    board = ControlBoard(1)
    owner, _, args = _setup(board, script=(BIT["w"], BIT["left"]))
    board.write_state(0, owner, ControlState(seq=2, keys=BIT["s"]))
    frames = _take(run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld()), 3)
    assert [f.ctrl[0] for f in frames] == [(VK["W"],), (), (VK["S"],)]
    assert frames[1].ctrl[1] < 0 and [f.scripted for f in frames] == [True, True, False]


def test_prompt_changes_apply_to_the_next_frame_without_a_reset():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    board.set_prompt(0, "a dungeon")
    world = StandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    assert next(gen).prompt == "a dungeon"
    board.set_prompt(0, "an ice cave")
    assert next(gen).prompt == "an ice cave"
    assert world.prompts == ["a dungeon", "an ice cave"] and world.appended == []


def test_a_rejected_prompt_is_reported_and_the_world_keeps_going():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    world = StandInWorld()

    def refuse(text: str) -> None:
        raise ValueError("prompt is too long")

    world.set_prompt = refuse
    board.set_prompt(0, "x")
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    first, second = next(gen), next(gen)
    assert isinstance(first, Notice) and "too long" in first.message and isinstance(second, EncodedFrame)


def test_a_rejected_prompt_from_a_replayed_log_is_reported():
    board = ControlBoard(1)
    _, _, args = _setup(board, script=(BIT["w"],), script_events=((0, "prompt", "x"),))
    world = StandInWorld()

    def refuse(text: str) -> None:
        raise ValueError("prompt is too long")

    world.set_prompt = refuse
    first, second = _take(run_segment(args, board, ResidentWorlds(4), lambda recipe: world), 2)
    assert isinstance(first, Notice) and "too long" in first.message and isinstance(second, EncodedFrame)


def test_a_fresh_worker_restores_the_world_from_the_snapshot_its_last_segment_handed_back():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    first = StandInWorld()
    items = list(run_segment(SegmentArgs(**{**args.__dict__, "max_seconds": 0.0}), board, ResidentWorlds(4),
                             lambda recipe: first))
    resume = items[-1]
    assert isinstance(resume, Resume) and resume.frames_done == 1 and resume.world_id == 1
    again = SegmentArgs(**{**args.__dict__, "frames_done": 1, "first_n": 1, "resume": resume})
    fresh = StandInWorld()
    frame = next(run_segment(again, board, ResidentWorlds(4), lambda recipe: fresh))
    assert fresh.restored == [resume.snapshot] and fresh.appended == []     # latents, not JPEGs
    assert isinstance(frame, EncodedFrame) and frame.n == 1


def test_a_world_restored_to_an_older_point_than_the_main_process_knows_says_where_it_is():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    resume = Resume(1, 3, StandInSnapshot((None,) * 3, None))
    args = SegmentArgs(**{**args.__dict__, "frames_done": 9, "first_n": 9, "resume": resume})
    first = next(run_segment(args, board, ResidentWorlds(4), lambda recipe: StandInWorld()))
    assert first == Rewound(3, 0)


def test_a_rewind_request_takes_the_world_back_before_its_next_frame():
    board = ControlBoard(1)
    owner, _, args = _setup(board)
    world = StandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    frames = [item for item in _take(gen, 10) if isinstance(item, EncodedFrame)]
    assert frames[-1].back == 10
    version = board.request_rewind(0, owner, 4)
    rewound, frame = next(gen), next(gen)
    assert rewound == Rewound(4, version) and len(world.ctrls) == 5 and frame.back == 5
    assert board.request_rewind(0, owner + 1, 0) == 0          # someone else's slot: refused


def test_a_rewind_goes_back_only_as_far_as_the_kept_history_reaches():
    board = ControlBoard(1)
    owner, _, args = _setup(board, keep_frames=4)
    world = StandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    _take(gen, 10)
    board.request_rewind(0, owner, 0)
    assert next(gen).frames_done == 7


def test_a_resync_request_reaches_a_split_world_and_others_are_told_it_needs_one():
    board = ControlBoard(1)
    owner, _, args = _setup(board)
    plain = StandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: plain)
    next(gen)
    board.request_resync(0, owner)
    notice = next(gen)
    assert isinstance(notice, Notice) and not notice.ends_play and "beside reality" in notice.message
    assert not next(gen).resynced
    synced = []
    split = StandInWorld()
    split.resync = lambda: synced.append(len(split.ctrls))
    gen = run_segment(SegmentArgs(**{**args.__dict__, "key": "t"}), board, ResidentWorlds(4), lambda recipe: split)
    next(gen)
    board.request_resync(0, owner)
    assert next(gen).resynced and synced == [1]


def test_the_same_worker_continues_its_world_without_re_priming():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    worlds, built = ResidentWorlds(4), []

    def open_world(recipe):
        built.append(recipe)
        return StandInWorld()

    gen = run_segment(args, board, worlds, open_world)
    _take(gen, 3)
    gen.close()
    args2 = SegmentArgs(**{**args.__dict__, "frames_done": 3, "first_n": 3})
    assert next(run_segment(args2, board, worlds, open_world)).n == 3
    assert len(built) == 1


def test_changing_the_steps_applies_to_the_next_frame_of_the_same_world():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    world = StandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    assert next(gen).steps == 0
    board.set_steps(0, 4)
    assert next(gen).steps == 4 and world.steps == 4
    board.set_steps(0, 0)
    assert next(gen).steps == 0 and world.steps == 0


def test_the_stand_in_world_is_what_the_loop_is_written_against():
    assert isinstance(StandInWorld(), InteractiveWorld)


def test_a_world_that_takes_no_prompts_is_never_sent_one():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    board.set_prompt(0, "a dungeon")
    world = StandInWorld(prompts=False)
    frame = next(run_segment(args, board, ResidentWorlds(4), lambda recipe: world))
    assert world.prompts == [] and frame.prompt == ""


def test_a_world_that_cannot_start_from_a_picture_says_so_once():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    png = encode_jpeg(np.zeros((8, 8, 3), np.uint8), 90)
    args = SegmentArgs(**{**args.__dict__, "recipe": WorldRecipe(1, "m", 0, start_image=png)})
    worlds = ResidentWorlds(4)
    gen = run_segment(args, board, worlds, lambda recipe: StandInWorld(images=False))
    first, second = next(gen), next(gen)
    assert isinstance(first, Notice) and not first.ends_play and "picture" in first.message
    assert isinstance(second, EncodedFrame)
    gen.close()
    again = SegmentArgs(**{**args.__dict__, "frames_done": 1, "first_n": 1,
                           "resume": Resume(1, 1, StandInSnapshot((None,), None))})
    assert isinstance(next(run_segment(again, board, ResidentWorlds(4), lambda recipe: StandInWorld(images=False))),
                      EncodedFrame)      # restored mid-world: no second warning


def test_dropping_a_world_closes_it_and_ends_its_loop():
    board = ControlBoard(1)
    _, _, args = _setup(board)
    worlds, world = ResidentWorlds(4), StandInWorld()
    gen = run_segment(args, board, worlds, lambda recipe: world)
    next(gen)
    worlds.drop("s")
    assert world.closed and "s" not in worlds
    assert list(gen) == []


def test_a_world_pushed_out_of_the_cache_is_closed():
    worlds = ResidentWorlds(1)
    first, second = StandInWorld(), StandInWorld()
    worlds.put("a", ResidentWorld(first, 1, 0, -1, "", 0, 0))
    worlds.put("b", ResidentWorld(second, 2, 0, -1, "", 0, 0))
    assert first.closed and not second.closed and "b" in worlds and "a" not in worlds


class PendingOnDevice:
    """A frame still "on the device": its pixels come when the loop's helper thread asks."""

    asynchronous = True

    def __init__(self, img: np.ndarray) -> None:
        self.img = img

    def result(self) -> np.ndarray:
        return self.img


class DeviceStandInWorld(StandInWorld):
    """A stand-in world on a GPU: ``next_frame_async`` hands back frames still being downloaded."""

    def next_frame_async(self, ctrl=None) -> PendingOnDevice:
        return PendingOnDevice(StandInWorld.next_frame(self, ctrl))


def _frame_value(frame: EncodedFrame) -> int:
    return int(np.asarray(Image.open(io.BytesIO(frame.jpeg)))[0, 0, 0])


def test_a_frame_on_the_device_is_encoded_while_the_next_one_is_made_and_sent_right_after():
    board = ControlBoard(1)
    args = dataclasses.replace(_setup(board)[2], fps=1e6)     # every frame is due at once
    world = DeviceStandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    made_when_sent = []
    frames = []
    for _ in range(5):
        frames.append(next(gen))
        made_when_sent.append(len(world.ctrls))
    board.stop_run(0)
    list(gen)
    # frame k goes out once frame k + 1 is queued: its download and encode overlapped that frame
    assert made_when_sent == [2, 3, 4, 5, 6]
    assert [f.n for f in frames] == [0, 1, 2, 3, 4]
    assert [_frame_value(f) for f in frames] == [1, 2, 3, 4, 5]   # each frame's own pixels
    host_board = ControlBoard(1)
    same = run_segment(_setup(host_board)[2], host_board, ResidentWorlds(4), lambda recipe: StandInWorld())
    assert frames[0].jpeg == next(same).jpeg    # encoded as a frame on the host is


def test_a_frame_on_the_device_is_not_held_back_while_the_loop_waits_for_the_next_frame_time():
    board = ControlBoard(1)
    args = dataclasses.replace(_setup(board)[2], fps=4.0)     # 250 ms between frames
    world = DeviceStandInWorld()
    gen = run_segment(args, board, ResidentWorlds(4), lambda recipe: world)
    start = time.monotonic()
    first = next(gen)
    assert isinstance(first, EncodedFrame) and len(world.ctrls) == 1 and time.monotonic() - start < 0.2
    board.stop_run(0)
    list(gen)


def test_large_frames_stream_with_subsampled_chroma_and_small_ones_keep_it():
    rng = np.random.default_rng(0)
    small, large = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (360, 640)))
    assert Image.open(io.BytesIO(encode_jpeg(small))).layer[0][1:3] == (1, 1)    # 4:4:4: full chroma
    assert Image.open(io.BytesIO(encode_jpeg(large))).layer[0][1:3] == (2, 2)    # 4:2:0
    assert len(encode_jpeg(large)) < len(encode_jpeg(large, 90))


def _frame(i: int, prompt: str) -> EncodedFrame:
    return EncodedFrame(n=i, seq=0, jpeg=bytes([i]), width=1, height=1, ctrl=((), 0.0, 0.0), keys=0, gen_ms=0.0,
                        prompt=prompt, steps=0, scripted=False)


def test_a_rewound_recording_forgets_the_frames_and_events_after_the_point():
    recorder = Recorder(recipe=WorldRecipe(1, "m", 0), prompt="a cave", steps=0, fps=20)
    for i in range(6):
        recorder.add(_frame(i, "a cave" if i < 3 else "a castle"))
    assert recorder.events == [[3, "prompt", "a castle"]]
    recorder.truncate(3)
    assert recorder.frames == len(recorder.ctrls) == len(recorder.video) == 3 and recorder.events == []
    assert recorder.jpeg(2) == bytes([2]) and recorder.jpeg(3) is None and recorder.jpeg(-1) is None
    recorder.add(_frame(3, "a cave"))                 # the prompt in force went back with the frames
    assert recorder.events == [] and not recorder.truncated
