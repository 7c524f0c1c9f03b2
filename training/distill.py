"""Stage 2: few-step distillation of the stage-1 model by Self-Forcing with distribution matching.

Three nets start from the stage-1 checkpoint: the frozen **teacher** ("real score", its EMA weights),
the **critic** ("fake score", trained online on the student's output) and the **student**
(generator, the few-step sampler the engine plays). The text encoder is the teacher's, frozen and
shared. One iteration:

1. **Self-forcing rollout** (Self-Forcing, Huang et al. 2025): from a ground-truth clip the first
   ``K = clip_frames - generated`` frames are clean context; the student then generates the next
   ``generated`` frames one by one with its own few-step Euler sampler, each conditioned on the
   context plus its *own* earlier (detached) frames and the clip's true controls, so training sees
   the history the engine will see at play time. Only one denoising step per frame carries gradient
   (the last, or a random "exit" step whose x0-prediction becomes the frame); the others run
   without a graph.
2. **DMD generator loss** (DMD / DMD2, Yin et al. 2024) on each generated frame ``x_hat``: noise it
   to a random ``s``, ask the teacher (with classifier-free guidance on the controls) and the
   critic for x0, and push ``x_hat`` along ``x0_real - x0_fake``, normalised per frame. Where the
   critic equals the teacher and guidance is 1, the push is exactly zero.
3. **Critic update**: the ordinary flow-matching loss of the critic on the student's detached
   frames, ``critic_steps`` times per generator step (DMD2's two-time-scale rule; the first on the
   generator's own frames, the rest on fresh rollouts).
4. Optionally (``regression_weight``) the MSE of each generated frame to the clip's true frame, as
   DMD's regression loss anchors its generator, but to the data: the simulator is deterministic, so
   the truth under the clip's controls is the one right answer, and on branched clips each copy's
   own outcome teaches what its action did. ``dmd_weight 0`` leaves regression alone (no teacher or
   critic passes): self-forcing as a deterministic next-frame predictor.

History is implemented **without the KV cache**: every forward runs the DiT over
``[context, generated so far, current frame]`` with the block-causal mask built from the
timestamps (``frame_visibility``), with the history at sigma 0, and reads the last frame. That is
the engine's cached rollout (cache pass at sigma 0, then a frozen cache) computed in one pass, and it
keeps per-clip timestamps, which a batched ring cache cannot (its slot layout is shared by the
batch); ``tests/test_distill.py`` checks that both give the same frame. Unlike Self-Forcing's cache,
the gradient also reaches the student's keys and values of the history frames (the exact gradient
of the exit step given the detached history latents).

Scoring (teacher, critic, critic loss) runs one sequence per generated frame ``j``, batched: the
detached clip with frame ``j`` replaced by its noised copy. The causal mask hides the frames after
``j``, so frame ``j`` is scored against a clean history exactly as it was generated.

Checkpoints (same sharded format as stage 1): ``net.*`` = the student (``dit``, ``text``,
``theme_head``, so ``python -m training export --df <out>/checkpoint`` exports it unchanged),
``ema.*`` = its EMA, ``critic.*``; ``meta.world_config.scheduler_sigmas`` is the student's
schedule. Single process (no DDP): the three nets of the embedded model fit any one device.

``<out>/log.jsonl``, every ``log_every`` steps: ``gen`` (DMD surrogate loss), ``regression`` (MSE to
the true frames), ``critic`` (its flow loss), ``dmd_grad`` (RMS of the normalised push), and the
control probe ``probe``: the RMS difference of the next frame under a +8 and a -8 mouse turn, same
context and noise, for the EMA student at its schedule, beside the teacher's at its own
(``probe_teacher``) and at the student's schedule (``probe_teacher_few``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from simulator.themes import THEME_NAMES
from world_engine.config import WorldConfig
from world_engine.model.dit import WorldDiT
from world_engine.model.text_encoder import HashedTextEncoder, TextEncoderConfig
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .config import RUN_DIR, add_arguments, from_arguments
from .data import LatentClips
from .df import warmup_scale

PROBE_MOUSE = 8.0  # mouse units of the control probe's turn (one arrow-key turn per frame)


@dataclass
class DistillConfig:
    df: Path = RUN_DIR / "df" / "checkpoint"  # the stage-1 checkpoint (teacher)
    data: Path = RUN_DIR / "data"
    ae: Path = RUN_DIR / "ae"
    out: Path = RUN_DIR / "distill"
    steps: int = 1000  # generator steps
    minutes: float = 0.0  # stop after this much wall time (0 = no limit); resumable
    batch_size: int = 8
    clip_frames: int = 0  # 0 = the teacher's (its attention window)
    generated: int = 2  # frames the student rolls out after clip_frames - generated context frames
    sigmas: str = "1.0,0.5,0.0"  # the student's sampling schedule (the engine plays it)
    random_exit: bool = True  # Self-Forcing: the gradient step (and the frame) is a random step's x0
    guidance: float = 2.0  # teacher CFG on the controls; 1 = none
    critic_steps: int = 2  # critic updates per generator update (none with --dmd-weight 0)
    dmd_weight: float = 1.0  # 0: no distribution matching, the teacher and the critic are never run
    regression_weight: float = 0.0  # MSE of each rolled-out frame to the clip's true frame: anchors the
    # student to what the controls did (branched clips: each copy's own outcome) instead of a fresh
    # sample per frame, the flicker of the DMD-only students (docs/training.md, fifth session)
    dmd_sigma_min: float = 0.02
    dmd_sigma_max: float = 0.98
    lr: float = 3e-5
    critic_lr: float = 3e-5
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.99
    branch_share: float = 0.5  # branched clip groups: one context, several actions (needs data/branches)
    probe_clips: int = 8
    bf16: bool = False
    log_every: int = 10
    save_every: int = 50
    seed: int = 0
    device: str = "cpu"


class WorldNet(nn.Module):
    """The stage-1 net's parts under its state-dict names (``dit``, ``text``, ``theme_head``), built
    from a saved ``WorldConfig`` so that any stage-1 checkpoint loads whatever its config was."""

    def __init__(self, config: WorldConfig) -> None:
        super().__init__()
        self.world_config = config
        self.dit = WorldDiT(config)
        self.text = HashedTextEncoder(TextEncoderConfig(out_dim=config.prompt_embedding_dim))
        self.theme_head = nn.Linear(config.prompt_embedding_dim, len(THEME_NAMES))


def load_weights(net: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load a ``net.*`` state dict or an EMA (which holds the tied ``cond_proj`` copies only once)."""
    missing, unexpected = net.load_state_dict(weights, strict=False)
    untied = [k for k in missing if ".cond_proj." not in k or ".blocks.0." in k]
    if untied or unexpected:
        raise ValueError(f"{source}: missing {untied[:3]}, unexpected {unexpected[:3]}")
    net.dit.tie_weights()


