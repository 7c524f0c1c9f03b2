"""The control protocol: page state validation, the per-frame mapping, scripted camera paths."""

from __future__ import annotations

import dataclasses

import pytest

from player.controls import (BIT, JS_KEYMAP, LOOK_RATE_PIXELS, MAX_SCRIPT_FRAMES, ControlMapper, ControlState,
                             parse_script, parse_state)
from player.reality import Reality
from world_engine import VK, ControlConvention, WorldConfig
from world_engine.engine import EMBEDDED_MODEL

# The embedded model's and the simulator's convention: 0.3 units per pointer pixel, flicks capped at 24.
SIM_UNITS = ControlConvention(n_buttons=256, mouse_units_per_pixel=0.3, mouse_cap=24.0, prompted=True,
                              takes_images=False)
RAW_PIXELS = ControlConvention(n_buttons=256, mouse_units_per_pixel=1.0, mouse_cap=None, prompted=True,
                               takes_images=True)


def mapper(n_buttons: int = 256, convention: ControlConvention = SIM_UNITS) -> ControlMapper:
    return ControlMapper(dataclasses.replace(convention, n_buttons=n_buttons))


def test_page_state_parses_short_field_names():
    state = parse_state({"seq": 3, "keys": BIT["w"] | BIT["space"], "mx": 0.5, "lx": 12, "ly": -4,
                         "ack": 7, "vis": True, "fps": 19.5, "lat": 40})
    assert (state.seq, state.keys, state.move_x, state.look_x, state.look_y, state.ack) == \
        (3, BIT["w"] | BIT["space"], 0.5, 12.0, -4.0, 7)


@pytest.mark.parametrize("data, words", [
    ({"seq": 1, "lx": float("nan")}, "look delta x must be a finite number"),
    ({"seq": 1, "ly": float("inf")}, "look delta y must be a finite number"),
    ({"seq": 1, "mx": "left"}, "move stick x must be a number"),
    ({"seq": 1, "keys": 1 << 20}, "unknown keys"),
    ({"seq": "x"}, "seq must be an integer"),
    ({"seq": 10**400}, "seq must be between 0 and 2\\*\\*53"),
    ({"seq": -1}, "seq must be between 0"),
    ({"seq": 1, "ack": 10**400}, "acknowledged frame must be between -1 and 2\\*\\*53"),
    ("keys", "must be an object"),
])
def test_bad_page_state_is_rejected_with_a_reason(data, words):
    with pytest.raises(ValueError, match=words):
        parse_state(data)


def test_stick_values_are_clamped_to_unit_range():
    assert parse_state({"seq": 1, "mx": 5, "sy": -9}).move_x == 1.0
    assert parse_state({"seq": 1, "mx": 5, "sy": -9}).stick_y == -1.0


def test_keymap_for_the_page_covers_wasd_arrows_and_modifiers():
    for code in ("KeyW", "KeyA", "KeyS", "KeyD", "Space", "ShiftLeft", "ControlLeft", "KeyE", "ArrowLeft",
                 "ArrowUp"):
        assert code in JS_KEYMAP


def test_held_keys_become_virtual_key_buttons():
    ctrl = mapper().frame(ControlState(keys=BIT["w"] | BIT["shift"] | BIT["e"]))
    assert ctrl.button == {VK["W"], VK["SHIFT"], VK["E"]}


def test_buttons_the_model_does_not_know_are_left_out():
    ctrl = mapper(70).frame(ControlState(keys=BIT["w"] | BIT["e"] | BIT["space"]))
    assert ctrl.button == {VK["E"], VK["SPACE"]}


def test_each_frame_gets_the_look_movement_since_the_previous_frame():
    m = mapper()
    assert m.frame(ControlState(look_x=100, look_y=50)).mouse == (0.0, 0.0)   # baseline
    assert m.frame(ControlState(look_x=130, look_y=40)).mouse == (30 * 0.3, -10 * 0.3)
    assert m.frame(ControlState(look_x=130, look_y=40)).mouse == (0.0, 0.0)


