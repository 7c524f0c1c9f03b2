"""Fixed conventions of the simulator: timing, camera, control scales and physics.

The app, the dataset and the trained model all rely on these numbers, so they live in one place
and change only together with a dataset version bump.

Coordinates: the map is a grid ``cells[y, x]`` of unit cells, ``x`` grows to the east (right on a
map picture) and ``y`` to the south (down on a map picture). ``yaw`` is the heading in radians,
``0`` = facing +x, and it grows when turning right (clockwise on a map picture), so the facing
vector is ``(cos yaw, sin yaw)`` and the right-hand vector is ``(-sin yaw, cos yaw)``. ``z`` is the
eye height above the floor; walls are 1 unit tall. ``pitch`` is in radians, positive = looking up.
"""

from __future__ import annotations

import math

from world_engine.controls import VK

# Timing and camera.
FPS = 15
FOV_DEG = 75.0  # horizontal field of view
MAX_PITCH = math.radians(30.0)

# Mouse: one unit of the per-frame delta turns the camera by this many radians. dx > 0 turns right
# (yaw grows), dy > 0 looks down (pitch shrinks), as in screen coordinates. The data policy emits
# integer deltas and caps them at MOUSE_CAP units (12 degrees per frame).
YAW_PER_MOUSE_UNIT = math.radians(0.5)
PITCH_PER_MOUSE_UNIT = math.radians(0.5)
MOUSE_CAP = 24.0
# The player's pointer calibration: one pixel of pointer movement is 0.3 units (0.15 degree), so a
# comfortable flick of 30-80 px per frame is a clearly visible 5-12 degree turn.
POINTER_UNITS_PER_PIXEL = 0.3
# The arrow keys LEFT/RIGHT turn by this much per frame (UP/DOWN alias W/S).
ARROW_TURN = math.radians(4.0)

# Buttons (Windows virtual-key codes, exactly the engine's CtrlInput ids).
N_BUTTONS = 256
CTRL_DIM = N_BUTTONS + 3  # [mouse_x, mouse_y, buttons(256), scroll_sign], as controls.ctrl_vector
KEY_FORWARD, KEY_LEFT, KEY_BACK, KEY_RIGHT = VK["W"], VK["A"], VK["S"], VK["D"]
KEY_SPRINT, KEY_JUMP, KEY_CROUCH, KEY_USE = VK["SHIFT"], VK["SPACE"], VK["CTRL"], VK["E"]
KEY_ARROW_LEFT, KEY_ARROW_UP = VK["LEFT"], VK["UP"]
KEY_ARROW_RIGHT, KEY_ARROW_DOWN = VK["RIGHT"], VK["DOWN"]
# Every key the simulator reacts to; the scroll wheel is recorded but has no effect.
ACTION_KEYS = (KEY_FORWARD, KEY_LEFT, KEY_BACK, KEY_RIGHT, KEY_SPRINT, KEY_JUMP, KEY_CROUCH,
               KEY_USE, KEY_ARROW_LEFT, KEY_ARROW_UP, KEY_ARROW_RIGHT, KEY_ARROW_DOWN)

# Movement, per frame at FPS.
WALK_STEP = 0.16  # cells per frame (2.4 cells/s)
SPRINT_FACTOR = 1.75
CROUCH_FACTOR = 0.5
PLAYER_RADIUS = 0.2
EYE_HEIGHT = 0.5
CROUCH_EYE_HEIGHT = 0.3
JUMP_FRAMES = 8  # Space starts an arc of this many frames
JUMP_HEIGHT = 0.25
DOOR_FRAMES = 6  # a door slides open or shut over this many frames
USE_REACH = 1.6  # E reaches doors up to this far ahead

# World layout and rendering.
MAP_SIZE = 32  # maps are MAP_SIZE x MAP_SIZE cells (a power of two: the renderer wraps indices)
TEX = 32  # textures are TEX x TEX texels per cell face
VIEW_CELLS = 20  # the wall caster looks this many cell crossings ahead; fog is total before that
SWITCH_FRAMES = 8  # a theme switch cross-fades over this many frames
LIQUID_FRAMES = 8  # animation frames of the water / lava texture

# Semantic classes of the per-pixel label map.
SEG_CLASSES = ("sky", "ceiling", "floor", "wall", "sprite")
SEG_SKY, SEG_CEILING, SEG_FLOOR, SEG_WALL, SEG_SPRITE = range(5)
