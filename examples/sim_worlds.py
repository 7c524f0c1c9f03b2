"""Render the pictures in examples/worlds/: one PNG strip per theme, plus a short walk GIF.

    python examples/sim_worlds.py [--out examples/worlds] [--size 128]

Each strip shows one theme under five looks (day, sunset, night with torches, fog, and weather
outdoors or a torch-lit maze indoors), each a few steps into a different seeded world.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from world_engine.controls import VK, CtrlInput  # noqa: E402
from simulator import THEME_NAMES, THEMES, YAW_PER_MOUSE_UNIT, EpisodeSpec, World, rollout  # noqa: E402

STEPS = 6  # frames walked forward before the picture is taken


def looks(theme: str) -> list[dict]:
    outdoor = THEMES[theme].outdoor
    return [dict(time_of_day="day", fog="clear", layout="rooms"),
            dict(time_of_day="sunset", fog="clear", layout="courtyard"),
            dict(time_of_day="night", fog="clear", torches=True, layout="caves"),
            dict(time_of_day="day", fog="foggy", layout="courtyard"),
            dict(time_of_day="day", fog="clear", weather="snow" if theme == "hedge_garden" else "rain",
                 layout="maze") if outdoor else
            dict(time_of_day="day", fog="clear", torches=True, layout="maze")]


def snapshot(theme: str, seed: int, size: int, **look) -> np.ndarray:
    """Face the most open of 12 headings at the spawn point, walk a few steps, take the frame."""
    look.setdefault("torches", False)
    look.setdefault("weather", "none")
    spec = EpisodeSpec.from_seed(seed, switch_probability=0.0, theme=theme, **look)
    world = World(spec, size=32, aux=True)
    world.reset()
    turn = CtrlInput(mouse=(30.0 / math.degrees(YAW_PER_MOUSE_UNIT), 0.0))  # 30 degrees right
    openness = []
    for _ in range(12):
        depth = world.step(turn).depth[12:20, 8:24]
        openness.append(float(np.minimum(depth, 6.0).mean()))  # open, but with walls in view
    best = (int(np.argmax(openness)) + 1) % 12
    world = World(spec, size=size, aux=True)
    frame = world.reset()
    for _ in range(best):
        frame = world.step(turn)
    for _ in range(STEPS):  # walk in, but not up to a wall
        if frame.depth[size // 2, size // 2] < 3.0:
            break
        frame = world.step(CtrlInput(button={VK["W"]}))
    return frame.rgb


def walk_gif(path: Path, theme: str, seed: int, frames: int = 40, size: int = 64) -> None:
    """The data policy's first frames in one world, as a looping GIF at 15 fps."""
    spec = EpisodeSpec.from_seed(seed, switch_probability=0.0, theme=theme, time_of_day="sunset",
                                 fog="clear", weather="none", torches=True, layout="rooms")
    steps = rollout([spec], size=size, n_frames=frames)
    images = [Image.fromarray(step["rgb"][0].numpy()) for step in steps]
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // 15, loop=0,
                   optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "worlds"))
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, theme in enumerate(THEME_NAMES):
        strip = [snapshot(theme, 100 * i + j, args.size, **look) for j, look in enumerate(looks(theme))]
        Image.fromarray(np.concatenate(strip, 1)).save(out / f"{theme}.png", optimize=True)
        print(out / f"{theme}.png")
    walk_gif(out / "walk_brick_castle.gif", "brick_castle", 3)
    print(out / "walk_brick_castle.gif")


if __name__ == "__main__":
    main()