def test_move_stick_presses_wasd_past_the_threshold():
    m = mapper()
    assert m.frame(ControlState(move_x=-0.8, move_y=-0.9)).button == {VK["A"], VK["W"]}
    assert m.frame(ControlState(move_x=0.1, move_y=0.2)).button == set()


def test_look_stick_and_arrows_turn_8_simulator_units_per_frame_at_full_deflection():
    m = mapper()
    assert m.frame(ControlState(stick_x=0.5)).mouse == (4.0, 0.0)
    assert m.frame(ControlState(keys=BIT["left"] | BIT["down"])).mouse == (-8.0, 8.0)


def test_scripted_frames_ignore_live_input_but_keep_the_look_baseline():
    m = mapper()
    m.frame(ControlState(look_x=0))
    scripted = m.frame(ControlState(keys=BIT["a"], look_x=500), script_keys=BIT["w"])
    assert scripted.button == {VK["W"]} and scripted.mouse == (0.0, 0.0)
    assert m.frame(ControlState(look_x=510)).mouse == (10 * 0.3, 0.0)


def test_flicks_are_clamped_to_what_the_model_was_trained_on():
    m = mapper()
    m.frame(ControlState())
    assert m.frame(ControlState(look_x=1e6, look_y=-1e6)).mouse == (24.0, -24.0)


def test_a_raw_pixel_model_gets_pointer_pixels_unclamped():
    m = mapper(convention=RAW_PIXELS)
    m.frame(ControlState())
    assert m.frame(ControlState(look_x=300, look_y=-40)).mouse == (300.0, -40.0)
    assert m.frame(ControlState(look_x=300, look_y=-40, stick_x=1.0)).mouse == (LOOK_RATE_PIXELS, 0.0)


def test_the_simulator_reads_the_pointer_as_the_embedded_model_was_trained_to():
    embedded = WorldConfig.from_yaml(EMBEDDED_MODEL / "config.yaml")
    reality = Reality().fork(seed=0).convention
    assert (reality.mouse_units_per_pixel, reality.mouse_cap, reality.n_buttons) == \
        (embedded.mouse_units_per_pixel, embedded.mouse_cap, embedded.n_buttons) == (0.3, 24.0, 256)


def test_script_expands_repeats_and_chords():
    frames = parse_script("w*3, a+left*2,\nidle, jump")
    assert frames == [BIT["w"]] * 3 + [BIT["a"] | BIT["left"]] * 2 + [0, BIT["space"]]


@pytest.mark.parametrize("text, words", [
    ("w*8, fly*2", "unknown key 'fly' in script item 2"),
    ("w**2", "is not like 'w\\*8'"),
    ("w*0", "repeat count must be"),
    ("w*1000," * 25, "longer than"),
    ("w," * 3000, "too long"),
])
def test_bad_scripts_name_the_problem(text, words):
    with pytest.raises(ValueError, match=words):
        parse_script(text)


def test_script_length_limit_is_in_frames():
    assert len(parse_script(",".join(["w*1000"] * (MAX_SCRIPT_FRAMES // 1000)))) == MAX_SCRIPT_FRAMES


def test_one_gate_for_every_frame_clamps_and_refuses_what_float32_cannot_hold():
    from world_engine.controls import CtrlInput

    gate = mapper(n_buttons=128)
    assert gate.checked(CtrlInput(button={87, 200}, mouse=(1e30, -500))).mouse == (24.0, -24.0)
    assert gate.checked(CtrlInput(button={87, 200})).button == {87}          # ids the model lacks drop out
    with pytest.raises(ValueError, match="float32"):
        gate.checked(CtrlInput(mouse=(1e39, 0.0)))
    raw = mapper(convention=RAW_PIXELS)                                      # no cap: still float32-finite
    assert raw.checked(CtrlInput(mouse=(1e30, 0.0))).mouse == (1e30, 0.0)
    with pytest.raises(ValueError, match="float32"):
        raw.checked(CtrlInput(mouse=(-3.5e38, 0.0)))


def test_the_simulator_source_states_its_convention_without_opening_a_world():
    assert Reality().convention == Reality().fork(seed=0).convention
