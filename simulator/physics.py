"""Player physics for B worlds at once: controls in, new camera pose and door states out.

One call is one frame: turning, then doors (E), then walking with collisions that slide along
walls (each axis is tried separately, a blocked axis does not move at all), then jump and crouch.
Everything is float32/bool tensor arithmetic on the worlds' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .constants import (ARROW_TURN, CROUCH_EYE_HEIGHT, CROUCH_FACTOR, DOOR_FRAMES, EYE_HEIGHT,
                        JUMP_FRAMES, JUMP_HEIGHT, KEY_ARROW_DOWN, KEY_ARROW_LEFT, KEY_ARROW_RIGHT,
                        KEY_ARROW_UP, KEY_BACK, KEY_CROUCH, KEY_FORWARD, KEY_JUMP, KEY_LEFT,
                        KEY_RIGHT, KEY_SPRINT, KEY_USE, MAP_SIZE, MAX_PITCH, PITCH_PER_MOUSE_UNIT,
                        PLAYER_RADIUS, SPRINT_FACTOR, USE_REACH, WALK_STEP, YAW_PER_MOUSE_UNIT)
from .maps import DOOR, EMPTY


@dataclass
class State:
    """The dynamic part of B worlds (tensors [B] unless noted)."""

    x: torch.Tensor  # float32, cells
    y: torch.Tensor
    yaw: torch.Tensor  # float32, radians in [-pi, pi)
    pitch: torch.Tensor  # float32, radians, > 0 looks up
    jump: torch.Tensor  # int64, frames into the current jump (0 = on the ground)
    crouch: torch.Tensor  # bool
    use_held: torch.Tensor  # bool, E was held last frame (E acts on the press only)
    door_open: torch.Tensor  # float32 [B, MM], 0 shut .. 1 open
    door_target: torch.Tensor  # bool [B, MM], where each door is heading

    @property
    def z(self) -> torch.Tensor:
        """Eye height: standing or crouched, plus the jump arc."""
        eye = torch.where(self.crouch, CROUCH_EYE_HEIGHT, EYE_HEIGHT)
        return eye + JUMP_HEIGHT * torch.sin(self.jump.float() * (math.pi / JUMP_FRAMES))

    def pose(self) -> torch.Tensor:
        """float32 [B, 5]: x, y, z, yaw, pitch."""
        return torch.stack((self.x, self.y, self.z, self.yaw, self.pitch), -1)


def initial_state(spawn: torch.Tensor, n_cells: int) -> State:
    """Standing at ``spawn`` (float32 [B, 3]: x, y, yaw), level gaze, all doors shut."""
    b, dev = spawn.shape[0], spawn.device
    zeros = torch.zeros(b, device=dev)
    yaw = torch.remainder(spawn[:, 2] + math.pi, 2 * math.pi) - math.pi
    return State(spawn[:, 0].clone(), spawn[:, 1].clone(), yaw, zeros.clone(),
                 torch.zeros(b, dtype=torch.int64, device=dev),
                 torch.zeros(b, dtype=torch.bool, device=dev),
                 torch.zeros(b, dtype=torch.bool, device=dev),
                 torch.zeros(b, n_cells, device=dev), torch.zeros(b, n_cells, dtype=torch.bool, device=dev))


def solid_cells(cells: torch.Tensor, door_open: torch.Tensor) -> torch.Tensor:
    """bool [B, MM]: cells the player cannot enter (walls, and doors not fully open)."""
    return (cells != EMPTY) & ~((cells == DOOR) & (door_open >= 1.0))


def cell_at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Flat cell index (int64) of positions, clamped into the map."""
    cx = x.clamp(0, MAP_SIZE - 1).long()  # clamped first, truncation is floor
    cy = y.clamp(0, MAP_SIZE - 1).long()
    return cy * MAP_SIZE + cx


