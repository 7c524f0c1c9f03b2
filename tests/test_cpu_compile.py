"""The CPU fast path: ``WorldEngine.compile_step`` upgrades every session of an engine, running ones
included, only after the compiled code has run once; the CPU backend compiles after warm-up and
stays eager (saying why) when compiling fails."""

from __future__ import annotations

import os
import time

import pytest
import torch

from player import backends
from world_engine import CtrlInput, WorldEngine
from world_engine import engine as engine_module


class Recorded(torch.nn.Module):
    """A module as ``torch.compile`` returns it (a module wrapping the original), recording calls."""

    def __init__(self, module: torch.nn.Module, calls: list[str]) -> None:
        super().__init__()
        self.inner, self.calls = module, calls

    def forward(self, *args):
        self.calls.append(type(self.inner).__name__)
        return self.inner(*args)


class RecordingCompile:
    """Stands in for ``torch.compile`` (no C++ is built): records the options and every call."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls, self.options = fail, [], []

    def __call__(self, module, **kwargs):
        if self.fail:
            raise RuntimeError("no compiler here")
        self.options.append(kwargs.get("options"))
        return Recorded(module, self.calls)


def test_compile_step_upgrades_running_and_future_sessions(playable_checkpoint, monkeypatch):
    engine = WorldEngine(playable_checkpoint, device="cpu", seed=0)
    running = engine.fork(seed=1)
    running.gen_frame(CtrlInput())
    fake = RecordingCompile()
    monkeypatch.setattr(torch, "compile", fake)
    engine.compile_step()
    assert engine.compile_mode == running.compile_mode == "default"   # shared by every fork
    traced = len(fake.calls)
    assert traced >= 2                                   # the probe ran the step and the decoder once
    assert fake.options[0] == {"freezing": True, "cpp_wrapper": True}
    running.gen_frame(CtrlInput())
    engine.fork(seed=2).gen_frame(CtrlInput())
    steps = 2 * (running.n_steps + 1)
    assert fake.calls[traced:].count("DiTStep") == steps and fake.calls[traced:].count("TinyDecoder") == 2


def test_compile_step_changes_no_frame(playable_checkpoint, monkeypatch):
    engine = WorldEngine(playable_checkpoint, device="cpu", seed=0)
    eager = engine.fork(seed=3)
    expected = [eager.gen_frame(CtrlInput(mouse=(4.0 * i, 0.0))) for i in range(4)]
    monkeypatch.setattr(torch, "compile", RecordingCompile())
    engine.compile_step()
    session = engine.fork(seed=3)
    assert all(torch.equal(session.gen_frame(CtrlInput(mouse=(4.0 * i, 0.0))), frame)
               for i, frame in enumerate(expected))


def test_compile_step_traces_every_batch_size_the_batcher_makes(playable_checkpoint, monkeypatch):
    """A batch of sessions is another graph: all are traced before the compiled step is published,
    so no visitor's frame waits for a compile."""
    engine = WorldEngine(playable_checkpoint, device="cpu", seed=0)
    engine.batch_sessions(max_batch=3)
    rows = []
    real = engine.step_module.forward
    monkeypatch.setattr(engine.step_module, "forward", lambda *a: rows.append(a[0].shape[0]) or real(*a))
    monkeypatch.setattr(torch, "compile", RecordingCompile())
    engine.compile_step()
    assert rows == [1, 2, 3]


def _cpu_backend(playable_checkpoint) -> tuple[backends.Backend, list[backends.ModelChoice]]:
    backend = backends.create_backend("cpu", segment_seconds=60, cpu_compile=True)
    return backend, [backends.ModelChoice(key="m", label="test model", uri=str(playable_checkpoint))]


def test_the_cpu_backend_compiles_its_model_after_warm_up(playable_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch, "compile", RecordingCompile())
    monkeypatch.setattr(engine_module, "_median_seconds", lambda fn: fn() or 1.0)   # a tie: the timing is not under test
    backend, choices = _cpu_backend(playable_checkpoint)
    backend.warm_up(choices)
    assert backend.warmup.done.is_set() and backend.warmup.error is None
    assert backend.warmup.fast_path == "compiled"
    assert backend.engines.get(choices[0].uri).compile_mode == "default"


def test_a_failed_cpu_compile_leaves_the_model_eager_and_says_so(playable_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch, "compile", RecordingCompile(fail=True))
    backend, choices = _cpu_backend(playable_checkpoint)
    backend.warm_up(choices)
    engine = backend.engines.get(choices[0].uri)
    assert backend.warmup.fast_path == "off (RuntimeError)" and backend.warmup.error is None
    assert engine.compile_mode is None
    assert engine.fork(seed=0).gen_frame(CtrlInput()).shape == (64, 64, 3)


@pytest.mark.skipif(not os.environ.get("WORLD_ENGINE_SLOW_TESTS"),
                    reason="compiles C++ for minutes on 2 cores; set WORLD_ENGINE_SLOW_TESTS=1")
def test_the_compiled_embedded_model_plays_the_same_frames(one_thread):
    engine = WorldEngine(None, device="cpu", seed=0)
    engine.set_prompt("a stone dungeon lit by torches")
    eager = engine.fork(seed=5)
    expected = [eager.gen_frame(CtrlInput(mouse=(3.0 * i, 0.0))) for i in range(6)]
    engine.compile_step()
    session = engine.fork(seed=5)
    got = [session.gen_frame(CtrlInput(mouse=(3.0 * i, 0.0))) for i in range(6)]
    # reassociated float sums: a pixel may round the other way, never more
    assert max((a.int() - b.int()).abs().max().item() for a, b in zip(got, expected)) <= 2


class SlowRecordingCompile(RecordingCompile):
    """Compiled code that runs 30 ms slower per call than eager, as inductor's C++ on some CPUs."""

    def __call__(self, module, **kwargs):
        compiled = super().__call__(module, **kwargs)
        forward = compiled.forward
        compiled.forward = lambda *args: time.sleep(0.03) or forward(*args)
        return compiled


def test_compiled_code_slower_than_eager_is_not_installed_when_asked(playable_checkpoint, monkeypatch):
    engine = WorldEngine(playable_checkpoint, device="cpu", seed=0)
    monkeypatch.setattr(torch, "compile", SlowRecordingCompile())
    assert engine.compile_step(keep_if_faster=True) is False
    assert engine.compile_mode is None
    assert engine.compile_step() is True and engine.compile_mode == "default"   # not asked: installed


def test_the_cpu_backend_stays_eager_where_compiled_is_slower_and_says_so(playable_checkpoint, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch, "compile", SlowRecordingCompile())
    backend, choices = _cpu_backend(playable_checkpoint)
    backend.warm_up(choices)
    assert backend.warmup.fast_path == "eager (the compiled code was slower on this CPU)"
    assert backend.engines.get(choices[0].uri).compile_mode is None
