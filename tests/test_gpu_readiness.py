"""What a first contact with a GPU or a ZeroGPU Space would otherwise find out, decided on a CPU:
no CUDA in ZeroGPU's main process, float32 position tables, the exportable flat DiT step and its
ahead-of-time compile, UMT5 loaded at warm-up, and the backends' warm-up and routing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.random_checkpoint import write_waypoint_like_checkpoint
from player import backends
from player.controls import ControlState
from player.sessions import BOARD, MAX_SLOTS
from player.stream import EncodedFrame, SegmentArgs, WorldRecipe, in_flight_window
from test_parity import rel_err, run_rollout
from world_engine import ControlConvention, CtrlInput, WorldEngine


@pytest.fixture(scope="module")
def waypoint_like(tmp_path_factory) -> Path:
    """A small random stand-in for Waypoint-1-Small: UMT5-format prompt encoder, Waypoint AE."""
    return write_waypoint_like_checkpoint(tmp_path_factory.mktemp("waypoint-like") / "model")


# --------------------------------------------------------------------------------------------------
# 1. ZeroGPU's main process never reaches the CUDA runtime


NOT_IN_ZEROGPU_MAIN = ["Stream", "Event", "CUDAGraph", "graph", "mem_get_info", "max_memory_allocated",
                       "reset_peak_memory_stats", "empty_cache", "manual_seed", "manual_seed_all", "set_device",
                       "init", "synchronize", "get_device_capability", "get_device_name", "current_stream"]


@pytest.fixture()
def zerogpu_main_process(monkeypatch):
    """The main process of a ZeroGPU Space, on this CPU: spaces' own torch emulation (``cuda``
    tensors stay on the host, ``torch._C._cuda_init`` raises) with the ZeroGPU config switched on,
    and every CUDA call it does not emulate made to raise."""
    import spaces
    from spaces.config import Config

    calls: list[str] = []

    def forbidden(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"torch.cuda.{name} called in ZeroGPU's main process")
        return call

    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "12.8")
    monkeypatch.setattr(torch._C, "_cuda_init", forbidden("_cuda_init"), raising=False)
    from spaces.zero.torch import patching

    monkeypatch.setattr(Config, "zero_gpu", True)
    gpu_calls: list[str] = []

    def fake_gpu(*args, duration=None, size=None):  # the decorator; compile calls are GPU work, recorded
        def wrap(fn):
            def in_worker(*a, **k):
                gpu_calls.append(fn.__name__)
                return None
            return in_worker if fn.__name__ == "_compile_in_worker" else fn
        return wrap

    monkeypatch.setattr(spaces, "GPU", fake_gpu)
    monkeypatch.setattr(spaces, "aoti_load_from_package_dir", lambda module, package_dir: None)
    patching.patch()
    try:
        for name in NOT_IN_ZEROGPU_MAIN:
            monkeypatch.setattr(torch.cuda, name, forbidden(name))
        monkeypatch.setattr(torch.Tensor, "pin_memory", forbidden("pin_memory"))
        yield calls, gpu_calls
    finally:
        patching.unpatch()


def test_zerogpu_main_process_builds_and_warms_every_model_without_cuda(zerogpu_main_process, waypoint_like,
                                                                          monkeypatch, tmp_path):
    calls, gpu_calls = zerogpu_main_process
    monkeypatch.setenv("WORLD_PLAYER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backends, "WAYPOINT_SMALL", str(waypoint_like))  # the GPU model of the catalog
    kind = backends.detect_kind()
    assert kind == "zerogpu"
    models = backends.model_catalog([], kind)
    assert [m.uri for m in models if not m.split][1:] == [str(waypoint_like), backends.REALITY]
    assert [(m.key, m.uri) for m in models if m.split] == [("embedded+reality", None)]   # CPU-sized, beside the simulator
    backend = backends.create_backend(kind, segment_seconds=60)
    backend.warm_up(models)
    assert backend.warmup.error is None, backend.warmup.error
    assert calls == []
    gpu_engine = backend.engines.get(str(waypoint_like))
    assert gpu_engine.device.type == "cuda"            # emulated: its weights are what ZeroGPU packs
    assert gpu_engine._shared["prompt_encoder"] is not None   # UMT5 loaded at warm-up, not in a GPU call
    assert backend.engines.get(None).device.type == "cpu"    # the embedded model stays off the GPU
    assert gpu_calls == ["_compile_in_worker"]         # one GPU call at start-up: the AOT compile
    session = gpu_engine.fork(seed=1)                  # forking a session is main-process work too
    session.close()
    assert calls == []


def test_an_engine_and_its_sessions_hold_no_device_state_until_the_first_frame(waypoint_like):
    engine = WorldEngine(waypoint_like, device="cpu")
    session = engine.fork(seed=3)
    assert engine._cache is None and session._cache is None and session._uploads == {}
    assert session.generator.device.type == "cpu"
    session.gen_frame(return_img=False)
    assert session._cache is not None


# --------------------------------------------------------------------------------------------------
# 2. Position tables stay float32 under model.to(bf16)


def test_rope_tables_of_a_bf16_engine_stay_float32(fixtures_dir):
    engine = WorldEngine(fixtures_dir / "waypoint-dit-a", device="cpu", dtype=torch.bfloat16)
    assert engine.model.rope_xy.dtype == torch.float32
    assert engine.model.rope_t_freqs.dtype == torch.float64
    assert engine.model.unpatchify.weight.dtype == torch.bfloat16
    engine.set_prompt_embedding(torch.randn(1, 3, 64), torch.zeros(1, 3, dtype=torch.bool))
    conditions = engine.frame_conditions(CtrlInput())
    assert conditions.rope.dtype == torch.float32
    engine.model.to(torch.float16)       # any later cast keeps them too
    assert engine.model.rope_xy.dtype == torch.float32


def test_rope_tables_keep_full_precision_at_waypoint_1_small_shapes():
    """16x16 tokens, head dim 64: spatial angles reach ~19 rad, where a bf16 table is off by ~0.04."""
    from world_engine.config import WorldConfig
    from world_engine.model.dit import WorldDiT, spatial_rope_angles

    cfg = WorldConfig.from_dict({"d_model": 64, "n_heads": 1, "n_layers": 1, "mlp_ratio": 1, "channels": 4,
                                 "height": 16, "width": 16, "tokens_per_frame": 256, "local_window": 2,
                                 "global_window": 2, "global_attn_period": 1, "global_pinned_dilation": 1,
                                 "n_buttons": 4, "ctrl_conditioning_period": 1, "scheduler_sigmas": [1.0, 0.0]})
    exact = spatial_rope_angles(cfg)
    assert exact.abs().max() > 18 and (exact.bfloat16().float() - exact).abs().max() > 0.03
    model = WorldDiT(cfg).to(torch.bfloat16)
    assert torch.equal(model.rope_xy, exact)


# --------------------------------------------------------------------------------------------------
# 4. The flat DiT step: the engine's only path, exportable, equal to the module forward


def test_the_engine_runs_every_pass_through_the_flat_step(latent_checkpoint, monkeypatch):
    engine = WorldEngine(latent_checkpoint, device="cpu", seed=0)
    passes = []
    real = engine.step_module.forward
    monkeypatch.setattr(engine.step_module, "forward", lambda *a: passes.append(len(a)) or real(*a))
    monkeypatch.setattr(type(engine.model), "forward", lambda *a, **k: pytest.fail("the module forward ran"))
    engine.gen_frame(return_img=False)
    engine.append_latent(torch.zeros(engine.config.latent_shape))
    assert len(passes) == engine.n_steps + 1 + 1 and set(passes) == {9}


def test_flat_step_equals_the_cached_forward(fixtures_dir):
    """One pass of the flat entry against the module forward with a RingKVCache, on a filled cache."""
    engine = WorldEngine(fixtures_dir / "waypoint-dit-a", device="cpu", dtype=torch.float32)
    run_rollout(engine, fixtures_dir / "waypoint-dit-a")        # fills and wraps every ring
    conditions = engine.frame_conditions(CtrlInput(button={3}, mouse=(1.5, -0.5)))
    x = torch.randn(1, 1, *engine.config.latent_shape)
    flat = engine.denoise_step(x, conditions, 1) - x
    from world_engine.model.dit import PromptContext
    model, cache = engine.model, engine._cache
    sigma = torch.tensor(engine.config.scheduler_sigmas[1]).view(1, 1)
    ctrl = torch.zeros(1, 1, engine.config.ctrl_dim)
    ctrl[..., 0], ctrl[..., 1], ctrl[..., 2 + 3] = 1.5, -0.5, 1.0
    prompt = PromptContext(_unstack_prompt(model, engine._prompt_ctx))
    cache.begin(engine.frame_index, write=False)
    with torch.inference_mode():
        v = model(x, sigma, conditions.timestamps, ctrl, prompt, cache=cache)
    dsigma = engine.config.scheduler_sigmas[2] - engine.config.scheduler_sigmas[1]
    assert rel_err(flat, dsigma * v) < 1e-5


def _unstack_prompt(model, stacked):
    out, i = [], 0
    for block in model.blocks:
        if block.prompt_cross_attn is None:
            out.append(None)
        else:
            out.append((stacked[i, 0], stacked[i, 1]))
            i += 1
    return out


def test_torch_export_of_the_flat_step_matches_eager(fixtures_dir):
    engine = WorldEngine(fixtures_dir / "waypoint-dit-a", device="cpu", dtype=torch.float32)
    run_rollout(engine, fixtures_dir / "waypoint-dit-a")
    conditions = engine.frame_conditions(CtrlInput(button={1}, mouse=(0.5, 0.25)))
    x = torch.randn(1, 1, *engine.config.latent_shape)
    args = engine.step_inputs(x, conditions, 0, write=True)       # a writing pass: K/V go to a slot
    exported = engine.export_step(args)
    kv_before = [b.clone() for b in args[6]]
    with torch.inference_mode():
        eager = engine.step_module(*args)
    kv_eager = [b.clone() for b in args[6]]
    for buf, before in zip(args[6], kv_before):
        buf.copy_(before)
    with torch.inference_mode():
        compiled = exported.module()(*args)
    assert rel_err(compiled, eager) <= 1e-5
    for buf, expected in zip(args[6], kv_eager):     # the exported program writes the cache in place
        assert torch.allclose(buf, expected, atol=1e-6)
    assert not exported.constants        # every constant is a named weight the package gets from the module
    held = [*exported.constants.values(), *exported.state_dict.values()]   # the cache stays an input
    assert not any(t.shape == buf.shape for t in held for buf in args[6])


def test_zerogpu_compiles_the_exported_step_ahead_of_time_and_reuses_the_package(waypoint_like, monkeypatch,
                                                                                 tmp_path):
    """spaces' AOTI functions stubbed: the program that reaches ``aoti_compile_and_save`` is the
    export of the engine's own step, captured from a real call (``spaces.aoti_capture``); a
    restart reuses the package."""
    import spaces

    # spaces.zero.torch imports on a CUDA build of torch; on this CPU build it needs these two names
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "12.8")
    monkeypatch.setattr(torch._C, "_cuda_init", getattr(torch._C, "_cuda_init", lambda: None), raising=False)

    monkeypatch.setenv("WORLD_PLAYER_CACHE", str(tmp_path / "cache"))
    compiled, applied = [], []

    def compile_and_save(package_dir, exported, inductor_configs=None, submodule=None):
        compiled.append(exported)
        (Path(package_dir) / "root").mkdir(parents=True)
        (Path(package_dir) / "root" / "package.pt2").write_bytes(b"stub")

    monkeypatch.setattr(spaces, "aoti_compile_and_save", compile_and_save)
    monkeypatch.setattr(spaces, "aoti_load_from_package_dir", lambda m, d: applied.append((m, Path(d))))
    models = [backends.ModelChoice("w", "waypoint-like", str(waypoint_like))]
    backend = backends.ZeroGpuBackend(segment_seconds=60)
    backend.engines.device = lambda uri: "cpu"     # run the GPU call's body here, on the CPU
    backend.warm_up(models)
    assert backend.warmup.error is None, backend.warmup.error
    engine = backend.engines.get(str(waypoint_like))
    assert backend.aoti_status[str(waypoint_like)] == "compiled" and len(compiled) == 1
    assert applied == [(engine.step_module, backend.aoti_package_dir(engine))]
    exported = compiled[0]
    assert isinstance(exported, torch.export.ExportedProgram)
    assert set(exported.state_dict) <= set(engine.step_module.state_dict())   # the engine's own weights
    assert not exported.constants                 # nothing that aoti_load_from_package_dir would not supply
    args = engine.example_step_inputs()
    with torch.inference_mode():
        eager = engine.step_module(*args)
    for buf in args[6]:
        buf.zero_()
    with torch.inference_mode():
        assert rel_err(exported.module()(*args), eager) <= 1e-5

    restarted = backends.ZeroGpuBackend(segment_seconds=60)
    restarted.engines.device = lambda uri: "cpu"
    restarted.warm_up(models)
    assert restarted.aoti_status[str(waypoint_like)] == "reused" and len(compiled) == 1


# --------------------------------------------------------------------------------------------------
# 5. UMT5 at warm-up, in bf16, with the reference's text normalisation


def test_umt5_loads_in_the_engine_dtype_and_normalises_text(waypoint_like):
    from world_engine.model.prompt_encoder import UMT5PromptEncoder, normalise_prompt

    engine = WorldEngine(waypoint_like, device="cpu", dtype=torch.bfloat16)
    encoder = engine.load_prompt_encoder()
    assert isinstance(encoder, UMT5PromptEncoder)
    assert {p.dtype for p in encoder.encoder.parameters()} == {torch.bfloat16}
    assert engine.prompt_encoder is encoder and engine.fork().prompt_encoder is encoder
    assert normalise_prompt("sch\u00c3\u00b6n") == "sch\u00f6n"
    mojibake, fixed = encoder(["a sch\u00c3\u00b6n world"]), encoder(["a sch\u00f6n world"])
    assert torch.equal(mojibake[0], fixed[0])
    unknown = encoder(["a sch\u00f8n world"])
    assert not torch.equal(unknown[0], fixed[0])
    emb, pad = fixed
    assert emb.shape == (1, 512, 64) and pad[0, 4:].all() and not pad[0, :4].any()
    assert (emb[0, 4:] == 0).all()
    session = engine.fork(seed=0)
    session.set_prompt("a snowy castle")
    assert session.gen_frame().dtype == torch.uint8


# --------------------------------------------------------------------------------------------------
# 6. Backends: every GPU model warmed with progress, compile cache on disk, embedded off @spaces.GPU


class _Probe:
    def __init__(self, log, uri):
        self.log, self.uri = log, uri

    def next_frame(self, ctrl):
        self.log.append(("frame", self.uri))
        return np.zeros((4, 4, 3), np.uint8)

    def close(self):
        pass


class _FakeEngine:
    device = torch.device("cuda")

    def __init__(self, log, uri):
        self.log, self.uri = log, uri

    def load_prompt_encoder(self):
        self.log.append(("prompt encoder", self.uri))

    def fork(self, seed=None):
        return _Probe(self.log, self.uri)


def test_local_cuda_warms_every_gpu_model_with_progress(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_PLAYER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    backend = backends.create_backend("cuda", segment_seconds=60)
    log, texts = [], []
    monkeypatch.setattr(backend.engines, "get", lambda uri: _FakeEngine(log, uri))
    real_update = backend.warmup.update
    monkeypatch.setattr(backend.warmup, "update", lambda f, t: (texts.append(t), real_update(f, t)))
    models = backends.model_catalog(["/models/a"], "cuda")
    backend.warm_up(models)
    assert backend.warmup.error is None
    gpu = [m.uri for m in models if m.uri != backends.REALITY and not m.split]
    assert gpu == ["/models/a", None, backends.WAYPOINT_SMALL]
    for uri in gpu:
        assert ("prompt encoder", uri) in log and log.count(("frame", uri)) == backend.warm_frames
    for m in models[:-1]:
        assert m.split or any(m.label in t for t in texts)
    assert any("compiling" in t for t in texts)


class _ThreadedWorld:
    """A stand-in world that notes the thread each of its calls ran on."""

    convention = ControlConvention(n_buttons=256, mouse_units_per_pixel=0.3, mouse_cap=24.0, prompted=False,
                                   takes_images=False)

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.frames = 0

    def _note(self) -> None:
        self.threads.add(threading.current_thread().name)

    def next_frame(self, ctrl=None):
        self._note()
        self.frames += 1
        return np.zeros((8, 8, 3), np.uint8)

    def keep_history(self, frames): self._note()
    def reset(self, seed=None): self._note()
    def set_steps(self, steps): self._note()
    def snapshot(self, frames_back=0): self._note(); return self
    def portable(self): return self
    def close(self): self._note()
    rewind_limit = 0


def test_local_cuda_runs_engine_calls_on_its_thread_and_a_session_waiting_for_its_page_holds_no_one_up(
        monkeypatch):
    backend = backends.create_backend("cuda", segment_seconds=60)
    worlds: list[_ThreadedWorld] = []

    class Source:
        def fork(self, seed=None):
            worlds.append(_ThreadedWorld())
            return worlds[-1]

    monkeypatch.setattr(backend.engines, "get", lambda uri: Source())
    slots = (MAX_SLOTS - 2, MAX_SLOTS - 1)
    args = []
    for k, slot in enumerate(slots):
        owner = BOARD.claim(slot)
        BOARD.write_state(slot, owner, ControlState(seq=1, ack=-1 if k == 0 else 10 ** 6))
        args.append(SegmentArgs(key=f"hol-{k}", slot=slot, owner=owner, run=BOARD.start_run(slot),
                                recipe=WorldRecipe(k, "m", 0), frames_done=0, first_n=0, fps=50.0,
                                ack_timeout_s=3.0))
    got = {0: [], 1: []}

    def play(k):
        for item in backend.segments(args[k], None):
            got[k].append(item)
            if k == 1 and len(got[1]) >= 40:
                return

    stuck = threading.Thread(target=play, args=(0,), daemon=True)   # its page acknowledges nothing
    stuck.start()
    time.sleep(0.3)                                                 # now waiting for acks
    start = time.monotonic()
    play(1)
    took = time.monotonic() - start
    for slot in slots:
        BOARD.stop_run(slot)
        BOARD.release(slot)
    stuck.join(10)
    assert took < 2.5, f"40 frames at 50 fps took {took:.1f} s beside a session waiting for its page"
    assert len([f for f in got[0] if isinstance(f, EncodedFrame)]) <= in_flight_window(50.0) + 1
    assert all(w.threads == {"engine_0"} for w in worlds), [w.threads for w in worlds]


def test_local_cuda_keeps_the_compile_cache_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_PLAYER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    backend = backends.create_backend("cuda", segment_seconds=60)
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    saved = []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"artefacts", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: saved.append(data))
    backend._save_compile_cache()
    assert backend.mega_cache.read_bytes() == b"artefacts"
    backends.create_backend("cuda", segment_seconds=60)._load_compile_cache()   # the next start loads it
    assert saved == [b"artefacts"]


def test_zerogpu_plays_the_embedded_model_on_the_cpu_outside_spaces_gpu(monkeypatch):
    backend = backends.ZeroGpuBackend(segment_seconds=60)
    assert backend.engines.device_for(None) == "cpu"
    assert backend.engines.device_for(backends.WAYPOINT_SMALL) == "cuda"
    engine = backend.engines.get(None)
    assert engine.device.type == "cpu" and engine.compile_mode is None

    def no_gpu(*args):
        pytest.fail("the embedded model went through @spaces.GPU")
        yield

    monkeypatch.setattr(backend, "_gpu_segment", no_gpu)
    ran = []
    monkeypatch.setattr(backends.Backend, "segments", lambda self, args, uri: iter(ran.append(uri) or ()))
    assert list(backend.segments(object(), None)) == [] and ran == [None]


# --------------------------------------------------------------------------------------------------
# 7. The fast path's parts that a CPU can check


def test_fused_qkv_is_the_only_copy_of_the_weights(latent_checkpoint):
    engine = WorldEngine(latent_checkpoint, device="cpu")
    for block in engine.model.blocks:
        attn = block.attn
        fused = attn.qkv_weight
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            assert proj.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()


def test_loading_streams_tensors_without_a_full_state_dict(latent_checkpoint, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("loaded a full state dict"))
    monkeypatch.setattr("world_engine.model.loading.load_file", lambda *a, **k: pytest.fail("full state dict"))
    reference = safetensors.torch.safe_open(str(latent_checkpoint / "model.safetensors"), "pt")
    engine = WorldEngine(latent_checkpoint, device="cpu")
    key = "transformer.blocks.1.mlp.fc1.weight"
    assert torch.equal(engine.model.state_dict()[key], reference.get_tensor(key))


def test_flex_attention_matches_the_masked_sdpa_on_a_cache(fixtures_dir):
    """The block-sparse FlexAttention form (eager here; a fused kernel once compiled on CUDA) gives
    the masked-SDPA result, dead slots and all."""
    from world_engine.model.dit import cached_attention

    torch.manual_seed(0)
    tokens, slots = 16, 5
    q = torch.randn(1, 4, tokens, 16)
    k, v = torch.randn(2, 1, 2, tokens * slots, 16)
    mask = torch.ones(tokens * slots, dtype=torch.bool)
    mask[tokens:3 * tokens] = False           # two dead frames
    expected = cached_attention(q, k, v, mask, "sdpa")
    got = cached_attention(q, k, v, mask, "flex")
    assert rel_err(got, expected) < 1e-5


@pytest.mark.skipif(not __import__("os").environ.get("WORLD_ENGINE_SLOW_TESTS"),
                    reason="compiles C++ for a minute or more; set WORLD_ENGINE_SLOW_TESTS=1")
def test_spaces_aoti_package_of_the_flat_step_plays_like_eager_on_cpu(fixtures_dir, monkeypatch, tmp_path):
    """The whole ZeroGPU compile path, for real, on the CPU: export -> spaces.aoti_compile_and_save
    (AOTInductor) -> spaces.aoti_load_from_package_dir on the engine's step; the rollout matches."""
    import spaces

    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "12.8")
    monkeypatch.setattr(torch._C, "_cuda_init", getattr(torch._C, "_cuda_init", lambda: None), raising=False)
    folder = fixtures_dir / "waypoint-dit-a"
    eager = run_rollout(WorldEngine(folder, device="cpu"), folder)
    engine = WorldEngine(folder, device="cpu")
    engine.set_prompt_embedding(torch.randn(1, 7, 64), torch.zeros(1, 7, dtype=torch.bool))
    spaces.aoti_compile_and_save(tmp_path / "package", engine.export_step())
    spaces.aoti_load_from_package_dir(engine.step_module, tmp_path / "package")
    aoti = run_rollout(engine, folder)
    assert max(rel_err(a, e) for (a, _), (e, _) in zip(aoti, eager)) < 1e-4
