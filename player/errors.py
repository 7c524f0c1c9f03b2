"""The one way the app tells a player something went wrong.

Gradio renders the text of ``gr.Error``, ``gr.Warning`` and ``gr.Info`` toasts as (sanitised) HTML,
and many of our messages quote what a player sent: a camera path item, a control log's event, a
model name. A shared control log could otherwise show its victim a live link or make their browser
fetch an image. Every toast the app raises goes through here and is escaped exactly once.
"""

from __future__ import annotations

import html

import gradio as gr

MAX_MESSAGE_CHARS = 600     # a quoted 100 000-character value must not become a 100 000-character toast


def _text(message: object) -> str:
    text = str(message)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS - 1] + "\u2026"
    return html.escape(text, quote=False)     # no tag can form; quotes stay readable


def user_error(message: object, title: str = "Error") -> gr.Error:
    """A ``gr.Error`` whose message and title show as plain text, whatever they quote."""
    return gr.Error(_text(message), title=_text(title))


def user_warning(message: object) -> None:
    """A warning toast that shows as plain text."""
    gr.Warning(_text(message))