def _blocked(solid: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """True where a player of PLAYER_RADIUS centred at (x, y) would overlap a solid cell."""
    r = PLAYER_RADIUS
    corners = torch.stack([cell_at(x + sx, y + sy) for sx in (-r, r) for sy in (-r, r)], 1)
    return solid.gather(1, corners).any(1)


def step(state: State, cells: torch.Tensor, ctrl: torch.Tensor) -> State:
    """Advance B worlds by one frame under controls ``ctrl`` (float32 [B, 259], engine layout)."""

    def key(vk: int) -> torch.Tensor:  # held buttons are 1.0 in the control vector
        return ctrl[:, 2 + vk] > 0.5

    turn = ctrl[:, 0] * YAW_PER_MOUSE_UNIT + ARROW_TURN * (
        key(KEY_ARROW_RIGHT).float() - key(KEY_ARROW_LEFT).float())
    yaw = state.yaw + turn
    wrap = (yaw >= math.pi) | (yaw < -math.pi)  # only touch yaw when it leaves [-pi, pi)
    yaw = torch.where(wrap, torch.remainder(yaw + math.pi, 2 * math.pi) - math.pi, yaw)
    pitch = (state.pitch - ctrl[:, 1] * PITCH_PER_MOUSE_UNIT).clamp(-MAX_PITCH, MAX_PITCH)

    # E: toggle the first door within reach straight ahead (not shut on the player).
    use = key(KEY_USE)
    door_target = state.door_target
    pressed = use & ~state.use_held
    if bool(pressed.any()):
        dx, dy = torch.cos(yaw), torch.sin(yaw)
        reach = torch.tensor([0.5, 1.0, USE_REACH], device=ctrl.device)
        probes = cell_at(state.x[:, None] + dx[:, None] * reach, state.y[:, None] + dy[:, None] * reach)
        codes = cells.gather(1, probes)
        first = (codes != EMPTY).float().argmax(1, keepdim=True)  # first non-empty probe
        target_cell = probes.gather(1, first)[:, 0]
        is_door = codes.gather(1, first)[:, 0] == DOOR
        cx = (target_cell % MAP_SIZE).float() + 0.5
        cy = (target_cell // MAP_SIZE).float() + 0.5
        inside = ((state.x - cx).abs() < 0.5 + PLAYER_RADIUS) & ((state.y - cy).abs() < 0.5 + PLAYER_RADIUS)
        current = door_target.gather(1, target_cell[:, None])[:, 0]
        toggle = pressed & is_door & ~(current & inside)
        door_target = door_target.clone()
        door_target.scatter_(1, target_cell[:, None], (current ^ toggle)[:, None])
    door_open = (state.door_open + torch.where(door_target, 1.0, -1.0) / DOOR_FRAMES).clamp(0.0, 1.0)

    # Walking: WASD (arrows UP/DOWN alias W/S), Shift sprints, Ctrl crouches.
    forward = (key(KEY_FORWARD) | key(KEY_ARROW_UP)).float() - (key(KEY_BACK) | key(KEY_ARROW_DOWN)).float()
    strafe = key(KEY_RIGHT).float() - key(KEY_LEFT).float()
    crouch = key(KEY_CROUCH)
    speed = WALK_STEP * torch.where(key(KEY_SPRINT), SPRINT_FACTOR, 1.0)
    speed = speed * torch.where(crouch, CROUCH_FACTOR, 1.0)
    speed = speed * torch.where((forward != 0) & (strafe != 0), math.sqrt(0.5), 1.0)
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    vx = (forward * cos - strafe * sin) * speed
    vy = (forward * sin + strafe * cos) * speed
    solid = solid_cells(cells, door_open)
    nx = state.x + vx
    x = torch.where(_blocked(solid, nx, state.y), state.x, nx)
    ny = state.y + vy
    y = torch.where(_blocked(solid, x, ny), state.y, ny)

    # Space starts an arc of JUMP_FRAMES frames from the ground.
    airborne = state.jump > 0
    jump = torch.where(airborne, state.jump + 1, key(KEY_JUMP).long())
    jump = torch.where(jump >= JUMP_FRAMES, 0, jump)
    return replace(state, x=x, y=y, yaw=yaw, pitch=pitch, jump=jump, crouch=crouch, use_held=use,
                   door_open=door_open, door_target=door_target)
