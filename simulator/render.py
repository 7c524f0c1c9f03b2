"""The batched raycaster: ``render(scene, atlas, height, width)`` draws B worlds at once.

Three stages, all whole-tensor torch ops (no Python loop over pixels, rays or worlds):

1. Columns ``[B, W]``: every ray is tested against all its grid-line crossings at once (a
   vectorised DDA with VIEW_CELLS steps per axis), giving wall distance, texture column and light;
   sprites are projected and the two nearest in front of the wall are kept per column.
2. Pixels, column-major ``[B, W, H]``: floor/ceiling casting per row, wall and sprite spans per
   column, and a single integer texel index per pixel into the atlas; alongside it a packed shade
   word ``m | w << 16`` (brightness ``m``, 64 = 1.0, and fog weight ``w``, 255 = all fog).
3. Colour: one gather of packed ``0x00BBGGRR`` texels, brightness applied to two colour lanes at a
   time in int32 (SWAR), supersampled pixels summed, then fog added per output pixel.

The integer pipeline is what makes CPU rendering fast (a float RGB gather, multiply and pool costs
about 3x more). Nothing depends on global state or thread scheduling, so renders are bit-exact
from run to run, and a world renders the same whatever else shares its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .constants import (FOV_DEG, MAP_SIZE, SEG_CEILING, SEG_FLOOR, SEG_SKY, SEG_SPRITE, SEG_WALL,
                        TEX, VIEW_CELLS)
from .textures import SKY_H, SKY_TAN_MAX, SKY_W, SPRITE_ROWS, Atlas

MM = MAP_SIZE * MAP_SIZE
NO_HIT = 1.0e4  # distance reported for rays that see no wall within VIEW_CELLS
MAX_ROW_DIST = 64.0  # floor rows nearer the horizon than this are drawn at this distance
SPRITE_NEAR = 0.15  # sprites closer than this are not drawn
UNIT = 64  # brightness fixed point: m = 64 means 1.0; m is capped at 127 (about 2x)
WALL_SIDE_SHADE = 0.78  # faces hit on a y grid line (north/south) are darker
WEATHER_NONE, WEATHER_RAIN, WEATHER_SNOW = 0, 1, 2
PARTICLE_TILE = 64  # rain/snow patterns repeat every 64 pixels of a 64-pixel-wide view

assert MAP_SIZE & (MAP_SIZE - 1) == 0 and TEX == 32 and MAP_SIZE == 32, \
    "the pixel stage wraps map and texel indices with 5-bit masks"


@dataclass
class Scene:
    """One frame of B worlds, reduced to what the raycaster needs (all tensors on one device)."""

    x: torch.Tensor  # float32 [B], camera position in cells
    y: torch.Tensor
    z: torch.Tensor  # float32 [B], eye height (walls are 1 tall)
    yaw: torch.Tensor  # float32 [B], radians, grows turning right
    pitch: torch.Tensor  # float32 [B], radians, > 0 looks up
    ray_stop: torch.Tensor  # float32 [B, MM]: a ray entering the cell at face coordinate u stops
    #                         if u >= ray_stop (0 wall, door open fraction, 2 empty)
    wall_base: torch.Tensor  # int32 [B, MM]: atlas texel index of each wall cell's texture
    cell_base: torch.Tensor  # int32 [B, 2 * MM]: floor texture per cell, then ceiling per cell
    cell_light: torch.Tensor  # int32 [B, 2 * MM]: brightness (UNIT = 1.0) of floor, ceiling
    sky_base: torch.Tensor  # int32 [B]: atlas index of the sky panorama, -1 indoors
    fog_colour: torch.Tensor  # float32 [B, 3] in [0, 1]
    fog_near: torch.Tensor  # float32 [B]: fog starts here
    fog_far: torch.Tensor  # float32 [B]: and is total here
    sky_haze: torch.Tensor  # float32 [B]: fog weight of the sky at the horizon
    sprite_x: torch.Tensor  # float32 [B, K]
    sprite_y: torch.Tensor
    sprite_z: torch.Tensor  # float32 [B, K]: height of the sprite's bottom above the floor
    sprite_w: torch.Tensor  # float32 [B, K]: size in cells
    sprite_h: torch.Tensor
    sprite_base: torch.Tensor  # int32 [B, K]: atlas index of the sprite frame (padded rows)
    sprite_light: torch.Tensor  # float32 [B, K]: brightness multiplier
    sprite_on: torch.Tensor  # bool [B, K]
    weather: torch.Tensor  # int64 [B]: WEATHER_NONE, WEATHER_RAIN or WEATHER_SNOW
    time: torch.Tensor  # int64 [B]: frame counter (weather animation)
    seed: torch.Tensor  # int64 [B]: folded episode seed (weather pattern)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def select(self, index: torch.Tensor) -> "Scene":
        """The sub-batch ``index`` of every field."""
        return Scene(**{k: v.index_select(0, index) for k, v in self.__dict__.items()})


@dataclass
class Rendered:
    """A rendered batch: ``rgb`` uint8 [B, H, W, 3]; ``depth`` float32 [B, H, W] (inf = sky) and
    ``seg`` uint8 [B, H, W] (SEG_* classes) when asked for."""

    rgb: torch.Tensor
    depth: torch.Tensor | None = None
    seg: torch.Tensor | None = None


def focal_px(width: int) -> float:
    """Focal length in pixels for an image ``width`` pixels wide."""
    return (width / 2) / math.tan(math.radians(FOV_DEG) / 2)


def _fog(d: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    return ((d - near) / (far - near)).clamp_(0.0, 1.0)


def _to_int(x: torch.Tensor, dtype=torch.int32) -> torch.Tensor:
    """Round non-negative values to integers.

    ``floor``/``round`` (and ``min`` with indices) start a thread team from about 2,000 elements
    in torch's CPU kernels, which costs milliseconds when another process holds the other core;
    truncating ``x + 0.5`` is a plain conversion."""
    return (x + 0.5).to(dtype)


def _shade_word(light: torch.Tensor, fog_w: torch.Tensor) -> torch.Tensor:
    """Pack brightness ``light * (1 - w)`` and fog weight ``w`` into one int32 per element."""
    m = _to_int((light * (1.0 - fog_w) * UNIT).clamp_(0, 127))
    return m | (_to_int(fog_w * 255) << 16)


def _cast_walls(s: Scene, rx: torch.Tensor, ry: torch.Tensor):
    """Nearest wall hit of every ray: distance, cell, face coordinate u and side, [B, W] each.

    Per axis, the k-th grid line a ray crosses enters cell ``first + step * k``; all VIEW_CELLS
    crossings are tested at once and the nearest one that stops the ray wins. Crossings beyond the
    map are clamped onto its solid border, which is never nearer than the real border hit.
    """
    b, w = rx.shape
    k = torch.arange(VIEW_CELLS, device=rx.device, dtype=torch.float32)[:, None]  # [N, 1]
    scale = torch.tensor(float(MAP_SIZE), device=rx.device)
    nearest = []
    for axis, (pos, other, r, q) in enumerate(((s.x, s.y, rx, ry), (s.y, s.x, ry, rx))):
        r = torch.where(r.abs() < 1e-6, 1e-6, r)
        forward = r > 0
        step = torch.where(forward, 1.0, -1.0)
        first = pos.to(torch.int64).float()[:, None] + step  # the cell entered first (pos > 0)
        entered = torch.addcmul(first[:, None], step[:, None], k)  # [B, N, W]: N before W keeps
        offset = ((~forward).float() - pos[:, None])[:, None]  # per-ray broadcasts contiguous
        dist = (entered + offset) / r[:, None]
        along = torch.addcmul(other[:, None, None], dist, q[:, None])
        # truncation is floor inside the map; a crossing at along < 0 lies beyond the border,
        # which the other axis's crossings hit first, so its (wrong) u there does not matter
        cell_o = along.to(torch.int64).float()
        lo, hi = (entered, cell_o) if axis == 0 else (cell_o, entered)
        cell = torch.addcmul(lo.clamp(0, MAP_SIZE - 1), hi.clamp(0, MAP_SIZE - 1), scale).long()
        stop = s.ray_stop.gather(1, cell.view(b, -1)).view_as(along)
        nearest.append(torch.where(along - cell_o >= stop, dist, NO_HIT).amin(1))
    dist_x, dist_y = nearest
    side_y = dist_y < dist_x
    dist = torch.where(side_y, dist_y, dist_x)
    # the hit point: one coordinate is on a grid line (its cell depends on the ray's direction),
    # the other gives the face coordinate u
    hx, hy = torch.addcmul(s.x[:, None], dist, rx), torch.addcmul(s.y[:, None], dist, ry)
    on_line = torch.where(side_y, hy, hx)
    line_cell = _to_int(on_line, torch.int64) - (torch.where(side_y, ry, rx) < 0).long()
    across = torch.where(side_y, hx, hy)
    across_cell = across.to(torch.int64)
    u = across - across_cell.float()
    cx = torch.where(side_y, across_cell, line_cell).clamp(0, MAP_SIZE - 1)
    cy = torch.where(side_y, line_cell, across_cell).clamp(0, MAP_SIZE - 1)
    cell = cy * MAP_SIZE + cx
    return dist, cell, u - s.ray_stop.gather(1, cell), side_y


def _pool(x: torch.Tensor, ss: int) -> torch.Tensor:
    """Sum ``ss x ss`` blocks of an int32 [B, W, H] tensor (strided adds beat ``sum`` here)."""
    if ss == 1:
        return x
    b, w, h = x.shape
    v = x.view(b, w // ss, ss, h // ss, ss)
    cols = v[:, :, 0]
    for i in range(1, ss):
        cols = cols + v[:, :, i]
    out = cols[..., 0]
    for j in range(1, ss):
        out = out + cols[..., j]
    return out


@lru_cache(maxsize=None)
def _particles(device: str) -> torch.Tensor:
    """float32 [2 * P * P] alpha of rain streaks then snowflakes, tileable P x P patterns."""
    g = np.random.default_rng(99)
    p = PARTICLE_TILE
    rain = np.zeros((p, p), np.float32)
    for col in np.nonzero(g.random(p) < 0.3)[0]:
        start, length = g.integers(p), g.integers(4, 9)
        rain[(start + np.arange(length)) % p, col] = 0.45
    snow = np.where(g.random((p, p)) < 0.02, 0.9, 0.0).astype(np.float32)
    return torch.from_numpy(np.concatenate((rain.ravel(), snow.ravel()))).to(device)


def _weather(s: Scene, rgb: torch.Tensor) -> torch.Tensor:
    """Rain streaks or snowflakes over float [B, W, H, 3] (0..255); they turn with the sky."""
    which = (s.weather != WEATHER_NONE).nonzero()[:, 0]
    b, w, h, _ = rgb.shape
    dev = rgb.device
    p = PARTICLE_TILE
    snow = (s.weather[which] == WEATHER_SNOW).long()
    t = s.time[which]
    shift = (s.yaw[which] * (p / math.radians(FOV_DEG))).floor().long() + s.seed[which] % p
    fall = torch.where(snow.bool(), t * 2, t * 16) + (s.seed[which] >> 8) % p
    drift = snow * (t // 3)
    u = (torch.arange(w, device=dev) * p // w)[None, :, None] + (shift + drift)[:, None, None]
    v = (torch.arange(h, device=dev) * p // h)[None, None, :] - fall[:, None, None]
    flat = snow[:, None, None] * (p * p) + (v % p) * p + u % p  # [b, W, H]
    alpha = _particles(str(dev)).index_select(0, flat.view(-1)).view(-1, w, h, 1)
    colour = torch.where(snow.bool()[:, None], torch.tensor([250.0, 250.0, 255.0], device=dev),
                         torch.tensor([190.0, 200.0, 220.0], device=dev))[:, None, None]
    # index_select / index_copy_: advanced indexing starts a thread team even for small tensors
    mixed = torch.lerp(rgb.index_select(0, which), colour.expand(-1, w, h, 3), alpha)
    return rgb.index_copy_(0, which, mixed)


@dataclass
class _View:
    """The camera at the supersampled size: one ray per column, pixel rows, horizon, fog range."""

    b: int
    h: int
    w: int
    f: float                 # focal length in pixels
    tan_half: float
    camx: torch.Tensor       # float32 [W]: column centres in [-1, 1]
    rows: torch.Tensor       # float32 [H]: row centres
    dx: torch.Tensor         # float32 [B]: facing vector
    dy: torch.Tensor
    rx: torch.Tensor         # float32 [B, W]: ray directions
    ry: torch.Tensor
    horizon: torch.Tensor    # float32 [B]: row of the horizon
    near: torch.Tensor       # float32 [B, 1]: fog range
    far: torch.Tensor


def _view(s: Scene, height: int, width: int, ss: int) -> _View:
    dev = s.x.device
    b, h, w = s.batch, height * ss, width * ss
    f = focal_px(w)
    tan_half = math.tan(math.radians(FOV_DEG) / 2)
    camx = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * (2.0 / w) - 1.0
    rows = torch.arange(h, device=dev, dtype=torch.float32) + 0.5
    dx, dy = torch.cos(s.yaw), torch.sin(s.yaw)
    rx = torch.addcmul(dx[:, None], (-dy * tan_half)[:, None], camx[None])
    ry = torch.addcmul(dy[:, None], (dx * tan_half)[:, None], camx[None])
    horizon = h / 2 + f * torch.tan(s.pitch)  # y-shear pitch: looking up moves the horizon down
    return _View(b, h, w, f, tan_half, camx, rows, dx, dy, rx, ry, horizon, s.fog_near[:, None], s.fog_far[:, None])


@dataclass
class _Walls:
    """Per column ``[B, W]``: the nearest wall and how its pixels map to texels."""

    dist: torch.Tensor
    side_y: torch.Tensor
    shade: torch.Tensor      # int32 [B, W, 1]: packed shade word
    col: torch.Tensor        # int32 [B, W, 1]: texel index of the column, less 32 rows
    bias: torch.Tensor       # float32 [B, W, 1]: texel row + TEX at row 0
    vscale: torch.Tensor     # float32 [B, W, 1]: texel rows per pixel row


def _wall_columns(s: Scene, v: _View) -> _Walls:
    dist, cell, u, side_y = _cast_walls(s, v.rx, v.ry)
    light = s.cell_light.gather(1, cell).float() * torch.where(side_y, WALL_SIDE_SHADE / UNIT, 1.0 / UNIT)
    shade = _shade_word(light, _fog(dist, v.near, v.far))[..., None]
    tex_u = (u * TEX).long().clamp_(0, TEX - 1)
    # texel of wall pixel = base + u + 32 * (row - 32): fold the -32 rows into the column term
    col = (s.wall_base.gather(1, cell) + tex_u.to(torch.int32) - TEX * TEX)[..., None]
    top = v.horizon[:, None] - ((1.0 - s.z[:, None]) * v.f) / dist
    vscale = dist * (TEX / v.f)
    bias = (TEX - top * vscale)[..., None]  # texel row + TEX: wall pixels land in [32, 64)
    return _Walls(dist, side_y, shade, col, bias, vscale[..., None])


def _sprite_layers(s: Scene, v: _View, wall_dist: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The two nearest sprites in front of the wall per column, far layer first: per layer the
    columns it touches and, for those, texel base, row scale, row bias, shade, plus its depth."""
    relx, rely = s.sprite_x - s.x[:, None], s.sprite_y - s.y[:, None]
    sdepth = relx * v.dx[:, None] + rely * v.dy[:, None]
    lateral = rely * v.dx[:, None] - relx * v.dy[:, None]
    safe = sdepth.clamp(min=SPRITE_NEAR)
    centre = lateral / (safe * v.tan_half)
    inv_width = safe * v.tan_half / s.sprite_w  # su per unit of camx
    su = torch.addcmul((0.5 - centre * inv_width)[..., None], inv_width[..., None], v.camx)  # [B, K, W]
    visible = (s.sprite_on & (sdepth > SPRITE_NEAR) & (sdepth < s.fog_far[:, None]))[..., None]
    visible = visible & (su >= 0) & (su < 1) & (sdepth[..., None] < wall_dist[:, None, :])
    key = torch.where(visible, sdepth[..., None], math.inf)
    layer_depth, layer_k = key.topk(min(2, key.shape[1]), dim=1, largest=False)  # [B, L, W]
    layers = []
    for j in reversed(range(layer_k.shape[1])):  # far layer first, the near one paints over it
        kj, dj = layer_k[:, j], layer_depth[:, j]
        ok = torch.isfinite(dj)
        # CPU: only columns showing a sprite; elsewhere all (a data-dependent size would sync)
        cols = ok.view(-1).nonzero()[:, 0] if s.x.device.type == "cpu" else torch.arange(v.b * v.w, device=s.x.device)
        d = torch.where(ok, dj, 1.0)
        tu = (su.gather(1, kj[:, None])[:, 0] * TEX).long().clamp_(0, TEX - 1)
        base = s.sprite_base.gather(1, kj) + tu.to(torch.int32)
        foot = v.horizon[:, None] + (s.z[:, None] - s.sprite_z.gather(1, kj)) * v.f / d
        sh = s.sprite_h.gather(1, kj)
        vs = torch.where(ok, d * TEX / (sh * v.f), 0.0)
        bias = torch.where(ok, 1.0 - (foot - sh * v.f / d) * vs, 1.0e4)  # texel row + 1, else row 33
        shade = _shade_word(s.sprite_light.gather(1, kj), _fog(d, v.near, v.far))
        per_column = [t.reshape(-1).index_select(0, cols)[:, None] for t in (base, vs, bias, shade)]
        layers.append((cols, *per_column, dj))
    return layers


