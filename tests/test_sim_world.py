"""Simulator: determinism, control semantics, theme switching and output sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from world_engine.controls import VK, CtrlInput, ctrl_vector
from simulator import EpisodeSpec, Look, World, WorldBatch, rollout
from simulator.constants import (CROUCH_EYE_HEIGHT, DOOR_FRAMES, EYE_HEIGHT, FOV_DEG,
                                        JUMP_FRAMES, JUMP_HEIGHT, N_BUTTONS, SEG_FLOOR, SEG_SKY,
                                        SEG_WALL, SPRINT_FACTOR, SWITCH_FRAMES, WALK_STEP,
                                        YAW_PER_MOUSE_UNIT)
from simulator.maps import map_from_ascii

# A walled yard: nothing animates in it (no props, no creatures, no water).
_ROWS = ["#" * 24] + ["#" + "." * 22 + "#" for _ in range(22)] + ["#" * 24]
_ROWS[12] = "#..P" + "." * 19 + "#"  # spawn at x = 3.5, y = 12.5
YARD = "\n".join(_ROWS)
CORRIDOR = """
#########
#P..D...#
#########
"""

W, A, S, D = VK["W"], VK["A"], VK["S"], VK["D"]


pytestmark = pytest.mark.usefixtures("one_thread")


def yard_world(theme: str = "desert_ruins", yaw: float = 0.0, size=64, **look) -> World:
    spec = EpisodeSpec(0, [(0, Look(theme, **{"torches": False, **look}))], 10 ** 6)
    return World(spec, size=size, aux=True, world_map=map_from_ascii(YARD, yaw=yaw))


def hold(*keys: int, mouse=(0.0, 0.0)) -> CtrlInput:
    return CtrlInput(button=set(keys), mouse=mouse)


def test_same_seed_same_frames_bit_exact():
    def run(seed):
        world = World.from_seed(seed, size=48, aux=True)
        frames = [world.reset()]
        for t in range(12):
            frames.append(world.step(hold(W, D if t % 3 else A, mouse=(3.0 * (t % 4) - 4, 1.0))))
        return frames

    a, b, c = run(11), run(11), run(12)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
        assert np.array_equal(fa.seg, fb.seg) and fa.pose == fb.pose and fa.caption == fb.caption
    assert not np.array_equal(a[-1].rgb, c[-1].rgb)


def test_episode_does_not_depend_on_its_batch():
    specs = [EpisodeSpec.from_seed(s, n_frames=10) for s in (3, 4, 5)]
    together = list(rollout(specs, size=24))
    alone = list(rollout(specs[1:2], size=24))
    for t in range(10):
        assert torch.equal(together[t]["rgb"][1], alone[t]["rgb"][0])
        assert torch.equal(together[t]["ctrl"][1], alone[t]["ctrl"][0])


def test_turning_right_shifts_the_sky_left_by_the_expected_pixels():
    world = yard_world("brick_castle", yaw=0.3)  # clouds: the sky has texture to match
    before = world.reset()
    pixels = 5
    dx = pixels * (FOV_DEG / 64) / math.degrees(YAW_PER_MOUSE_UNIT)
    after = world.step(hold(mouse=(dx, 0.0)))
    assert after.pose[3] == pytest.approx(before.pose[3] + dx * YAW_PER_MOUSE_UNIT, abs=1e-5)
    assert after.pose[:3] == before.pose[:3]
    errors = {}
    for shift in range(-8, 9):
        lo, hi = max(0, -shift), min(64, 64 - shift)
        sky = (before.seg[:, lo + shift:hi + shift] == SEG_SKY) & (after.seg[:, lo:hi] == SEG_SKY)
        diff = np.abs(before.rgb[:, lo + shift:hi + shift].astype(int) - after.rgb[:, lo:hi].astype(int))
        errors[shift] = (diff.sum(-1)[sky] == 0).mean()
    # after[:, c] == before[:, c + 5]: the sky moved 5 pixels left, exactly
    assert errors[pixels] > 0.99 and max(v for k, v in errors.items() if k != pixels) < 0.5


def test_walking_into_a_wall_leaves_the_position_unchanged_and_diagonals_slide():
    world = yard_world(yaw=0.0)
    world.reset()
    xs = [world.step(hold(W)).pose[0] for _ in range(160)]
    assert xs[0] == pytest.approx(3.5 + WALK_STEP)
    stopped = xs[-1]
    assert 22.0 < stopped < 23.0 and xs[-40:] == [stopped] * 40  # the east wall is at x = 23
    frame = world.step(hold(W))
    assert frame.pose[0] == stopped and frame.depth[32, 32] < 1.0 and frame.seg[32, 32] == SEG_WALL
    world.step(hold(mouse=(math.radians(30) / YAW_PER_MOUSE_UNIT, 0.0)))  # face 30 deg right
    slid = world.step(hold(W))
    assert slid.pose[0] == stopped  # blocked along x, sliding along y:
    assert slid.pose[1] - frame.pose[1] == pytest.approx(math.sin(math.radians(30)) * WALK_STEP, abs=1e-5)


def test_idle_keeps_the_frame_static_except_animations():
    world = yard_world("hedge_garden", yaw=1.0)
    first = world.reset()
    for _ in range(20):
        frame = world.step(None)
        assert frame.pose == first.pose and np.array_equal(frame.rgb, first.rgb)
    walked = world.step(hold(W))
    assert (walked.rgb != first.rgb).any(-1).mean() > 0.3

    # A generated world animates water, creatures and flames, but only a few pixels of them.
    world = World.from_seed(5, theme="lava_temple", torches=False, layout="caves", size=48)
    frames = [world.step(None) for _ in range(10)]
    changed = np.mean([(a.rgb != b.rgb).any(-1).mean() for a, b in zip(frames, frames[1:])])
    assert frames[0].pose == frames[-1].pose and changed < 0.1


def test_jump_crouch_and_sprint():
    world = yard_world(yaw=math.pi / 2)
    world.reset()
    zs = [world.step(hold(VK["SPACE"]) if t == 0 else None).pose[2] for t in range(JUMP_FRAMES + 2)]
    assert zs[JUMP_FRAMES // 2 - 1] == pytest.approx(EYE_HEIGHT + JUMP_HEIGHT)
    assert all(z > EYE_HEIGHT for z in zs[:JUMP_FRAMES - 1]) and zs[JUMP_FRAMES - 1] == EYE_HEIGHT
    y0 = world.pose[1]
    crouched = world.step(hold(W, VK["CTRL"]))
    assert crouched.pose[2] == pytest.approx(CROUCH_EYE_HEIGHT)
    assert crouched.pose[1] - y0 == pytest.approx(0.5 * WALK_STEP, abs=1e-5)
    sprint = world.step(hold(W, VK["SHIFT"]))
    assert sprint.pose[1] - crouched.pose[1] == pytest.approx(SPRINT_FACTOR * WALK_STEP, abs=1e-5)
    assert sprint.pose[2] == EYE_HEIGHT


def test_mouse_dy_looks_down_and_arrows_alias_wasd():
    world = yard_world(yaw=0.0)
    level = world.reset()
    down = world.step(hold(mouse=(0.0, 20.0)))
    assert down.pose[4] < 0  # pitch < 0: looking down, so more floor and less sky
    assert (down.seg == SEG_FLOOR).sum() > (level.seg == SEG_FLOOR).sum() + 64 * 5
    assert (down.seg == SEG_SKY).sum() < (level.seg == SEG_SKY).sum()
    up = world.step(hold(VK["UP"]))
    assert up.pose[0] == pytest.approx(down.pose[0] + WALK_STEP)
    turned = world.step(hold(VK["RIGHT"]))
    assert turned.pose[3] > up.pose[3]


def test_e_opens_a_door_that_blocks_until_open():
    spec = EpisodeSpec(0, [(0, Look("scifi_station"))], 10 ** 6)
    world = World(spec, size=32, aux=True, world_map=map_from_ascii(CORRIDOR))
    world.reset()
    for _ in range(30):
        shut = world.step(hold(W))
    assert shut.pose[0] < 4.0 - 0.19  # the door cell starts at x = 4
    opening = world.step(hold(VK["E"]))
    for _ in range(DOOR_FRAMES):
        opened = world.step(None)
    assert opened.depth[16, 16] > shut.depth[16, 16] + 2 and opening.depth[16, 16] < opened.depth[16, 16]
    for _ in range(25):
        through = world.step(hold(W))
    assert through.pose[0] > 5.0


def test_theme_switch_cross_fades_and_changes_the_caption():
    first = Look("ice_cave", layout="maze")
    second = first.with_theme("lava_temple")
    spec = EpisodeSpec(21, [(0, first), (6, second)], 40)
    steps = list(rollout([spec], torch.zeros(1, 40, 259), size=32))
    captions = [s["caption"][0] for s in steps]
    assert captions[5] == spec.caption(0) and captions[6] == spec.caption(1) != captions[5]
    assert [int(s["theme"][0]) for s in steps][5:7] == [first.theme_index, second.theme_index]
    pure_old = list(rollout([EpisodeSpec(21, [(0, first)], 40)], torch.zeros(1, 40, 259), size=32))
    pure_new = list(rollout([EpisodeSpec(21, [(0, second)], 40)], torch.zeros(1, 40, 259), size=32))
    done = 6 + SWITCH_FRAMES
    assert torch.equal(steps[5]["rgb"], pure_old[5]["rgb"])
    assert torch.equal(steps[done]["rgb"], pure_new[done]["rgb"])
    middle = steps[6 + SWITCH_FRAMES // 2]["rgb"]
    assert not torch.equal(middle, pure_old[6 + SWITCH_FRAMES // 2]["rgb"])
    assert not torch.equal(middle, pure_new[6 + SWITCH_FRAMES // 2]["rgb"])


def test_world_set_theme_changes_caption_at_once():
    world = World.from_seed(4, theme="brick_castle", size=32)
    world.reset()
    world.step(None)
    old_caption = world.caption
    world.set_theme("neon_city", time_of_day="night")
    frame = world.step(None)
    assert frame.theme == "neon_city" and frame.caption != old_caption
    assert world.look.time_of_day == "night"


@pytest.mark.parametrize("size,ss", [((48, 80), 2), (128, 1), (20, 3)])
def test_any_size_renders(size, ss):
    world = World.from_seed(9, size=size, ss=ss, aux=True)
    frame = world.step(hold(W))
    h, w = (size, size) if isinstance(size, int) else size
    assert frame.rgb.shape == (h, w, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth.shape == (h, w) and frame.seg.shape == (h, w)
    assert frame.rgb.std() > 5


def test_batched_controls_match_the_engine_vector():
    ctrl = CtrlInput(button={W, VK["SHIFT"]}, mouse=(2.0, -1.0), scroll_wheel=3)
    vec = ctrl_vector(ctrl, N_BUTTONS)
    spec = EpisodeSpec.from_seed(8)
    single = World(spec, size=24)
    single.reset()
    a = single.step(ctrl)
    batch = WorldBatch([spec], size=24)
    b = batch.step(vec[None])
    assert np.array_equal(a.rgb, b.rgb[0].numpy())
