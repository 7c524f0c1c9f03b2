"""world_engine: an original, Apache-2.0 inference engine for Waypoint-format world models."""

from .config import WorldConfig
from .controls import VK, CtrlInput
from .engine import WorldEngine, load_autoencoder
from .hub import ModelUnavailableError
from .model.dit import WorldDiT

__all__ = ["WorldEngine", "CtrlInput", "VK", "WorldConfig", "WorldDiT", "load_autoencoder",
           "ModelUnavailableError"]