@dataclass
class _Rows:
    """Per row ``[B, H]``: floor and ceiling distance, fog and sky."""

    dist: torch.Tensor
    below: torch.Tensor      # bool: below the horizon (floor)
    sky: torch.Tensor        # bool: sky instead of ceiling
    elev: torch.Tensor       # elevation above the horizon, tangent units
    factor: torch.Tensor     # int32 [B, 1, H]: brightness left after fog
    fog: torch.Tensor        # int32 [B, 1, H]: fog weight, shifted into the shade word
    offset: torch.Tensor     # int32 [B, 1, H]: this row's table (floor or ceiling) in cell_base
    outdoor: torch.Tensor    # bool [B]


def _row_terms(s: Scene, v: _View) -> _Rows:
    p = v.rows[None] - v.horizon[:, None]  # [B, H], > 0 below the horizon
    below = p > 0
    pz = torch.where(below, s.z[:, None], 1.0 - s.z[:, None]) * v.f
    row_dist = (pz / p.abs().clamp(min=1e-3)).clamp_(max=MAX_ROW_DIST)
    fog_row = _fog(row_dist, v.near, v.far)
    outdoor = s.sky_base >= 0
    sky_rows = (~below) & outdoor[:, None]
    elev = (-p / v.f).clamp(min=0.0)
    fog_row = torch.where(sky_rows, s.sky_haze[:, None] * (1.0 - elev / 0.6).clamp(min=0.0), fog_row)
    factor = _to_int((1.0 - fog_row) * UNIT)[:, None]
    fog = (_to_int(fog_row * 255) << 16)[:, None]
    offset = ((torch.arange(v.b, device=s.x.device, dtype=torch.int32) * (2 * MM))[:, None]
              + (~below).to(torch.int32) * MM)[:, None]
    return _Rows(row_dist, below, sky_rows, elev, factor, fog, offset, outdoor)


