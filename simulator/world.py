"""Episodes and worlds: ``EpisodeSpec`` (what a seed means), ``WorldBatch`` (B worlds stepped in
parallel, for data) and ``World`` (one world with a CtrlInput API, for the app).

The control given to ``step`` at frame t produces frame t: physics runs first, then the frame is
rendered. Nothing here uses global random state: maps and looks come from numpy Generators seeded
by the episode seed, animations from the counter-based hash in ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from world_engine.controls import CtrlInput, ctrl_vector, validate_ctrl
from . import physics, rng
from .captions import make_caption
from .constants import (CTRL_DIM, LIQUID_FRAMES, MAP_SIZE, N_BUTTONS, SWITCH_FRAMES, TEX)
from .maps import (CREATURE, CREATURE_LOOP, DOOR, LIGHT, LIQUID, MAX_CREATURES, MAX_SPRITES,
                   MapSpec, generate_map)
from .render import (MM, UNIT, WEATHER_NONE, WEATHER_RAIN, WEATHER_SNOW, Rendered, Scene,
                     render)
from .textures import SLOT, SPRITE_FRAMES, SPRITE_ROWS, SPRITE_SIZE, SPRITE_SLOTS, Atlas, get_atlas
from .themes import FOGS, LAYOUTS, THEME_NAMES, THEMES, TIMES_OF_DAY, WEATHERS, Look

EPISODE_FRAMES = 512
SWITCH_PROBABILITY = 0.15
FRAMES_PER_CREATURE_STEP = 10  # creatures walk one cell per this many frames
_FOG_RANGE = {"clear": (4.0, 18.0), "foggy": (0.5, 7.0)}  # fog start and full distance, cells
_HAZE = {"clear": 0.0, "foggy": 0.85}
_WEATHER = {"none": WEATHER_NONE, "rain": WEATHER_RAIN, "snow": WEATHER_SNOW}
_TORCH_RADIUS, _TORCH_GAIN, _TORCH_AMBIENT = 3.5, 0.9, 0.72


@dataclass
class EpisodeSpec:
    """Everything that defines an episode except its actions: a seed and its look over time.

    ``segments`` lists (first frame, Look); an episode with a theme switch has two. Captions are
    drawn per segment from the seed, so the same spec always has the same captions.
    """

    seed: int
    segments: list[tuple[int, Look]]
    n_frames: int = EPISODE_FRAMES

    @classmethod
    def from_seed(cls, seed: int, n_frames: int = EPISODE_FRAMES,
                  switch_probability: float = SWITCH_PROBABILITY, **look) -> "EpisodeSpec":
        """Sample a look (and maybe a mid-episode theme switch); ``look`` fixes any Look field."""
        g = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 1])
        drawn = THEME_NAMES[g.integers(len(THEME_NAMES))]  # always drawn: keeps later draws fixed
        theme = look.pop("theme", None) or drawn
        outdoor = THEMES[theme].outdoor
        sampled = dict(
            time_of_day=TIMES_OF_DAY[g.choice(3, p=[0.5, 0.25, 0.25])],
            fog=FOGS[g.choice(2, p=[0.75, 0.25])],
            weather=WEATHERS[g.choice(3, p=[0.6, 0.2, 0.2])] if outdoor else "none",
            torches=bool(g.random() < 0.4), layout=LAYOUTS[g.integers(len(LAYOUTS))])
        sampled.update(look)
        first = Look(theme, **sampled)
        segments = [(0, first)]
        if g.random() < switch_probability and n_frames >= 64:
            others = [t for t in THEME_NAMES if t != theme]
            start = int(g.integers(n_frames // 8, n_frames - n_frames // 8))
            segments.append((start, first.with_theme(others[g.integers(len(others))])))
        return cls(int(seed), segments, n_frames)

    def segment_at(self, frame: int) -> int:
        return max(i for i, (start, _) in enumerate(self.segments) if start <= max(frame, 0))

    def caption(self, segment: int) -> str:
        g = np.random.default_rng([int(self.seed) & 0xFFFFFFFFFFFF, 2, segment])
        return make_caption(self.segments[segment][1], g)

    def build_map(self) -> MapSpec:
        g = np.random.default_rng([int(self.seed) & 0xFFFFFFFFFFFF, 0])
        return generate_map(g, self.segments[0][1].layout)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "n_frames": self.n_frames,
                "segments": [[start, look.to_dict()] for start, look in self.segments]}

    @classmethod
    def from_dict(cls, d: dict) -> "EpisodeSpec":
        return cls(int(d["seed"]), [(int(s), Look(**lk)) for s, lk in d["segments"]],
                   int(d["n_frames"]))


@dataclass
class Frame:
    """One rendered frame of a ``World``, as numpy arrays for the app."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray | None  # float32 [H, W], inf where sky
    seg: np.ndarray | None  # uint8 [H, W], SEG_* classes
    pose: tuple[float, float, float, float, float]  # x, y, z, yaw, pitch
    index: int  # frame number in the episode (-1: the spawn view before the first step)
    caption: str
    theme: str


