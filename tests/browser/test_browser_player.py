"""The player in a real headless Chromium (Debian's, never a downloaded one), on localhost and
through a proxy that adds 50 ms each way: frames arrive and follow the keys and the joystick, a
quick tap never leaves a key stuck, typing in the prompt does not move the player.

Prints the delivered fps and the input-to-frame latency (no timing assertions) and saves a
screenshot (``$SCREENSHOT_DIR``, default: the test's temporary folder).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from pathlib import Path

import pytest

from tests.browser.delay_proxy import DelayProxy
from tests.browser.serving import CHROMIUM, served_app, wait_for
from world_engine import VK

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
FPS = 30.0


@pytest.fixture(scope="module", params=["embedded", "reality"])
def served(request):
    """The app on 127.0.0.1 serving the embedded model, or walking the simulator ("reality")."""
    with served_app([request.param], request.param, FPS) as (world_app, url):
        yield world_app, url, request.param


def wm(page, field: str):
    return page.evaluate(f"window.__wm.{field}")


def newest_session(world_app):
    return max(world_app.registry._sessions.values(), key=lambda s: s.last_seen)


def recorded_buttons(session, since: int) -> list[tuple[int, ...]]:
    return [c[0] for c in session.recorder.ctrls[since:]]


def canvas_hash(page) -> str:
    return hashlib.sha1(page.evaluate("document.querySelector('.wm-canvas').toDataURL()").encode()).hexdigest()


@pytest.mark.parametrize("network", ["localhost", "delay-50ms"])
def test_player_streams_and_follows_input(served, browser, network, tmp_path):
    from player.controls import BIT

    world_app, url, model = served
    proxy = None
    if network != "localhost":
        proxy = DelayProxy(int(url.rstrip("/").rsplit(":", 1)[1]), delay_s=0.05).start()
        url = f"http://127.0.0.1:{proxy.port}/"
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    try:
        page.goto(url)
        page.wait_for_function("!!window.__wm", timeout=30_000)
        page.get_by_role("button", name="\u25b6 Start").click()
        page.wait_for_function("window.__wm.drawn >= 5", timeout=60_000)
        session = newest_session(world_app)
        board = world_app.registry.board

        # Frames keep arriving.
        drawn = wm(page, "drawn")
        wait_for(lambda: wm(page, "drawn") > drawn + 5, what="more frames")

        # Click the view to play, then hold W: frames respond and the view changes.
        box = page.locator(".wm-root").bounding_box()
        view = (box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.35)
        page.mouse.click(*view)
        assert wm(page, "armed")
        before, since = canvas_hash(page), len(session.recorder.ctrls)
        page.keyboard.down("KeyW")
        wait_for(lambda: (VK["W"],) in recorded_buttons(session, since), what="frames made with W held")
        time.sleep(0.5)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / f"player-{model}-{network}.png"))
        page.keyboard.up("KeyW")
        assert canvas_hash(page) != before
        wait_for(lambda: board.snapshot(session.slot).state.keys == 0, what="W released")
        page.keyboard.press("Escape")          # leaves pointer lock (if it was granted) and stops playing
        assert not wm(page, "armed")

        # Drag the virtual joystick up: it walks forward; letting go stops.
        stick = page.locator(".wm-move").bounding_box()
        cx, cy = stick["x"] + stick["width"] / 2, stick["y"] + stick["height"] / 2
        since = len(session.recorder.ctrls)
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 5, cy - stick["height"] * 0.45, steps=8)
        wait_for(lambda: board.snapshot(session.slot).state.move_y < -0.5, what="stick pushed up")
        wait_for(lambda: (VK["W"],) in recorded_buttons(session, since), what="frames made with the stick up")
        page.mouse.up()
        wait_for(lambda: board.snapshot(session.slot).state.move_y == 0, what="stick released")

        # Quick taps never leave a key stuck.
        page.mouse.click(*view)
        for _ in range(10):
            page.keyboard.down("KeyA")
            page.keyboard.up("KeyA")
        time.sleep(1.0)
        state = board.snapshot(session.slot).state
        assert state.keys & BIT["a"] == 0
        since = len(session.recorder.ctrls)
        wait_for(lambda: len(session.recorder.ctrls) > since + 3, what="frames after the taps")
        assert all(VK["A"] not in b for b in recorded_buttons(session, since + 1))

        # Typing into the prompt box does not move the player.
        page.keyboard.press("Escape")          # a pointer-locked page sends every click to the view
        box_prompt = page.get_by_label("Prompt")
        box_prompt.click()
        since = len(session.recorder.ctrls)
        box_prompt.press_sequentially(" wasd dsaw", delay=30)
        wait_for(lambda: len(session.recorder.ctrls) > since + 5, what="frames while typing")
        assert board.snapshot(session.slot).state.keys == 0
        assert all(b == () for b in recorded_buttons(session, since))
        assert box_prompt.input_value().endswith(" wasd dsaw")

        # Measure: delivered fps and key-down -> frame latency (printed, not asserted).
        page.mouse.click(*view)
        page.evaluate("window.__wm.latSamples = []")
        drawn, made, t0 = wm(page, "drawn"), len(session.recorder.ctrls), time.monotonic()
        for _ in range(10):
            page.keyboard.down("KeyD")
            time.sleep(0.15)
            page.keyboard.up("KeyD")
            time.sleep(0.15)
        seconds = time.monotonic() - t0
        fps, made_fps = (wm(page, "drawn") - drawn) / seconds, (len(session.recorder.ctrls) - made) / seconds
        lat = wm(page, "latSamples")
        print(f"\n[{model}, {network}] delivered {fps:.1f} fps (target {FPS:.0f}; the server made {made_fps:.1f}); "
              f"input->frame latency p50 {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms over {len(lat)} key edges")
        assert fps > 0 and lat
    finally:
        page.close()
        if proxy is not None:
            proxy.stop()
