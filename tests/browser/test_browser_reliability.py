"""Issue 11 in a real headless Chromium (Debian's): eight visitors at once stay isolated and each
plays or sees a live place in line, closing a tab frees its slot within 2 s, and a refused Start
never leaves "waiting in line" on the overlay.

Each browser context is its own visitor: its own ``X-Forwarded-For`` address, which the server
trusts here as it would on a Space. The simulator ("reality") at 10 fps keeps the server cheap;
turns are short (3 s while others wait) so eight visitors rotate through two workers quickly.
"""

from __future__ import annotations

import time

import pytest

from player.guard import Limits
from tests.browser.serving import CHROMIUM, served_app, visit, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
START = "\u25b6 Start"
LIMITS = Limits(trust_forwarded_for=True, plays_per_client=1, play_s=60.0, busy_play_s=3.0, busy_grace_s=0.5,
                ack_timeout_s=5.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        with served_app(["reality"], "reality", 10.0, LIMITS, module_name="world_player_app_brel") as served:
            yield served


def session_of(world_app, address: str):
    return next((s for s in world_app.registry.sessions() if s.client == address), None)


SEE_PLACE_IN_LINE = """() => {
    window.__sawPlace = false;
    new MutationObserver(() => {
        const status = document.querySelector('#wm-status');
        if (!window.__wm.drawn && status && status.innerText.includes('queue:')) window.__sawPlace = true;
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_eight_visitors_are_isolated_and_each_plays_or_sees_its_place_in_line(served, browser):
    world_app, url = served
    visitors = [(f"198.18.0.{i + 1}", 500 + i) for i in range(8)]
    opened = [visit(browser, url, address) for address, _ in visitors]
    try:
        for (_, seed), (_, page) in zip(visitors, opened):
            page.get_by_label("Seed").fill(str(seed))
        for _, page in opened:              # every status change is seen, however briefly it shows
            page.evaluate(SEE_PLACE_IN_LINE)
        for _, page in opened:
            page.get_by_role("button", name=START).click()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            drawn = [page.evaluate("window.__wm.drawn") for _, page in opened]
            if all(drawn):
                break
            time.sleep(0.3)
        assert all(drawn), f"frames drawn per visitor: {drawn}"
        seen_place = [page.evaluate("window.__sawPlace") for _, page in opened]
        # Those who had to wait were shown their place in line (the first two started at once).
        assert sum(seen_place) >= len(opened) - 2 - 1, seen_place
        # No cross-talk: each visitor's world is the one its own page asked for.
        for address, seed in visitors:
            session = session_of(world_app, address)
            assert session is not None and session.recipe.seed == seed
        slots = [session_of(world_app, a).slot for a, _ in visitors]
        assert len(set(slots)) == len(slots)
        # A key held on one page moves only that page's world.
        _, page = opened[-1]
        wait_for(lambda: session_of(world_app, visitors[-1][0]).running, 30, "the last visitor to play")
        box = page.locator(".wm-root").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.35)
        page.keyboard.down("KeyW")
        mine = session_of(world_app, visitors[-1][0])
        wait_for(lambda: world_app.registry.board.snapshot(mine.slot).state.keys != 0, 10, "the held key")
        others = [world_app.registry.board.snapshot(session_of(world_app, a).slot).state.keys
                  for a, _ in visitors[:-1]]
        page.keyboard.up("KeyW")
        assert others == [0] * len(others)
    finally:
        for context, _ in opened:
            context.close()


def test_closing_the_tab_frees_the_slot_within_2_s(served, browser):
    world_app, url = served
    address = "198.18.1.1"
    context, page = visit(browser, url, address)
    page.get_by_role("button", name=START).click()
    page.wait_for_function("window.__wm.drawn >= 3", timeout=60_000)
    session = session_of(world_app, address)
    assert session is not None and session.running
    t0 = time.monotonic()
    page.close()
    freed = wait_for(lambda: session_of(world_app, address) is None and not session.running, 5, "the slot to be freed")
    context.close()
    print(f"\n[tab closed] session freed after {freed:.2f} s")
    assert time.monotonic() - t0 < 2.5 and freed < 2.0
    assert world_app.registry.board.snapshot(session.slot).owner != session.owner
    assert session.key not in world_app.backend.worlds


def test_a_refused_start_does_not_leave_the_waiting_overlay(served, browser):
    world_app, url = served
    address = "198.18.2.1"
    first_context, first = visit(browser, url, address)
    second_context, second = visit(browser, url, address)       # the same visitor, a second tab
    try:
        first.get_by_role("button", name=START).click()
        first.wait_for_function("window.__wm.drawn >= 1", timeout=60_000)
        second.evaluate("(() => { const show = window.__wmShow; window.__shown = [];"
                        " window.__wmShow = (m) => { window.__shown.push(m); show(m); }; })()")
        second.get_by_role("button", name=START).click()         # one world at a time per visitor: refused
        second.wait_for_function("window.__shown.length >= 2", timeout=20_000)
        shown = second.evaluate("window.__shown")
        assert shown[0].startswith("Starting") and shown[-1] == "Press Start to enter the world"
        assert second.evaluate("window.__wm.msg") == "Press Start to enter the world"
        assert second.evaluate("window.__wm.drawn") == 0
    finally:
        first_context.close()
        second_context.close()