@lru_cache(maxsize=None)
def _attributes(look: Look) -> torch.Tensor:
    return look.attributes()


def _stack(rows: list[np.ndarray], device, dtype) -> torch.Tensor:
    return torch.as_tensor(np.stack(rows), dtype=dtype, device=device)


@dataclass
class _Maps:
    """Static per-slot tensors built from MapSpecs."""

    cells: torch.Tensor  # int64 [B, MM]
    floor: torch.Tensor  # int64 [B, MM]
    torch_light: torch.Tensor  # float32 [B, MM]: light added by the torch sprites at full flame
    sprite_xy: torch.Tensor  # float32 [B, K, 2]
    sprite_kind: torch.Tensor  # int64 [B, K]
    sprite_on: torch.Tensor  # bool [B, K] (creatures are the last MAX_CREATURES slots)
    creature_loop: torch.Tensor  # float32 [B, MAX_CREATURES, CREATURE_LOOP, 2]
    spawn: torch.Tensor  # float32 [B, 3]
    seed: torch.Tensor  # int64 [B], folded to 32 bits

    @staticmethod
    def build(specs: list[EpisodeSpec], maps: list[MapSpec], device) -> "_Maps":
        n_static = MAX_SPRITES - MAX_CREATURES
        xy, kind, on, loops, light = [], [], [], [], []
        centres = np.stack(np.meshgrid(np.arange(MAP_SIZE) + 0.5, np.arange(MAP_SIZE) + 0.5), -1)
        for m in maps:
            k = len(m.sprites)
            sx = np.zeros((MAX_SPRITES, 2), np.float32)
            sk = np.full(MAX_SPRITES, CREATURE, np.int64)
            son = np.zeros(MAX_SPRITES, bool)
            sx[:k], sk[:k], son[:k] = m.sprites[:, :2], m.sprites[:, 2], True
            c = len(m.creatures)
            son[n_static:n_static + c] = True
            loop = np.zeros((MAX_CREATURES, CREATURE_LOOP, 2), np.float32)
            loop[:c] = m.creatures
            lit = np.zeros((MAP_SIZE, MAP_SIZE))
            for lx, ly in m.sprites[m.sprites[:, 2] == LIGHT][:, :2]:
                d = np.hypot(centres[..., 0] - lx, centres[..., 1] - ly)
                lit += _TORCH_GAIN * np.clip(1 - d / _TORCH_RADIUS, 0, 1) ** 2
            xy.append(sx), kind.append(sk), on.append(son), loops.append(loop), light.append(lit.ravel())
        return _Maps(
            cells=_stack([m.cells.ravel() for m in maps], device, torch.int64),
            floor=_stack([m.floor.ravel() for m in maps], device, torch.int64),
            torch_light=_stack(light, device, torch.float32),
            sprite_xy=_stack(xy, device, torch.float32), sprite_kind=_stack(kind, device, torch.int64),
            sprite_on=_stack(on, device, torch.bool), creature_loop=_stack(loops, device, torch.float32),
            spawn=_stack([np.array(m.spawn, np.float32) for m in maps], device, torch.float32),
            seed=torch.tensor([rng.fold_seed(s.seed) for s in specs], dtype=torch.int64, device=device))

    def assign(self, slots: torch.Tensor, other: "_Maps") -> None:
        for name, value in self.__dict__.items():
            value[slots] = getattr(other, name)


