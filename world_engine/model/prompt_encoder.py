"""Prompt encoders: text -> ``(emb [B, S, P], pad_mask [B, S])`` with zeroed pad rows.

The released Waypoint models use UMT5-XL (through ``transformers``); the embedded model ships its
own small encoder. A folder holding ``text_encoder.yaml`` is ours, anything else is loaded as UMT5.
"""

from __future__ import annotations

from pathlib import Path

import torch

UMT5_MAX_TOKENS = 512


def normalise_prompt(text: str) -> str:
    """The reference's text clean-up before UMT5: ``ftfy.fix_text`` (mojibake, odd Unicode).

    ftfy (Apache-2.0) is pinned in requirements.txt; without it the text is used as it is.
    """
    try:
        import ftfy
    except ImportError:  # pragma: no cover - an install without the pin
        return text
    return ftfy.fix_text(text)


class UMT5PromptEncoder:
    """UMT5 encoder states, padded to 512 tokens, pad rows multiplied to exact zeros.

    The weights load in ``dtype`` (bf16 on a GPU) whatever the shards store, straight to
    ``device``; the engine loads this at warm-up, so on ZeroGPU it is packed with the other weights
    instead of loading inside a GPU call.
    """

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoTokenizer, UMT5EncoderModel

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.encoder = UMT5EncoderModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.encoder.requires_grad_(False)
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [normalise_prompt(t) for t in texts]
        tokens = self.tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True,
                                max_length=UMT5_MAX_TOKENS).to(self.device)
        keep = tokens["attention_mask"]
        emb = self.encoder(input_ids=tokens["input_ids"], attention_mask=keep).last_hidden_state.to(self.dtype)
        return emb * keep[..., None].to(emb.dtype), keep.eq(0)


def load_prompt_encoder(folder: Path, device: torch.device, dtype: torch.dtype):
    if (folder / "text_encoder.yaml").is_file():
        from .text_encoder import HashedTextEncoder

        return HashedTextEncoder.from_folder(folder, device=device, dtype=dtype)
    return UMT5PromptEncoder(folder, device, dtype)
