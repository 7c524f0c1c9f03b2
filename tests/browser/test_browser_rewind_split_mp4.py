"""Issue 13 in a real headless Chromium (Debian's): the Rewind button, Backspace and the timeline
take the world back; the split view shows the dream beside the simulator with a live PSNR and
re-syncs; the recording downloads as an H.264 MP4; the canvas upscales smoothly or as pixels.

Saves the split-view screenshot to ``$SCREENSHOT_DIR`` (default: the test's temporary folder;
``docs/bench/split-view.png`` is one) and prints the MP4's encode time and size.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import av
import pytest

from tests.browser.serving import CHROMIUM, served_app, wait_for
from tests.browser.test_browser_player import canvas_hash, newest_session, wm

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
FPS = 20.0
SPLIT_LABEL = "Tiny world beside reality"


@pytest.fixture(scope="module")
def served():
    """The app on 127.0.0.1 with the whole CPU catalog warmed up."""
    with served_app(None, "embedded", FPS) as served:
        yield served


@pytest.fixture()
def page(browser, served):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(served[1])
    page.wait_for_function("!!window.__wm", timeout=30_000)
    yield page
    page.close()


def start(page, world_app, frames: int = 5):
    page.get_by_role("button", name="\u25b6 Start").click()
    page.wait_for_function(f"window.__wm.drawn >= {frames}", timeout=120_000)
    return newest_session(world_app)


def start_paused(page, world_app, frames: int):
    """``start``, then Pause once the world has stopped making frames."""
    session = start(page, world_app, frames)
    page.get_by_role("button", name="\u275a\u275a Pause").click()
    wait_for(lambda: not session.running, 30, "the pause")
    return session


def test_rewind_button_backspace_and_timeline_take_the_world_back(page, served):
    world_app, _ = served
    session = start(page, world_app)
    box = page.locator(".wm-root").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.35)
    page.keyboard.down("KeyW")
    wait_for(lambda: session.world_frames >= 12, 120, "a dozen frames")
    page.keyboard.up("KeyW")

    # Backspace: 3 s back, which is further than this world goes, so to its first frame.
    before = session.world_frames
    page.keyboard.press("Backspace")
    wait_for(lambda: session.rewind_seen >= 1, 30, "the rewind to be answered")
    assert session.world_frames < before and wm(page, "rewinds") == 1
    wait_for(lambda: session.world_frames >= 8, 120, "frames after the rewind")

    # The Rewind button does the same.
    page.keyboard.press("Escape")
    before = session.world_frames
    page.get_by_role("button", name="\u25c0\u25c0 Rewind").click()
    wait_for(lambda: session.rewind_seen >= 2, 30, "the button's rewind")
    assert session.world_frames < before

    # The timeline reaches back as far as the kept history and jumps to the point chosen.
    wait_for(lambda: session.world_frames >= 14, 120, "more frames")
    timeline = page.locator(".wm-timeline")
    # Both read in one go: a frame arriving between two reads moves them on (0.60 -> 0.65 s).
    reach, back = page.evaluate("[-parseFloat(document.querySelector('.wm-timeline').min), window.__wm.back]")
    assert reach == pytest.approx(back) and reach > 0.3
    before = session.world_frames
    timeline.fill("-0.3")
    wait_for(lambda: session.rewind_seen >= 3, 30, "the timeline's rewind")
    target = world_app.registry.board.snapshot(session.slot).rewind_to
    assert before - 6 - 3 <= target <= before - 6 + 1       # 0.3 s at 20 fps, from where the world was
    assert timeline.input_value() == "0"

    # Backspace while typing a prompt edits the prompt; it never rewinds.
    prompt = page.get_by_label("Prompt")
    prompt.click()
    text = prompt.input_value()
    prompt.press("Backspace")
    assert prompt.input_value() == text[:-1] and wm(page, "rewinds") == 3


def test_split_view_shows_the_dream_beside_reality_with_a_psnr_and_resyncs(page, served, tmp_path):
    world_app, _ = served
    page.get_by_label("Model").click()
    page.get_by_role("option", name=SPLIT_LABEL).click()
    session = start(page, world_app, frames=4)
    assert session.recipe.split
    assert page.evaluate("document.querySelector('.wm-canvas').width / document.querySelector('.wm-canvas').height") == 2
    wait_for(lambda: "PSNR" in page.locator(".wm-server").inner_text(), 30, "the PSNR in the overlay")
    assert wm(page, "split") and 0 < wm(page, "psnr") < 60
    resync = page.get_by_role("button", name="\u27f3 Re-sync")
    assert resync.is_visible()
    resync.click()
    wait_for(lambda: any(e[1] == "resync" for e in session.recorder.events), 30, "the re-sync")
    time.sleep(1.0)
    page.evaluate("window.scrollTo(0, 0)")
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    page.locator("#wm-player").screenshot(path=str(shots / "split-view.png"))
    print(f"\n[split view] PSNR {wm(page, 'psnr'):.1f} dB after {session.world_frames} frames")


def test_the_recording_downloads_as_an_h264_mp4(page, served):
    world_app, url = served
    session = start_paused(page, world_app, frames=8)
    page.get_by_text("Record", exact=True).click()
    t0 = time.monotonic()
    page.get_by_role("button", name="\u2b07 Download recording").click()
    link = page.locator("a[href*='.mp4']").first
    link.wait_for(timeout=120_000)
    seconds = time.monotonic() - t0
    href = link.get_attribute("href")
    got = page.evaluate("async (u) => { const r = await fetch(u); const b = await r.arrayBuffer(); "
                        "return [r.status, b.byteLength]; }", href)
    assert got[0] == 200 and got[1] > 1000
    mp4 = next(f for f in world_app.downloads.files() if f.suffix == ".mp4")
    with av.open(str(mp4)) as clip:
        stream = clip.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.frames == session.recorder.frames
        assert stream.height == 384 and stream.width == 384
    print(f"\n[mp4] {stream.frames} frames in {got[1] / 1024:.0f} KiB; WebP + MP4 + log ready in {seconds:.1f} s")


def test_the_canvas_upscales_smoothly_or_as_pixels(page, served):
    world_app, _ = served
    session = start_paused(page, world_app, frames=3)
    time.sleep(0.5)
    toggle = page.locator(".wm-smooth")
    assert wm(page, "smooth") and toggle.inner_text() == "Smooth"
    smooth = canvas_hash(page)
    toggle.click()
    assert not wm(page, "smooth") and toggle.inner_text() == "Pixels"
    assert page.evaluate("document.querySelector('.wm-root').classList.contains('wm-pixelated')")
    assert canvas_hash(page) != smooth                 # redrawn at once, nearest-neighbour
    toggle.click()
    assert canvas_hash(page) == smooth
