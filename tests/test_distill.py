"""Stage 2 (Self-Forcing + DMD): a smoke run from a tiny stage-1 checkpoint through export to the
engine, and the properties the method rests on: the DMD push vanishes exactly when the critic
equals the teacher without guidance, and the cache-free rollout makes the engine's frame."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from training import ae, data, df, distill, export
from training.checkpoint import load_checkpoint
from training.config import embedded_world_config
from world_engine import CtrlInput, WorldEngine
from world_engine.config import WorldConfig
from world_engine.model.kv_cache import RingKVCache

TINY_DIT = ["--d-model", "32", "--n-heads", "1", "--n-layers", "3", "--batch-size", "2", "--clip-frames", "6"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny nets: a second thread only spins on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Tiny data, autoencoder and stage-1 runs (a few steps each), as the stage tests make them."""
    root = tmp_path_factory.mktemp("distill")
    data.main(["--out", str(root / "data"), "--episodes", "2", "--frames", "8", "--branch-groups", "1",
               "--branch-copies", "2", "--branch-clip-frames", "6"])
    ae.main(["--data", str(root / "data"), "--out", str(root / "ae"), "--steps", "2", "--batch-size", "4",
             "--widths", "32,16,8", "--save-every", "2", "--log-every", "1"])
    df.main(["--data", str(root / "data"), "--ae", str(root / "ae"), "--out", str(root / "df"), "--steps", "2",
             "--save-every", "2", "--log-every", "1", *TINY_DIT])
    return root


def distill_args(root, steps: int) -> list[str]:
    return ["--df", str(root / "df" / "checkpoint"), "--data", str(root / "data"), "--ae", str(root / "ae"),
            "--out", str(root / "distill"), "--steps", str(steps), "--batch-size", "2",
            "--generated", "2", "--critic-steps", "2", "--branch-share", "1", "--probe-clips", "2",
            "--log-every", "1", "--save-every", "2", "--warmup", "1", "--lr", "1e-3", "--critic-lr", "1e-3"]


def test_distill_trains_resumes_and_exports_a_two_step_model(stage1):
    root = stage1
    distill.main(distill_args(root, 2))
    first, _ = load_checkpoint(root / "distill" / "checkpoint")
    distill.main(distill_args(root, 3))  # resumes at step 2
    tensors, meta = load_checkpoint(root / "distill" / "checkpoint")
    assert meta["stage"] == "distill" and meta["step"] == 3
    assert meta["world_config"]["scheduler_sigmas"] == [1.0, 0.5, 0.0]
    assert {k.split(".")[0] for k in tensors} == {"net", "ema", "critic"}
    changed = [k for k in tensors if k.startswith("net.dit.") and not torch.equal(tensors[k], first[k])]
    assert changed, "the resumed run did not move the student"
    teacher, _ = load_checkpoint(root / "df" / "checkpoint")
    assert all(torch.equal(tensors[f"net.{k[4:]}"], v) for k, v in teacher.items() if k.startswith("ema.text."))

    rows = [json.loads(line) for line in (root / "distill" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ("gen", "critic", "dmd_grad", "probe"))
        assert r["critic"] > 0 and r["probe_teacher"] >= 0 and r["probe_teacher_few"] >= 0

    export.main(["--df", str(root / "distill" / "checkpoint"), "--ae", str(root / "ae" / "final"),
                 "--out", str(root / "model")])
    engine = WorldEngine(root / "model", device="cpu", seed=0)
    assert engine.n_steps == 2
    for _ in range(3):
        frame = engine.gen_frame(CtrlInput(button={87}, mouse=(8.0, 0.0)))
    assert frame.shape == (64, 64, 3) and frame.dtype == torch.uint8


# --------------------------------------------------------------------------------------------------
# Properties on a random tiny net (no data needed)


def tiny_nets() -> distill.Nets:
    """Random teacher = critic = student; layer 0 global over 8 frames at dilation 2, the others local
    over 4, so a 10-frame history exercises both windows and the dilation phase."""
    torch.manual_seed(0)
    shape = embedded_world_config(d_model=32, n_layers=3, n_heads=1, latent_channels=4, latent_size=4,
                                  patch=2, prompt_dim=32).to_dict()
    config = WorldConfig.from_dict({**shape, "local_window": 4, "global_window": 8, "global_attn_period": 3,
                                    "global_pinned_dilation": 2})
    teacher = distill.WorldNet(config).eval()
    return distill.Nets(copy.deepcopy(teacher), copy.deepcopy(teacher), teacher, {}, 0, {})


def tiny_clip(config, b: int = 2, n: int = 5, start: int = 3) -> distill.Clip:
    x0 = torch.randn(b, n, *config.latent_shape)
    ctrl = torch.zeros(b, n, config.ctrl_dim)
    ctrl[..., 0] = torch.randn(b, n) * 8
    timestamps = start + torch.arange(n).repeat(b, 1) + torch.arange(b)[:, None]  # clips start at other times
    return distill.Clip(x0, ctrl, timestamps, torch.randn(b, 4, config.prompt_embedding_dim))


def student_grads(nets: distill.Nets, guidance: float) -> list[torch.Tensor]:
    cfg = distill.DistillConfig(generated=2, guidance=guidance)
    torch.manual_seed(1)
    nets.student.zero_grad(set_to_none=False)
    distill.generator_loss(nets, tiny_clip(nets.teacher.world_config), cfg, [1.0, 0.5, 0.0]).loss.backward()
    return [p.grad for p in nets.student.dit.parameters() if p.grad is not None]


def test_dmd_push_is_exactly_zero_when_the_critic_is_the_teacher_without_guidance():
    nets = tiny_nets()
    with torch.no_grad():  # a student that differs from the teacher, so its frames are its own
        for p in nets.student.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    grads = student_grads(nets, guidance=1.0)
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)

    guided = student_grads(nets, guidance=2.0)  # CFG alone already pushes toward the controls
    assert sum(g.abs().sum() for g in guided) > 0
    with torch.no_grad():
        for p in nets.critic.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    grads = student_grads(nets, guidance=1.0)
    assert sum(g.abs().sum() for g in grads) > 0


