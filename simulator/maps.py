"""Map generators: mazes, rooms and corridors, caves and open courtyards, with their props.

A map is pure data (numpy), drawn from a ``numpy.random.Generator`` so one seed always gives the
same world. Every generator guarantees that all walkable cells are connected and the map border
is solid, which the renderer and the physics rely on (rays always hit a wall, nobody leaves).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .constants import MAP_SIZE
from .themes import LAYOUTS

# Cell codes: 0 walkable, 1..3 wall variants (texture slots wall0..wall2), 4 door.
EMPTY, DOOR = 0, 4
# Floor codes.
FLOOR, FLOOR_ALT, LIQUID = 0, 1, 2
# Sprite kinds (texture slots tall, small, light, creature).
TALL, SMALL, LIGHT, CREATURE = 0, 1, 2, 3
MAX_SPRITES = 32  # static props + lights + creatures, per map
MAX_CREATURES = 3
CREATURE_LOOP = 94  # every creature walks a closed loop of this many cell-to-cell steps


@dataclass
class MapSpec:
    """One generated world layout and its props."""

    layout: str
    cells: np.ndarray  # int8 [M, M], indexed [y, x]: EMPTY, wall variant 1..3 or DOOR
    floor: np.ndarray  # int8 [M, M]: FLOOR, FLOOR_ALT or LIQUID
    sprites: np.ndarray  # float32 [K, 3]: x, y, kind (TALL, SMALL or LIGHT)
    creatures: np.ndarray  # float32 [C, CREATURE_LOOP, 2]: x, y of each loop step
    spawn: tuple[float, float, float]  # x, y, yaw

    @property
    def walkable(self) -> np.ndarray:
        return self.cells == EMPTY


def _components(free: np.ndarray) -> np.ndarray:
    """Label 4-connected components of ``free`` (0 = not free)."""
    labels = np.zeros(free.shape, np.int32)
    n = 0
    for y, x in zip(*np.nonzero(free)):
        if labels[y, x]:
            continue
        n += 1
        labels[y, x] = n
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if free[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = n
                    queue.append((ny, nx))
    return labels


def _keep_largest(free: np.ndarray) -> np.ndarray:
    labels = _components(free)
    if labels.max() == 0:
        return free
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _border(free: np.ndarray) -> np.ndarray:
    free[0, :] = free[-1, :] = free[:, 0] = free[:, -1] = False
    return free


def _maze(rng: np.random.Generator, m: int) -> np.ndarray:
    """Depth-first maze on odd coordinates, with extra openings so it has loops."""
    free = np.zeros((m, m), bool)
    n = (m - 1) // 2
    seen = np.zeros((n, n), bool)
    stack = [(int(rng.integers(n)), int(rng.integers(n)))]
    seen[stack[0]] = True
    free[2 * stack[0][0] + 1, 2 * stack[0][1] + 1] = True
    while stack:
        y, x = stack[-1]
        options = [(y + dy, x + dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
                   if 0 <= y + dy < n and 0 <= x + dx < n and not seen[y + dy, x + dx]]
        if not options:
            stack.pop()
            continue
        ny, nx = options[rng.integers(len(options))]
        seen[ny, nx] = True
        free[2 * ny + 1, 2 * nx + 1] = free[y + ny + 1, x + nx + 1] = True
        stack.append((ny, nx))
    walls = np.argwhere(~free[1:-1, 1:-1]) + 1
    for y, x in walls[rng.random(len(walls)) < 0.12]:
        if (free[y - 1, x] and free[y + 1, x]) != (free[y, x - 1] and free[y, x + 1]):
            free[y, x] = True  # open a wall between two corridors
    return _border(free)


def _rooms(rng: np.random.Generator, m: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Rectangular rooms joined by L-shaped corridors; returns the rooms as (y0, x0, y1, x1)."""
    free = np.zeros((m, m), bool)
    rooms: list[tuple[int, int, int, int]] = []
    for _ in range(200):
        h, w = rng.integers(4, 10, size=2)
        y0, x0 = rng.integers(1, m - 1 - h), rng.integers(1, m - 1 - w)
        y1, x1 = y0 + h, x0 + w
        if all(y1 + 1 < a or b + 1 < y0 or x1 + 1 < c or d + 1 < x0 for a, c, b, d in rooms):
            rooms.append((y0, x0, y1, x1))
            free[y0:y1, x0:x1] = True
        if len(rooms) >= 10:
            break
    rooms.sort(key=lambda r: (r[0] + r[2]) * 0.3 + (r[1] + r[3]))
    centres = [((a + b) // 2, (c + d) // 2) for a, c, b, d in rooms]
    pairs = list(zip(centres, centres[1:]))
    for _ in range(2):
        i, j = rng.choice(len(centres), 2, replace=False)
        pairs.append((centres[i], centres[j]))
    for (ya, xa), (yb, xb) in pairs:
        if rng.random() < 0.5:
            free[min(ya, yb):max(ya, yb) + 1, xa] = True
            free[yb, min(xa, xb):max(xa, xb) + 1] = True
        else:
            free[ya, min(xa, xb):max(xa, xb) + 1] = True
            free[min(ya, yb):max(ya, yb) + 1, xb] = True
    return _border(free), rooms


def _caves(rng: np.random.Generator, m: int) -> np.ndarray:
    """Cellular-automaton caves, smoothed, keeping the largest open region."""
    for _ in range(20):
        solid = rng.random((m, m)) < 0.44
        for _ in range(5):
            padded = np.pad(solid, 1, constant_values=True)
            neighbours = sum(np.roll(np.roll(padded, dy, 0), dx, 1)[1:-1, 1:-1]
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - solid
            solid = (neighbours >= 5) | (solid & (neighbours >= 4))
        free = _keep_largest(_border(~solid))
        if free.sum() > 0.3 * m * m:
            return free
    return free


def _courtyard(rng: np.random.Generator, m: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """An open square with buildings and pillar rows; returns the free mask and a pool rectangle."""
    free = _border(np.ones((m, m), bool))
    for _ in range(rng.integers(3, 7)):  # small buildings
        h, w = rng.integers(2, 5, size=2)
        y0, x0 = rng.integers(3, m - 3 - h), rng.integers(3, m - 3 - w)
        free[y0:y0 + h, x0:x0 + w] = False
    step = int(rng.integers(3, 6))
    y0, x0 = rng.integers(2, 6, size=2)
    rows = rng.random() < 0.5
    for i in range(int(y0), m - 2, step):  # a colonnade along one axis
        if rows:
            free[i, int(x0)] = free[i, m - 1 - int(x0)] = False
        else:
            free[int(x0), i] = free[m - 1 - int(x0), i] = False
    cy, cx = rng.integers(m // 3, 2 * m // 3, size=2)
    pool = (int(cy) - 1, int(cx) - 1, int(cy) + 2, int(cx) + 2)
    free[pool[0] - 1:pool[2] + 1, pool[1] - 1:pool[3] + 1] = True
    return _keep_largest(free), pool


def _place(rng: np.random.Generator, candidates: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct cells from ``candidates`` [K, 2] (y, x), as jittered x, y centres."""
    if len(candidates) == 0 or n <= 0:
        return np.zeros((0, 2), np.float32)
    pick = candidates[rng.choice(len(candidates), min(n, len(candidates)), replace=False)]
    jitter = rng.uniform(-0.2, 0.2, size=pick.shape)
    return (pick[:, ::-1] + 0.5 + jitter).astype(np.float32)


def _creature_loop(rng: np.random.Generator, walk: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """A random walk of cell centres, then back along itself: a closed loop of CREATURE_LOOP."""
    half = CREATURE_LOOP // 2 + 1
    path = [start]
    prev = None
    while len(path) < half:
        y, x = path[-1]
        options = [(y + dy, x + dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
                   if walk[y + dy, x + dx]]
        forward = [o for o in options if o != prev] or options
        prev = path[-1]
        path.append(forward[rng.integers(len(forward))] if forward else path[-1])
    loop = path + path[-2:0:-1]
    return (np.array(loop, np.float32)[:, ::-1] + 0.5)


def _spawn(rng: np.random.Generator, walk: np.ndarray) -> tuple[float, float, float]:
    """A walkable cell centre, facing its longest open line of sight along an axis."""
    cells = np.argwhere(walk)
    y, x = cells[rng.integers(len(cells))]
    best, yaw = -1, 0.0
    for angle, (dy, dx) in zip((0.0, np.pi / 2, np.pi, -np.pi / 2), ((0, 1), (1, 0), (0, -1), (-1, 0))):
        run = 0
        while walk[y + dy * (run + 1), x + dx * (run + 1)]:
            run += 1
        if run > best:
            best, yaw = run, angle
    return float(x) + 0.5, float(y) + 0.5, float(yaw + rng.uniform(-0.3, 0.3))


def generate_map(rng: np.random.Generator, layout: str, m: int = MAP_SIZE) -> MapSpec:
    """A connected map of the given layout with walls, doors, floors, props and creatures.

    Light props are always placed (the torches modifier only shows or hides them), so a seed
    gives the same map whatever its look.
    """
    floor = np.zeros((m, m), np.int8)
    rooms: list = []
    if layout == "maze":
        free = _maze(rng, m)
    elif layout == "rooms":
        free, rooms = _rooms(rng, m)
    elif layout == "caves":
        free = _caves(rng, m)
    elif layout == "courtyard":
        free, pool = _courtyard(rng, m)
        floor[pool[0]:pool[2], pool[1]:pool[3]] = LIQUID
    else:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    free = _keep_largest(free)

    # Wall variants: mostly wall0, patches of wall1, a few wall2 accents.
    variant = np.where(rng.random((m, m)) < 0.22, 2, 1)
    variant[rng.random((m, m)) < 0.06] = 3
    cells = np.where(free, EMPTY, variant).astype(np.int8)

    # Doors: corridor cells with walls on both sides and open cells in front and behind.
    pad = ~free
    ns = np.zeros_like(free)
    ns[1:-1, 1:-1] = (free[1:-1, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:] & free[:-2, 1:-1]
                      & free[2:, 1:-1])
    ew = np.zeros_like(free)
    ew[1:-1, 1:-1] = (free[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & free[1:-1, :-2]
                      & free[1:-1, 2:])
    door_rate = {"maze": 0.06, "rooms": 0.35, "caves": 0.0, "courtyard": 0.3}[layout]
    doors = (ns | ew) & (rng.random((m, m)) < door_rate)
    cells[doors] = DOOR

    # Floors: carpets in some rooms, pools in big rooms and caves.
    for y0, x0, y1, x1 in rooms:
        if rng.random() < 0.35:
            floor[y0:y1, x0:x1] = FLOOR_ALT
        if (y1 - y0) >= 5 and (x1 - x0) >= 5 and rng.random() < 0.5:
            floor[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = LIQUID
    if layout == "caves":
        pools = np.argwhere(free)
        for y, x in pools[rng.choice(len(pools), 3, replace=False)]:
            floor[y - 1:y + 2, x - 1:x + 2] = LIQUID
    if layout == "maze":
        floor[free & (rng.random((m, m)) < 0.15)] = FLOOR_ALT
    floor[~free] = FLOOR

    walk = cells == EMPTY
    spawn = _spawn(rng, walk)
    open_cells = np.argwhere(walk & (floor != LIQUID))
    open_cells = open_cells[(open_cells[:, 0] != int(spawn[1])) | (open_cells[:, 1] != int(spawn[0]))]
    n_tall = {"maze": 4, "rooms": 8, "caves": 10, "courtyard": 14}[layout]
    parts = [(_place(rng, open_cells, int(rng.integers(n_tall // 2, n_tall + 1))), TALL),
             (_place(rng, open_cells, int(rng.integers(3, 8))), SMALL),
             (_place(rng, open_cells, int(rng.integers(5, 9))), LIGHT)]
    sprites = np.concatenate([np.concatenate([xy, np.full((len(xy), 1), kind, np.float32)], 1)
                              for xy, kind in parts])[:MAX_SPRITES - MAX_CREATURES]
    n_creatures = int(rng.integers(1, MAX_CREATURES + 1))
    starts = np.argwhere(walk)[rng.choice(int(walk.sum()), n_creatures, replace=False)]
    creatures = np.stack([_creature_loop(rng, walk, (int(y), int(x))) for y, x in starts])
    return MapSpec(layout, cells, floor, sprites.astype(np.float32), creatures, spawn)


_ASCII_CELLS = {".": EMPTY, "_": EMPTY, "~": EMPTY, "T": EMPTY, "o": EMPTY, "i": EMPTY, "P": EMPTY,
                "#": 1, "%": 2, "@": 3, "D": DOOR}
_ASCII_FLOOR = {"_": FLOOR_ALT, "~": LIQUID}
_ASCII_SPRITES = {"T": TALL, "o": SMALL, "i": LIGHT}


def map_from_ascii(text: str, yaw: float = 0.0, layout: str = "rooms", m: int = MAP_SIZE) -> MapSpec:
    """A hand-drawn map (for tests and demos): ``#%@`` walls, ``D`` door, ``.`` floor,
    ``_`` alt floor, ``~`` liquid, ``T``/``o``/``i`` props, ``P`` the spawn (facing ``yaw``).
    Rows are y, columns x; the drawing is padded with walls to ``m x m``; no creatures."""
    lines = [line for line in text.strip("\n").splitlines()]
    cells = np.ones((m, m), np.int8)
    floor = np.zeros((m, m), np.int8)
    sprites, spawn = [], None
    for y, line in enumerate(lines):
        for x, ch in enumerate(line):
            cells[y, x] = _ASCII_CELLS[ch]
            floor[y, x] = _ASCII_FLOOR.get(ch, FLOOR)
            if ch in _ASCII_SPRITES:
                sprites.append((x + 0.5, y + 0.5, _ASCII_SPRITES[ch]))
            if ch == "P":
                spawn = (x + 0.5, y + 0.5, yaw)
    if spawn is None:
        raise ValueError("the drawing needs a P for the spawn point")
    if (cells[0] == EMPTY).any() or (cells[-1] == EMPTY).any() or (cells[:, 0] == EMPTY).any() \
            or (cells[:, -1] == EMPTY).any():
        raise ValueError("the map border must be walls")
    return MapSpec(layout, cells, floor, np.array(sprites, np.float32).reshape(-1, 3),
                   np.zeros((0, CREATURE_LOOP, 2), np.float32), spawn)
