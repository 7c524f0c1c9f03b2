"""Command line: play the simulator in a terminal, print a map, list the themes.

    python -m simulator play [--seed 7] [--theme ice_cave] [--size 48]
    python -m simulator map [--seed 7]
    python -m simulator themes

The terminal player draws with 24-bit colour half blocks. Terminals report key presses, not
releases, so each press holds its key for one frame (key repeat walks continuously): w a s d move
(capitals sprint), space jumps, c crouches, e opens doors, j l or the arrow keys turn, i k look up
and down, 1-8 switch theme, q quits.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time

from world_engine.controls import VK, CtrlInput
from .constants import FPS
from .maps import DOOR, LIQUID
from .themes import THEME_NAMES, THEMES
from .world import EpisodeSpec, World

_KEYS = {"w": {VK["W"]}, "a": {VK["A"]}, "s": {VK["S"]}, "d": {VK["D"]}, " ": {VK["SPACE"]},
         "c": {VK["CTRL"]}, "e": {VK["E"]}}
_HELP = "wasd move (WASD sprint)  space jump  c crouch  e door  j/l turn  i/k look  1-8 theme  q quit"
_TURN = {"j": (-8.0, 0.0), "l": (8.0, 0.0), "i": (0.0, -6.0), "k": (0.0, 6.0),
         "\x1b[D": (-8.0, 0.0), "\x1b[C": (8.0, 0.0), "\x1b[A": (0.0, -6.0), "\x1b[B": (0.0, 6.0)}


def _controls(text: str) -> tuple[CtrlInput, str | None]:
    """Controls from the keys typed during one frame, and a theme to switch to (or None)."""
    buttons: set[int] = set()
    mx = my = 0.0
    theme = None
    i = 0
    while i < len(text):
        seq = text[i:i + 3] if text[i] == "\x1b" else text[i]
        i += len(seq)
        if seq in _TURN:
            mx, my = mx + _TURN[seq][0], my + _TURN[seq][1]
        elif seq.lower() in _KEYS:
            buttons |= _KEYS[seq.lower()] | ({VK["SHIFT"]} if seq.isupper() else set())
        elif seq.isdigit() and 1 <= int(seq) <= len(THEME_NAMES):
            theme = THEME_NAMES[int(seq) - 1]
    return CtrlInput(button=buttons, mouse=(mx, my)), theme


def _draw(rgb, caption: str) -> str:
    """An RGB frame as lines of half blocks (two pixel rows per text line)."""
    lines = []
    for y in range(0, rgb.shape[0] - 1, 2):
        top, bottom = rgb[y], rgb[y + 1]
        lines.append("".join(f"\x1b[38;2;{a[0]};{a[1]};{a[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀"
                             for a, b in zip(top, bottom)) + "\x1b[0m")
    return "\x1b[H" + "\n".join(lines) + f"\n\x1b[0m\x1b[K{caption}\n\x1b[K" + _HELP


def play(seed: int, theme: str | None, size: int) -> None:
    if not sys.stdin.isatty():
        raise SystemExit("play needs an interactive terminal")
    import termios
    import tty

    world = World.from_seed(seed, theme=theme, size=size)
    frame = world.reset()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        sys.stdout.write("\x1b[2J\x1b[?25l")
        while True:
            start = time.monotonic()
            sys.stdout.write(_draw(frame.rgb, frame.caption))
            sys.stdout.flush()
            typed = ""
            while (left := 1.0 / FPS - (time.monotonic() - start)) > 0:
                if select.select([sys.stdin], [], [], left)[0]:
                    typed += os.read(fd, 64).decode(errors="ignore")
            if "q" in typed:
                break
            ctrl, new_theme = _controls(typed)
            if new_theme:
                world.set_theme(new_theme)
            frame = world.step(ctrl)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stdout.write("\x1b[0m\x1b[?25h\n")


def print_map(seed: int) -> None:
    spec = EpisodeSpec.from_seed(seed)
    m = spec.build_map()
    marks = {(int(x), int(y)): "TOiC"[int(k)] for x, y, k in m.sprites}
    sx, sy = int(m.spawn[0]), int(m.spawn[1])
    print(f"seed {seed}: {m.layout}, {spec.caption(0)}")
    for y in range(m.cells.shape[0]):
        row = ""
        for x in range(m.cells.shape[1]):
            code = m.cells[y, x]
            ground = "~" if m.floor[y, x] == LIQUID else "."
            row += ("P" if (x, y) == (sx, sy) else marks.get((x, y)) or
                    ("D" if code == DOOR else "#" if code else ground))
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("play", help="play in this terminal")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--theme", choices=THEME_NAMES)
    p.add_argument("--size", type=int, default=48)
    m = sub.add_parser("map", help="print a seed's map")
    m.add_argument("--seed", type=int, default=7)
    sub.add_parser("themes", help="list the themes")
    args = parser.parse_args()
    if args.command == "play":
        play(args.seed, args.theme, args.size)
    elif args.command == "map":
        print_map(args.seed)
    else:
        for i, name in enumerate(THEME_NAMES, 1):
            t = THEMES[name]
            print(f"{i}. {name:14s} {'outdoor' if t.outdoor else 'indoor ':7s} {', '.join(t.places)}")


if __name__ == "__main__":
    main()
