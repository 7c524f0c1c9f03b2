"""The data-collection agent: a semi-Markov mixture of behaviours, batched over B worlds.

Each world runs one behaviour (mode) for a random number of frames, then draws the next. Spells are
short (4-12 frames on average) so that the past does not predict the next action: a model trained
on these episodes must read the controls to know what comes next. The mixture covers what a player
does in the app: exploring with a wandering turn, walking while turning at a steady rate, turning
in place at the rates the arrow keys, the look stick and the mouse produce (fractional deltas from
0.3 to the cap), looking around with flicks, strafing, standing idle (so a model learns that nothing
moves without input), random button mashing, deliberate wall bumps (blocked moves), jumps and
crouches, and E at doors. All randomness is the counter-based hash of (episode seed, frame,
stream), so an episode's actions depend only on its seed, not on its batch.
"""

from __future__ import annotations

import torch

from . import rng
from .constants import (CTRL_DIM, KEY_ARROW_DOWN, KEY_ARROW_LEFT, KEY_ARROW_RIGHT, KEY_ARROW_UP,
                        KEY_BACK, KEY_CROUCH, KEY_FORWARD, KEY_JUMP, KEY_LEFT, KEY_RIGHT,
                        KEY_SPRINT, KEY_USE, MOUSE_CAP, N_BUTTONS, PITCH_PER_MOUSE_UNIT)
from .maps import DOOR
from .physics import State, cell_at, solid_cells

MODES = ("explore", "strafe", "look", "idle", "random", "bump", "jumpy", "turn", "walk_turn")
TIME_SHARE = (0.18, 0.10, 0.10, 0.11, 0.07, 0.04, 0.06, 0.20, 0.14)  # fraction of frames in each mode
MEAN_FRAMES = (12.0, 6.0, 8.0, 8.0, 4.0, 8.0, 8.0, 7.0, 8.0)  # mean duration of one spell of a mode
EXPLORE, STRAFE, LOOK, IDLE, RANDOM, BUMP, JUMPY, TURN, WALK_TURN = range(len(MODES))
# Steady turn rates (mouse units per frame) of the turn modes: the arrow keys and a full look-stick
# deflection give 8 (the player's LOOK_RATE); the mouse and a partial stick anything up to the cap.
ARROW_RATE = 8.0
TURN_RATE_RANGE = (0.5, MOUSE_CAP)  # log-uniform draw of the other turn rates
WALK_TURN_RATE_RANGE = (0.5, 12.0)
_RANDOM_KEYS = (KEY_FORWARD, KEY_LEFT, KEY_BACK, KEY_RIGHT, KEY_SPRINT, KEY_JUMP, KEY_CROUCH,
                KEY_USE)
_ARROWS = (KEY_ARROW_LEFT, KEY_ARROW_UP, KEY_ARROW_RIGHT, KEY_ARROW_DOWN)
# Entering a mode with probability share / mean makes its share of frames match TIME_SHARE.
_entry = torch.tensor([s / m for s, m in zip(TIME_SHARE, MEAN_FRAMES)], dtype=torch.float64)
_ENTRY_CDF = (torch.cumsum(_entry, 0) / _entry.sum()).float()
_N_UNIFORM, _N_NORMAL = 40, 4  # random draws per world and frame
_STREAMS = 100  # first hash stream of the policy (the world's animations use streams below it)


