"""Recordings as files for the browser: one server-named folder per session, replaced on each
download and removed with the session."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from player.recording import Recorder
from player.sessions import Session


class Downloads:
    """Writes a session's recording (animated WebP + JSON control log) into its own folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="world-player-"))
        self._folders: dict[str, Path] = {}
        self._lock = threading.Lock()

    def write(self, session: Session, recorder: Recorder, overlay: bool) -> tuple[str, str]:
        """The video (controls drawn on it with ``overlay``) and the control log, as file paths."""
        self.forget(session)
        # Named by the server: the session hash comes from the browser and must not become a path.
        folder = Path(tempfile.mkdtemp(prefix=f"slot{session.slot}-", dir=self.root))
        with self._lock:
            self._folders[session.key] = folder
        stamp = time.strftime("%Y%m%d-%H%M%S")
        video = recorder.write_video(folder / f"world-{stamp}.webp", overlay=overlay)
        log = folder / f"world-{stamp}-controls.json"
        log.write_text(recorder.log_json(), encoding="utf-8")
        return str(video), str(log)

    def forget(self, session: Session) -> None:
        """Remove the session's latest download."""
        with self._lock:
            folder = self._folders.pop(session.key, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
