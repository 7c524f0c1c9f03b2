"""Procedural textures, sprites and skies for every theme, packed into one texel atlas.

Everything is painted once with numpy from fixed seeds (so a theme always looks the same), then
tinted per time of day and flattened into ``Atlas.rgb [N, 3]``: the renderer turns every pixel into
one integer index into that table and gathers all colours in a single call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .constants import LIQUID_FRAMES, TEX
from .themes import THEME_NAMES, THEMES, TIMES_OF_DAY

SKY_W, SKY_H = 512, 128  # the sky panorama covers 360 degrees of yaw
SKY_TAN_MAX = 2.5  # its top row is at tan(elevation) = 2.5 (68 degrees)
SPRITE_FRAMES = 2  # every sprite has two animation frames (flicker, squash)
SPRITE_ROWS = TEX + 2  # sprites carry a transparent row above and below (see render.py)

WALL_SLOTS = ("wall0", "wall1", "wall2", "door")
SPRITE_SLOTS = ("tall", "small", "light", "creature")
SLOTS = WALL_SLOTS + ("floor", "floor_alt", "ceiling", "liquid") + SPRITE_SLOTS + ("sky",)
SLOT = {name: i for i, name in enumerate(SLOTS)}
SPRITE_SIZE = {"tall": (0.7, 0.95), "small": (0.45, 0.45), "light": (0.35, 0.8),
               "creature": (0.5, 0.5)}  # (width, height) in cells


# ----------------------------------------------------------------------------- painting helpers

def _noise(rng: np.random.Generator, shape: tuple[int, int], freq: tuple[int, int],
           octaves: int = 3) -> np.ndarray:
    """Tileable fractal value noise in [0, 1]."""
    h, w = shape
    total, amp, norm = np.zeros(shape), 1.0, 0.0
    for o in range(octaves):
        fy, fx = freq[0] << o, freq[1] << o
        grid = rng.random((fy, fx))
        y, x = np.arange(h) * fy / h, np.arange(w) * fx / w
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        ty, tx = y - y0, x - x0
        ty, tx = (ty * ty * (3 - 2 * ty))[:, None], (tx * tx * (3 - 2 * tx))[None, :]
        y1, x1 = (y0 + 1) % fy, (x0 + 1) % fx
        top = grid[y0][:, x0] * (1 - tx) + grid[y0][:, x1] * tx
        bottom = grid[y1][:, x0] * (1 - tx) + grid[y1][:, x1] * tx
        total += amp * (top * (1 - ty) + bottom * ty)
        norm += amp
        amp *= 0.5
    total /= norm
    return (total - total.min()) / max(total.max() - total.min(), 1e-6)


def _rgb(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float64)


def _grain(rng: np.random.Generator, img: np.ndarray, amount: float) -> np.ndarray:
    """Texel noise so flat colours do not look plastic."""
    return img * (1 + amount * (rng.random(img.shape[:2])[..., None] - 0.5))


def _blocks(rng: np.random.Generator, rows: int, cols: int, colour, mortar, var: float = 0.1,
            mortar_px: int = 1, stagger: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Brick or stone-block pattern; returns the image and a mortar mask."""
    y, x = np.mgrid[0:TEX, 0:TEX]
    bh, bw = TEX // rows, TEX // cols
    row = y // bh
    xs = x + (row % 2) * (bw // 2 if stagger else 0)
    block = row * (cols + 1) + (xs // bw) % cols
    shade = 1 + var * rng.standard_normal(rows * (cols + 1))
    hue = 1 + 0.35 * var * rng.standard_normal((rows * (cols + 1), 3))
    img = _rgb(colour) * (shade[block][..., None] * hue[block])
    bevel = ((y % bh) == mortar_px)[..., None] * 0.12  # lit top edge of every block
    img = img * (1 + bevel)
    mask = ((y % bh) < mortar_px) | ((xs % bw) < mortar_px)
    img[mask] = _rgb(mortar)
    return _grain(rng, img, 0.18), mask


class _Canvas:
    """A TEX x TEX sprite being painted: colour, alpha and emissive mask."""

    def __init__(self) -> None:
        self.rgb = np.zeros((TEX, TEX, 3))
        self.alpha = np.zeros((TEX, TEX), bool)
        self.emissive = np.zeros((TEX, TEX), bool)
        self.y, self.x = np.mgrid[0:TEX, 0:TEX] + 0.5

    def _fill(self, mask: np.ndarray, colour, shade: np.ndarray | None, glow: bool) -> None:
        col = _rgb(colour) * (np.ones((TEX, TEX, 1)) if shade is None else shade[..., None])
        self.rgb[mask] = np.clip(col, 0, 1)[mask]
        self.alpha |= mask
        self.emissive[mask] = glow

    def ellipse(self, cx, cy, rx, ry, colour, glow=False) -> None:
        dx, dy = (self.x - cx) / rx, (self.y - cy) / ry
        mask = dx * dx + dy * dy <= 1
        self._fill(mask, colour, 1.15 - 0.35 * np.clip(dx + dy, -1, 1) * 0.7, glow)

    def rect(self, x0, y0, x1, y1, colour, glow=False) -> None:
        mask = (self.x >= x0) & (self.x < x1) & (self.y >= y0) & (self.y < y1)
        dx = (self.x - (x0 + x1) / 2) / max(x1 - x0, 1) * 2
        self._fill(mask, colour, 1.1 - 0.3 * np.clip(dx, -1, 1), glow)

    def triangle(self, cx, top, half_width, bottom, colour, glow=False) -> None:
        """An upright isosceles triangle (apex at ``top``)."""
        t = (self.y - top) / (bottom - top)
        mask = (t >= 0) & (t <= 1) & (np.abs(self.x - cx) <= half_width * t)
        dx = (self.x - cx) / max(half_width, 1)
        self._fill(mask, colour, 1.1 - 0.3 * np.clip(dx, -1, 1), glow)

    def eyes(self, cx, cy, spread, colour=(1, 1, 1), pupil=(0.05, 0.05, 0.05), glow=False):
        for sx in (-spread, spread):
            self.ellipse(cx + sx, cy, 2.2, 2.6, colour, glow)
            self.ellipse(cx + sx + 0.6, cy + 0.4, 1.0, 1.2, pupil, glow)


def _flame(c: _Canvas, cx: float, base: float, frame: int, colour=(1.0, 0.55, 0.1),
           core=(1.0, 0.95, 0.5)) -> None:
    h = 7 + 2 * frame
    c.ellipse(cx, base - h / 2, 3.2 + frame * 0.4, h / 2 + 0.5, colour, glow=True)
    c.ellipse(cx, base - h / 2 + 1.5, 1.6, h / 3, core, glow=True)


def _blob_creature(colour, frame: int, eye=(1, 1, 1), glow=False, ears=None) -> _Canvas:
    c = _Canvas()
    squash = 1.5 * frame
    c.ellipse(16, 23 + squash / 2, 11 + squash, 8.5 - squash / 2, colour, glow)
    if ears is not None:
        for sx in (-5, 5):
            c.ellipse(16 + sx, 11 + squash, 2.2, 6, ears, glow)
    c.eyes(16, 20 + squash, 4, colour=eye, glow=glow)
    c.rect(4, 30.5, 28, 32, (0.0, 0.0, 0.0))  # contact shadow
    c.alpha[30:] &= (np.abs(c.x[30:] - 16) < 10)
    return c


# ----------------------------------------------------------------------------- themes
# Each painter returns a dict: wall0/wall1/wall2/door/floor/floor_alt/ceiling -> (rgb, emissive),
# liquid -> list of LIQUID_FRAMES (rgb, emissive), tall/small/light/creature -> list of
# SPRITE_FRAMES canvases, plus "fog": the fog colour at day.

def _none() -> np.ndarray:
    return np.zeros((TEX, TEX), bool)


def _liquid(rng: np.random.Generator, dark, bright, glow: bool, ripple: float = 0.25):
    """LIQUID_FRAMES seamless animation frames: two noise fields rotated in phase."""
    n1, n2 = _noise(rng, (TEX, TEX), (2, 2), 3) - 0.5, _noise(rng, (TEX, TEX), (2, 2), 3) - 0.5
    y, x = np.mgrid[0:TEX, 0:TEX] / TEX
    frames = []
    for k in range(LIQUID_FRAMES):
        phi = 2 * np.pi * k / LIQUID_FRAMES
        v = 0.5 + 1.4 * (n1 * np.cos(phi) + n2 * np.sin(phi))
        v = v + ripple * np.sin(2 * np.pi * (2 * x + y) + phi) * np.sin(2 * np.pi * 2 * y - phi)
        v = np.clip(v, 0, 1)[..., None]
        frames.append((_rgb(dark) * (1 - v) + _rgb(bright) * v,
                       np.full((TEX, TEX), glow)))
    return frames


def _door(rng, wood, band, frame=(0.25, 0.2, 0.15)):
    img = _rgb(wood) * (1 + 0.12 * np.sin(np.arange(TEX) * 2.1))[None, :, None] * np.ones((TEX, 1, 1))
    img[:, ::6] *= 0.6  # plank gaps
    img[5:8], img[24:27] = _rgb(band), _rgb(band)
    img[:, :2], img[:, -2:], img[:2] = _rgb(frame), _rgb(frame), _rgb(frame)
    return _grain(rng, img, 0.15), _none()


def _stone_dungeon(rng):
    stone, mortar = (0.4, 0.42, 0.37), (0.12, 0.13, 0.11)
    wall0, _ = _blocks(rng, 4, 2, stone, mortar, var=0.12)
    moss = _noise(rng, (TEX, TEX), (3, 3)) > 0.6
    wall1, _ = _blocks(rng, 4, 2, stone, mortar, var=0.12)
    wall1[moss] = wall1[moss] * 0.5 + _rgb((0.15, 0.32, 0.1)) * 0.5
    wall2 = wall0.copy()
    wall2[4:28, 10:22] = _rgb((0.45, 0.08, 0.08)) * (1 + 0.1 * rng.random((24, 12, 1)))  # banner
    wall2[24:28, 10:22:3] = _rgb((0.8, 0.65, 0.2))
    floor, _ = _blocks(rng, 2, 2, (0.3, 0.31, 0.27), (0.1, 0.11, 0.09), var=0.15, mortar_px=2)
    alt, _ = _blocks(rng, 8, 4, (0.38, 0.25, 0.14), (0.14, 0.1, 0.06), var=0.2)  # old planks
    ceiling, _ = _blocks(rng, 2, 1, (0.24, 0.25, 0.22), (0.1, 0.1, 0.09), var=0.1, mortar_px=3)

    def pillar(f):
        c = _Canvas()
        c.rect(9, 6, 23, 30, (0.55, 0.52, 0.48))
        c.rect(6, 2, 26, 6, (0.6, 0.57, 0.52))
        c.rect(6, 28, 26, 32, (0.5, 0.47, 0.43))
        return c

    def barrel(f):
        c = _Canvas()
        c.rect(7, 6, 25, 32, (0.45, 0.28, 0.14))
        for yb in (9, 19, 28):
            c.rect(7, yb, 25, yb + 2, (0.25, 0.25, 0.27))
        return c

    def torch(f):
        c = _Canvas()
        c.rect(14, 14, 18, 32, (0.35, 0.22, 0.1))
        c.rect(12, 12, 20, 15, (0.3, 0.3, 0.32))
        _flame(c, 16, 13, f)
        return c

    return dict(
        wall0=(wall0, _none()), wall1=(wall1, _none()), wall2=(wall2, _none()),
        door=_door(rng, (0.42, 0.27, 0.13), (0.2, 0.2, 0.22)), floor=(floor, _none()),
        floor_alt=(alt, _none()), ceiling=(ceiling, _none()),
        liquid=_liquid(rng, (0.06, 0.12, 0.05), (0.25, 0.38, 0.18), False),
        tall=[pillar(f) for f in range(2)], small=[barrel(f) for f in range(2)],
        light=[torch(f) for f in range(2)],
        creature=[_blob_creature((0.3, 0.75, 0.2), f) for f in range(2)],
        fog=(0.05, 0.08, 0.05))


def _brick_castle(rng):
    brick, mortar = (0.62, 0.24, 0.16), (0.72, 0.69, 0.62)
    wall0, _ = _blocks(rng, 8, 4, brick, mortar, var=0.1)
    wall1 = wall0.copy()
    ivy = _noise(rng, (TEX, TEX), (4, 4)) * np.linspace(1.25, 0.55, TEX)[:, None] > 0.62
    wall1[ivy] = _rgb((0.18, 0.45, 0.14)) * (0.7 + 0.6 * rng.random((int(ivy.sum()), 1)))
    wall2 = wall0.copy()
    y, x = np.mgrid[0:TEX, 0:TEX]
    window = ((x - 16) ** 2 / 49 + (y - 12) ** 2 / 64 <= 1) | ((np.abs(x - 16) < 7) & (y >= 12) & (y < 26))
    frame = ((x - 16) ** 2 / 81 + (y - 12) ** 2 / 100 <= 1) | ((np.abs(x - 16) < 9) & (y >= 12) & (y < 28))
    wall2[frame] = _rgb((0.75, 0.72, 0.65))
    wall2[window] = _rgb((0.1, 0.12, 0.22))
    floor, _ = _blocks(rng, 4, 4, (0.6, 0.5, 0.4), (0.34, 0.28, 0.22), var=0.12, stagger=True)
    dirt = 0.85 + 0.3 * _noise(rng, (TEX, TEX), (4, 4))
    alt = _grain(rng, _rgb((0.52, 0.42, 0.28)) * dirt[..., None], 0.2)

    def banner(f):
        c = _Canvas()
        c.rect(7, 1, 9, 32, (0.35, 0.25, 0.15))
        wave = 1 if f else 0
        c.rect(9, 3 + wave, 25, 19 + wave, (0.8, 0.12, 0.1))
        c.ellipse(17, 11 + wave, 3, 3, (0.95, 0.8, 0.2))
        return c

    def crate(f):
        c = _Canvas()
        c.rect(5, 8, 27, 32, (0.62, 0.45, 0.24))
        c.rect(5, 8, 27, 10, (0.4, 0.28, 0.14))
        c.rect(15, 8, 17, 32, (0.4, 0.28, 0.14))
        return c

    def brazier(f):
        c = _Canvas()
        c.rect(15, 16, 17, 32, (0.2, 0.2, 0.22))
        c.ellipse(16, 15, 7, 3, (0.3, 0.3, 0.32))
        _flame(c, 16, 14, f)
        return c

    return dict(
        wall0=(wall0, _none()), wall1=(wall1, _none()), wall2=(wall2, _none()),
        door=_door(rng, (0.5, 0.32, 0.16), (0.15, 0.15, 0.17), frame=(0.7, 0.68, 0.62)),
        floor=(floor, _none()), floor_alt=(alt, _none()), ceiling=(floor, _none()),
        liquid=_liquid(rng, (0.08, 0.22, 0.45), (0.35, 0.6, 0.85), False),
        tall=[banner(f) for f in range(2)], small=[crate(f) for f in range(2)],
        light=[brazier(f) for f in range(2)],
        creature=[_blob_creature((0.55, 0.25, 0.7), f) for f in range(2)],
        fog=(0.7, 0.78, 0.88),
        sky=dict(top=(0.22, 0.45, 0.85), horizon=(0.68, 0.8, 0.95), night=(0.02, 0.04, 0.16),
                 hills=(0.2, 0.42, 0.2), clouds=0.55, silhouette="hills"))


def _ice_cave(rng):
    n = _noise(rng, (TEX, TEX), (3, 3))
    wall0 = _rgb((0.62, 0.8, 0.92)) * (0.8 + 0.35 * n)[..., None]
    y, x = np.mgrid[0:TEX, 0:TEX]
    for _ in range(5):  # cracks
        x0, slope = rng.integers(0, TEX), rng.uniform(-0.6, 0.6)
        crack = np.abs((x - x0 - slope * y + TEX / 2) % TEX - TEX / 2) < 0.6
        wall0[crack & (rng.random((TEX, TEX)) < 0.9)] = _rgb((0.9, 0.97, 1.0))
    wall1 = _rgb((0.3, 0.42, 0.58)) * (0.75 + 0.5 * _noise(rng, (TEX, TEX), (4, 4)))[..., None]
    wall2 = wall1.copy()
    glow = np.zeros((TEX, TEX), bool)
    for cx, cy in ((8, 10), (22, 20), (12, 25)):
        shard = (np.abs(x - cx) * 2 + np.abs(y - cy) * 0.8) < 5
        wall2[shard] = _rgb((0.3, 0.95, 1.0))
        glow |= shard
    floor = _rgb((0.86, 0.91, 0.96)) * (0.88 + 0.2 * _noise(rng, (TEX, TEX), (4, 4)))[..., None]
    alt = _rgb((0.55, 0.75, 0.88)) * (0.85 + 0.25 * n.T)[..., None]
    ceiling = _rgb((0.3, 0.4, 0.54)) * (0.75 + 0.5 * _noise(rng, (TEX, TEX), (3, 3)))[..., None]
    door = _rgb((0.5, 0.72, 0.88)) * (0.9 + 0.2 * n)[..., None]
    door[:, :2] = door[:, -2:] = door[:2] = _rgb((0.25, 0.35, 0.5))
    door[::8] = _rgb((0.8, 0.93, 1.0))

    def crystal(f):
        c = _Canvas()
        c.triangle(16, 1, 6, 32, (0.35, 0.9, 1.0), glow=True)
        c.triangle(8, 12, 4, 32, (0.5, 0.8, 1.0), glow=True)
        c.triangle(24, 9, 4, 32, (0.25, 0.75, 0.95), glow=True)
        return c

    def mound(f):
        c = _Canvas()
        c.ellipse(16, 27, 14, 8, (0.9, 0.94, 0.98))
        c.ellipse(12, 22, 7, 6, (0.95, 0.97, 1.0))
        return c

    def torch(f):
        c = _Canvas()
        c.rect(14, 14, 18, 32, (0.3, 0.35, 0.45))
        _flame(c, 16, 14, f, colour=(0.25, 0.55, 1.0), core=(0.8, 0.95, 1.0))
        return c

    return dict(
        wall0=(wall0, _none()), wall1=(wall1, _none()), wall2=(wall2, glow),
        door=(door, _none()), floor=(floor, _none()), floor_alt=(alt, _none()),
        ceiling=(ceiling, _none()),
        liquid=_liquid(rng, (0.05, 0.22, 0.35), (0.55, 0.8, 0.9), False, ripple=0.1),
        tall=[crystal(f) for f in range(2)], small=[mound(f) for f in range(2)],
        light=[torch(f) for f in range(2)],
        creature=[_blob_creature((0.93, 0.95, 0.98), f, eye=(0.3, 0.6, 1.0)) for f in range(2)],
        fog=(0.72, 0.87, 0.96))


def _desert_ruins(rng):
    sand, mortar = (0.84, 0.68, 0.44), (0.62, 0.48, 0.3)
    wall0, _ = _blocks(rng, 4, 2, sand, mortar, var=0.07)
    erosion = _noise(rng, (TEX, TEX), (4, 4))
    wall1 = wall0 * (0.75 + 0.4 * erosion)[..., None]
    wall2 = wall0.copy()
    carve = _rgb((0.45, 0.33, 0.18))
    for (y0, x0) in ((4, 6), (4, 20), (18, 6), (18, 20)):  # glyphs
        wall2[y0:y0 + 8, x0:x0 + 1] = carve
        wall2[y0 + 3, x0:x0 + 6] = carve
        wall2[y0:y0 + 3, x0 + 4:x0 + 6] = carve
    ripples = np.sin(np.arange(TEX) * 0.8 + 3 * _noise(rng, (TEX, TEX), (2, 2)))
    floor = _rgb((0.88, 0.76, 0.52)) * (0.9 + 0.12 * ripples)[..., None]
    floor = _grain(rng, floor, 0.12)
    alt, _ = _blocks(rng, 4, 4, (0.78, 0.62, 0.4), (0.55, 0.42, 0.26), var=0.08)

    def palm(f):
        c = _Canvas()
        for i in range(20):
            c.rect(14 + i // 7, 12 + i, 18 + i // 7, 13 + i, (0.5, 0.35, 0.18))
        for dx, dy in ((-9, 3), (9, 3), (-6, -2), (6, -2), (0, -4)):
            c.ellipse(16 + dx, 10 + dy + f * 0.5, 6, 2.5, (0.2, 0.55, 0.15))
        return c

    def urn(f):
        c = _Canvas()
        c.ellipse(16, 22, 9, 9, (0.72, 0.38, 0.2))
        c.rect(12, 8, 20, 14, (0.65, 0.33, 0.18))
        c.rect(8, 20, 24, 22, (0.35, 0.18, 0.1))
        return c

    def brazier(f):
        c = _Canvas()
        c.rect(13, 18, 19, 32, (0.55, 0.42, 0.25))
        c.ellipse(16, 17, 8, 3.5, (0.5, 0.38, 0.22))
        _flame(c, 16, 16, f)
        return c

    return dict(
        wall0=(wall0, _none()), wall1=(wall1, _none()), wall2=(wall2, _none()),
        door=_door(rng, (0.55, 0.4, 0.22), (0.4, 0.3, 0.15)), floor=(floor, _none()),
        floor_alt=(alt, _none()), ceiling=(alt, _none()),
        liquid=_liquid(rng, (0.05, 0.4, 0.45), (0.4, 0.85, 0.8), False),
        tall=[palm(f) for f in range(2)], small=[urn(f) for f in range(2)],
        light=[brazier(f) for f in range(2)],
        creature=[_blob_creature((0.18, 0.14, 0.1), f, eye=(0.9, 0.7, 0.2)) for f in range(2)],
        fog=(0.88, 0.8, 0.62),
        sky=dict(top=(0.35, 0.58, 0.85), horizon=(0.9, 0.85, 0.7), night=(0.16, 0.07, 0.2),
                 hills=(0.8, 0.62, 0.38), clouds=0.15, silhouette="dunes"))


def _neon_city(rng):
    y, x = np.mgrid[0:TEX, 0:TEX]
    base = _rgb((0.13, 0.11, 0.2)) * (0.85 + 0.3 * _noise(rng, (TEX, TEX), (4, 4)))[..., None]
    wall0, glow0 = base.copy(), np.zeros((TEX, TEX), bool)
    lit = rng.random((4, 4)) < 0.55
    hues = np.array([(1.0, 0.85, 0.4), (0.4, 0.95, 1.0), (1.0, 0.4, 0.85)])[rng.integers(0, 3, (4, 4))]
    win = ((x % 8) >= 2) & ((x % 8) < 6) & ((y % 8) >= 2) & ((y % 8) < 6)
    on = win & lit[y // 8, x // 8]
    wall0[win] = _rgb((0.05, 0.05, 0.09))
    wall0[on] = hues[y // 8, x // 8][on]
    glow0 |= on
    wall1 = base * 0.8
    strip = (y >= 13) & (y < 17)
    wall1[strip] = _rgb((1.0, 0.2, 0.75))
    wall1[(y == 12) | (y == 17)] = _rgb((0.5, 0.1, 0.4))
    glow1 = strip.copy()
    wall2 = _rgb((0.08, 0.06, 0.12)) * np.ones((TEX, TEX, 3))
    sign = (x >= 3) & (x < 29) & (y >= 6) & (y < 26)
    wall2[sign] = _rgb((0.15, 0.9, 1.0))
    inner = (x >= 6) & (x < 26) & (y >= 9) & (y < 23)
    wall2[inner] = _rgb((0.9, 0.15, 0.8))
    wall2[inner & (((x // 3) + (y // 5)) % 3 == 0)] = _rgb((1.0, 0.95, 0.4))
    door = _rgb((0.35, 0.36, 0.4)) * (0.85 + 0.15 * ((y % 4) < 2))[..., None]
    door[28:30] = _rgb((0.2, 1.0, 0.9))
    floor = _rgb((0.1, 0.1, 0.13)) * (0.8 + 0.4 * _noise(rng, (TEX, TEX), (4, 4)))[..., None]
    grid = (x == 0) | (y == 0)
    floor[grid] = _rgb((0.1, 0.8, 0.95))
    alt = floor.copy()
    alt[~grid] *= _rgb((1.4, 0.8, 1.5))

    def lamp(f):
        c = _Canvas()
        c.rect(15, 6, 17, 32, (0.3, 0.3, 0.35))
        c.rect(15, 5, 25, 7, (0.3, 0.3, 0.35))
        c.ellipse(23, 8.5, 3, 2, (1.0, 0.95, 0.7), glow=True)
        return c

    def vending(f):
        c = _Canvas()
        c.rect(8, 4, 24, 32, (0.15, 0.15, 0.22))
        c.rect(10, 6, 22, 20, (0.3, 1.0, 0.85), glow=True)
        c.rect(10, 22, 22, 24, (1.0, 0.3, 0.7), glow=True)
        return c

    def neon(f):
        c = _Canvas()
        c.rect(13, 4, 19, 32, (1.0, 0.2, 0.8) if f == 0 else (0.95, 0.35, 0.9), glow=True)
        c.rect(15, 6, 17, 30, (1.0, 0.8, 1.0), glow=True)
        return c

    def drone(f):
        c = _Canvas()
        c.ellipse(16, 16 + f, 9, 7, (0.55, 0.58, 0.62))
        c.ellipse(16, 16 + f, 3, 3, (0.2, 1.0, 0.95), glow=True)
        c.rect(5, 8 + f, 27, 10 + f, (0.3, 0.3, 0.35))
        return c

    return dict(
        wall0=(wall0, glow0), wall1=(wall1, glow1), wall2=(wall2, sign),
        door=(door, (y >= 28) & (y < 30)), floor=(floor, grid), floor_alt=(alt, grid),
        ceiling=(floor, grid),
        liquid=_liquid(rng, (0.1, 0.05, 0.3), (0.2, 0.95, 1.0), True),
        tall=[lamp(f) for f in range(2)], small=[vending(f) for f in range(2)],
        light=[neon(f) for f in range(2)], creature=[drone(f) for f in range(2)],
        fog=(0.24, 0.1, 0.42),
        sky=dict(top=(0.12, 0.05, 0.25), horizon=(0.55, 0.25, 0.55), night=(0.1, 0.02, 0.16),
                 hills=(0.06, 0.05, 0.1), clouds=0.3, silhouette="skyline"))


def _hedge_garden(rng):
    leaves = _noise(rng, (TEX, TEX), (6, 6), 2)
    wall0 = _rgb((0.18, 0.46, 0.15)) * (0.6 + 0.7 * leaves)[..., None]
    wall0 = _grain(rng, wall0, 0.35)
    wall1 = wall0.copy()
    flowers = rng.random((TEX, TEX)) < 0.06
    wall1[flowers] = np.array([(1.0, 0.6, 0.8), (1.0, 1.0, 0.95)])[rng.integers(0, 2, int(flowers.sum()))]
    wall2 = wall0 * 0.8
    y, x = np.mgrid[0:TEX, 0:TEX]
    trellis = ((x + y) % 8 == 0) | ((x - y) % 8 == 0)
    wall2[trellis] = _rgb((0.85, 0.82, 0.75))
    door = wall0 * 0.5
    pickets = (x % 6 < 4) & (y > 4) & (y < 30)
    door[pickets] = _rgb((0.92, 0.9, 0.86))
    floor = _rgb((0.33, 0.6, 0.22)) * (0.75 + 0.45 * _noise(rng, (TEX, TEX), (8, 8), 2))[..., None]
    floor = _grain(rng, floor, 0.4)
    alt = _grain(rng, _rgb((0.72, 0.68, 0.6)) * np.ones((TEX, TEX, 3)), 0.5)

    def topiary(f):
        c = _Canvas()
        c.rect(14, 24, 18, 32, (0.4, 0.26, 0.12))
        c.triangle(16, 1, 10, 26, (0.15, 0.5, 0.15))
        return c

    def bush(f):
        c = _Canvas()
        c.ellipse(16, 22, 12, 9, (0.2, 0.52, 0.18))
        for cx, cy in ((10, 18), (18, 16), (22, 24), (13, 26), (20, 20)):
            c.ellipse(cx, cy, 1.8, 1.8, (1.0, 0.45, 0.7))
        return c

    def lantern(f):
        c = _Canvas()
        c.rect(15, 12, 17, 32, (0.2, 0.2, 0.2))
        c.rect(11, 4, 21, 13, (0.2, 0.2, 0.2))
        c.rect(12, 5, 20, 12, (1.0, 0.85, 0.45) if f == 0 else (1.0, 0.78, 0.35), glow=True)
        return c

    return dict(
        wall0=(wall0, _none()), wall1=(wall1, _none()), wall2=(wall2, _none()),
        door=(door, _none()), floor=(floor, _none()), floor_alt=(alt, _none()),
        ceiling=(floor, _none()),
        liquid=_liquid(rng, (0.08, 0.3, 0.32), (0.4, 0.7, 0.65), False),
        tall=[topiary(f) for f in range(2)], small=[bush(f) for f in range(2)],
        light=[lantern(f) for f in range(2)],
        creature=[_blob_creature((0.6, 0.45, 0.3), f, ears=(0.65, 0.5, 0.35)) for f in range(2)],
        fog=(0.78, 0.86, 0.8),
        sky=dict(top=(0.25, 0.55, 0.92), horizon=(0.75, 0.88, 0.95), night=(0.01, 0.08, 0.1),
                 hills=(0.12, 0.32, 0.12), clouds=0.5, silhouette="trees"))


def _lava_temple(rng):
    wall0, mortar = _blocks(rng, 4, 2, (0.16, 0.12, 0.12), (0.95, 0.4, 0.05), var=0.15)
    glow0 = mortar & (rng.random((TEX, TEX)) < 0.7)
    wall0[mortar & ~glow0] = _rgb((0.1, 0.07, 0.06))
    wall1, _ = _blocks(rng, 8, 4, (0.42, 0.12, 0.08), (0.15, 0.05, 0.04), var=0.12)
    wall2 = _rgb((0.12, 0.09, 0.08)) * np.ones((TEX, TEX, 3))
    y, x = np.mgrid[0:TEX, 0:TEX]
    relief = (np.abs(x - 16) + np.abs(y - 16) < 11) & ((np.abs(x - 16) + np.abs(y - 16)) % 4 < 2)
    wall2[relief] = _rgb((0.75, 0.55, 0.12))
    floor = _rgb((0.22, 0.16, 0.14)) * (0.8 + 0.4 * _noise(rng, (TEX, TEX), (3, 3)))[..., None]
    veins = np.abs(_noise(rng, (TEX, TEX), (3, 3)) - 0.5) < 0.035
    floor[veins] = _rgb((1.0, 0.45, 0.05))
    alt, _ = _blocks(rng, 4, 4, (0.3, 0.1, 0.07), (0.08, 0.04, 0.03), var=0.2)
    ceiling = _rgb((0.12, 0.08, 0.07)) * (0.7 + 0.6 * _noise(rng, (TEX, TEX), (3, 3)))[..., None]
    door = _rgb((0.2, 0.19, 0.2)) * np.ones((TEX, TEX, 3))
    door[(x % 8 == 3) & (y % 8 == 3)] = _rgb((0.5, 0.48, 0.45))
    rim = (x < 2) | (x >= TEX - 2) | (y < 2)
    door[rim] = _rgb((1.0, 0.5, 0.1))

    def obelisk(f):
        c = _Canvas()
        c.triangle(16, 0, 7, 32, (0.1, 0.08, 0.12))
        c.rect(14, 10, 18, 24, (1.0, 0.3, 0.05), glow=True)
        return c

    def skulls(f):
        c = _Canvas()
        for cx, cy in ((10, 26), (22, 26), (16, 19)):
            c.ellipse(cx, cy, 5.5, 5, (0.88, 0.85, 0.75))
            c.ellipse(cx - 2, cy, 1.3, 1.5, (0.1, 0.05, 0.05))
            c.ellipse(cx + 2, cy, 1.3, 1.5, (0.1, 0.05, 0.05))
        return c

    def brazier(f):
        c = _Canvas()
        c.rect(13, 18, 19, 32, (0.15, 0.12, 0.12))
        c.ellipse(16, 17, 9, 3.5, (0.2, 0.15, 0.15))
        _flame(c, 16, 16, f, colour=(1.0, 0.35, 0.05))
        return c

    return dict(
        wall0=(wall0, glow0), wall1=(wall1, _none()), wall2=(wall2, relief),
        door=(door, rim), floor=(floor, veins), floor_alt=(alt, _none()),
        ceiling=(ceiling, _none()),
        liquid=_liquid(rng, (0.7, 0.12, 0.02), (1.0, 0.85, 0.2), True, ripple=0.15),
        tall=[obelisk(f) for f in range(2)], small=[skulls(f) for f in range(2)],
        light=[brazier(f) for f in range(2)],
        creature=[_blob_creature((1.0, 0.4, 0.08), f, eye=(1.0, 0.95, 0.3), glow=True)
                  for f in range(2)],
        fog=(0.3, 0.07, 0.03))


def _scifi_station(rng):
    y, x = np.mgrid[0:TEX, 0:TEX]
    panel = _rgb((0.7, 0.73, 0.77)) * (0.94 + 0.1 * _noise(rng, (TEX, TEX), (2, 2)))[..., None]
    seams = (x % 16 == 0) | (y % 16 == 0)
    panel[seams] = _rgb((0.35, 0.37, 0.42))
    rivets = ((x % 16 == 3) | (x % 16 == 13)) & ((y % 16 == 3) | (y % 16 == 13))
    panel[rivets] = _rgb((0.45, 0.47, 0.52))
    wall1 = panel.copy()
    strip = (y >= 14) & (y < 18)
    wall1[strip] = _rgb((1.0, 0.55, 0.12))
    wall2 = _rgb((0.15, 0.17, 0.2)) * np.ones((TEX, TEX, 3))
    screen = (x >= 4) & (x < 28) & (y >= 5) & (y < 21)
    wall2[screen] = _rgb((0.02, 0.12, 0.08))
    text = screen & (y % 3 == 0) & (rng.random((TEX, TEX)) < 0.6) & (x < 24)
    wall2[text] = _rgb((0.3, 1.0, 0.5))
    door = _rgb((0.55, 0.57, 0.6)) * np.ones((TEX, TEX, 3))
    hazard = (y < 5) | (y >= TEX - 5)
    door[hazard & (((x + y) // 4) % 2 == 0)] = _rgb((0.95, 0.78, 0.1))
    door[hazard & (((x + y) // 4) % 2 == 1)] = _rgb((0.1, 0.1, 0.1))
    door[:, 15:17] = _rgb((0.25, 0.26, 0.3))
    floor = _rgb((0.42, 0.44, 0.48)) * np.ones((TEX, TEX, 3))
    floor[(x % 4 == 0) | (y % 4 == 0)] = _rgb((0.22, 0.23, 0.26))
    floor[x < 3] = _rgb((0.95, 0.7, 0.15))  # guide lines
    alt = _rgb((0.85, 0.87, 0.9)) * np.ones((TEX, TEX, 3))
    alt[(x < 2) | (y < 2)] = _rgb((1.0, 0.55, 0.12))
    ceiling = panel * 0.75
    lamp = (x >= 8) & (x < 24) & (y >= 8) & (y < 24)
    ceiling[lamp] = _rgb((0.9, 0.97, 1.0))

    def reactor(f):
        c = _Canvas()
        c.rect(9, 0, 23, 32, (0.5, 0.52, 0.56))
        c.rect(12, 4, 20, 28, (0.2, 0.9, 1.0) if f == 0 else (0.35, 0.95, 1.0), glow=True)
        return c

    def crate(f):
        c = _Canvas()
        c.rect(5, 10, 27, 32, (0.9, 0.5, 0.12))
        c.rect(5, 10, 27, 12, (0.3, 0.3, 0.32))
        c.rect(5, 20, 27, 22, (0.3, 0.3, 0.32))
        return c

    def beacon(f):
        c = _Canvas()
        c.rect(14, 10, 18, 32, (0.4, 0.42, 0.45))
        c.ellipse(16, 8, 4, 4, (0.9, 1.0, 1.0) if f == 0 else (0.6, 1.0, 0.95), glow=True)
        return c

    def drone(f):
        c = _Canvas()
        c.ellipse(16, 15 + f, 9, 9, (0.62, 0.64, 0.68))
        c.ellipse(16, 15 + f, 3, 3, (1.0, 0.15, 0.1), glow=True)
        return c

    return dict(
        wall0=(panel, _none()), wall1=(wall1, strip), wall2=(wall2, text),
        door=(door, _none()), floor=(floor, _none()), floor_alt=(alt, _none()),
        ceiling=(ceiling, lamp),
        liquid=_liquid(rng, (0.05, 0.3, 0.1), (0.4, 1.0, 0.45), True),
        tall=[reactor(f) for f in range(2)], small=[crate(f) for f in range(2)],
        light=[beacon(f) for f in range(2)], creature=[drone(f) for f in range(2)],
        fog=(0.55, 0.6, 0.66))


_PAINTERS = {"stone_dungeon": _stone_dungeon, "brick_castle": _brick_castle,
             "ice_cave": _ice_cave, "desert_ruins": _desert_ruins, "neon_city": _neon_city,
             "hedge_garden": _hedge_garden, "lava_temple": _lava_temple,
             "scifi_station": _scifi_station}


# ----------------------------------------------------------------------------- sky and time of day

# Non-emissive texels are multiplied by these per time of day (outdoor, indoor).
_TINT = {"day": ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
         "sunset": ((1.0, 0.78, 0.6), (0.96, 0.84, 0.72)),
         "night": ((0.5, 0.5, 0.62), (0.7, 0.7, 0.8))}


def _sky(rng: np.random.Generator, spec: dict, time: str) -> tuple[np.ndarray, np.ndarray]:
    """A [SKY_H, SKY_W, 3] panorama (row 0 is the horizon, rows go up) and its horizon colour."""
    elev = np.linspace(0, 1, SKY_H)[:, None, None]
    top, horizon = _rgb(spec["top"]), _rgb(spec["horizon"])
    if time == "sunset":
        top, horizon = top * _rgb((0.7, 0.55, 0.8)), _rgb((1.0, 0.55, 0.3))
    elif time == "night":
        top, horizon = _rgb(spec["night"]), _rgb(spec["night"]) * 1.6 + top * 0.2
    img = horizon * (1 - elev ** 0.6) + top * elev ** 0.6
    img = img * np.ones((1, SKY_W, 1))
    u = np.arange(SKY_W)
    if time == "night":
        stars = rng.random((SKY_H, SKY_W)) < 0.012
        stars[:12] = False
        img[stars] = _rgb((0.9, 0.9, 1.0)) * rng.uniform(0.5, 1.0, (int(stars.sum()), 1))
    # sun or moon at a fixed azimuth, measured in degrees so it stays round
    azimuth = u * (360.0 / SKY_W)
    elevation = np.degrees(np.arctan((np.arange(SKY_H) + 0.5) * (SKY_TAN_MAX / SKY_H)))
    sun_el = {"day": 40.0, "sunset": 6.0, "night": 30.0}[time]
    d = np.hypot(azimuth[None, :] - 108.0, elevation[:, None] - sun_el)
    disc = {"day": (1.0, 0.97, 0.85), "sunset": (1.0, 0.8, 0.4), "night": (0.9, 0.92, 1.0)}[time]
    img[d < 3.5] = _rgb(disc)
    if time != "night":
        halo = np.clip(1 - d / 25, 0, 1)[..., None] ** 2 * 0.35
        img = img * (1 - halo) + _rgb(disc) * halo
    if spec["clouds"] > 0:
        cloud = _noise(rng, (SKY_H, SKY_W), (8, 20), 4)  # wider than tall, like real clouds
        amount = np.clip((cloud - (1 - spec["clouds"])) * 3, 0, 1)[..., None]
        amount = amount * np.clip((elev - 0.03) * 8, 0, 1)  # fade out towards the horizon
        colour = {"day": (1.0, 1.0, 1.0), "sunset": (1.0, 0.7, 0.6), "night": (0.18, 0.18, 0.25)}[time]
        img = img * (1 - 0.8 * amount) + _rgb(colour) * 0.8 * amount
    # silhouette on the horizon
    kind = spec["silhouette"]
    line = _noise(rng, (1, SKY_W), (1, {"hills": 6, "dunes": 4, "trees": 48, "skyline": 1}[kind]), 2)[0]
    if kind == "skyline":
        blocks = rng.random(SKY_W // 8).repeat(8)
        height = 5 + (blocks ** 2 * 30).astype(int)
    else:  # rows: 128 rows span 68 degrees, so 10 rows are about 11 degrees near the horizon
        height = (2 + line * {"hills": 10, "dunes": 6, "trees": 9}[kind]).astype(int)
    ground = np.arange(SKY_H)[:, None] < height[None, :]
    shade = _rgb(spec["hills"]) * _rgb(_TINT[time][0])
    img[ground] = (shade * (0.85 + 0.3 * rng.random((SKY_H, SKY_W, 1))))[ground]
    if kind == "skyline":
        windows = ground & (rng.random((SKY_H, SKY_W)) < (0.08 if time == "day" else 0.25))
        img[windows] = _rgb((1.0, 0.85, 0.45))
    return np.clip(img, 0, 1), horizon


# ----------------------------------------------------------------------------- the atlas

@dataclass
class Atlas:
    """All texels of all palettes; a palette is one (theme, time of day) pair."""

    rgb: torch.Tensor  # int32 [N]: packed 0x00BBGGRR texels
    alpha: torch.Tensor  # int32 [N]: 1 where a sprite texel is opaque (1 everywhere else too)
    base: torch.Tensor  # int64 [n_palettes, len(SLOTS)]: first texel of each slot
    fog: torch.Tensor  # float32 [n_palettes, 3]: fog colour (near the sky's horizon outdoors)

    def to(self, device: torch.device | str) -> "Atlas":
        return Atlas(*(t.to(device) for t in (self.rgb, self.alpha, self.base, self.fog)))


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Float [N, 3] in [0, 1] to int32 0x00BBGGRR."""
    q = np.clip(np.round(rgb * 255), 0, 255).astype(np.int32)
    return q[:, 0] | (q[:, 1] << 8) | (q[:, 2] << 16)


def _tinted(rgb: np.ndarray, emissive: np.ndarray, tint) -> np.ndarray:
    out = rgb * _rgb(tint)
    out[emissive] = rgb[emissive]
    return out


def _sprite_texels(canvas: _Canvas, tint) -> tuple[np.ndarray, np.ndarray]:
    """A sprite frame with its transparent padding rows, as (rgb [R*T, 3], alpha [R*T])."""
    rgb = np.zeros((SPRITE_ROWS, TEX, 3))
    alpha = np.zeros((SPRITE_ROWS, TEX), bool)
    rgb[1:-1] = _tinted(canvas.rgb, canvas.emissive, tint)
    alpha[1:-1] = canvas.alpha
    return rgb.reshape(-1, 3), alpha.reshape(-1)


@lru_cache(maxsize=1)
def _build_atlas() -> Atlas:
    rgb_parts, alpha_parts, base, fog = [], [], [], []
    offset = 0

    def add(rgb: np.ndarray, alpha: np.ndarray | None = None) -> int:
        nonlocal offset
        rgb = rgb.reshape(-1, 3)
        rgb_parts.append(rgb)
        alpha_parts.append(np.ones(len(rgb), bool) if alpha is None else alpha)
        offset += len(rgb)
        return offset - len(rgb)

    for t, name in enumerate(THEME_NAMES):
        painted = _PAINTERS[name](np.random.default_rng(1000 + t))
        theme = THEMES[name]
        for time in TIMES_OF_DAY:
            tint = _TINT[time][0 if theme.outdoor else 1]
            row = [0] * len(SLOTS)
            for slot in ("wall0", "wall1", "wall2", "door", "floor", "floor_alt", "ceiling"):
                row[SLOT[slot]] = add(_tinted(*painted[slot], tint))
            frames = [_tinted(rgb, em, tint) for rgb, em in painted["liquid"]]
            row[SLOT["liquid"]] = add(np.concatenate([f.reshape(-1, 3) for f in frames]))
            for slot in SPRITE_SLOTS:
                parts = [_sprite_texels(c, tint) for c in painted[slot]]
                row[SLOT[slot]] = add(np.concatenate([p[0] for p in parts]),
                                      np.concatenate([p[1] for p in parts]))
            if theme.outdoor:  # fog between the theme's haze and the sky at the horizon
                sky, horizon = _sky(np.random.default_rng(2000 + t), painted["sky"], time)
                row[SLOT["sky"]] = add(sky)
                fog_colour = horizon * 0.35 + _rgb(painted["fog"]) * _rgb(tint) * 0.65
            else:  # indoors the time of day dims the fog but keeps its hue
                fog_colour = _rgb(painted["fog"]) * float(np.mean(tint))
            base.append(row)
            fog.append(fog_colour)
    return Atlas(
        rgb=torch.from_numpy(_pack(np.concatenate(rgb_parts))),
        alpha=torch.from_numpy(np.concatenate(alpha_parts).astype(np.int32)),
        base=torch.tensor(base, dtype=torch.int64),
        fog=torch.from_numpy(np.clip(np.array(fog), 0, 1).astype(np.float32)))


_ATLASES: dict[str, Atlas] = {}


def get_atlas(device: torch.device | str = "cpu") -> Atlas:
    """The atlas on ``device`` (painted once per process, then copied per device)."""
    key = str(torch.device(device))
    if key not in _ATLASES:
        _ATLASES[key] = _build_atlas().to(device)
    return _ATLASES[key]