def parse_sigmas(text: str) -> list[float]:
    sigmas = [float(s) for s in text.split(",")]
    if len(sigmas) < 2 or sigmas[-1] != 0.0 or any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"--sigmas must decrease strictly to 0, got {text!r}")
    return sigmas


class Nets(NamedTuple):
    student: WorldNet
    critic: WorldNet
    teacher: WorldNet
    ema: dict[str, torch.Tensor]
    step: int
    teacher_meta: dict


def build_nets(cfg: DistillConfig, device: torch.device) -> Nets:
    """Teacher (EMA, frozen), critic and student from the stage-1 checkpoint, or the run's own."""
    tensors, meta = load_checkpoint(cfg.df)
    world = WorldConfig.from_dict(meta["world_config"])
    teacher = WorldNet(world)
    load_weights(teacher, unprefixed("ema", tensors), str(cfg.df))
    critic, student = copy.deepcopy(teacher), copy.deepcopy(teacher)
    student.world_config = WorldConfig.from_dict({**world.to_dict(), "scheduler_sigmas": parse_sigmas(cfg.sigmas)})
    step, ckpt = 0, cfg.out / "checkpoint"
    if (ckpt / "index.json").is_file():  # resume the distillation run
        tensors, own = load_checkpoint(ckpt)
        load_weights(student, unprefixed("net", tensors), str(ckpt))
        load_weights(critic, unprefixed("critic", tensors), str(ckpt))
        step = own["step"]
        print(f"resumed from {ckpt} at step {step}", flush=True)
    for net in (teacher, critic, student):
        net.text = teacher.text  # one frozen text encoder for all three
        net.to(device).eval()
    teacher.requires_grad_(False)
    for net in (critic, student):
        net.text.requires_grad_(False)
        net.theme_head.requires_grad_(False)
    ema = {k: p.detach().clone() for k, p in student.named_parameters()}
    if step:
        ema = {k: v.to(device) for k, v in unprefixed("ema", tensors).items()}
    return Nets(student, critic, teacher, ema, step, meta)


