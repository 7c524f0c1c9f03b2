"""Sessions batched on one device: ``gen_frames`` steps several sessions of one engine in one forward
per pass, and ``SessionBatcher`` gathers the ``next_frame`` calls of sessions on their own threads.

A session makes the frames it would make alone: the same noise, history and controls, and the same
arithmetic per row (a matrix product over more rows may round its last bit differently, so latents
agree to 1e-5, not bit for bit)."""

from __future__ import annotations

import threading

import pytest
import torch

from world_engine import CtrlInput, WorldEngine, gen_frames
from world_engine.controls import VK

ATOL = 1e-5
CONTROLS = [CtrlInput(mouse=(8.0, 0.0)), CtrlInput(button={VK["W"]}, mouse=(-3.5, 1.0)), CtrlInput()]


@pytest.fixture(scope="module")
def engine() -> WorldEngine:
    return WorldEngine(None, device="cpu", seed=0)


def pair(engine: WorldEngine, seeds=(1, 2)) -> list[WorldEngine]:
    return [engine.fork(seed=s) for s in seeds]


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_a_session_makes_the_same_frames_alone_or_batched(one_thread, guidance):
    engine = WorldEngine(None, device="cpu", seed=0, overrides={"ctrl_guidance": guidance})
    batched, alone = pair(engine), pair(engine)
    for i in range(6):
        ctrls = [CONTROLS[i % 3], CONTROLS[(i + 1) % 3]]
        got = gen_frames(batched, ctrls, return_img=False)
        want = [s.gen_frame(c, return_img=False) for s, c in zip(alone, ctrls)]
        for g, w in zip(got, want):
            assert torch.allclose(g, w, atol=ATOL), (g - w).abs().max()


def test_batched_sessions_keep_their_own_history_prompt_and_time(engine, one_thread):
    """Sessions at different frame indices (different ring slots and RoPE times) and prompts."""
    batched, alone = pair(engine, (3, 4)), pair(engine, (3, 4))
    for group in (batched, alone):
        group[0].set_prompt("a snowy castle")
        group[1].set_prompt("a desert at noon")
        for _ in range(11):                      # the first session is 11 frames ahead: its rings wrapped
            group[0].gen_frame(CONTROLS[0], return_img=False)
    for i in range(4):
        got = gen_frames(batched, [CONTROLS[i % 3], CONTROLS[2]], return_img=False)
        want = [alone[0].gen_frame(CONTROLS[i % 3], return_img=False), alone[1].gen_frame(CONTROLS[2], return_img=False)]
        for g, w in zip(got, want):
            assert torch.allclose(g, w, atol=ATOL), (g - w).abs().max()
    assert [s.frame_index for s in batched] == [15, 4]


def test_batched_frames_are_pictures_and_enter_the_kept_history(engine, one_thread):
    sessions = pair(engine)
    frames = gen_frames(sessions, CONTROLS[:2])
    assert all(f.dtype == torch.uint8 and tuple(f.shape) == (64, 64, 3) for f in frames)
    snap = sessions[0].snapshot()
    after = sessions[0].gen_frame(CONTROLS[0], return_img=False)
    sessions[0].restore(snap)   # re-primed alone: the cache is the batched one up to rounding
    again = sessions[0].gen_frame(CONTROLS[0], return_img=False)
    assert torch.allclose(after, again, atol=ATOL), (after - again).abs().max()


def test_gen_frames_refuses_what_it_cannot_batch(engine, one_thread):
    a, b = pair(engine)
    other = WorldEngine(None, device="cpu", seed=0)
    with pytest.raises(ValueError, match="forks of one engine"):
        gen_frames([a, other], CONTROLS[:2])
    with pytest.raises(ValueError, match="only one frame per batch"):
        gen_frames([a, a], CONTROLS[:2])
    with pytest.raises(ValueError, match="one control per session"):
        gen_frames([a, b], CONTROLS[:1])
    b.set_steps(a.n_steps + 1)
    with pytest.raises(ValueError, match="one sampling schedule"):
        gen_frames([a, b], CONTROLS[:2])
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        gen_frames([a, b], CONTROLS[:2])
    assert a.frame_index == 0      # nothing was made for anyone


