"""Write the shipped model folder (default ``world_engine/embedded``) from the trained stages.

Contents: ``config.yaml`` (WorldConfig; relative ``ae_uri``/``prompt_encoder_uri``),
``model.safetensors`` (EMA DiT weights in float16, every key including the duplicated tied
``cond_proj`` copies), ``autoencoder/`` and ``text_encoder/``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import save_file

from world_engine.config import WorldConfig
from world_engine.engine import EMBEDDED_MODEL
from world_engine.model.dit import WorldDiT
from world_engine.model.text_encoder import HashedTextEncoder, TextEncoderConfig
from world_engine.model.tiny_autoencoder import TinyAutoencoder
from world_engine.model.weights import unshared_state_dict
from .checkpoint import load_checkpoint, unprefixed
from .config import RUN_DIR


def export(df_checkpoint: Path, ae_folder: Path, out: Path, sigmas: list[float] | None, use_ema: bool = True,
           ctrl_guidance: float = 1.0) -> None:
    tensors, meta = load_checkpoint(df_checkpoint)
    values = dict(meta["world_config"], trained_on="simulator")   # the app offers it beside the simulator
    if sigmas:
        values["scheduler_sigmas"] = sigmas
    values["ctrl_guidance"] = ctrl_guidance
    config = WorldConfig.from_dict(values)
    weights = unprefixed("ema" if use_ema else "net", tensors)
    dit = WorldDiT(config)
    # the EMA holds each parameter once: the tied cond_proj copies of blocks 1.. are re-tied instead
    missing = dit.load_state_dict(unprefixed("dit", weights), strict=False).missing_keys
    untied = [k for k in missing if ".cond_proj." not in k or k.startswith("transformer.blocks.0.")]
    if untied:
        raise ValueError(f"{df_checkpoint}: missing DiT weights {untied[:3]}")
    dit.tie_weights()
    text = HashedTextEncoder(TextEncoderConfig(out_dim=config.prompt_embedding_dim))
    text.load_state_dict(unprefixed("text", weights))

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config.save(tmp / "config.yaml")
    save_file({k: v.half() for k, v in unshared_state_dict(dit).items()}, tmp / "model.safetensors")
    TinyAutoencoder.from_folder(ae_folder).save(tmp / "autoencoder")
    text.save(tmp / "text_encoder")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"exported step {meta['step']} to {out} ({size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training export", description=__doc__)
    parser.add_argument("--df", type=Path, default=RUN_DIR / "df" / "checkpoint", help="stage-1 checkpoint folder")
    parser.add_argument("--ae", type=Path, default=RUN_DIR / "ae" / "final", help="autoencoder folder")
    parser.add_argument("--out", type=Path, default=EMBEDDED_MODEL)
    parser.add_argument("--sigmas", type=float, nargs="*", default=None, help="sampling schedule, ends with 0")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    parser.add_argument("--ctrl-guidance", type=float, default=1.0,
                        help="classifier-free guidance on the controls while sampling (1: off)")
    args = parser.parse_args(argv)
    export(args.df, args.ae, args.out, args.sigmas, use_ema=not args.no_ema, ctrl_guidance=args.ctrl_guidance)
