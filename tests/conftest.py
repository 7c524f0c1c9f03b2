"""Shared test helpers: the parity fixtures shipped beside the project, and tiny checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT.parent / "shared" / "fixtures"

torch.set_num_threads(2)


@pytest.fixture()
def one_thread():
    """The simulator's small per-frame ops run far faster on one thread on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random checkpoint (DiT + Waypoint-format autoencoder) written by the real writer."""
    from bench.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def latent_checkpoint(tmp_path_factory) -> Path:
    """A small random checkpoint without an autoencoder (a latent-only engine)."""
    from bench.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("latent") / "model", autoencoder=None)


@pytest.fixture(scope="session")
def playable_checkpoint(tmp_path_factory) -> Path:
    """A small random checkpoint with the 64x64 tiny autoencoder: fast enough to stream on a CPU."""
    from bench.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("playable") / "model", autoencoder="tiny")