# --------------------------------------------------------------------------------------------------
# Self-forcing rollout


class Clip(NamedTuple):
    """What every pass over a batch shares: clean latents, controls, timestamps, prompt embedding."""

    x0: torch.Tensor  # [B, N, C, H, W]; only the first N - generated frames are read as context
    ctrl: torch.Tensor  # [B, N, D]
    timestamps: torch.Tensor  # [B, N]
    emb: torch.Tensor  # [B, S, P]


def velocity_of_last(dit: WorldDiT, history: torch.Tensor, x: torch.Tensor, s: float, clip: Clip) -> torch.Tensor:
    """Velocity of frame ``x [B, C, H, W]`` at noise ``s`` after the clean ``history [B, n, ...]``."""
    b, n = history.shape[:2]
    seq = torch.cat((history, x[:, None]), dim=1)
    sigma = torch.zeros(b, n + 1, device=x.device)
    sigma[:, -1] = s
    return dit(seq, sigma, clip.timestamps[:, :n + 1], clip.ctrl[:, :n + 1], clip.emb)[:, -1]


def sample_frame(dit: WorldDiT, history: torch.Tensor, clip: Clip, sigmas: list[float],
                 exit_step: int | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The engine's few-step Euler sampler for the frame after ``history``, from ``noise`` (default:
    fresh Gaussian noise).

    ``exit_step=None``: all steps without a graph, the frame is the last Euler step. Otherwise the
    steps before ``exit_step`` run without a graph and ``exit_step`` itself with one, and its
    x0-prediction ``x - s v`` is the frame (equal to the Euler step when it is the last step).
    """
    x = torch.randn(history.shape[0], *history.shape[2:], device=history.device) if noise is None else noise
    for i, (s, s_next) in enumerate(zip(sigmas, sigmas[1:])):
        if i == exit_step:
            return x - s * velocity_of_last(dit, history, x, s, clip)
        with torch.no_grad():
            x = x + (s_next - s) * velocity_of_last(dit, history, x, s, clip)
    return x


def self_forcing_rollout(dit: WorldDiT, clip: Clip, generated: int, sigmas: list[float],
                         exit_steps: list[int] | None = None) -> torch.Tensor:
    """Frames ``[B, generated, C, H, W]`` the student makes after the clip's context, each frame seeing
    its own earlier frames (detached). With ``exit_steps`` each frame keeps its graph."""
    history = clip.x0[:, :clip.x0.shape[1] - generated]
    frames = []
    for j in range(generated):
        frame = sample_frame(dit, history, clip, sigmas, exit_steps[j] if exit_steps is not None else None)
        frames.append(frame)
        history = torch.cat((history, frame.detach()[:, None]), dim=1)
    return torch.stack(frames, dim=1)


# --------------------------------------------------------------------------------------------------
# Scoring: DMD generator loss and the critic's flow-matching loss


class Scoring(NamedTuple):
    """One sequence per generated frame ``j`` (rows ``j * B + b``), frame ``K + j`` noised."""

    x: torch.Tensor  # [G*B, N, C, H, W]
    sigma: torch.Tensor  # [G*B, N]
    rows: torch.Tensor  # [G*B]
    frame: torch.Tensor  # [G*B] index of the scored frame
    clip: Clip  # repeated G times


def scoring_sequences(clip: Clip, frames: torch.Tensor, noisy: torch.Tensor, s: torch.Tensor) -> Scoring:
    """Sequences that score each generated frame against the clean history it was generated from.

    ``frames`` (detached) and ``noisy`` are ``[B, G, ...]``, ``s`` is ``[B, G]``. Frames after the
    scored one are the other generated frames; the block-causal mask hides them.
    """
    b, g = frames.shape[:2]
    k = clip.x0.shape[1] - g
    full = torch.cat((clip.x0[:, :k], frames.detach()), dim=1)
    x = full.repeat(g, 1, 1, 1, 1)
    sigma = torch.zeros(g * b, full.shape[1], device=full.device)
    rows = torch.arange(g * b, device=full.device)
    frame = k + torch.arange(g, device=full.device).repeat_interleave(b)
    x[rows, frame] = noisy.transpose(0, 1).reshape(g * b, *noisy.shape[2:])
    sigma[rows, frame] = s.transpose(0, 1).reshape(-1)
    repeated = Clip(full, clip.ctrl.repeat(g, 1, 1), clip.timestamps.repeat(g, 1), clip.emb.repeat(g, 1, 1))
    return Scoring(x, sigma, rows, frame, repeated)


def scored_velocity(dit: WorldDiT, sc: Scoring, null_control: bool = False) -> torch.Tensor:
    """The velocity ``[G*B, C, H, W]`` of each scored frame (``null_control``: the CFG-dropped controls)."""
    dropped = torch.full((sc.x.shape[0],), null_control, device=sc.x.device)
    control = dit.control_context(sc.clip.ctrl, dropped=dropped)
    return dit(sc.x, sc.sigma, sc.clip.timestamps, control, sc.clip.emb)[sc.rows, sc.frame]


def to_frames(v: torch.Tensor, b: int) -> torch.Tensor:
    """Rows ``j * B + b`` back to ``[B, G, ...]``."""
    return v.reshape(-1, b, *v.shape[1:]).transpose(0, 1)


def guided_velocity(teacher: WorldDiT, sc: Scoring, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on the controls, ``v_null + w (v_cond - v_null)``, which bakes the
    guidance into the student (DMD's "real score" with CFG). ``w == 1`` is the conditional pass alone."""
    v_cond = scored_velocity(teacher, sc)
    if guidance == 1.0:
        return v_cond
    v_null = scored_velocity(teacher, sc, null_control=True)
    return v_null + guidance * (v_cond - v_null)


