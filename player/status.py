"""The status line under the player: model, device, warm-up, state, prompt, fps and latency."""

from __future__ import annotations

import html

from player.backends import Backend
from player.sessions import ControlBoard, Session


class StatusLine:
    """Writes the status line from the backend's warm-up and the session's control slot."""

    def __init__(self, backend: Backend, board: ControlBoard) -> None:
        self.backend = backend
        self.board = board

    def text(self, session: Session | None, state: str) -> str:
        """Markdown for ``state``; fps and latency are what the page measures and reports."""
        warm = self.backend.warmup
        parts = [f"**Device** {self.backend.kind}"]
        if session is not None and session.model_label:
            parts.insert(0, f"**Model** {html.escape(session.model_label)}")
        if warm.error:
            parts.append(f"**Warm-up failed** {html.escape(warm.error)}")
        elif not warm.done.is_set():
            parts.append(f"**Warming up** {warm.fraction:.0%} ({warm.text})")
        if warm.fast_path:
            parts.append(f"**Fast path** {html.escape(warm.fast_path)}")
        parts.append(f"**State** {state}")
        if session is not None and session.recipe is not None:
            text = self.board.prompt(session.slot)[1]
            if text:
                short = text if len(text) <= 60 else text[:57] + "..."
                parts.append(f"**Prompt** {html.escape(short)}")
        if session is not None and state == "playing":
            snap = self.board.snapshot(session.slot)
            if snap.state.client_fps:
                parts.append(f"**{snap.state.client_fps:.0f} fps**")
            if snap.state.client_latency_ms:
                parts.append(f"**input\u2192frame** {snap.state.client_latency_ms:.0f} ms")
        return " \u00b7 ".join(parts)

    def idle(self, session: Session | None) -> str:
        """The line while nothing plays: ready, or still warming up."""
        return self.text(session, "ready" if self.backend.warmup.done.is_set() else "warming up")