class WorldBatch:
    """B independent episodes stepped together: policy-driven data generation and evaluation.

    ``step(ctrl)`` takes float32 [B, 259] controls in the engine's vector layout
    (``controls.ctrl_vector``) and returns the rendered frames of all B worlds.
    """

    def __init__(self, specs: list[EpisodeSpec], size: int | tuple[int, int] = 64, ss: int = 2,
                 device: torch.device | str = "cpu", aux: bool = False,
                 maps: list[MapSpec] | None = None) -> None:
        """``maps`` replaces the seeds' generated maps (e.g. hand-drawn ones, ``map_from_ascii``)."""
        self.height, self.width = (size, size) if isinstance(size, int) else size
        self.ss, self.aux, self.device = ss, aux, torch.device(device)
        self.atlas: Atlas = get_atlas(self.device)
        self.specs: list[EpisodeSpec] = []
        self.maps: list[MapSpec] = []
        self._load(list(range(len(specs))), specs, fresh=True, maps=maps)

    # ----- episode management
    @property
    def batch(self) -> int:
        return len(self.specs)

    def _load(self, slots: list[int], specs: list[EpisodeSpec], fresh: bool = False,
              maps: list[MapSpec] | None = None) -> None:
        maps = [s.build_map() for s in specs] if maps is None else list(maps)
        built = _Maps.build(specs, maps, self.device)
        state = physics.initial_state(built.spawn, MM)
        if fresh:
            n = len(specs)
            self.static, self.state = built, state
            self.specs, self.maps = list(specs), maps
            self.looks: list[Look] = [s.segments[0][1] for s in specs]
            self._captions: list[list[str] | None] = [None] * n
            # per-slot bookkeeping lives on the host, so stepping never waits for the device
            self.t = np.full(n, -1, np.int64)
            self.palette = np.zeros(n, np.int64)
            self.prev_palette = np.zeros(n, np.int64)
            self.switch_start = np.full(n, -10 ** 6, np.int64)
        else:
            idx = torch.tensor(slots, device=self.device)
            self.static.assign(idx, built)
            for name, value in self.state.__dict__.items():
                value[idx] = getattr(state, name)
            for i, slot in enumerate(slots):
                self.specs[slot], self.maps[slot] = specs[i], maps[i]
                self.t[slot] = -1
        for i, slot in enumerate(slots):
            self._set_look(slot, specs[i].segments[0][1])
        self._t_dev = torch.tensor(self.t, device=self.device)

    def reset(self, slots: list[int] | None = None, specs: list[EpisodeSpec] | None = None,
              maps: list[MapSpec] | None = None) -> None:
        """Restart ``slots`` (default all) with ``specs`` (default: their current specs) and
        their maps (default: generated from the specs)."""
        slots = list(range(self.batch)) if slots is None else list(slots)
        specs = [self.specs[i] for i in slots] if specs is None else list(specs)
        self._load(slots, specs, maps=maps)

    def _set_look(self, slot: int, look: Look, fade_from: int | None = None) -> None:
        """Apply ``look`` to a slot; the old palette cross-fades out over SWITCH_FRAMES frames
        from frame ``fade_from`` (no fade if None)."""
        self.looks[slot] = look
        self._captions[slot] = None
        self.prev_palette[slot] = look.palette if fade_from is None else self.palette[slot]
        self.palette[slot] = look.palette
        self.switch_start[slot] = -10 ** 6 if fade_from is None else fade_from
        self._look_tensors = None

    def set_look(self, slot: int, look: Look) -> None:
        """Switch a slot to ``look`` from the next frame on (a new caption segment)."""
        spec = self.specs[slot]
        start = int(self.t[slot]) + 1
        segments = [seg for seg in spec.segments if seg[0] < start] + [(start, look)]
        self.specs[slot] = replace(spec, segments=segments)
        self._set_look(slot, look, fade_from=start if start > 0 else None)

    def _looks(self) -> dict[str, torch.Tensor]:
        """Per-slot look parameters as device tensors (rebuilt only after a look changes)."""
        if self._look_tensors is None:
            def f(values, dtype=torch.float32) -> torch.Tensor:
                return torch.tensor(values, dtype=dtype, device=self.device)

            self._look_tensors = dict(
                palette=f(self.palette, torch.int64), prev_palette=f(self.prev_palette, torch.int64),
                fog_near=f([_FOG_RANGE[lk.fog][0] for lk in self.looks]),
                fog_far=f([_FOG_RANGE[lk.fog][1] * (0.75 if lk.time_of_day == "night" else 1.0)
                           for lk in self.looks]),
                haze=f([_HAZE[lk.fog] for lk in self.looks]),
                weather=f([_WEATHER[lk.weather] for lk in self.looks], torch.int64),
                torches=f([lk.torches for lk in self.looks], torch.bool),
                outdoor=f([THEMES[lk.theme].outdoor for lk in self.looks], torch.bool))
        return self._look_tensors

    # ----- stepping
    def step_physics(self, ctrl: torch.Tensor) -> None:
        """Advance all worlds one frame without rendering (for fast-forward and action replay)."""
        self.state = physics.step(self.state, self.static.cells, ctrl.to(self.device, torch.float32))
        self.t += 1
        self._t_dev = torch.tensor(self.t, device=self.device)
        for slot, spec in enumerate(self.specs):
            for start, look in spec.segments[1:]:
                if start == self.t[slot]:
                    self._set_look(slot, look, fade_from=start)

    def step(self, ctrl: torch.Tensor) -> Rendered:
        """Advance all worlds one frame under ``ctrl`` [B, 259] and render the new frames."""
        self.step_physics(ctrl)
        return self.render()

    # ----- observation
    def pose(self) -> torch.Tensor:
        """float32 [B, 5]: x, y, z, yaw, pitch."""
        return self.state.pose()

    def captions(self) -> list[str]:
        """The caption in force at the current frame of every slot."""
        out = []
        for slot, (spec, t) in enumerate(zip(self.specs, self.t)):
            if self._captions[slot] is None:  # captions are drawn once per spec
                self._captions[slot] = [spec.caption(i) for i in range(len(spec.segments))]
            out.append(self._captions[slot][spec.segment_at(int(t))])
        return out

    def theme_index(self) -> torch.Tensor:
        return torch.tensor([lk.theme_index for lk in self.looks])

    def attributes(self) -> torch.Tensor:
        """float32 [B, A]: the attribute vector of every slot's current look."""
        return torch.stack([_attributes(lk) for lk in self.looks])

    def scene(self, previous: bool = False) -> Scene:
        """The render input for the current state (in the palettes before a switch if
        ``previous``)."""
        st, lk = self.state, self._looks()
        pal = lk["prev_palette" if previous else "palette"]
        t = self._t_dev.clamp(min=0)
        base = self.atlas.base[pal]  # [B, n_slots]: atlas index of every texture slot
        light = self._light(t, lk)
        sprites = self._sprites(base, t, light, lk)
        return Scene(
            x=st.x, y=st.y, z=st.z, yaw=st.yaw, pitch=st.pitch, **self._cells(base, t, light, lk),
            sky_base=torch.where(lk["outdoor"], base[:, SLOT["sky"]], -1).to(torch.int32),
            fog_colour=self.atlas.fog[pal], fog_near=lk["fog_near"], fog_far=lk["fog_far"],
            sky_haze=lk["haze"], **sprites, weather=lk["weather"], time=t, seed=self.static.seed)

    def _light(self, t: torch.Tensor, lk: dict) -> torch.Tensor:
        """float32 [B, MM] brightness per cell: torch pools (flickering together) or plain 1."""
        flicker = 0.8 + 0.4 * rng.uniform(self.static.seed, t, 1)
        lit = _TORCH_AMBIENT + self.static.torch_light * flicker[:, None]
        return torch.where(lk["torches"][:, None], lit, 1.0)

    def _cells(self, base: torch.Tensor, t: torch.Tensor, light: torch.Tensor, lk: dict) -> dict:
        """The per-cell tables: what stops rays, wall textures, floor/ceiling textures and light."""
        mp, dev, b = self.static, self.device, self.batch
        ray_stop = torch.where(mp.cells == 0, 2.0,
                               torch.where(mp.cells == DOOR, self.state.door_open, 0.0))
        code_slot = torch.tensor([SLOT["wall0"], SLOT["wall0"], SLOT["wall1"], SLOT["wall2"],
                                  SLOT["door"]], device=dev)
        floor_slot = torch.tensor([SLOT["floor"], SLOT["floor_alt"], SLOT["liquid"]], device=dev)
        floor_base = base.gather(1, floor_slot[mp.floor])
        liquid_frame = (t // 2) % LIQUID_FRAMES
        floor_base = floor_base + (mp.floor == LIQUID) * (liquid_frame * TEX * TEX)[:, None]
        ceiling = base[:, SLOT["ceiling"]][:, None].expand(b, MM)
        light_q = (light * UNIT + 0.5).clamp(max=127).to(torch.int32)
        ceiling_light = torch.where(lk["outdoor"][:, None], UNIT, light_q)  # sky rows: plain 1
        return dict(ray_stop=ray_stop, wall_base=base.gather(1, code_slot[mp.cells]).to(torch.int32),
                    cell_base=torch.cat((floor_base, ceiling), 1).to(torch.int32),
                    cell_light=torch.cat((light_q, ceiling_light), 1))

    def _sprites(self, base: torch.Tensor, t: torch.Tensor, light: torch.Tensor, lk: dict) -> dict:
        """Static props plus creatures walking their loops, with animation frames and light."""
        mp, dev = self.static, self.device
        pos = t.float() / FRAMES_PER_CREATURE_STEP
        step_i = pos.long()
        frac = (pos - step_i.float())[:, None, None]
        def loop_point(i: torch.Tensor) -> torch.Tensor:  # [B, C, 2]
            index = (i % CREATURE_LOOP)[:, None, None, None].expand(-1, MAX_CREATURES, 1, 2)
            return mp.creature_loop.gather(2, index)[:, :, 0]

        walkers = torch.lerp(loop_point(step_i), loop_point(step_i + 1), frac)
        xy = torch.cat((mp.sprite_xy[:, :MAX_SPRITES - MAX_CREATURES], walkers), 1)
        kind = mp.sprite_kind
        slot = torch.tensor([SLOT[s] for s in SPRITE_SLOTS], device=dev)[kind]
        flame = (t[:, None] // 3 + torch.arange(MAX_SPRITES, device=dev)) % SPRITE_FRAMES
        frame = torch.where(kind == LIGHT, flame, (t[:, None] // 4) % SPRITE_FRAMES)
        size = torch.tensor([SPRITE_SIZE[s] for s in SPRITE_SLOTS], device=dev)[kind]
        hop = (0.06 * torch.sin(t.float() * 0.9)).abs()[:, None] * (kind == CREATURE)
        cell = physics.cell_at(xy[..., 0], xy[..., 1])
        return dict(
            sprite_x=xy[..., 0].contiguous(), sprite_y=xy[..., 1].contiguous(), sprite_z=hop,
            sprite_w=size[..., 0], sprite_h=size[..., 1],
            sprite_base=(base.gather(1, slot) + frame * (SPRITE_ROWS * TEX)).to(torch.int32),
            sprite_light=torch.where(kind == LIGHT, 1.0, light.gather(1, cell)),
            sprite_on=mp.sprite_on & ((kind != LIGHT) | lk["torches"][:, None]))

    def render(self) -> Rendered:
        """Render the current state; slots within SWITCH_FRAMES of a theme switch cross-fade."""
        out = render(self.scene(), self.atlas, self.height, self.width, self.ss, self.aux)
        progress = (self.t - self.switch_start + 1) / (SWITCH_FRAMES + 1)
        fading = np.nonzero((progress > 0) & (progress < 1))[0]
        if len(fading):
            idx = torch.from_numpy(fading).to(self.device)
            old = render(self.scene(previous=True).select(idx), self.atlas, self.height,
                         self.width, self.ss, False).rgb
            a = torch.tensor(progress[fading], dtype=torch.float32, device=self.device)
            new = out.rgb.index_select(0, idx).float()
            mixed = torch.lerp(old.float(), new, a[:, None, None, None])
            out.rgb.index_copy_(0, idx, (mixed + 0.5).to(torch.uint8))
        return out


@dataclass(frozen=True)
class WorldState:
    """The dynamic state of one ``World`` at a frame (``World.state`` / ``World.set_state``)."""

    physics: physics.State
    t: int
    spec: EpisodeSpec
    look: Look
    palette: int
    prev_palette: int
    switch_start: int


def _cloned(state: physics.State) -> physics.State:
    return replace(state, **{name: value.clone() for name, value in state.__dict__.items()})


class World:
    """One interactive world for the app: ``step(CtrlInput) -> Frame``.

    >>> world = World.from_seed(7, theme="ice_cave")
    >>> frame = world.step(CtrlInput(button={VK["W"]}, mouse=(4.0, 0.0)))
    """

    def __init__(self, spec: EpisodeSpec, size: int | tuple[int, int] = 64, ss: int = 2,
                 device: torch.device | str = "cpu", aux: bool = False,
                 world_map: MapSpec | None = None) -> None:
        self.spec, self._map = spec, world_map
        self._batch = WorldBatch([spec], size, ss, device, aux,
                                 None if world_map is None else [world_map])
        self._ctrl = torch.zeros(CTRL_DIM)

    @classmethod
    def from_seed(cls, seed: int, theme: str | None = None, size: int | tuple[int, int] = 64, *,
                  ss: int = 2, device: torch.device | str = "cpu", aux: bool = False,
                  **look) -> "World":
        """A world from ``seed``; ``theme`` and Look fields (``time_of_day``, ``fog``,
        ``weather``, ``torches``, ``layout``) fix what is not to be drawn at random. No theme
        switch is scheduled: the app switches with ``set_theme``."""
        spec = EpisodeSpec.from_seed(seed, n_frames=10 ** 9, switch_probability=0.0,
                                     **({"theme": theme} if theme else {}), **look)
        return cls(spec, size, ss, device, aux)

    def reset(self) -> Frame:
        """Back to the spawn point with the episode's first look; returns the spawn view."""
        self._batch.reset([0], [replace(self.spec, segments=self.spec.segments[:1])],
                          None if self._map is None else [self._map])
        return self.render()

    def step(self, ctrl: CtrlInput | None = None) -> Frame:
        """Apply one frame of controls (None = idle) and return the frame they produce."""
        ctrl = validate_ctrl(ctrl, N_BUTTONS)
        vec = ctrl_vector(ctrl, N_BUTTONS, out=self._ctrl)
        self._batch.step_physics(vec[None])
        return self.render()

    def set_theme(self, name: str, **modifiers) -> None:
        """Re-skin the world as theme ``name`` (and optional Look modifiers) from the next frame;
        the picture cross-fades over SWITCH_FRAMES frames and the caption changes at once."""
        current = self._batch.looks[0]
        look = current.with_theme(name)
        if modifiers:
            look = Look(**{**look.to_dict(), **modifiers})
        self._batch.set_look(0, look)

    def render(self) -> Frame:
        """The frame for the current state, without stepping."""
        out = self._batch.render()
        b = self._batch
        pose = tuple(float(v) for v in b.pose()[0].cpu())
        return Frame(out.rgb[0].cpu().numpy(),
                     None if out.depth is None else out.depth[0].cpu().numpy(),
                     None if out.seg is None else out.seg[0].cpu().numpy(),
                     pose, int(b.t[0]), b.captions()[0], b.looks[0].theme)

    def state(self) -> "WorldState":
        """What ``step`` and ``set_theme`` change, detached from the world (so a later step or reset
        never alters it): a few small tensors, cheap enough to keep one per frame."""
        b = self._batch
        return WorldState(physics=_cloned(b.state), t=int(b.t[0]), spec=b.specs[0], look=b.looks[0],
                          palette=int(b.palette[0]), prev_palette=int(b.prev_palette[0]),
                          switch_start=int(b.switch_start[0]))

    def set_state(self, state: "WorldState") -> None:
        """Put the world back where ``state`` was taken (same map: a state of this world, or of
        another built from the same seed and map)."""
        if not isinstance(state, WorldState):
            raise ValueError(f"expected a WorldState, got {type(state).__name__}")
        b = self._batch
        b.state = _cloned(state.physics)
        b.t[0], b.specs[0], b.looks[0] = state.t, state.spec, state.look
        b.palette[0], b.prev_palette[0], b.switch_start[0] = state.palette, state.prev_palette, state.switch_start
        b._t_dev = torch.tensor(b.t, device=b.device)
        b._captions[0], b._look_tensors = None, None

    @property
    def look(self) -> Look:
        return self._batch.looks[0]

    @property
    def caption(self) -> str:
        return self._batch.captions()[0]

    @property
    def pose(self) -> tuple[float, float, float, float, float]:
        return tuple(float(v) for v in self._batch.pose()[0].cpu())

    @property
    def map(self) -> MapSpec:
        return self._batch.maps[0]
