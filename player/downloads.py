"""Recordings as files for the browser: one server-named folder per session, replaced on each
download and removed with the session, and all of them with the server.

The folders live inside Gradio's own file cache, so Gradio serves them in place instead of
copying each file into its cache for an hour. A download is expensive (the video is encoded in a
child process, ``player.video``), so one runs at a time and a session may start one
``interval_s`` seconds after its last one ended.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from player.recording import Recorder
from player.sessions import Session


class DownloadRefused(ValueError):
    """Too soon after the last download, or the encoder is busy for too long."""


class Downloads:
    """Writes a session's recording (animated WebP, MP4, JSON control log) into its own folder."""

    def __init__(self, interval_s: float = 15.0, parent: str | Path | None = None, wait_s: float = 30.0) -> None:
        if parent is None:
            from gradio.utils import get_upload_folder     # where Gradio serves files from without a copy

            parent = get_upload_folder()
        Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="world-player-", dir=parent))
        self.interval_s, self.wait_s = interval_s, wait_s
        self._folders: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._encoder = threading.Semaphore(1)      # one video at a time on this server

    def write(self, session: Session, recorder: Recorder, overlay: bool) -> tuple[str, str, str]:
        """The videos (WebP, MP4; controls drawn on them with ``overlay``) and the control log, as
        file paths."""
        now = time.monotonic()
        with self._lock:
            wait = session.last_download + self.interval_s - now
            if wait > 0:
                raise DownloadRefused(f"Please wait {wait:.0f} s before downloading again.")
            session.last_download = now
        if not self._encoder.acquire(timeout=self.wait_s):
            session.last_download = -float("inf")
            raise DownloadRefused("Other recordings are being made right now; please try again in a minute.")
        try:
            self.forget(session)
            # Named by the server: the session hash comes from the browser and must not become a path.
            folder = Path(tempfile.mkdtemp(prefix=f"slot{session.slot}-", dir=self.root))
            with self._lock:
                self._folders[session.key] = folder
            stamp = time.strftime("%Y%m%d-%H%M%S")
            webp, mp4 = recorder.write_videos(folder / f"world-{stamp}.webp", folder / f"world-{stamp}.mp4",
                                              overlay=overlay)
            log = folder / f"world-{stamp}-controls.json"
            log.write_text(recorder.log_json(), encoding="utf-8")
            return str(webp), str(mp4), str(log)
        finally:
            # The interval runs from the end: a slow encode (a loaded server) must not let the next
            # one start at once.
            session.last_download = max(session.last_download, time.monotonic())
            self._encoder.release()

    def forget(self, session: Session) -> None:
        """Remove the session's latest download."""
        with self._lock:
            folder = self._folders.pop(session.key, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every download (server shutting down)."""
        with self._lock:
            self._folders.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []
