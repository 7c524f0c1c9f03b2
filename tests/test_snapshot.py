"""Snapshots and restores: a world goes back to a point of its kept history and, under the same
noise and controls, makes bit-identical frames again. On the embedded model (prompted, 6 layers,
48 frames of receptive field) and on a small random checkpoint (dilated global window, value
residual, gated attention); on the simulator; and on the model beside the simulator."""

from __future__ import annotations

import pickle
import statistics
import time

import numpy as np
import pytest
import torch

from player.reality import RESYNC_FRAMES, DreamBesideReality, RealityWorld, RealitySnapshot
from world_engine import VK, CtrlInput, InteractiveWorld, WorldEngine, WorldSnapshot
from world_engine.engine import RNG_CHECKPOINT_DRAWS


def ctrls(n: int, offset: int = 0) -> list[CtrlInput]:
    """Varied controls: walking, turning both ways, standing still."""
    return [CtrlInput(button={VK["W"]} if (i + offset) % 3 else set(), mouse=(float((i + offset) % 5) - 2.0, 0.5))
            for i in range(n)]


def latents(engine: WorldEngine, controls: list[CtrlInput]) -> list[torch.Tensor]:
    return [engine.gen_frame(c, return_img=False) for c in controls]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def embedded() -> WorldEngine:
    return WorldEngine(device="cpu", seed=0)


@pytest.fixture(scope="module")
def small(latent_checkpoint) -> WorldEngine:
    return WorldEngine(latent_checkpoint, device="cpu", seed=0)


@pytest.fixture(params=["embedded", "small"])
def engine(request, embedded, small, one_thread) -> WorldEngine:
    """A fresh session of either model; more frames than its receptive field come first."""
    source = embedded if request.param == "embedded" else small
    session = source.fork(seed=11)
    if session.config.prompt_conditioning is not None:
        session.set_prompt("a frozen ice cave")
    return session


def test_restoring_a_snapshot_makes_the_same_frames_again_under_the_same_noise(engine):
    latents(engine, ctrls(engine.receptive_frames + RNG_CHECKPOINT_DRAWS // 2))
    snap = engine.snapshot()
    assert snap.exact and snap.prime == engine.receptive_frames
    after = latents(engine, ctrls(6, 1))
    engine.restore(snap)
    assert engine.frame_index == snap.frame_index
    assert same(latents(engine, ctrls(6, 1)), after)


def test_restore_goes_back_to_an_older_point_exactly(engine):
    played = ctrls(engine.receptive_frames + 20)
    latents(engine, played)
    back = 12
    engine.restore(engine.snapshot(back))
    assert engine.frame_index == len(played) - back
    again = latents(engine, ctrls(5, 7))
    fresh = engine.fork(seed=11)           # the same seed and controls up to that point, never rewound
    if fresh.config.prompt_conditioning is not None:
        fresh.set_prompt("a frozen ice cave")
    latents(fresh, played[:-back])
    assert same(latents(fresh, ctrls(5, 7)), again)


def test_a_rewound_session_can_rewind_again_into_the_frames_before_the_first_rewind(engine):
    latents(engine, ctrls(engine.receptive_frames + 10))
    engine.restore(engine.snapshot(5))
    limit = engine.rewind_limit
    latents(engine, ctrls(3))
    assert engine.rewind_limit == limit + 3
    snap = engine.snapshot(engine.rewind_limit)
    assert snap.frame_index == engine.frame_index - engine.rewind_limit


def test_a_prompt_changed_after_the_snapshot_is_undone_by_the_restore(embedded, one_thread):
    session = embedded.fork(seed=5)
    session.set_prompt("a frozen ice cave")
    latents(session, ctrls(10))
    snap = session.snapshot()
    after = latents(session, ctrls(4))
    session.set_prompt("a volcanic lava temple")
    latents(session, ctrls(3))
    session.restore(snap)
    assert session.prompt == "a frozen ice cave"
    assert same(latents(session, ctrls(4)), after)


def test_a_portable_snapshot_restores_exactly_in_another_session(engine):
    latents(engine, ctrls(engine.receptive_frames + 5))
    carried = pickle.loads(pickle.dumps(engine.snapshot().portable()))
    assert len(carried.frames) == carried.prime and carried.prompt_ctx is None
    after = latents(engine, ctrls(4, 2))
    elsewhere = engine.fork(seed=999)      # the snapshot brings its own noise state
    elsewhere.restore(carried)
    assert same(latents(elsewhere, ctrls(4, 2)), after)


def test_the_kept_history_is_a_bounded_ring(small, one_thread):
    session = small.fork(seed=1)
    session.keep_history(10)
    latents(session, ctrls(3 * RNG_CHECKPOINT_DRAWS))
    snap = session.snapshot()
    assert session.rewind_limit == 9 and len(snap.frames) == 10
    latent_bytes = session.config.latent_shape[0] * session.config.latent_shape[1] * session.config.latent_shape[2] * 4
    assert sum(f.latent.nbytes for f in snap.frames) == 10 * latent_bytes
    assert len({id(f.rng) for f in snap.frames}) <= 2     # one generator state per RNG_CHECKPOINT_DRAWS frames
    with pytest.raises(ValueError, match="0 to 9"):
        session.snapshot(10)
    session.keep_history(4)
    assert session.rewind_limit == 3


def test_snapshot_bookkeeping_costs_well_under_a_millisecond_per_frame(small, one_thread):
    session = small.fork(seed=2)
    latents(session, ctrls(4))
    x = torch.zeros((1, 1, *session.config.latent_shape))
    ctrl = CtrlInput(button={VK["W"]}, mouse=(1.0, 0.0))
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        session._keep(x, ctrl, drew=True)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.2e-3


@pytest.mark.parametrize("frames_back", [-1, True, 2.0, "1", 10 ** 6])
def test_a_bad_frames_back_is_refused_clearly(small, frames_back):
    session = small.fork(seed=3)
    latents(session, ctrls(3))
    with pytest.raises(ValueError, match="frames_back must be a whole number from 0 to 2"):
        session.snapshot(frames_back)


def test_a_snapshot_of_something_else_is_refused_clearly(embedded, small):
    mine, theirs = small.fork(seed=3), embedded.fork(seed=3)
    latents(theirs, ctrls(2))
    with pytest.raises(ValueError, match="another model"):
        mine.restore(theirs.snapshot())
    with pytest.raises(ValueError, match="expected a WorldSnapshot"):
        mine.restore({"frames": []})
    with pytest.raises(ValueError, match="whole number >= 1"):
        mine.keep_history(0)
    mine.close()
    with pytest.raises(RuntimeError, match="closed"):
        mine.snapshot()


def test_a_snapshot_before_the_first_frame_restores_an_empty_session(small):
    session = small.fork(seed=4)
    empty = session.snapshot()
    first = latents(session, ctrls(3))
    session.restore(empty)
    assert session.frame_index == 0 and session.rewind_limit == 0
    assert same(latents(session, ctrls(3)), first)


def test_the_engine_is_a_world_with_snapshots(small):
    assert isinstance(small.fork(), InteractiveWorld)
    assert isinstance(small.fork().snapshot(), WorldSnapshot)


# ---- the simulator ----------------------------------------------------------------------------
@pytest.fixture()
def reality(one_thread) -> RealityWorld:
    world = RealityWorld(seed=7)
    world.set_prompt("an ice cave")
    return world


def test_the_simulator_rewinds_to_the_same_frames(reality):
    played = ctrls(20)
    frames = [reality.next_frame(c) for c in played]
    reality.restore(reality.snapshot(6))
    assert all(np.array_equal(reality.next_frame(c), f) for c, f in zip(played[-6:], frames[-6:]))


def test_a_simulator_rewound_past_a_prompt_change_resets_to_the_look_in_force_there(reality):
    [reality.next_frame(c) for c in ctrls(6)]
    reality.set_prompt("a volcanic lava temple in the rain")
    [reality.next_frame(c) for c in ctrls(6)]
    reality.restore(reality.snapshot(8))          # back before the lava temple
    assert reality.snapshot().prompt == "an ice cave"
    reality.reset()
    reality.next_frame(None)
    assert reality.world.state().look.theme == "ice_cave"


def test_a_portable_simulator_snapshot_rebuilds_its_own_map_elsewhere(reality):
    [reality.next_frame(c) for c in ctrls(8)]
    carried = pickle.loads(pickle.dumps(reality.snapshot().portable()))
    assert isinstance(carried, RealitySnapshot) and len(carried.frames) == 1
    after = [reality.next_frame(c) for c in ctrls(4, 3)]
    elsewhere = RealityWorld(seed=123)
    elsewhere.set_prompt("a volcanic lava temple in the rain")   # another map and look until restored
    elsewhere.restore(carried)
    assert all(np.array_equal(elsewhere.next_frame(c), f) for c, f in zip(ctrls(4, 3), after))
    assert elsewhere.snapshot().prompt == "an ice cave"


def test_the_simulator_refuses_what_it_cannot_restore(reality):
    with pytest.raises(ValueError, match="expected a RealitySnapshot"):
        reality.restore("yesterday")
    with pytest.raises(ValueError, match="frames_back"):
        reality.snapshot(1)


# ---- the model beside the simulator --------------------------------------------------------------
class Spy:
    """Wraps a world and records the controls it is given."""

    def __init__(self, world) -> None:
        self.world, self.got = world, []

    def next_frame(self, ctrl=None):
        self.got.append(ctrl)
        return self.world.next_frame(ctrl)

    def __getattr__(self, name):
        return getattr(self.world, name)


@pytest.fixture()
def split(embedded, one_thread) -> DreamBesideReality:
    pair = DreamBesideReality(Spy(embedded.fork(seed=3)), Spy(RealityWorld(seed=3)))
    pair.set_prompt("a stone dungeon")
    return pair


def test_dream_and_reality_get_exactly_the_same_controls(split):
    played = ctrls(5)
    frames = [split.next_frame(c) for c in played]
    assert split.dream.got == played and all(a is b for a, b in zip(split.dream.got, split.reality.got))
    assert frames[0].shape == (64, 128, 3) and np.isfinite(split.psnr) and 5 < split.psnr < 60


def test_the_dream_starts_from_the_simulators_spawn_view(split):
    split.next_frame(CtrlInput())
    first = split.dream.snapshot().frames[0]
    spawn = RealityWorld(seed=3)
    spawn.set_prompt("a stone dungeon")
    assert torch.equal(first.latent, split.dream.autoencoder.encode(spawn.view()))


def test_resync_writes_the_true_frames_into_the_dreams_history(split):
    played = ctrls(RESYNC_FRAMES + 4)
    truths = [split.next_frame(c)[:, 64:] for c in played]
    index = split.dream.frame_index
    split.resync()
    kept = split.dream.snapshot().frames[-RESYNC_FRAMES:]
    assert split.dream.frame_index == index                  # written in place of the dreamt frames
    for frame, truth, ctrl in zip(kept, truths[-RESYNC_FRAMES:], played[-RESYNC_FRAMES:]):
        assert torch.equal(frame.latent, split.dream.autoencoder.encode(truth))
        assert frame.ctrl == ctrl


def test_a_split_world_rewinds_both_halves_together(split):
    played = ctrls(12)
    frames = [split.next_frame(c) for c in played]
    split.restore(pickle.loads(pickle.dumps(split.snapshot(4).portable())))
    assert all(np.array_equal(split.next_frame(c), f) for c, f in zip(played[-4:], frames[-4:]))
