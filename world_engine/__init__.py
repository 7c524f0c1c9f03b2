"""world_engine: an original, Apache-2.0 inference engine for Waypoint-format world models.

Where a frame is made: ``WorldEngine.gen_frame`` (``engine.py``) conditions on the controls
(``controls.py``) and the prompt, runs the DiT (``model/dit.py``) once per denoising step over the
ring KV cache (``model/kv_cache.py``), writes the clean frame into that cache and decodes it with the
autoencoder. ``protocol.py`` is the interface a player drives; this package imports nothing from the
app, the simulator, the training stack or the benchmarks.
"""

from .config import WorldConfig
from .controls import VK, CtrlInput
from .engine import WorldEngine, WorldSnapshot, gen_frames, load_autoencoder
from .hub import ModelUnavailableError
from .model.dit import WorldDiT
from .protocol import ControlConvention, InteractiveWorld, Snapshot, WorldSource

__all__ = ["WorldEngine", "WorldSnapshot", "gen_frames", "CtrlInput", "VK", "WorldConfig", "WorldDiT", "load_autoencoder",
           "ModelUnavailableError", "ControlConvention", "InteractiveWorld", "Snapshot", "WorldSource"]