def noised(frames: torch.Tensor, cfg: DistillConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_s, s, eps)`` with one ``s ~ U[dmd_sigma_min, dmd_sigma_max]`` per frame."""
    b, g = frames.shape[:2]
    s = cfg.dmd_sigma_min + (cfg.dmd_sigma_max - cfg.dmd_sigma_min) * torch.rand(b, g, device=frames.device)
    eps = torch.randn_like(frames)
    s5 = s[..., None, None, None]
    return (1 - s5) * frames + s5 * eps, s, eps


def dmd_loss(x_hat: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DMD's surrogate ``0.5 * mean((x_hat - sg(x_hat - g))^2)``, whose gradient in ``x_hat`` is
    ``g / numel``: the score difference ``x0_fake - x0_real`` normalised by each frame's
    ``mean |x_hat - x0_real|``, so descent moves ``x_hat`` toward the teacher's x0 and away from the
    critic's. Computed in float64 so that a tiny ``g`` survives the subtraction. Returns ``(loss, g)``."""
    norm = (x_hat - x0_real).abs().mean(dim=(2, 3, 4), keepdim=True).detach().clamp_min(1e-8)
    grad = ((x0_fake - x0_real) / norm).double()
    target = (x_hat.double() - grad).detach()
    return 0.5 * (x_hat.double() - target).pow(2).mean(), grad  # not F.mse_loss: autocast would cast it


class GeneratorLoss(NamedTuple):
    loss: torch.Tensor  # dmd_weight * dmd + regression_weight * regression
    dmd: torch.Tensor
    regression: torch.Tensor
    frames: torch.Tensor  # the rolled-out frames, detached
    grad: torch.Tensor  # the normalised DMD push (zeros without DMD)


def generator_loss(nets: Nets, clip: Clip, cfg: DistillConfig, sigmas: list[float]) -> GeneratorLoss:
    """Roll the student out and score its frames by DMD and, if weighted, by regression to the truth."""
    n_steps = len(sigmas) - 1
    exits = [random.randrange(n_steps) if cfg.random_exit else n_steps - 1 for _ in range(cfg.generated)]
    x_hat = self_forcing_rollout(nets.student.dit, clip, cfg.generated, sigmas, exits)
    truth = clip.x0[:, clip.x0.shape[1] - cfg.generated:]
    regression = (x_hat.float() - truth.float()).pow(2).mean()
    dmd, grad = x_hat.new_zeros((), dtype=torch.float64), torch.zeros_like(x_hat)
    if cfg.dmd_weight > 0:
        x_s, s, _ = noised(x_hat.detach(), cfg)
        sc = scoring_sequences(clip, x_hat, x_s, s)
        s5 = s[..., None, None, None]
        with torch.no_grad():
            x0_real = x_s - s5 * to_frames(guided_velocity(nets.teacher.dit, sc, cfg.guidance), x_hat.shape[0])
            x0_fake = x_s - s5 * to_frames(scored_velocity(nets.critic.dit, sc), x_hat.shape[0])
        dmd, grad = dmd_loss(x_hat.float(), x0_real.float(), x0_fake.float())
    loss = cfg.dmd_weight * dmd + cfg.regression_weight * regression
    return GeneratorLoss(loss, dmd, regression, x_hat.detach(), grad)


