"""Issue 13 item 4 in a real headless Chromium (Debian's): two visitors playing the embedded model
at once get their frames from one batched forward per pass (``WorldEngine.batch_sessions``), each
still playing their own world. Prints each page's delivered fps (a figure, not asserted)."""

from __future__ import annotations

import time

import pytest

from player.guard import Limits
from tests.browser.serving import CHROMIUM, served_app, visit

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
START = "\u25b6 Start"
FPS = 20.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        with served_app(["embedded"], "embedded", FPS, Limits(trust_forwarded_for=True),
                        module_name="world_player_app_batch", batch_sessions=2) as served:
            yield served


def test_two_visitors_share_one_batched_forward_and_keep_their_own_worlds(served, browser):
    world_app, url = served
    engine = world_app.backend.engines.get(None)
    batcher = engine._shared["batcher"]
    visitors = [("198.18.1.1", 11), ("198.18.1.2", 12)]
    opened = [visit(browser, url, address) for address, _ in visitors]
    try:
        for (_, seed), (_, page) in zip(visitors, opened):
            page.get_by_label("Seed").fill(str(seed))
            page.get_by_role("button", name=START).click()
        for _, page in opened:
            page.wait_for_function("window.__wm.drawn > 10", timeout=90_000)
        paired, drawn = batcher.stats.get(2, 0), [page.evaluate("window.__wm.drawn") for _, page in opened]
        t0 = time.monotonic()
        time.sleep(6)
        seconds = time.monotonic() - t0
        fps = [(page.evaluate("window.__wm.drawn") - d) / seconds for (_, page), d in zip(opened, drawn)]
        pairs = (batcher.stats.get(2, 0) - paired) / 2
        print(f"\n[two visitors, embedded, batched] delivered {fps[0]:.1f} / {fps[1]:.1f} fps "
              f"(target {FPS:.0f}); {pairs / seconds:.1f} batched forwards of 2 per second")
        assert all(f > 0 for f in fps)
        assert pairs >= 0.5 * min(fps) * seconds, (pairs, fps)     # most frames were made in a pair
        for address, seed in visitors:          # each visitor plays the world its own page asked for
            session = next(s for s in world_app.registry.sessions() if s.client == address)
            assert session.recipe.seed == seed
    finally:
        for context, _ in opened:
            context.close()
