"""Training stack of the embedded world model: one module per stage, run as ``python -m training``.

Stages: ``data`` (render simulator episodes), ``ae`` (tiny autoencoder), ``df`` (diffusion-forcing
DiT + hashed text encoder), ``export`` (write ``world_engine/embedded``), ``eval`` (metrics against
the simulator), ``fps`` (end-to-end speed of a model folder).
"""