def play(session: WorldEngine, ctrls: list[CtrlInput], out: list, start: threading.Barrier) -> None:
    start.wait()
    for c in ctrls:
        try:
            out.append(session.next_frame(c))
        except Exception as exc:   # recorded for the assertion
            out.append(exc)


def test_the_batcher_makes_concurrent_visitors_frames_together(one_thread):
    engine = WorldEngine(None, device="cpu", seed=0)
    alone = pair(engine)
    want = [[s.gen_frame(c) for c in CONTROLS * 3] for s in alone]
    batcher = engine.batch_sessions(max_batch=2, gather_s=0.5)
    sessions, outs, start = pair(engine), ([], []), threading.Barrier(2)
    threads = [threading.Thread(target=play, args=(s, CONTROLS * 3, out, start)) for s, out in zip(sessions, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert batcher.stats.get(2, 0) >= 14, batcher.stats         # nearly every frame was made in a pair
    for out, ref in zip(outs, want):
        assert len(out) == 9
        for got, w in zip(out, ref):   # uint8 pictures: at most one level apart from the lone session's
            assert (torch.from_numpy(got).int() - w.int()).abs().max() <= 1


def test_one_visitors_bad_input_fails_only_their_own_frame(one_thread):
    engine = WorldEngine(None, device="cpu", seed=0)
    engine.batch_sessions(max_batch=2, gather_s=0.5)
    good, bad = pair(engine)
    outs, start = ([], []), threading.Barrier(2)
    broken = CtrlInput(mouse=(float("nan"), 0.0))
    threads = [threading.Thread(target=play, args=(good, CONTROLS[:2], outs[0], start)),
               threading.Thread(target=play, args=(bad, [broken, CONTROLS[0]], outs[1], start))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(getattr(f, "shape", None) == (64, 64, 3) for f in outs[0]), outs[0]
    assert isinstance(outs[1][0], ValueError) and outs[1][1].shape == (64, 64, 3)
    assert good.frame_index == 2 and bad.frame_index == 1


def test_a_lone_visitor_is_not_held_up_by_one_who_left(one_thread):
    """The leader waits only for sessions that asked within the last second, and only gather_s."""
    import time

    engine = WorldEngine(None, device="cpu", seed=0)
    engine.batch_sessions(max_batch=2, gather_s=0.3)
    a, b = pair(engine)
    a.next_frame(CONTROLS[0])
    b.next_frame(CONTROLS[0])
    time.sleep(1.1)                         # b has gone quiet
    t0 = time.perf_counter()
    for _ in range(3):
        a.next_frame(CONTROLS[0])
    assert time.perf_counter() - t0 < 0.3 * 3   # no 0.3 s gather wait per frame for b


def test_on_a_gpu_thread_sessions_gather_on_their_own_threads_and_the_batch_runs_on_the_engine_thread(one_thread):
    """The local-CUDA arrangement (player.engine_thread), on the CPU: each session's calls go to one
    engine thread, except its frames, which the batcher gathers on the session's own thread before
    sending the one batched forward there (a leader waiting on the engine thread would wait for
    requests queued behind it)."""
    from player.engine_thread import EngineThread

    engine = WorldEngine(None, device="cpu", seed=0)
    alone = pair(engine)
    want = [[s.gen_frame(c) for c in CONTROLS * 3] for s in alone]
    thread = EngineThread("gpu-owner")
    ran_on = set()

    def run_on(fn, *args):
        return thread.call(lambda: (ran_on.add(threading.current_thread().name), fn(*args))[1])

    batcher = engine.batch_sessions(max_batch=2, gather_s=0.5, run_on=run_on)
    sessions = [thread.world(thread.call(engine.fork, s)) for s in (1, 2)]
    outs, start = ([], []), threading.Barrier(2)
    threads = [threading.Thread(target=play, args=(s, CONTROLS * 3, out, start)) for s, out in zip(sessions, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert batcher.stats.get(2, 0) >= 14, batcher.stats
    assert ran_on == {"gpu-owner_0"}
    for out, ref in zip(outs, want):
        assert len(out) == 9
        for got, w in zip(out, ref):
            assert (torch.from_numpy(got).int() - w.int()).abs().max() <= 1