def critic_loss(critic: WorldDiT, clip: Clip, frames: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """Flow matching of the critic on the student's (detached) frames: it learns the student's
    conditional distribution, the "fake score" of DMD."""
    x_s, s, eps = noised(frames.detach(), cfg)
    sc = scoring_sequences(clip, frames, x_s, s)
    v = to_frames(scored_velocity(critic, sc), frames.shape[0])
    return F.mse_loss(v.float(), eps - frames)


# --------------------------------------------------------------------------------------------------
# Probe and training loop


@torch.no_grad()
def control_probe(dit: WorldDiT, clip: Clip, sigmas: list[float], seed: int = 0) -> float:
    """RMS difference between the next frame under a +8 and a -8 mouse turn, same context and noise:
    near zero means the sampler ignores the controls (``embedded-model-diagnosis.md`` §8)."""
    k = clip.x0.shape[1] - 1
    gen = torch.Generator(clip.x0.device).manual_seed(seed)
    noise = torch.randn(clip.x0[:, k].shape, generator=gen, device=clip.x0.device)
    out = []
    for sign in (1.0, -1.0):
        ctrl = clip.ctrl.clone()
        ctrl[:, k, 0] = sign * PROBE_MOUSE
        out.append(sample_frame(dit, clip.x0[:, :k], clip._replace(ctrl=ctrl), sigmas, noise=noise))
    return (out[0] - out[1]).pow(2).mean().sqrt().item()


def make_clip(nets: Nets, batch: tuple[torch.Tensor, ...]) -> Clip:
    x0, ctrl, timestamps, text_ids = batch[:4]
    with torch.no_grad():
        emb, _ = nets.teacher.text.encode_ids(text_ids)
    return Clip(x0, ctrl, timestamps, emb)


def adamw(params: Iterator[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with Self-Forcing's betas (0, 0.999): no momentum, the critic's target keeps moving."""
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.0, 0.999))


def update(opt: torch.optim.Optimizer, net: nn.Module, loss: torch.Tensor, lr: float, clip_norm: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], clip_norm)
    opt.step()


def save(cfg: DistillConfig, nets: Nets, step: int) -> None:
    tensors = {**prefixed("net", nets.student.state_dict()), **prefixed("ema", nets.ema),
               **prefixed("critic", nets.critic.state_dict())}
    meta = {"stage": "distill", "step": step, "config": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(cfg).items()},
            "teacher": {"checkpoint": str(cfg.df), "step": nets.teacher_meta.get("step")},
            "world_config": nets.student.world_config.to_dict()}
    save_checkpoint(cfg.out / "checkpoint", tensors, meta)


class Optimizers(NamedTuple):
    student: torch.optim.AdamW
    critic: torch.optim.AdamW


def iteration(nets: Nets, opts: Optimizers, data: LatentClips, cfg: DistillConfig, sigmas: list[float],
              lr_scale: float, autocast) -> dict[str, float]:
    """One generator step then ``critic_steps`` critic steps; returns their losses."""
    # 1. Generator: self-forcing rollout, DMD against teacher and critic, EMA
    clip = make_clip(nets, data.batch(cfg.batch_size))
    with autocast():
        gen = generator_loss(nets, clip, cfg, sigmas)
    frames = gen.frames
    update(opts.student, nets.student, gen.loss, cfg.lr * lr_scale, cfg.grad_clip)
    with torch.no_grad():  # the student starts from a trained model, so the EMA needs no warmup
        for name, p in nets.student.named_parameters():
            nets.ema[name].lerp_(p.detach(), 1 - cfg.ema)
    # 2. Critic: flow matching on the generator's frames, then on fresh rollouts of the updated student
    critic = 0.0
    for i in range(cfg.critic_steps if cfg.dmd_weight > 0 else 0):  # the critic serves DMD only
        if i:
            clip = make_clip(nets, data.batch(cfg.batch_size))
            with torch.no_grad(), autocast():
                frames = self_forcing_rollout(nets.student.dit, clip, cfg.generated, sigmas)
        with autocast():
            c_loss = critic_loss(nets.critic.dit, clip, frames, cfg)
        update(opts.critic, nets.critic, c_loss, cfg.critic_lr * lr_scale, cfg.grad_clip)
        critic += c_loss.item() / cfg.critic_steps
    return {"gen": gen.dmd.item(), "regression": gen.regression.item(), "critic": critic,
            "dmd_grad": gen.grad.pow(2).mean().sqrt().item()}


@torch.no_grad()
def ema_net(nets: Nets, scratch: WorldNet) -> WorldNet:
    """``scratch`` holding the student's EMA weights: the model that export ships."""
    for name, p in scratch.named_parameters():
        p.copy_(nets.ema[name])
    return scratch


def train(cfg: DistillConfig) -> Nets:
    """Iterate until ``steps`` generator steps or ``minutes``; log, probe and checkpoint on the way."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # 1. Nets, data, optimizers and the student's schedule
    nets = build_nets(cfg, device)
    cfg.clip_frames = cfg.clip_frames or int(nets.teacher_meta["config"]["clip_frames"])
    if cfg.dmd_weight <= 0 and cfg.regression_weight <= 0:
        raise ValueError("nothing to train: --dmd-weight and --regression-weight are both 0")
    if not 1 <= cfg.generated < cfg.clip_frames:
        raise ValueError(f"--generated must lie in [1, clip_frames = {cfg.clip_frames}), got {cfg.generated}")
    sigmas, teacher_sigmas = nets.student.world_config.scheduler_sigmas, nets.teacher.world_config.scheduler_sigmas
    data = LatentClips(cfg.data, cfg.ae, cfg.clip_frames, device, cfg.branch_share)
    opts = Optimizers(adamw(nets.student.parameters(), cfg.lr, cfg.weight_decay),
                      adamw(nets.critic.parameters(), cfg.critic_lr, cfg.weight_decay))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.bf16 else contextlib.nullcontext
    # 2. A fixed probe batch; the teacher's control sensitivity, at its own and at the student's
    #    schedule, is what the student's is compared with
    probe, scratch = make_clip(nets, data.batch(cfg.probe_clips)), copy.deepcopy(nets.student)
    with autocast():
        reference = {"probe_teacher": control_probe(nets.teacher.dit, probe, teacher_sigmas),
                     "probe_teacher_few": control_probe(nets.teacher.dit, probe, sigmas)}
    print(f"teacher control probe {reference['probe_teacher']:.4g} at {len(teacher_sigmas) - 1} steps, "
          f"{reference['probe_teacher_few']:.4g} at the student's {sigmas}", flush=True)
    # 3. The loop
    log = open(cfg.out / "log.jsonl", "a", encoding="utf-8")
    t0, run_steps, step = time.time(), 0, nets.step
    acc: dict[str, float] = {}
    while step < cfg.steps:
        lr_scale = warmup_scale(run_steps, cfg.warmup)
        for k, v in iteration(nets, opts, data, cfg, sigmas, lr_scale, autocast).items():
            acc[k] = acc.get(k, 0.0) + v / cfg.log_every
        step, run_steps = step + 1, run_steps + 1
        minutes_up = cfg.minutes > 0 and time.time() - t0 > 60 * cfg.minutes
        if step % cfg.log_every == 0:
            with autocast():
                probe_student = control_probe(ema_net(nets, scratch).dit, probe, sigmas)
            row = {"step": step, **acc, "probe": probe_student, **reference, "lr": cfg.lr * lr_scale,
                   "steps_per_s": run_steps / (time.time() - t0), "wall_s": time.time() - t0}
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            acc = {}
        if step % cfg.save_every == 0 or step == cfg.steps or minutes_up:
            save(cfg, nets, step)
        if minutes_up:
            break
    log.close()
    return nets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, DistillConfig)
    cfg = from_arguments(DistillConfig, parser.parse_args(argv))
    cfg.out.mkdir(parents=True, exist_ok=True)
    train(cfg)
