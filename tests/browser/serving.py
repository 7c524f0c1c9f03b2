"""What the browser tests share: Debian's Chromium and the app served on 127.0.0.1 in-process."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[2]


def load_app_module(name: str = "world_player_app"):
    """``app.py`` as a module (run afresh under ``name``, so environment set before is seen)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def served_app(warm: list[str] | None, default_key: str, fps: float, limits: Any = None,
               module_name: str = "world_player_app", batch_sessions: int = 1) -> Iterator[tuple[Any, str]]:
    """The real app (CPU backend, the whole CPU catalog) with the models keyed ``warm`` warmed up
    (None: all of them; the first is the one ``batch_sessions`` applies to); yields ``(WorldApp, url)``."""
    from player.backends import create_backend, model_catalog
    from player.handlers import WorldApp

    app_module = load_app_module(module_name)
    backend = create_backend("cpu", segment_seconds=3600, batch_sessions=batch_sessions)
    models = model_catalog([], "cpu")
    backend.warm_up(models if warm is None else sorted((m for m in models if m.key in warm),
                                                       key=lambda m: warm.index(m.key)))
    extra = {} if limits is None else {"limits": limits}
    world_app = WorldApp(backend, models, allow_custom_models=False, fps=fps, **extra)
    demo = app_module.build_demo(world_app, default_key)
    app_module.configure_queue(demo, 2)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app_module.launch_kwargs(world_app, demo))
    try:
        yield world_app, url
    finally:
        demo.close()


def visit(browser, url: str, address: str):
    """A visitor of its own: a new browser context whose requests come from ``address``
    (``X-Forwarded-For``, trusted by the app under test); ``(context, page)`` once the player is up."""
    context = browser.new_context(viewport={"width": 1100, "height": 800},
                                  extra_http_headers={"X-Forwarded-For": address})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("!!window.__wm", timeout=60_000)
    return context, page


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> float:
    """Poll ``predicate`` every 50 ms until it holds; the seconds it took (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start
