"""Loading checkpoints: strict keys and shapes, config validation, Hub resolution offline."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from world_engine import ModelUnavailableError, WorldConfig, WorldEngine
from bench.random_checkpoint import TINY_CONFIG, write_random_checkpoint


@pytest.fixture()
def checkpoint(tmp_path):
    return write_random_checkpoint(tmp_path / "model", autoencoder=None)


def rewrite_weights(folder, edit) -> None:
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


def test_missing_key_is_named(checkpoint):
    rewrite_weights(checkpoint, lambda s: s.pop("transformer.blocks.1.mlp.fc2.weight"))
    with pytest.raises(ValueError, match=r"missing weight 'transformer\.blocks\.1\.mlp\.fc2\.weight'"):
        WorldEngine(checkpoint, device="cpu")


@pytest.mark.parametrize("key, value, message", [
    ("unpatchify.bias", torch.zeros(7), r"'unpatchify\.bias' has shape \[7\]"),
    ("transformer.blocks.0.extra.weight", torch.zeros(2), r"unexpected weight 'transformer\.blocks\.0\.extra\.weight'"),
])
def test_wrong_or_extra_weight_is_named(checkpoint, key, value, message):
    rewrite_weights(checkpoint, lambda state: state.__setitem__(key, value))
    with pytest.raises(ValueError, match=message):
        WorldEngine(checkpoint, device="cpu")


def test_tied_cond_proj_is_shared_after_loading(checkpoint):
    engine = WorldEngine(checkpoint, device="cpu")
    blocks = engine.model.blocks
    assert blocks[1].cond_head.cond_proj[3].weight is blocks[0].cond_head.cond_proj[3].weight


@pytest.mark.parametrize("key, value, message", [
    ("tokens_per_frame", 63, "tokens_per_frame 63 != height\\*width 64"),
    ("global_window", 7, "global_window 7 is not a multiple"),
    ("n_heads", 3, "not divisible by n_heads"),
    ("n_kv_heads", 3, "not a multiple of n_kv_heads"),
    ("scheduler_sigmas", [1.0, 0.5], "must end with 0.0"),
    ("local_window", 0, "local_window must be a positive integer"),
    ("ctrl_fusion_norm", "layer", "ctrl_fusion_norm must be 'rms' or 'none'"),
    ("mouse_scale", 0, "mouse_scale must be a positive number"),
    ("mouse_units_per_pixel", float("nan"), "mouse_units_per_pixel must be a positive number"),
    ("mouse_cap", -1, "mouse_cap must be a positive number or null"),
])
def test_impossible_config_values_are_rejected(key, value, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig.from_dict({**TINY_CONFIG, key: value})


def test_missing_config_key_is_named():
    values = dict(TINY_CONFIG)
    del values["d_model"]
    with pytest.raises(ValueError, match="missing required keys: d_model"):
        WorldConfig.from_dict(values)


def test_config_round_trips_through_yaml(tmp_path):
    config = WorldConfig.from_dict({**TINY_CONFIG, "custom_key": 3})
    config.save(tmp_path / "config.yaml")
    again = WorldConfig.from_yaml(tmp_path / "config.yaml")
    assert again == config and again.extra == {"custom_key": 3}


def test_overrides_apply_before_building(checkpoint):
    engine = WorldEngine(checkpoint, device="cpu", overrides={"scheduler_sigmas": [1.0, 0.75, 0.25, 0.0]})
    assert engine.n_steps == 3


@pytest.mark.parametrize("model", ["", "   "])
def test_empty_model_path_is_rejected(model):
    with pytest.raises(ValueError, match="empty model path"):
        WorldEngine(model, device="cpu")


def test_missing_local_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        WorldEngine(str(tmp_path / "nope" / "deeper" / "x"), device="cpu")


def test_offline_hub_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelUnavailableError) as info:
        WorldEngine("someone/not-cached-model", device="cpu")
    message = str(info.value)
    assert "someone/not-cached-model" in message and "hf download someone/not-cached-model" in message


def test_relative_autoencoder_uri_resolves_against_model_folder(tmp_path):
    folder = write_random_checkpoint(tmp_path / "model")
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    engine = WorldEngine(moved, device="cpu")
    assert engine.autoencoder is not None
    assert yaml.safe_load((moved / "config.yaml").read_text())["ae_uri"] == "./autoencoder"


def test_defaults_follow_the_checkpoint_config_not_its_location(tmp_path):
    """A local copy of Waypoint-1-Small (its config.yaml, anywhere) gets its autoencoder and text
    encoder by the config's fingerprint, as the Hub repo does."""
    from bench.engine import WAYPOINT_1_SMALL

    folder = tmp_path / "my-models" / "copy-of-small"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({**WAYPOINT_1_SMALL, "n_frames": 4096}))
    config = WorldConfig.from_yaml(folder / "config.yaml")
    assert config.ae_uri == "OpenWorldLabs/owl_vae_f16_c16_distill_v0_nogan"
    assert config.prompt_encoder_uri == "google/umt5-xl"
    stated = WorldConfig.from_yaml(folder / "config.yaml", overrides={"ae_uri": "./my-ae"})
    assert stated.ae_uri == "./my-ae"                       # what the file or caller states wins
    other = WorldConfig.from_dict({**WAYPOINT_1_SMALL, "n_layers": 2})
    assert other.ae_uri is None                             # another architecture: no guess


def test_a_local_checkpoint_without_ae_uri_loads_with_the_autoencoder_its_fingerprint_names(tmp_path, monkeypatch):
    from bench.random_checkpoint import write_random_waypoint_autoencoder
    from world_engine import config as config_module

    folder = write_random_checkpoint(tmp_path / "copy", autoencoder=None)
    values = yaml.safe_load((folder / "config.yaml").read_text())
    del values["ae_uri"]                                    # as the released config.yaml leaves it out
    (folder / "config.yaml").write_text(yaml.safe_dump(values))
    ae = write_random_waypoint_autoencoder(tmp_path / "released-ae", latent_channels=values["channels"])
    monkeypatch.setitem(config_module.KNOWN_MODELS, config_module.config_fingerprint(values), {"ae_uri": str(ae)})
    engine = WorldEngine(folder, device="cpu")
    assert engine.autoencoder is not None and engine.config.ae_uri == str(ae)
    assert engine.gen_frame().dtype == torch.uint8
