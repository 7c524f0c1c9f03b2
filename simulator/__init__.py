"""A procedural first-person 3D world with exact controls and camera poses, and its datasets.

It is the training data of the embedded world model, the ground truth it is scored against, and
the app's playable "reality" mode. Controls are the engine's ``CtrlInput`` (Windows virtual-key
codes, per-frame mouse delta); the scales are in ``constants``. Quick start::

    from world_engine.controls import CtrlInput, VK
    from simulator import World

    world = World.from_seed(7, theme="ice_cave", size=64)
    frame = world.step(CtrlInput(button={VK["W"]}, mouse=(4.0, 0.0)))  # frame.rgb: uint8 HxWx3

See docs/sim.md for the conventions, the data formats and the evaluation set.
"""

from .captions import make_caption, match_prompt
from .constants import (CTRL_DIM, FOV_DEG, FPS, PITCH_PER_MOUSE_UNIT, SEG_CLASSES,
                        YAW_PER_MOUSE_UNIT)
from .dataset import (ClipDataset, ClipStream, EvalEpisode, collate_clips, load_eval_set,
                      make_eval_set, policy_actions, render_eval, rollout, save_eval_set,
                      write_dataset)
from .policy import Policy
from .render import Rendered, Scene, render
from .themes import ATTRIBUTE_NAMES, THEME_NAMES, THEMES, Look, Theme
from .world import EpisodeSpec, Frame, World, WorldBatch

__all__ = [
    "World", "WorldBatch", "Frame", "EpisodeSpec", "Look", "Theme", "THEMES", "THEME_NAMES",
    "ATTRIBUTE_NAMES", "match_prompt", "make_caption", "Policy", "render", "Scene", "Rendered",
    "rollout", "policy_actions", "write_dataset", "ClipDataset", "collate_clips", "ClipStream",
    "EvalEpisode", "make_eval_set", "save_eval_set", "load_eval_set", "render_eval",
    "FPS", "FOV_DEG", "YAW_PER_MOUSE_UNIT", "PITCH_PER_MOUSE_UNIT", "CTRL_DIM", "SEG_CLASSES",
]
