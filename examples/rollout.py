"""Generate a short rollout with WorldEngine and save it as a GIF (and a PNG strip).

    python examples/rollout.py                       # the embedded model, CPU, offline
    python examples/rollout.py --model path/or/repo --prompt "a foggy castle" --frames 48
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world_engine import VK, CtrlInput, WorldEngine  # noqa: E402

# Walk forward, turn right while walking, strafe left, look around: one control per frame.
PLAN = ([CtrlInput(button={VK["W"]})] * 12 + [CtrlInput(button={VK["W"]}, mouse=(4.0, 0.0))] * 12
        + [CtrlInput(button={VK["A"]})] * 8 + [CtrlInput(mouse=(-4.0, 0.0))] * 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="folder or Hub repo id (default: the embedded model)")
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--frames", type=int, default=len(PLAN))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("rollout.gif"))
    args = parser.parse_args()

    engine = WorldEngine(args.model, seed=args.seed)
    if args.prompt and engine.config.prompt_conditioning is not None:
        engine.set_prompt(args.prompt)
    frames = [engine.gen_frame(PLAN[i % len(PLAN)]).cpu().numpy() for i in range(args.frames)]
    images = [Image.fromarray(f) for f in frames]
    images[0].save(args.out, save_all=True, append_images=images[1:], duration=66, loop=0)
    strip = np.concatenate(frames[:: max(1, len(frames) // 8)][:8], axis=1)
    Image.fromarray(strip).save(args.out.with_suffix(".png"))
    print(f"wrote {args.out} ({len(frames)} frames) and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