class Policy:
    """Closed-loop scripted agent: ``act(state, cells) -> ctrl [B, 259]`` once per frame."""

    def __init__(self, seeds: torch.Tensor) -> None:
        """``seeds``: int64 [B] folded episode seeds (``rng.fold_seed``)."""
        self.seed = seeds.clone()
        dev = seeds.device
        b = len(seeds)
        self.t = torch.zeros(b, dtype=torch.int64, device=dev)
        self.mode = torch.zeros(b, dtype=torch.int64, device=dev)
        self.left = torch.zeros(b, dtype=torch.int64, device=dev)
        self.turn = torch.zeros(b, device=dev)  # OU mouse velocity, mouse units per frame
        self.nod = torch.zeros(b, device=dev)
        self.side = torch.ones(b, device=dev)  # +1 right, -1 left: turning and strafing side
        self.rate = torch.zeros(b, device=dev)  # steady turn rate of the turn modes (unsigned)
        self.flag = torch.zeros(b, dtype=torch.bool, device=dev)  # sprint / walk back / crouch
        self.u = self.n = torch.empty(0)  # this frame's random draws (see _draw)

    def reset(self, slots: torch.Tensor, seeds: torch.Tensor) -> None:
        """Start fresh episodes in ``slots`` with ``seeds``."""
        self.seed[slots] = seeds
        for name in ("t", "mode", "left", "turn", "nod", "flag", "rate"):
            getattr(self, name)[slots] = 0
        self.side[slots] = 1.0

    def _draw(self) -> None:
        """All of this frame's random numbers in one hash call: uniforms ``u[:, k]`` and, by
        Box-Muller from two more columns each, standard normals ``n[:, k]``."""
        streams = _STREAMS + torch.arange(_N_UNIFORM + 2 * _N_NORMAL, device=self.seed.device)
        u = rng.uniform(self.seed[:, None], self.t[:, None], streams[None])
        self.u = u[:, :_N_UNIFORM]
        a, c = u[:, _N_UNIFORM::2].clamp_min(1e-7), u[:, _N_UNIFORM + 1::2]
        self.n = torch.sqrt(-2.0 * torch.log(a)) * torch.cos(6.283185307179586 * c)

    def _u(self, k: int) -> torch.Tensor:
        return self.u[:, k]

    def _turn_rate(self) -> torch.Tensor:
        """A new spell's steady turn rate: the arrow-key rate 40% of the time, else log-uniform."""
        lo, hi = TURN_RATE_RANGE
        log_uniform = lo * (hi / lo) ** self._u(5)
        return torch.where(self._u(6) < 0.4, torch.full_like(log_uniform, ARROW_RATE), log_uniform)

    def _probe(self, solid: torch.Tensor, s: State, angle: torch.Tensor, reach: float) -> torch.Tensor:
        """True where the cell ``reach`` cells away in direction ``s.yaw + angle`` is solid."""
        a = s.yaw + angle
        cell = cell_at(s.x + reach * torch.cos(a), s.y + reach * torch.sin(a))
        return solid.gather(1, cell[:, None])[:, 0]

    def act(self, s: State, cells: torch.Tensor) -> torch.Tensor:
        """The controls for the next frame of every world, float32 [B, 259] (engine layout)."""
        dev = self.seed.device
        b = len(self.seed)
        self._draw()
        # a new spell: draw mode, duration and side
        new = self.left <= 0
        mode = torch.searchsorted(_ENTRY_CDF.to(dev), self._u(1).contiguous()).clamp_(max=len(MODES) - 1)
        mean = torch.tensor(MEAN_FRAMES, device=dev)[mode]
        length = 1 + (torch.log1p(-self._u(2)) / torch.log1p(-1.0 / mean)).long()  # geometric
        self.mode = torch.where(new, mode, self.mode)
        self.left = torch.where(new, length, self.left) - 1
        self.side = torch.where(new, torch.where(self._u(3) < 0.5, -1.0, 1.0), self.side)
        self.flag = torch.where(new, self._u(4) < 0.3, self.flag)
        self.rate = torch.where(new, self._turn_rate(), self.rate)
        m = self.mode

        def is_(mode_index: int) -> torch.Tensor:
            return m == mode_index

        # surroundings: a wall ahead, which side is open, a shut door within reach
        solid = solid_cells(cells, s.door_open)
        zero = torch.zeros(b, device=dev)
        blocked = self._probe(solid, s, zero, 0.45) | self._probe(solid, s, zero, 0.9)
        open_r = ~self._probe(solid, s, zero + 1.0, 1.0)
        open_l = ~self._probe(solid, s, zero - 1.0, 1.0)
        away = torch.where(open_r & ~open_l, 1.0, torch.where(open_l & ~open_r, -1.0, self.side))
        ahead = cell_at(s.x + 0.9 * torch.cos(s.yaw), s.y + 0.9 * torch.sin(s.yaw))[:, None]
        door_shut = (cells.gather(1, ahead)[:, 0] == DOOR) & ~s.door_target.gather(1, ahead)[:, 0]

        # mouse: an Ornstein-Uhlenbeck turn rate per mode, flicks, and recentring the pitch
        sigma = torch.tensor([2.5, 0.6, 6.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0], device=dev)[m]
        self.turn = torch.where(new, zero, 0.85 * self.turn) + sigma * self.n[:, 0]
        self.nod = 0.8 * self.nod + 0.8 * self.n[:, 1]
        dx = self.turn.clone()
        steady = is_(TURN) | is_(WALK_TURN)
        rate = torch.where(is_(WALK_TURN), self.rate.clamp(max=WALK_TURN_RATE_RANGE[1]), self.rate)
        dx = torch.where(steady, self.side * rate * (1 + 0.1 * self.n[:, 2]), dx)
        dx = torch.where((is_(EXPLORE) | is_(WALK_TURN)) & blocked, 10.0 * away, dx)
        flick = is_(LOOK) & (self._u(7) < 0.15)
        dx = torch.where(flick, (self._u(8) * 2 - 1) * MOUSE_CAP, dx)
        recentre = 0.25 * s.pitch / PITCH_PER_MOUSE_UNIT  # looking up (pitch > 0): dy > 0 lowers it
        dy = torch.where(is_(LOOK), self.nod, recentre)
        u9 = self._u(9)
        wild_dx = torch.where(u9 < 0.4, zero, torch.where(u9 < 0.85, 3.0 * self.n[:, 2],
                                                        (self._u(11) * 2 - 1) * MOUSE_CAP))
        dx = torch.where(is_(RANDOM), wild_dx, dx)
        dy = torch.where(is_(RANDOM), torch.where(self._u(12) < 0.7, zero, 2.0 * self.n[:, 3]), dy)
        quiet = is_(IDLE) | is_(BUMP)
        dx = torch.where(quiet, zero, dx).clamp(-MOUSE_CAP, MOUSE_CAP)
        dy = torch.where(is_(IDLE) | is_(TURN), zero, dy).clamp(-MOUSE_CAP, MOUSE_CAP)

        # keys
        keys = torch.zeros(b, N_BUTTONS, dtype=torch.bool, device=dev)

        def press(vk: int, on: torch.Tensor) -> None:
            keys[:, vk] |= on

        press(KEY_FORWARD, is_(EXPLORE) | is_(BUMP) | is_(JUMPY) | is_(WALK_TURN))
        press(KEY_SPRINT, is_(EXPLORE) & self.flag)
        press(KEY_USE, (is_(EXPLORE) | is_(WALK_TURN)) & door_shut & (self.t % 2 == 0))
        hop = self._u(14)
        press(KEY_JUMP, (is_(EXPLORE) & (hop < 0.02)) | (is_(JUMPY) & ~self.flag & (hop < 0.2)))
        press(KEY_CROUCH, is_(JUMPY) & self.flag)
        press(KEY_RIGHT, is_(STRAFE) & (self.side > 0))
        press(KEY_LEFT, is_(STRAFE) & (self.side < 0))
        press(KEY_BACK, is_(STRAFE) & self.flag)
        for i, vk in enumerate(_RANDOM_KEYS):
            press(vk, is_(RANDOM) & (self._u(20 + i) < 0.2))
        for i, vk in enumerate(_ARROWS):
            press(vk, is_(RANDOM) & (self._u(30 + i) < 0.05))
        ctrl = torch.zeros(b, CTRL_DIM, device=dev)
        ctrl[:, 0], ctrl[:, 1] = dx, dy
        ctrl[:, 2:2 + N_BUTTONS] = keys.float()
        u_scroll = self._u(34)
        ctrl[:, -1] = torch.where(is_(RANDOM) & (u_scroll < 0.05),
                                  torch.where(u_scroll < 0.025, -1.0, 1.0), 0.0)
        self.t += 1
        return ctrl


def policy_seeds(seeds: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Folded int64 seeds for ``Policy`` from Python episode seeds."""
    return torch.tensor([rng.fold_seed(s) for s in seeds], dtype=torch.int64, device=device)