def test_regression_alone_scores_the_rollout_against_the_true_frames_without_teacher_or_critic():
    nets = tiny_nets()
    clip = tiny_clip(nets.teacher.world_config)
    cfg = distill.DistillConfig(generated=2, dmd_weight=0.0, regression_weight=0.5, random_exit=False)
    for net in (nets.teacher, nets.critic):  # would raise if scoring ran them
        net.dit.forward = None
    torch.manual_seed(3)
    out = distill.generator_loss(nets, clip, cfg, [1.0, 0.0])
    torch.manual_seed(3)
    with torch.no_grad():
        frames = distill.self_forcing_rollout(nets.student.dit, clip, 2, [1.0, 0.0])
    torch.testing.assert_close(out.frames, frames)
    torch.testing.assert_close(out.regression, (frames - clip.x0[:, -2:]).pow(2).mean())
    assert out.loss.item() == pytest.approx(0.5 * out.regression.item()) and out.dmd.item() == 0
    out.loss.backward()
    assert sum(p.grad.abs().sum() for p in nets.student.dit.parameters() if p.grad is not None) > 0


def test_dmd_gradient_on_the_frames_is_the_normalised_score_difference():
    x_hat = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    x0_real, x0_fake = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    loss, grad = distill.dmd_loss(x_hat, x0_real, x0_fake)
    loss.backward()
    norm = (x_hat.detach() - x0_real).abs().mean(dim=(2, 3, 4), keepdim=True)
    torch.testing.assert_close(x_hat.grad, (x0_fake - x0_real) / norm / x_hat.numel())
    torch.testing.assert_close(grad.float(), (x0_fake - x0_real) / norm)


def test_cache_free_rollout_makes_the_engine_cached_frame():
    """The masked full-sequence forward the distillation uses equals the engine's path: cache pass at
    sigma 0 for every history frame, then Euler steps against the frozen cache."""
    teacher = tiny_nets().teacher
    dit, config = teacher.dit, teacher.world_config
    clip = tiny_clip(config, b=1, n=11, start=5)  # longer than the local window: the windows matter
    sigmas = [1.0, 0.5, 0.0]
    k = clip.x0.shape[1] - 1
    noise = torch.randn(1, *config.latent_shape)
    with torch.no_grad():
        masked = distill.sample_frame(dit, clip.x0[:, :k], clip, sigmas, noise=noise)
        cache = RingKVCache(config, 1)
        for t in range(k + 1):
            frame = clip.x0[:, t:t + 1] if t < k else noise[:, None]
            args = (clip.timestamps[:, t:t + 1], clip.ctrl[:, t:t + 1], clip.emb)
            if t == k:
                for s, s_next in zip(sigmas, sigmas[1:]):
                    cache.begin(int(clip.timestamps[0, t]), write=False)
                    frame = frame + (s_next - s) * dit(frame, torch.full((1, 1), s), *args, cache=cache)
                break
            cache.begin(int(clip.timestamps[0, t]), write=True)
            dit(frame, torch.zeros(1, 1), *args, cache=cache)
            cache.end()
    torch.testing.assert_close(masked, frame[:, 0], atol=1e-5, rtol=1e-4)