def _floor_ceiling_sky(s: Scene, v: _View, r: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Texel index and shade word of every pixel ``[B, W, H]`` as floor, ceiling or sky."""
    b, w, h = v.b, v.w, v.h
    # int16 halves the memory traffic: |texel coordinates| < 2**15 since MAX_ROW_DIST is capped
    scale = (r.dist * TEX)[:, None]
    tx = torch.addcmul((s.x * TEX)[:, None, None], v.rx[..., None], scale).to(torch.int16)
    ty = torch.addcmul((s.y * TEX)[:, None, None], v.ry[..., None], scale).to(torch.int16)
    local = ((ty & (TEX - 1)) << 5) | (tx & (TEX - 1))
    cells = (((ty & ((MAP_SIZE - 1) << 5)) | ((tx >> 5) & (MAP_SIZE - 1))) + r.offset).view(-1)
    del tx, ty
    index = s.cell_base.view(-1).index_select(0, cells).view(b, w, h) + local
    shade = ((s.cell_light.view(-1).index_select(0, cells).view(b, w, h) * r.factor) >> 6) | r.fog
    del cells, local
    if bool(r.outdoor.any()):
        sky_v = (r.elev * (SKY_H / SKY_TAN_MAX)).long().clamp_(max=SKY_H - 1)
        sky_row = (s.sky_base[:, None] + sky_v * SKY_W).to(torch.int32)[:, None]
        angle = s.yaw[:, None] / (2 * math.pi) + v.camx[None] * (math.radians(FOV_DEG) / (4 * math.pi))
        sky_col = (((angle + 2.0) * SKY_W).to(torch.int32) % SKY_W)[..., None]  # angle > -2
        index += r.sky.to(torch.int32)[:, None] * (sky_row + sky_col - index)
    return index, shade


def _paint_walls(index: torch.Tensor, shade: torch.Tensor, v: _View, walls: _Walls) -> torch.Tensor:
    """Paint the wall spans over ``index`` and ``shade`` in place; returns the wall mask [B, W, H]."""
    wall_row = torch.addcmul(walls.bias, walls.vscale, v.rows).to(torch.int32)
    on_wall = (wall_row >> 5) == 1
    wall_i = on_wall.to(torch.int32)
    index += wall_i * (((wall_row << 5) + walls.col) - index)
    shade += wall_i * (walls.shade - shade)
    return on_wall


def _paint_sprites(index: torch.Tensor, shade: torch.Tensor, layers: list[tuple[torch.Tensor, ...]],
                   atlas: Atlas, v: _View, aux: bool) -> list[torch.Tensor]:
    """Paint the sprite layers over ``index`` and ``shade`` in place, only in the columns they touch;
    with ``aux`` returns each layer's pixel mask [B, W, H]."""
    b, w, h = v.b, v.w, v.h
    index, shade = index.view(b * w, h), shade.view(b * w, h)
    sprite_hits = []
    for cols, base, vs, bias, sshade, _ in layers:
        srow = torch.addcmul(bias, vs, v.rows).to(torch.int32).clamp_(0, SPRITE_ROWS - 1)
        sindex = (srow << 5) + base
        a = atlas.alpha.index_select(0, sindex.view(-1)).view_as(sindex)
        sub = index.index_select(0, cols)
        index.index_copy_(0, cols, sub + a * (sindex - sub))
        sub = shade.index_select(0, cols)
        shade.index_copy_(0, cols, sub + a * (sshade - sub))
        if aux:
            hit = torch.zeros(b * w, h, dtype=torch.bool, device=index.device)
            sprite_hits.append(hit.index_copy_(0, cols, a.bool()).view(b, w, h))
    return sprite_hits


def _colour(s: Scene, index: torch.Tensor, shade: torch.Tensor, atlas: Atlas, ss: int) -> torch.Tensor:
    """uint8 [B, H, W, 3]: packed texels times brightness, two lanes at a time, summed over
    ``ss x ss``, then fog and weather."""
    b, w, h = index.shape
    texel = atlas.rgb.index_select(0, index.view(-1)).view(b, w, h)
    m = shade & 0xFFFF
    rb = _pool((((texel & 0xFF00FF) * m) >> 6) & 0x01FF01FF, ss)  # red and blue lanes
    g = _pool((texel & 0xFF00) * m, ss) >> 14  # green stays at bit 8: g * m * ss^2 < 2^31
    fog_w = _pool(shade, ss) >> 16  # the m lane sums stay below 2^16
    rgb = torch.stack((rb & 0xFFFF, g, rb >> 16), -1).float()  # [B, W, H, 3]
    rgb = torch.addcmul(rgb, fog_w.float()[..., None], s.fog_colour[:, None, None])
    rgb *= 1.0 / (ss * ss)
    if bool((s.weather != WEATHER_NONE).any()):
        rgb = _weather(s, rgb)
    return _to_int(rgb.clamp_(0, 255), torch.uint8).transpose(1, 2).contiguous()


def render(s: Scene, atlas: Atlas, height: int, width: int, ss: int = 2,
           aux: bool = False) -> Rendered:
    """Render B worlds at ``height x width`` (rendered ``ss`` times larger, then averaged).

    Pixel tensors are column-major ``[B, W, H]``: a raycaster works column by column, and it lets
    the sprite pass touch only the columns that have a sprite.
    """
    if not 1 <= ss <= 11:
        raise ValueError("supersampling must be 1..11 (the colour lanes hold 11 x 11 samples)")
    v = _view(s, height, width, ss)
    # 1. Columns: the nearest wall of every ray, then the sprites in front of it.
    walls = _wall_columns(s, v)
    layers = _sprite_layers(s, v, walls.dist)
    # 2. Rows: floor and ceiling distance, fog, sky.
    rows = _row_terms(s, v)
    # 3. Pixels: floor, ceiling and sky texels; the walls over them; the sprites over those.
    index, shade = _floor_ceiling_sky(s, v, rows)
    on_wall = _paint_walls(index, shade, v, walls)
    sprite_hits = _paint_sprites(index, shade, layers, atlas, v, aux)
    # 4. Colour.
    out = Rendered(_colour(s, index, shade, atlas, ss))
    if aux:
        out.depth, out.seg = _aux(ss, walls.dist, rows.dist, rows.below, rows.sky, on_wall, sprite_hits,
                                  [layer[-1] for layer in layers])
    return out


def _aux(ss, dist, row_dist, below, sky_rows, on_wall, sprite_hits, sprite_depth):
    """Depth and labels at the output resolution, read at the centre sample of each block."""
    o = ss // 2
    pick = slice(o, None, ss)
    row_class = torch.where(below, SEG_FLOOR, torch.where(sky_rows, SEG_SKY, SEG_CEILING))[:, pick]
    n_cols = dist[:, pick].shape[1]
    seg = row_class[:, :, None].expand(-1, -1, n_cols).clone()  # [B, H, W]
    depth = torch.where(sky_rows, math.inf, row_dist)[:, pick, None].expand_as(seg).clone()
    wall = on_wall[:, pick, pick].transpose(1, 2)
    seg[wall] = SEG_WALL
    depth = torch.where(wall, dist[:, None, pick], depth)
    for hit, d in zip(sprite_hits, sprite_depth):  # far layer first
        hit = hit[:, pick, pick].transpose(1, 2)
        seg[hit] = SEG_SPRITE
        depth = torch.where(hit, d[:, None, pick], depth)
    return depth.contiguous(), seg.to(torch.uint8)
