"""Smoke run of every training stage on tiny shapes: data -> ae -> df (and resume) -> export ->
the engine plays the exported folder. Each stage runs a few steps through its command-line entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from world_engine import CtrlInput, WorldEngine
from training import ae, data, df, export
from training.checkpoint import MAX_SHARD_BYTES, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL_DIT = ["--d-model", "64", "--n-heads", "1", "--n-layers", "3", "--batch-size", "4", "--clip-frames", "8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data.main(["--out", str(root / "data"), "--episodes", "3", "--frames", "12", "--branch-groups", "2",
               "--branch-copies", "2", "--branch-clip-frames", "8"])
    ae.main(["--data", str(root / "data"), "--out", str(root / "ae"), "--steps", "3", "--batch-size", "4",
             "--save-every", "2", "--log-every", "1"])
    for part in ("episodes", "branches"):
        data.encode_main(["--data", str(root / "data"), "--ae", str(root / "ae"), "--part", part])
    df_args = ["--data", str(root / "data"), "--ae", str(root / "ae"), "--out", str(root / "df"),
               "--save-every", "2", "--log-every", "1", *SMALL_DIT]
    df.main([*df_args, "--steps", "2"])
    first = load_checkpoint(root / "df" / "checkpoint")
    df.main([*df_args, "--steps", "4"])  # resumes at step 2
    export.main(["--df", str(root / "df" / "checkpoint"), "--ae", str(root / "ae" / "final"),
                 "--out", str(root / "model"), "--sigmas", "1.0", "0.5", "0.0"])
    return root, first


def test_data_stage_writes_episodes(run):
    root, _ = run
    episodes = data.load_episodes(root / "data")
    assert episodes.frames.shape == (3, 12, 64, 64, 3) and episodes.frames.dtype == torch.uint8
    assert episodes.ctrl.shape == (3, 12, 259)
    assert episodes.frames.float().std() > 5  # real pictures, not blanks
    assert all(0 <= i < len(episodes.captions) for i in episodes.caption_ids.flatten().tolist())


def test_branch_groups_share_their_context_and_differ_in_their_last_frames(run):
    root, _ = run
    branches = data.load_episodes(root / "data" / "branches")
    assert branches.frames.shape == (4, 8, 64, 64, 3) and branches.start.shape == (4,)
    for group in (branches.frames[0:2].float(), branches.frames[2:4].float()):
        assert torch.equal(group[0, :6], group[1, :6])  # same state, same policy actions
        assert (group[0, 6:] - group[1, 6:]).abs().mean() > 1  # different actions, different frames
    assert not torch.equal(branches.ctrl[0, 6], branches.ctrl[1, 6])
    assert torch.equal(branches.ctrl[1, 6], branches.ctrl[1, 7])  # a branch copy holds its action


def test_batches_hold_whole_branch_groups_scored_on_the_branch(run):
    root, _ = run
    clips = data.LatentClips(root / "data", root / "ae", 8, torch.device("cpu"), branch_share=0.5)
    x0, ctrl, timestamps, text_ids, theme, scored = clips.batch(4)
    assert x0.shape[:2] == (4, 8) and scored.tolist() == [0, 0, 2, 2]
    assert torch.equal(x0[2, :6], x0[3, :6]) and torch.equal(timestamps[2], timestamps[3])
    assert torch.equal(timestamps[2], timestamps[2, 0] + torch.arange(8))


def test_branch_share_holds_on_average_in_batches_smaller_than_a_group(run):
    root, _ = run
    clips = data.LatentClips(root / "data", root / "ae", 8, torch.device("cpu"), branch_share=0.5)
    torch.manual_seed(0)
    scored = [clips.batch(2)[5] for _ in range(200)]  # groups of 2 copies: half a group per batch
    assert all(len(s) == 2 for s in scored)
    share = sum(int((s > 0).sum()) for s in scored) / sum(len(s) for s in scored)
    assert 0.3 < share < 0.7


def test_frame_weights_score_branches_on_their_tail_and_weigh_the_first_frame_from_nothing():
    w = df.frame_weights(torch.tensor([0, 2]), 4, branch_weight=4.0, first_frame_weight=3.0)
    assert w.tolist() == [[3.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 4.0]]
    assert df.frame_weights(torch.tensor([0]), 3, 4.0, 1.0).tolist() == [[1.0, 1.0, 1.0]]


def test_warmup_rises_linearly_and_zero_warmup_starts_at_the_full_rate():
    assert [df.warmup_scale(i, 4) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert df.warmup_scale(0, 0) == 1.0


def test_control_statistics_describe_the_turns_and_keys():
    ctrl = torch.zeros(4, 259)
    ctrl[:, 0] = torch.tensor([0.0, 2.5, -8.0, 12.0])
    ctrl[1, 2 + 0x57] = 1.0
    stats = data.control_statistics(ctrl)
    assert stats["mean_abs_dx"] == pytest.approx(5.625) and stats["share_dx_ge_6"] == 0.5
    assert stats["share_dx_fractional"] == 0.25 and stats["share_W"] == 0.25
    assert stats["share_no_input"] == 0.25


def test_ae_stage_writes_a_loadable_folder_with_stats(run):
    root, _ = run
    cfg = (root / "ae" / "final" / "tiny_autoencoder.yaml").read_text()
    assert "latent_std" in cfg and "null" not in cfg


def test_df_resumes_and_checkpoints_are_sharded(run):
    root, (first_tensors, first_meta) = run
    tensors, meta = load_checkpoint(root / "df" / "checkpoint")
    assert first_meta["step"] == 2 and meta["step"] == 4
    changed = [k for k in tensors if k.startswith("net.") and not torch.equal(tensors[k], first_tensors[k])]
    assert changed, "resumed training did not update the weights"
    for shard in (root / "df" / "checkpoint").glob("shard-*.safetensors"):
        assert shard.stat().st_size <= MAX_SHARD_BYTES
    rows = [json.loads(line) for line in (root / "df" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["flow"] > 0 for r in rows)


def test_export_is_a_complete_waypoint_folder(run):
    root, _ = run
    model = root / "model"
    weights = load_file(model / "model.safetensors")
    assert all(v.dtype == torch.float16 for v in weights.values())
    assert "transformer.blocks.2.cond_head.cond_proj.5.weight" in weights  # tied copies are stored too
    engine = WorldEngine(model, device="cpu", seed=0)
    assert engine.config.scheduler_sigmas == [1.0, 0.5, 0.0]
    assert engine.config.ae_uri == "./autoencoder"
    assert engine.config.patch == (2, 2) and engine.config.tokens_per_frame == 16  # f8 latents, 2x2 patches
    assert engine.config.ctrl_fusion_norm == "none" and engine.config.mouse_scale == 1 / 8
    assert engine.config.mouse_units_per_pixel == 0.3 and engine.config.mouse_cap == 24.0
    assert engine.config.extra["trained_on"] == "simulator"     # the app offers it beside the simulator
    engine.set_prompt("an icy grotto")
    frame = engine.gen_frame(CtrlInput(button={87}))
    assert frame.shape == (64, 64, 3) and frame.dtype == torch.uint8


def test_export_refuses_a_checkpoint_with_missing_weights(run, tmp_path):
    root, _ = run
    from training.checkpoint import save_checkpoint

    tensors, meta = load_checkpoint(root / "df" / "checkpoint")
    tensors.pop("ema.dit.transformer.blocks.1.mlp.fc1.weight")
    save_checkpoint(tmp_path / "broken", tensors, meta)
    with pytest.raises(ValueError, match="missing DiT weights"):
        export.main(["--df", str(tmp_path / "broken"), "--ae", str(root / "ae" / "final"),
                     "--out", str(tmp_path / "model")])


def test_df_runs_under_torchrun_ddp(run, tmp_path):
    """Two processes (gloo on CPU) train in lockstep through torchrun and DistributedDataParallel."""
    import subprocess
    import sys

    root, _ = run
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training", "df", "--data", str(root / "data"), "--ae", str(root / "ae"),
           "--out", str(out), "--steps", "2", "--save-every", "2", "--log-every", "1", *SMALL_DIT]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    _, meta = load_checkpoint(out / "checkpoint")
    assert meta["step"] == 2
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # only rank 0 logs
