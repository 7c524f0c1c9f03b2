"""Networks of a Waypoint-format world model: the DiT, its KV cache, autoencoders, prompt encoders."""

from .dit import WorldDiT
from .kv_cache import RingKVCache

__all__ = ["WorldDiT", "RingKVCache"]
