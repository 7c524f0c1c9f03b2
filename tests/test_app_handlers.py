"""The app's handlers called as Gradio calls them (with gr.Request objects), on a real engine:
a tiny random-weight checkpoint on the CPU."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import threading
import time
from pathlib import Path

import av
import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from player import backends
from player.backends import create_backend, model_catalog
from player.controls import BIT
from player.guard import IN_PROCESS, Limits
from player.handlers import WorldApp
from player.sessions import BOARD
from world_engine import VK, ControlConvention

# Handlers called directly have no heartbeat behind them (tests/test_reliability.py covers the gate).
IN_PROCESS_LIMITS = Limits(require_live_page=False, sessions_per_client=64, plays_per_client=64)


@pytest.fixture(scope="module")
def app(playable_checkpoint: Path) -> WorldApp:
    backend = create_backend("cpu", segment_seconds=3600)
    models = model_catalog([str(playable_checkpoint)], "cpu")
    backend.warm_up(models)
    assert backend.warmup.error is None
    return WorldApp(backend, models, allow_custom_models=False, fps=50, limits=IN_PROCESS_LIMITS)


def req(name: str) -> gr.Request:
    return gr.Request(session_hash=name)


def control(app: WorldApp, name: str, **state) -> None:
    app.control(gr.EventData(None, state), req(name))


def frames(gen, n: int) -> list[dict]:
    """The next ``n`` streamed frames (skipping message-only updates)."""
    out = []
    while len(out) < n:
        value, _ = next(gen)
        if "img" in value:
            out.append(value)
    return out


def play(app: WorldApp, name: str, seed: int = 1, prompt: str = "", start_png=None):
    return app.play(prompt, seed, app_model(app), 0, start_png, req(name))


def app_model(app: WorldApp) -> str:
    return next(iter(app.models))


def recorded_buttons(app: WorldApp, name: str) -> list[tuple[int, ...]]:
    return [c[0] for c in app.registry.find(name).recorder.ctrls]


def test_two_sessions_stay_isolated(app):
    a, b = play(app, "iso-a", seed=1), play(app, "iso-b", seed=2)
    frames(a, 1), frames(b, 1)
    control(app, "iso-a", seq=1, keys=BIT["w"])
    fa, fb = frames(a, 2), frames(b, 2)
    a.close(), b.close()
    sa, sb = app.registry.find("iso-a"), app.registry.find("iso-b")
    assert sa.slot != sb.slot and sa.recipe.world_id != sb.recipe.world_id
    assert (VK["W"],) in recorded_buttons(app, "iso-a")
    assert all(buttons == () for buttons in recorded_buttons(app, "iso-b"))
    assert fa[-1]["img"] != fb[-1]["img"]


def test_frames_respond_to_the_controls(app):
    gen = play(app, "respond", seed=5)
    frames(gen, 1)
    control(app, "respond", seq=1, keys=BIT["w"], lx=0)
    control(app, "respond", seq=2, keys=BIT["w"], lx=40)
    got = frames(gen, 2)
    gen.close()
    assert got[0]["img"] != got[1]["img"] and got[1]["seq"] == 2


def test_nan_look_delta_gets_a_clear_message_and_play_goes_on(app):
    gen = play(app, "nan")
    frames(gen, 1)
    with pytest.raises(gr.Error, match="finite number"):
        control(app, "nan", seq=1, lx=math.nan)
    control(app, "nan", seq=2, keys=BIT["d"])
    frames(gen, 2)
    gen.close()
    assert (VK["D"],) in recorded_buttons(app, "nan")


def test_unknown_key_in_a_script_is_named_and_the_session_keeps_running(app):
    with pytest.raises(gr.Error, match="unknown key 'fly'"):
        next(app.play_path("w*2, fly*3", "", 1, app_model(app), 0, None, req("script-bad")))
    gen = play(app, "script-bad")
    assert len(frames(gen, 1)) == 1
    gen.close()


def test_a_scripted_path_drives_the_world(app):
    gen = app.play_path("w*2, left", "", 3, app_model(app), 0, None, req("script"))
    frames(gen, 4)
    gen.close()
    ctrls = app.registry.find("script").recorder.ctrls
    assert [c[0] for c in ctrls[:3]] == [(VK["W"],), (VK["W"],), ()] and ctrls[2][1] < 0


def test_a_10000_character_prompt_is_refused_clearly(app):
    with pytest.raises(gr.Error, match="10000 characters"):
        next(app.play("x" * 10_000, 1, app_model(app), 0, None, req("long")))
    with pytest.raises(gr.Error, match="10000 characters"):
        app.set_prompt("x" * 10_000, req("long"))
    gen = play(app, "long", prompt="a short prompt")
    assert len(frames(gen, 1)) == 1
    gen.close()


def test_html_in_a_prompt_is_escaped_where_it_is_echoed(app):
    gen = play(app, "html", prompt="<script>alert(1)</script> <b>bold</b>")
    frames(gen, 1)
    status = app.current_status(req("html"))
    gen.close()
    assert "&lt;script&gt;" in status and "<script>" not in status and "<b>" not in status


def test_a_50_mb_upload_is_refused_clearly(app, tmp_path):
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate(50 * 1024 * 1024)
    with pytest.raises(gr.Error, match="50 MB; the limit is 20 MB"):
        app.load_start_image(str(big))


def test_a_non_image_upload_is_refused_clearly(app, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(gr.Error, match="not an image"):
        app.load_start_image(str(text))


def test_a_start_image_seeds_the_world(app, tmp_path):
    path = tmp_path / "start.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (300, 4, 3))[:, :1024]).save(path)
    png, preview = app.load_start_image(str(path))
    assert Image.open(io.BytesIO(png)).size == (640, 188)     # scaled to at most 640 px a side
    gen = play(app, "start", start_png=png)
    frames(gen, 1)
    gen.close()
    assert app.registry.find("start").recipe.start_image == png


def test_the_public_model_picker_is_an_allow_list(app, playable_checkpoint):
    for key in (str(playable_checkpoint.parent), "/etc", "someone/some-model"):
        with pytest.raises(gr.Error, match="Unknown model"):
            app.model(key)
    private = WorldApp(app.backend, list(app.models.values()), allow_custom_models=True)
    assert private.model(str(playable_checkpoint)).uri == str(playable_checkpoint)


def test_pause_keeps_the_world_and_reset_starts_a_new_one(app):
    gen = play(app, "pause")
    first = frames(gen, 2)
    app.pause(req("pause"))
    assert [v for v, _ in gen][-1]["msg"].startswith("Paused")
    recipe = app.registry.find("pause").recipe
    gen = play(app, "pause")
    again = frames(gen, 1)
    gen.close()
    assert app.registry.find("pause").recipe is recipe and again[0]["n"] == first[-1]["n"] + 1
    app.reset(req("pause"))
    gen = play(app, "pause")
    frames(gen, 1)
    gen.close()
    assert app.registry.find("pause").recipe.world_id != recipe.world_id


def test_recording_downloads_and_its_log_replays_the_same_world(app):
    gen = app.play_path("w*2, right*2, d", "", 9, app_model(app), 0, None, req("rec"))
    original = frames(gen, 5)
    gen.close()
    video, mp4, log = app.download(True, req("rec"))
    assert Image.open(video).n_frames == 5
    with av.open(mp4) as clip:
        stream = clip.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.frames == 5 and stream.height == 384
    data = json.loads(Path(log).read_text())
    assert data["seed"] == 9 and len(data["frames"]) == 5

    prompt, seed, model, steps, note = app.load_log(log, req("replayer"))
    assert seed == 9 and "5-frame" in note
    replayed = frames(app.play_path("", prompt, seed, model, steps, None, req("replayer")), 5)
    assert [f["img"] for f in replayed] == [f["img"] for f in original]


def test_a_damaged_control_log_is_refused_clearly(app, tmp_path):
    bad = tmp_path / "log.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(gr.Error, match="not a control log"):
        app.load_log(str(bad), req("badlog"))


def test_closing_the_page_frees_the_session(app):
    gen = play(app, "gone")
    frames(gen, 1)
    gen.close()
    video, _, _ = app.download(False, req("gone"))
    slot = app.registry.find("gone").slot
    assert "gone" in app.backend.worlds
    app.unload(req("gone"))
    assert app.registry.find("gone") is None
    assert BOARD.snapshot(slot).owner == 0                  # the slot is free for the next visitor
    assert "gone" not in app.backend.worlds                 # the resident world is dropped
    assert not Path(video).parent.exists()                  # and so is the download folder


def test_downloads_are_not_named_after_the_browser_supplied_session_hash(app):
    name = "../../escaped-download"
    gen = play(app, name)
    frames(gen, 1)
    gen.close()
    video, mp4, log = app.download(False, req(name))
    for path in (video, mp4, log):
        assert Path(path).resolve().is_relative_to(app.downloads.root.resolve()) and "escaped" not in path
    app.unload(req(name))


def test_controls_from_an_unknown_session_claim_no_slot(app):
    control(app, "never-started", seq=1, keys=BIT["w"])
    assert app.registry.find("never-started") is None


def test_a_superseded_play_leaves_the_newer_play_marked_running(app):
    old = play(app, "twice")
    frames(old, 1)
    new = play(app, "twice")
    frames(new, 1)
    old.close()
    assert app.registry.find("twice").running
    new.close()
    assert not app.registry.find("twice").running


@pytest.mark.parametrize("steps", [2.5, -1, 9, math.nan, None])
def test_steps_must_be_a_whole_number_from_0_to_8(app, steps):
    with pytest.raises(gr.Error, match="whole number from 0 to 8"):
        app.set_steps(steps, req("steps"))
    app.set_steps(8.0, req("steps"))


def _log(app: WorldApp, tmp_path: Path, **changes) -> str:
    data = {"format": "world-player-log/1", "model": app_model(app), "seed": 1, "prompt": "", "steps": 0,
            "fps": 20, "start_image_png": None, "complete": True, "events": [], "frames": [[[], 0, 0]] * 3}
    data.update(changes)
    path = tmp_path / "log.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("changes, words", [
    ({"events": [[1, "teleport", 3]]}, "unknown event .+teleport"),
    ({"events": [[1, "steps", 99]]}, "whole number from 0 to 8"),
    ({"events": [[1, "steps", 1.5]]}, "whole number from 0 to 8"),
    ({"events": [[1, "prompt", 7]]}, "must hold text"),
    ({"events": [[1, "prompt", "x" * 10_000]]}, "10000 characters"),
    ({"events": [[-1, "steps", 2]]}, "event frame must be a whole number"),
    ({"events": [[1, "resync", "<b>now</b>"]]}, "resync event at frame 1 holds no value, got '&lt;b&gt;now&lt;/b&gt;'"),
    ({"steps": 4.5}, "whole number from 0 to 8"),
    ({"seed": 1e999}, "seed must be a whole number"),
    ({"start_image_png": base64.b64encode(b"not a picture").decode()}, "not an image"),
])
def test_a_control_log_is_checked_like_the_page_inputs(app, tmp_path, changes, words):
    with pytest.raises(gr.Error, match=words):
        app.load_log(_log(app, tmp_path, **changes), req("badlog"))


def test_a_control_log_start_image_is_normalised_like_an_upload(app, tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (1280, 640), (200, 30, 30)).save(buf, format="JPEG")
    app.load_log(_log(app, tmp_path, start_image_png=base64.b64encode(buf.getvalue()).decode()), req("logimg"))
    start = app.registry.find("logimg").pending_replay.start_image
    assert Image.open(io.BytesIO(start)).format == "PNG" and Image.open(io.BytesIO(start)).size == (640, 320)


def test_a_truncated_control_log_says_so(app, tmp_path):
    *_, note = app.load_log(_log(app, tmp_path, complete=False), req("cutlog"))
    assert "truncated" in note
    *_, note = app.load_log(_log(app, tmp_path), req("cutlog"))
    assert "truncated" not in note


def test_switching_the_prompt_while_playing_changes_the_world_without_a_reset(app):
    gen = app.play("a frozen ice cave", 4, "reality", 0, None, req("switch"))
    icy = frames(gen, 2)[-1]
    recipe = app.registry.find("switch").recipe
    app.set_prompt("a volcanic lava temple", req("switch"))
    fiery = frames(gen, 12)[-1]            # the simulator cross-fades over a few frames
    gen.close()

    def mean_rgb(value):
        import base64
        data = base64.b64decode(value["img"].split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(data))).reshape(-1, 3).mean(0)

    assert app.registry.find("switch").recipe is recipe and fiery["n"] > icy["n"]
    red_minus_blue = [m[0] - m[2] for m in (mean_rgb(icy), mean_rgb(fiery))]
    assert red_minus_blue[1] > red_minus_blue[0] + 10


def test_the_world_carries_across_gpu_segments_on_fresh_workers(app, monkeypatch):
    """ZeroGPU-style: short segments, and every segment lands on a worker that never saw the world."""
    monkeypatch.setattr(app.backend, "segment_seconds", 0.05)
    monkeypatch.setattr(app.backend.worlds, "get", lambda *a: None)
    gen = app.play_path("w*2, d*2", "", 6, app_model(app), 0, None, req("segments"))
    got = frames(gen, 5)
    gen.close()
    session = app.registry.find("segments")
    assert [f["n"] for f in got] == list(range(got[0]["n"], got[0]["n"] + 5))
    assert recorded_buttons(app, "segments")[:4] == [(VK["W"],)] * 2 + [(VK["D"],)] * 2
    assert session.world_frames == 5 and session.resume.frames_done <= 5
    monkeypatch.undo()
    whole = frames(app.play_path("w*2, d*2", "", 6, app_model(app), 0, None, req("segments-whole")), 5)
    assert [f["img"] for f in got] == [f["img"] for f in whole]     # restored from latents: exact


def test_two_sessions_loading_a_model_at_once_share_one_engine(monkeypatch):
    class SlowToLoad:
        def __init__(self) -> None:
            time.sleep(0.2)

    monkeypatch.setattr(backends, "Reality", SlowToLoad)
    engines = backends.EngineCache("cpu", compile=False)
    got = []
    threads = [threading.Thread(target=lambda: got.append(engines.get("reality"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] is got[1]


def test_a_start_image_given_to_the_simulator_is_reported(app):
    png, _ = app.load_start_image(str(Path(__file__).parents[1] / "examples" / "start_images" / "desert_ruins.png"))
    gen = app.play("", 1, "reality", 0, png, req("reality-picture"))
    with pytest.warns(UserWarning, match="not from a picture"):
        frames(gen, 1)
    gen.close()


class _GpuEngine:
    device = torch.device("cuda")


def test_a_used_up_gpu_quota_ends_play_with_a_message(app, monkeypatch):
    backend = backends.ZeroGpuBackend(segment_seconds=60)
    backend.warmup.done.set()

    def out_of_quota(args, uri):
        raise gr.Error("You have exceeded your free ZeroGPU quota", title="ZeroGPU quota exceeded")
        yield

    monkeypatch.setattr(backend.engines, "get", lambda uri: _GpuEngine())
    monkeypatch.setattr(backend, "_gpu_segment", out_of_quota)
    zero = WorldApp(backend, list(app.models.values()), allow_custom_models=False, limits=IN_PROCESS_LIMITS)
    value, status = list(zero.play("", 1, app_model(app), 0, None, req("quota")))[-1]
    assert "quota is used up" in value["msg"] and "GPU quota exhausted" in status
    assert not zero.registry.find("quota").running


def test_queue_less_calls_never_claim_a_slot(app):
    app.set_prompt("a meadow", req("ql"))
    app.set_steps(2, req("ql"))
    app.pause(req("ql"))
    app.reset(req("ql"))
    assert app.registry.find("ql") is None


def test_only_a_live_page_may_claim_a_session(app):
    gated = WorldApp(app.backend, list(app.models.values()), allow_custom_models=False, limits=Limits())
    with pytest.raises(gr.Error, match="not connected"):
        next(gated.play("", 1, app_model(app), 0, None, req("no-page")))
    assert gated.registry.find("no-page") is None
    gated.pages.open("a-page", IN_PROCESS)
    assert gated._session(req("a-page")).client == IN_PROCESS
    gated.pages.close("a-page")
    gated.page_closed("a-page")          # what the gate calls when the heartbeat closes
    assert gated.registry.find("a-page") is None


def test_one_client_plays_one_world_at_a_time(app, monkeypatch):
    monkeypatch.setattr(app, "limits", Limits(require_live_page=False, plays_per_client=1))
    first = play(app, "one-a")
    frames(first, 1)
    with pytest.raises(gr.Error, match="Another world from your address"):
        frames(play(app, "one-b"), 1)
    again = play(app, "one-a")              # the same page may restart its own world
    frames(again, 1)
    first.close(), again.close()
    frames(play(app, "one-b"), 1)           # and once it stopped, another page may play


def test_a_control_log_pressing_buttons_its_model_lacks_is_refused_at_load(app, tmp_path, monkeypatch):
    small = type("Source", (), {"convention": ControlConvention(n_buttons=16, mouse_units_per_pixel=1.0,
                                                                mouse_cap=None, prompted=False, takes_images=True)})()
    monkeypatch.setattr(app.backend.engines, "get", lambda uri: small)
    with pytest.raises(gr.Error, match="presses button 87"):
        app.load_log(_log(app, tmp_path, frames=[[[87], 0, 0]]), req("buttons"))
    assert app.registry.find("buttons") is None


def test_a_long_model_name_gets_a_clear_error(app):
    private = WorldApp(app.backend, list(app.models.values()), allow_custom_models=True, limits=IN_PROCESS_LIMITS)
    for key in ("x" * 100_000, 123, "bad\0name"):
        with pytest.raises(gr.Error, match="Unknown model"):
            private.model(key)


def test_downloads_are_rate_limited_per_session(app):
    gen = play(app, "rate")
    frames(gen, 2)
    gen.close()
    app.download(False, req("rate"))
    with pytest.raises(gr.Error, match="Please wait"):
        app.download(False, req("rate"))
    app.unload(req("rate"))


def rewind(app: WorldApp, name: str, seconds: object):
    return app.rewind(gr.EventData(None, {"seconds": seconds}), req(name))


def test_a_rewind_while_playing_goes_back_and_the_log_still_replays_the_world(app):
    gen = app.play_path("w*4, d*4, left*4", "", 12, app_model(app), 0, None, req("rewind"))
    before = frames(gen, 8)
    assert before[-1]["back"] == pytest.approx(7 / app.plays.fps)      # back to the first frame, not before
    assert rewind(app, "rewind", 3 / app.plays.fps) == gr.skip()       # playing: the next frame shows it
    after = frames(gen, 4)
    gen.close()
    session = app.registry.find("rewind")
    assert session.world_frames == 9 and session.rewind_pending is None
    assert len(session.recorder.ctrls) == 9 and after[0]["back"] == pytest.approx(5 / app.plays.fps)
    _, _, log = app.download(False, req("rewind"))
    _, seed, model, steps, _ = app.load_log(log, req("rewind-replay"))
    replayed = frames(app.play_path("", "", seed, model, steps, None, req("rewind-replay")), 9)
    assert [f["img"] for f in replayed] == [f["img"] for f in before[:5] + after]


def test_a_rewind_while_paused_shows_the_frame_it_went_back_to(app):
    gen = play(app, "rewind-paused", seed=3)
    shown = frames(gen, 6)
    app.pause(req("rewind-paused"))
    list(gen)
    value = rewind(app, "rewind-paused", 2 / app.plays.fps)
    assert value["img"] == shown[3]["img"] and "press Start" in value["msg"] and value["n"] > shown[-1]["n"]
    again = rewind(app, "rewind-paused", 2 / app.plays.fps)          # presses add up until the world answers
    assert again["img"] == shown[1]["img"]
    gen = play(app, "rewind-paused", seed=3)
    frames(gen, 1)
    gen.close()
    assert app.registry.find("rewind-paused").world_frames == 3


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf, 1e9, "3", True, None])
def test_a_bad_rewind_is_refused_clearly(app, seconds):
    with pytest.raises(gr.Error, match="between 0 and 60 seconds"):
        rewind(app, "rewind-bad", seconds)


def test_nothing_to_rewind_or_resync_before_start_says_so(app):
    with pytest.raises(gr.Error, match="press Start"):
        rewind(app, "rewind-none", 1.0)
    with pytest.raises(gr.Error, match="press Start"):
        app.resync(req("rewind-none"))


def test_resync_needs_a_model_shown_beside_reality(app):
    gen = play(app, "resync-plain")
    frames(gen, 1)
    gen.close()
    with pytest.raises(gr.Error, match="beside reality"):
        app.resync(req("resync-plain"))


def test_the_split_view_shows_dream_and_reality_with_a_psnr_and_resyncs(app):
    assert "embedded+reality" in app.models
    gen = app.play("a stone dungeon", 2, "embedded+reality", 0, None, req("split"))
    first = frames(gen, 3)[-1]
    assert first["split"] and first["w"] == 2 * first["h"] and "PSNR" in first["hud"] and first["psnr"] > 0
    app.resync(req("split"))
    frames(gen, 2)
    gen.close()
    session = app.registry.find("split")
    assert [e[1] for e in session.recorder.events] == ["resync"]
    recorded = [session.recorder.jpeg(i) for i in range(5)]
    _, _, log = app.download(False, req("split"))
    prompt, seed, model, steps, _ = app.load_log(log, req("split-replay"))
    assert model == "embedded+reality"
    replayed = frames(app.play_path("", prompt, seed, model, steps, None, req("split-replay")), 5)
    assert [base64.b64decode(f["img"].split(",", 1)[1]) for f in replayed] == recorded


def test_only_models_trained_on_the_simulator_are_offered_beside_it(playable_checkpoint, tmp_path):
    assert [(m.key, m.uri) for m in model_catalog([str(playable_checkpoint)], "cpu") if m.split] == \
        [("embedded+reality", None)]
    learned = tmp_path / "learned"
    shutil.copytree(playable_checkpoint, learned)
    with open(learned / "config.yaml", "a", encoding="utf-8") as f:
        f.write("trained_on: simulator\n")
    split = [m for m in model_catalog([str(learned)], "cpu") if m.split]
    assert [(m.key, m.uri) for m in split][0] == (str(learned) + "+reality", str(learned))


def test_a_rewind_goes_back_at_least_a_frame_and_not_past_what_the_world_remembers(app):
    gen = play(app, "rewind-edge", seed=4)
    shown = frames(gen, 4)
    app.pause(req("rewind-edge"))
    list(gen)
    assert rewind(app, "rewind-edge", 0.001)["img"] == shown[2]["img"]    # a tiny rewind is one frame
    rewind(app, "rewind-edge", 59)                                          # back to the first frame ...
    with pytest.raises(gr.Error, match="as far back"):                      # ... and no further
        rewind(app, "rewind-edge", 1.0)
