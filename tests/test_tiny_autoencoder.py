"""The embedded model's tiny autoencoder: shapes, input checks, save -> from_folder round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_engine.engine import load_autoencoder
from world_engine.model.tiny_autoencoder import TinyAEConfig, TinyAutoencoder


@pytest.fixture()
def ae() -> TinyAutoencoder:
    torch.manual_seed(0)
    model = TinyAutoencoder(TinyAEConfig()).eval()
    model.set_latent_stats(torch.linspace(-0.5, 0.5, 16), torch.linspace(0.5, 2.0, 16))
    return model


def test_shapes_and_any_input_size(ae):
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    z = ae.encode(img)
    assert z.shape == (16, 4, 4)
    assert ae.encode(torch.from_numpy(np.ascontiguousarray(img[:40, :50]))).shape == (16, 4, 4)
    out = ae.decode(z)
    assert out.dtype == torch.uint8 and out.shape == (64, 64, 3)


def test_bad_inputs_are_rejected(ae):
    with pytest.raises(ValueError, match="uint8"):
        ae.encode(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        ae.encode(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="latent must have shape"):
        ae.decode(torch.zeros(8, 4, 4))


def test_latent_normalisation_is_applied(ae):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    raw = ae.encoder(x)
    assert torch.allclose(ae.encode_batch(x), (raw - ae.latent_mean) / ae.latent_std, atol=1e-5)


def test_save_and_load_round_trip(ae, tmp_path):
    ae.save(tmp_path / "ae")
    loaded = load_autoencoder(tmp_path / "ae", device="cpu", dtype=torch.float32)
    assert isinstance(loaded, TinyAutoencoder)
    assert loaded.cfg.latent_std == pytest.approx(ae.cfg.latent_std)
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert torch.allclose(loaded.encode(img), ae.encode(img), atol=2e-2)  # weights stored as float16
    z = torch.randn(16, 4, 4)
    assert (loaded.decode(z).int() - ae.decode(z).int()).abs().max() <= 3


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="latent_std"):
        TinyAutoencoder(TinyAEConfig(latent_std=[1.0, 2.0]))
    (tmp_path / "tiny_autoencoder.yaml").write_text("image_size: 64\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        TinyAutoencoder.from_folder(tmp_path)
