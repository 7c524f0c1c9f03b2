"""The hashed prompt encoder: UMT5-like interface, zero pad rows, stable hashing, file round trip."""

from __future__ import annotations

import pytest
import torch

from world_engine.model.prompt_encoder import load_prompt_encoder
from world_engine.model.text_encoder import HashedTextEncoder, TextEncoderConfig, hash_tokens


@pytest.fixture()
def encoder() -> HashedTextEncoder:
    torch.manual_seed(0)
    return HashedTextEncoder(TextEncoderConfig()).eval()


def test_interface_and_pad_rows(encoder):
    emb, pad = encoder(["a frozen ice cave at night", "", "!!!"])
    assert emb.shape == (3, 8, 128) and pad.shape == (3, 8) and pad.dtype == torch.bool
    assert not pad[0].any() and pad[1].all() and pad[2].all()
    assert emb[1].abs().sum() == 0 and emb[2].abs().sum() == 0
    assert emb[0].abs().sum() > 0


def test_hashing_is_stable_and_uses_bigrams():
    ids = hash_tokens("Lava Temple", 4096, 32)
    assert ids == hash_tokens("lava   temple!", 4096, 32)
    assert len(ids) == 3 and all(1 <= i < 4096 for i in ids)
    assert hash_tokens("temple lava", 4096, 32)[2] != ids[2]


def test_different_prompts_differ_and_batching_is_consistent(encoder):
    emb, _ = encoder(["a neon city", "a hedge garden"])
    assert (emb[0] - emb[1]).abs().max() > 1e-4
    single, _ = encoder(["a hedge garden"])
    assert torch.allclose(single[0], emb[1], atol=1e-5)


def test_rejects_a_bare_string(encoder):
    with pytest.raises(ValueError, match="list of strings"):
        encoder("a neon city")


def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.save(tmp_path / "te")
    loaded = load_prompt_encoder(tmp_path / "te", torch.device("cpu"), torch.float32)
    assert isinstance(loaded, HashedTextEncoder)
    texts = ["a sandstone desert ruin at dusk", ""]
    a, pa = encoder(texts)
    b, pb = loaded(texts)
    assert torch.equal(pa, pb)
    assert torch.allclose(a, b, atol=5e-2)
