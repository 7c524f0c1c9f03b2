"""Issue 11: one visitor must never be able to lock out, slow down or trick another.

The real app (``app.build_demo`` + the gate of ``app.launch_kwargs``) on 127.0.0.1, serving the
simulator ("reality", cheap per frame) at 10 fps, driven over HTTP by ``bench.soak.Visitor``, a
page-like client (heartbeat, queue joins read over SSE, acks as control messages). Clients are
told apart by ``X-Forwarded-For`` (the fixture trusts it, as a Space would), so one test can be
several visitors. Every wait is bounded; the module stops its server by itself.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.soak import Refused, Visitor, control_log, free_port, png_bomb
from player.backends import create_backend, model_catalog
from player.guard import BoundedWorker, Busy, Limits, UploadBudget, client_of
from player.handlers import WorldApp
from player.recording import MAX_LOG_FRAMES, parse_log
from player.validation import start_image_png

ROOT = Path(__file__).resolve().parents[1]
FPS = 10.0
LIMITS = Limits(trust_forwarded_for=True, pages_per_client=6, sessions_per_client=3, queued_per_client=2,
                plays_per_client=1, play_s=8.0, busy_play_s=4.0, busy_grace_s=1.0, ack_timeout_s=1.5,
                hidden_timeout_s=1.5, download_interval_s=5.0, page_grace_s=0.5, upload_bytes_per_window=2 << 20)
_addresses = (f"10.11.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def address() -> str:
    """A client address no other test uses."""
    return next(_addresses)


def _load_app_module():
    spec = importlib.util.spec_from_file_location("world_player_app_rel", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Served:
    def __init__(self, app: WorldApp, demo, url: str, temp: Path) -> None:
        self.app, self.demo, self.url, self.temp = app, demo, url, temp
        self.visitors: list[Visitor] = []

    def visitor(self, addr: str | None = None, page: bool = True) -> Visitor:
        v = Visitor(self.url, addr or address())
        self.visitors.append(v)
        return v.open_page() if page else v

    def session(self, v: Visitor):
        return self.app.registry.find(v.hash)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    temp = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(temp))
        app_module = _load_app_module()
        backend = create_backend("cpu", segment_seconds=3600)
        models = model_catalog([], "cpu")
        backend.warm_up([next(m for m in models if m.key == "reality")])
        app = WorldApp(backend, models, allow_custom_models=False, fps=FPS, limits=LIMITS)
        demo = app_module.build_demo(app, "reality")
        app_module.configure_queue(demo, 2)
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app_module.launch_kwargs(app, demo))
        yield Served(app, demo, url, temp)
        demo.close()


@pytest.fixture()
def srv(served):
    """The server, with every visitor a test made closed afterwards and every play over."""
    yield served
    for v in served.visitors:
        v.close_page()
    served.visitors.clear()
    wait_for(lambda: not any(s.running for s in served.app.registry.sessions()), 15, "plays to end")


def wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def first_frame(job, timeout: float = 10.0) -> float:
    """Seconds from joining the queue to the first frame."""
    wait_for(lambda: job.frames or job.done.is_set(), timeout, "a first frame")
    assert job.frames, f"no frame: {job.messages} {job.error}"
    return job.frames[0][0] - job.joined


# ---- 1. session slots -------------------------------------------------------------------------
def test_made_up_sessions_claim_no_slot_and_a_real_visitor_still_plays(srv):
    before = len(srv.app.registry.sessions())
    spammer = srv.visitor(page=False)
    made_up = [f"made-up-{i}" for i in range(70)]     # more than the 64 slots there are

    def spam(i: int) -> list[int]:                    # each waits out the page grace: 14 at once
        api = ("set_prompt_1", "set_steps", "pause", "reset")[i % 4]
        data = ["a prompt" if api == "set_prompt_1" else 2] if api.startswith("set") else []
        return [spammer.http.post(srv.url + "gradio_api/run/predict", json={
            "data": d, "fn_index": spammer.fns[a], "session_hash": made_up[i], "event_data": e}).status_code
            for a, d, e in ((api, data, None), ("control", [], {"keys": 1, "seq": 1}))]

    with ThreadPoolExecutor(14) as pool:
        codes = {c for cs in pool.map(spam, range(len(made_up))) for c in cs}
    assert codes == {429}
    queued = [("play", ["", 1, "reality", 0, None]), ("play_path", ["w*5", "", 1, "reality", 0, None]),
              ("load_log", [None]), ("load_start_image", [None]), ("download", [True])]
    for i, (api, data) in enumerate(queued):  # and queued ones, with no page behind them
        spammer.hash = f"made-up-queued-{i}"
        with pytest.raises(Refused, match="not connected") as refused:
            spammer.join(api, data)
        assert refused.value.status == 429
    sessions = srv.app.registry.sessions()
    assert not {s.key for s in sessions} & set(made_up) and len(sessions) <= before
    # nor any of Gradio's per-session state (a copy of the UI's config per hash, 1000 kept)
    assert not [h for h in made_up if h in srv.demo.state_holder]
    visitor = srv.visitor()
    assert first_frame(visitor.play()) < 5.0
    assert visitor.hash in srv.demo.state_holder


def test_a_made_up_session_is_refused_after_the_grace_a_fresh_page_gets(srv):
    late = srv.visitor(page=False)
    late.hash = "made-up-late"
    start = time.monotonic()
    refused = late.run("set_prompt_1", ["a prompt"])
    waited = time.monotonic() - start
    assert refused.status_code == 429 and "not connected" in refused.json()["detail"]
    assert LIMITS.page_grace_s <= waited < LIMITS.page_grace_s + 2.0
    racing = srv.visitor(page=False)            # a page whose first call beats its heartbeat
    answer = {}
    worker = threading.Thread(target=lambda: answer.setdefault("r", racing.run("set_prompt_1", ["a prompt"])))
    worker.start()
    time.sleep(0.3)
    racing.open_page()
    worker.join(10)
    assert answer["r"].status_code == 200


def test_one_client_holds_at_most_its_share(srv):
    greedy = srv.visitor()
    where = greedy.http.headers["X-Forwarded-For"]
    pages = [greedy] + [srv.visitor(where) for _ in range(LIMITS.pages_per_client - 1)]
    extra = Visitor(srv.url, where)
    srv.visitors.append(extra)
    extra.open_page()
    assert extra.heartbeat_status == 429                  # no more pages than pages_per_client
    first_frame(greedy.play())
    neighbour = srv.visitor()
    first_frame(neighbour.play())                        # both workers busy: new plays wait in line
    jobs, refusals = [], []
    for page in pages[1:]:
        try:
            jobs.append(page.play())
        except Refused as exc:
            refusals.append(exc.detail)
    assert len(jobs) == LIMITS.queued_per_client          # the rest were refused at the door
    assert refusals and all("waiting in line" in r for r in refusals)
    neighbour.close_page()                               # a worker frees: greedy's waiting plays get it ...
    wait_for(lambda: all(j.done.is_set() for j in jobs), 10, "the waiting plays to be refused")
    assert all("Another world from your address" in (j.error or "") for j in jobs)    # ... and may not use it
    mine = [s for s in srv.app.registry.sessions() if s.client == where]
    assert sum(s.running for s in mine) == LIMITS.plays_per_client and len(mine) <= LIMITS.sessions_per_client
    other = srv.visitor()
    assert first_frame(other.play()) < 5.0                # the second worker is there for someone else


def test_queued_handlers_cannot_be_called_around_the_queue(srv):
    visitor = srv.visitor()
    for api, data in (("play", ["", 1, "reality", 0, None]), ("play_path", ["w*5", "", 1, "reality", 0, None]),
                      ("load_log", [None]), ("download", [True])):
        response = visitor.run(api, data)    # a direct POST, past the queue's concurrency limit
        assert response.status_code == 404, (api, response.status_code, response.text[:200])
    assert srv.session(visitor) is None


def test_forwarded_for_counts_only_when_trusted():
    headers = {"x-forwarded-for": "203.0.113.9, 10.0.0.1"}
    assert client_of("127.0.0.1", headers, trust_forwarded_for=True) == "203.0.113.9"
    assert client_of("127.0.0.1", headers, trust_forwarded_for=False) == "127.0.0.1"


def test_a_closed_page_frees_its_slot_at_once(srv):
    visitor = srv.visitor()
    first_frame(visitor.play())
    session = srv.session(visitor)
    slot = session.slot
    visitor.close_page()
    assert wait_for(lambda: srv.session(visitor) is None, 2.0, "the session to be freed") < 2.0
    assert srv.app.registry.board.snapshot(slot).owner != session.owner
    assert visitor.hash not in srv.app.backend.worlds


# ---- 2. and 3. streams without a reader, one play time ------------------------------------------
def test_a_stream_nobody_reads_ends_and_frees_its_worker(srv):
    deaf = srv.visitor()
    deaf.ack = False                           # reads the stream, never acknowledges a frame
    job = deaf.play()
    first_frame(job)
    wait_for(job.done.is_set, LIMITS.ack_timeout_s + 4, "the unread stream to end")
    assert "stopped answering" in job.messages[-1]
    assert not srv.session(deaf).running
    blind = srv.visitor()                      # joins and never even opens the stream
    blind.http.post(srv.url + "gradio_api/queue/join", json={
        "data": ["", 1, "reality", 0, None], "fn_index": blind.fns["play"], "session_hash": blind.hash})
    wait_for(lambda: srv.session(blind) is not None and srv.session(blind).running, 5, "the blind play to start")
    wait_for(lambda: not srv.session(blind).running, LIMITS.ack_timeout_s + 4, "the blind play to end")


@pytest.mark.parametrize("trick", ["frozen ack", "hidden tab"])
def test_frozen_acks_and_hidden_tabs_do_not_hold_a_worker(srv, trick):
    visitor = srv.visitor()
    if trick == "frozen ack":
        visitor.frozen_ack = 0
    job = visitor.play()
    first_frame(job)
    if trick == "hidden tab":
        visitor.ack = False
        visitor.control(vis=False)
        keep = threading.Event()

        def keep_sending():                    # a hidden tab still sends its heartbeat-like resends
            while not keep.wait(0.3):
                try:
                    visitor.control(vis=False)
                except httpx.HTTPError:
                    return
        threading.Thread(target=keep_sending, daemon=True).start()
    try:
        wait_for(job.done.is_set, 1.5 + 5, f"the play with a {trick} to end")
    finally:
        if trick == "hidden tab":
            keep.set()
    assert ("hidden" if trick == "hidden tab" else "stopped answering") in job.messages[-1]


def test_scripted_paths_and_replays_count_against_the_play_time(srv):
    path_player = srv.visitor()
    path_job = path_player.play_path("w*1000, " * 19 + "d*1000")      # a 20 000-frame path
    replayer = srv.visitor()
    load = replayer.call("load_log", [replayer.upload("log.json", control_log(MAX_LOG_FRAMES))])
    assert load.error is None, load.error
    replay_job = replayer.play_path("")
    for job in (path_job, replay_job):
        # Timed from the first frame, so a slow start on a loaded machine is not counted; the path and
        # the replay would run for ~1000 s and ~600 s if the play time did not end them.
        first_frame(job, 20)
        wait_for(job.done.is_set, LIMITS.play_s + 12, "the play time to run out")
        assert "Time's up" in job.messages[-1]
        assert job.frames[-1][0] - job.frames[0][0] < LIMITS.play_s + 1


def test_a_waiting_line_shortens_the_turns_and_moves_up(srv):
    players = [srv.visitor() for _ in range(2)]
    t_join = time.monotonic()
    jobs = [p.play() for p in players]
    wait_for(lambda: all(srv.session(p) is not None and srv.session(p).play_started for p in players), 20,
             "both plays to start")
    waiting = [srv.visitor() for _ in range(2)]
    waiting[0].play()
    behind = waiting[1].play()
    wait_for(lambda: behind.ranks and behind.ranks[-1][1] == 1, 10, "a place in line")
    waiting[0].close_page()                  # the one ahead leaves the line ...
    # ... and the place moves up while both turns still run. Positions are re-sent every second;
    # with Gradio's default ("auto") the one behind never sees place 0, only its own start.
    wait_for(lambda: behind.ranks[-1][1] == 0 or behind.started is not None, 15, "the place to move up")
    assert any(rank == 0 and (behind.started is None or t <= behind.started) for t, rank, _ in behind.ranks), \
        f"places seen: {behind.ranks}"
    # The turns in progress ended at the busy allowance, so the one behind starts well before the
    # full allowance (play_s, counted from the players' start) would have let it.
    first_frame(behind, LIMITS.play_s + 10)
    assert behind.frames[0][0] - t_join < LIMITS.play_s
    wait_for(lambda: all(j.done.is_set() for j in jobs), LIMITS.play_s, "both turns to end")
    for job in jobs:
        assert job.frames and job.frames[-1][0] - t_join < LIMITS.play_s
        assert "Others are waiting" in job.messages[-1]


# ---- 4. control logs -------------------------------------------------------------------------
def test_control_logs_are_capped_before_parsing_and_replays_stay_compact(monkeypatch):
    import player.recording as recording

    parsed = []
    real_loads = recording.json.loads
    monkeypatch.setattr(recording.json, "loads", lambda text: parsed.append(len(text)) or real_loads(text))
    huge = control_log(760_000)              # the 8 MB, 10.5-hour log of the issue
    with pytest.raises(ValueError, match="too large|too many frames"):
        parse_log(huge)
    with pytest.raises(ValueError, match="too many frames"):
        parse_log(b"[" * 3_000_000)          # brackets only
    assert parsed == []                      # both refused without running the JSON parser
    with pytest.raises(ValueError, match=f"at most {MAX_LOG_FRAMES}"):
        parse_log(control_log(MAX_LOG_FRAMES + 1))
    monkeypatch.undo()
    replay = parse_log(control_log(MAX_LOG_FRAMES, frames=[[[87, 16], 1.25, -3.5]] * MAX_LOG_FRAMES))
    assert len(replay.ctrls) == MAX_LOG_FRAMES and replay.ctrls[5] == ((16, 87), 1.25, -3.5)
    assert replay.ctrls.nbytes < 300_000     # ~20 bytes a frame, not a Python object per frame
    assert len(replay.ctrls[100:]) == MAX_LOG_FRAMES - 100


def test_uploads_are_parsed_on_a_bounded_worker_thread():
    worker = BoundedWorker(threads=1, backlog=1, name="uploads")
    release, names = threading.Event(), []
    pending = [threading.Thread(target=worker.run, args=(lambda: (names.append(threading.current_thread().name),
                                                                   release.wait(5)),)) for _ in range(2)]
    for t in pending:
        t.start()
    time.sleep(0.2)
    with pytest.raises(Busy):
        worker.run(lambda: None)
    release.set()
    for t in pending:
        t.join()
    assert names and all(n.startswith("uploads") for n in names)


def test_a_huge_control_log_upload_is_refused_quickly(srv):
    visitor = srv.visitor()
    t0 = time.monotonic()
    job = visitor.call("load_log", [visitor.upload("log.json", control_log(MAX_LOG_FRAMES + 1))])
    assert "at most 12000" in (job.error or "") and time.monotonic() - t0 < 5


# ---- 5. escaping -------------------------------------------------------------------------------
LINK = '<a href="https://evil.example/login">Session expired: click here to sign in again</a>'
IMAGE = '<img src="https://evil.example/pixel.png">'


def test_error_messages_that_quote_user_content_are_escaped(srv):
    visitor = srv.visitor()
    log = control_log(3, events=[[1, LINK, 0]])
    job = visitor.call("load_log", [visitor.upload("log.json", log)])
    assert "&lt;a href=" in job.error and "<a " not in job.error
    job = visitor.join("play_path", [IMAGE, "", 1, "reality", 0, None])
    job.done.wait(10)
    assert "&lt;img src=" in job.error and "<img" not in job.error
    job = visitor.join("play", ["", 1, IMAGE, 0, None])
    job.done.wait(10)
    assert "Unknown model" in job.error and "<img" not in job.error


# ---- 6. one control gate -------------------------------------------------------------------------
def test_controls_beyond_float32_are_refused_by_the_engine_and_by_the_simulator(one_thread):
    from simulator.world import World
    from world_engine.controls import CtrlInput, validate_ctrl

    with pytest.raises(ValueError, match="float32"):
        validate_ctrl(CtrlInput(mouse=(1e39, 0.0)), 256)
    world = World.from_seed(1, size=32)
    with pytest.raises(ValueError, match="float32"):
        world.step(CtrlInput(mouse=(1e39, 0.0)))
    world.step(CtrlInput(mouse=(3.0, 0.0)))             # and the world goes on


@pytest.mark.parametrize("frames, words", [
    ([[[99999], 0, 0]], "not a key code"),
    ([[[], 1e39, 0]], "finite float32"),
    ([[[], float("nan"), 0]], "finite float32"),
    ([[[True], 0, 0]], "not a key code"),
])
def test_replayed_frames_are_checked_at_load_time(frames, words):
    with pytest.raises(ValueError, match=words):
        parse_log(control_log(1, frames=frames))


# ---- 7. recordings ---------------------------------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_recording_download_is_rate_limited_encoded_out_of_process_and_removed(srv):
    visitor = srv.visitor()
    job = visitor.play()
    first_frame(job)
    wait_for(lambda: len(job.frames) >= 5, 10, "a few frames")
    visitor.run("pause", [])
    job.done.wait(5)
    recorder = srv.session(visitor).recorder
    recorder.video.extend([recorder.video[-1]] * 300)      # a long recording: 300 frames
    rss = _rss_mb()
    download = visitor.call("download", [True], timeout=120)
    assert download.error is None, download.error
    assert _rss_mb() - rss < 60                             # the old in-process encode: +100s of MB
    video = Path(download.outputs[0]["path"])
    assert video.is_file() and video.resolve().is_relative_to(srv.temp.resolve())
    assert len(list(srv.temp.rglob("*.webp"))) == 1         # served in place: no copy in Gradio's cache
    again = visitor.call("download", [True])
    assert "Please wait" in (again.error or "")
    visitor.close_page()
    wait_for(lambda: not video.exists(), 3, "the download to be removed with the session")
    assert not list(srv.temp.rglob("*.webp"))


def test_uploads_leave_no_stray_files_behind(srv):
    visitor = srv.visitor()
    before = {p for p in srv.temp.rglob("*") if p.is_file()}
    for _ in range(5):                       # gr.File's own preprocessing left an empty temp file per call
        job = visitor.call("load_log", [visitor.upload("log.json", control_log(3))])
        assert job.error is None, job.error
    new = {p for p in srv.temp.rglob("*") if p.is_file()} - before
    assert len(new) <= 1, sorted(p.name for p in new)      # the one upload (same bytes, same cached file)


# ---- 8. the lesser items ---------------------------------------------------------------------------
@pytest.mark.parametrize("data, words", [
    (["", "abc", "reality", 0, None], "seed must be a whole number"),
    (["", 1, "reality", None, None], "Steps must be a whole number"),
    (["", 1, 123, 0, None], "Unknown model 123"),
    (["", 1, "x" * 100_000, 0, None], "Unknown model"),
    ([42, 1, "reality", 0, None], "prompt must be text"),
])
def test_malformed_api_values_get_clear_errors(srv, data, words):
    visitor = srv.visitor()
    job = visitor.join("play", data)
    job.done.wait(10)
    assert words in (job.error or "") and len(job.error) < 700


def test_a_long_model_name_on_a_private_server_is_refused_not_an_os_error(served):
    private = WorldApp(served.app.backend, list(served.app.models.values()), allow_custom_models=True)
    with pytest.raises(Exception, match="Unknown model") as refused:
        private.model("x" * 100_000)
    assert not isinstance(refused.value, OSError)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with next to no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_too_large_and_so_is_40_megapixels():
    with pytest.raises(ValueError, match="too large"):
        start_image_png(_png_claiming(20_000, 20_000))     # claims 400 megapixels in ~100 bytes
    with pytest.raises(ValueError, match="too large"):
        start_image_png(png_bomb(8000, 5000))  # a valid 40-megapixel PNG of ~40 KB
    buf = io.BytesIO()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(buf, format="PNG")
    assert Image.open(io.BytesIO(start_image_png(buf.getvalue()))).size == (400, 300)


def test_oversized_request_bodies_are_refused_before_they_are_read(srv):
    port = int(srv.url.rstrip("/").rsplit(":", 1)[1])
    for path in ("/gradio_api/run/predict", "/gradio_api/queue/join"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {50 << 20}\r\n\r\n".encode())
            assert b" 413 " in sock.recv(4096).split(b"\r\n")[0] + b" "
    response = httpx.post(srv.url + "gradio_api/run/predict", timeout=30,
                          content=json.dumps({"data": [], "fn_index": 0, "event_data": {"x": "y" * (2 << 20)}}))
    assert response.status_code == 413


def test_the_upload_budget_slides_and_keeps_a_small_record_per_client():
    clock = [1000.0]
    budget = UploadBudget(limit=100, window_s=600, bucket_s=60, clock=lambda: clock[0])
    for _ in range(50):                       # many tiny uploads within one minute: one bucket
        assert budget.take("a", 1)
        clock[0] += 1
    assert len(budget._log["a"]) == 1
    assert budget.take("a", 50) and not budget.take("a", 1)
    assert budget.take("b", 100)              # another client's budget is its own
    assert not budget.take("b", -100)         # a negative size never gives budget back
    assert not budget.take("b", 1)
    clock[0] += 601                           # the window slides: the first bytes expire
    assert budget.take("a", 50)


def test_uploads_count_against_a_per_client_budget(srv):
    greedy, other = srv.visitor(), srv.visitor()
    blob = os.urandom(LIMITS.upload_bytes_per_window * 3 // 4)
    greedy.upload("a.bin", blob)
    with pytest.raises(Refused) as refused:
        greedy.upload("b.bin", blob)         # over the window's budget
    assert refused.value.status == 429
    other.upload("c.bin", blob)              # another client's budget is its own
    body = (b'--wp\r\nContent-Disposition: form-data; name="files"; filename="d.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + blob + b"\r\n--wp--\r\n")
    chunked = greedy.http.post(srv.url + "gradio_api/upload",
                               headers={"content-type": "multipart/form-data; boundary=wp"},
                               content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]))
    assert chunked.status_code == 411        # sent without a Content-Length, it would go uncounted


def test_pause_reset_unload_and_controls_act_only_on_the_callers_own_session(srv):
    victim = srv.visitor()
    job = victim.play()
    first_frame(job)
    intruder = srv.visitor(page=False)
    intruder.hash = victim.hash                # knows the victim's session hash, from another address
    for api in ("pause", "reset", "unload"):
        intruder.run(api, [])
    intruder.control(keys=1, seq=10**6)
    n = len(job.frames)
    time.sleep(1.0)
    session = srv.session(victim)
    assert session is not None and session.running and len(job.frames) > n
    assert srv.app.registry.board.snapshot(session.slot).state.keys == 0
    victim.run("pause", [])                    # the owner still can
    wait_for(job.done.is_set, 5, "the owner's pause")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas are a Linux matter")
def test_the_server_caps_malloc_arenas_unless_the_operator_chose(monkeypatch):
    app_module = _load_app_module()
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert app_module.limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert app_module.limit_malloc_arenas() is False


def test_sigterm_removes_the_temp_folders(tmp_path):
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    env.pop("GRADIO_TEMP_DIR", None)
    log = tmp_path.parent / f"{tmp_path.name}-server.log"      # a file: an unread pipe would fill and block it
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "reality", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _up(url) or server.poll() is not None, 240, "the app to start")
        assert server.poll() is None, log.read_text(errors="replace")[-2000:]
        visitor = Visitor(url).open_page()
        visitor.call("load_log", [visitor.upload("log.json", control_log(3))])
        job = visitor.play()
        first_frame(job, 60)
        visitor.run("pause", [])
        job.done.wait(10)
        assert visitor.call("download", [False], timeout=120).error is None
        ours = [p for p in tmp_path.iterdir() if p.name.startswith("world-player-")]
        assert ours and any(f.is_file() for p in ours for f in p.rglob("*"))      # uploads and downloads
        visitor.close_page()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("world-player-")]


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "config", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
