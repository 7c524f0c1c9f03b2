"""Walk inside a generated world in real time: type a prompt, press Start, steer with the keyboard,
mouse, virtual joystick or a gamepad.

    python app.py                      # embedded model, http://127.0.0.1:7860
    python app.py --model <folder>     # any Waypoint-format checkpoint (folder or Hub repo id)
    python app.py --host 0.0.0.0       # serve the LAN (the model picker becomes an allow-list)
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX=2`` would (unless the operator set it).

    glibc gives threads that allocate at once arenas of their own, up to 8 per core; a Gradio server
    runs dozens of short-lived worker threads, whose freed memory then stays scattered over those
    arenas instead of returning (the soak in docs/reliability.md measures it). Call it before threads
    start; whether it took effect."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):   # not glibc (musl, ...): nothing to cap
        return False


M_ARENA_MAX = -8   # glibc's malloc.h
limit_malloc_arenas()

import gradio as gr  # noqa: E402

from player.backends import cpu_compiler_available, create_backend, detect_kind, model_catalog  # noqa: E402
from player.component import WorldPlayer  # noqa: E402
from player.guard import Limits  # noqa: E402
from player.handlers import WorldApp  # noqa: E402
from player.validation import MAX_PROMPT_CHARS, MAX_STEPS  # noqa: E402

HERE = Path(__file__).parent
EXAMPLES = json.loads((HERE / "examples" / "prompts.json").read_text(encoding="utf-8"))
START_IMAGES = sorted((HERE / "examples" / "start_images").glob("*.png"))
CSS = """
#wm-title h1 { margin-bottom: 0; }
#wm-status { min-height: 1.6em; font-size: 0.92em; opacity: 0.9; }
#wm-buttons button { min-width: 0; }
"""
THEME = gr.themes.Soft(primary_hue="amber", secondary_hue="indigo")
# Runs in the page before a play request is queued, so a waiting player sees why nothing moves yet.
SHOW_STARTING = "(...args) => { window.__wmShow && window.__wmShow('Starting\u2026 (waiting in line if the demo is busy)'); return args; }"
# Runs when a play request is refused or fails (full queue, a limit, a bad value): the overlay must
# not keep saying "waiting in line" for a request that is no longer anywhere.
CLEAR_STARTING = "() => { window.__wmShow && window.__wmShow('Press Start to enter the world'); }"
QUEUE_SIZE = 20
STATUS_UPDATE_S = 1.0     # queue positions are re-sent every second, so they move when someone ahead leaves
CONCURRENCY = {"cpu": 2, "cuda": 1, "zerogpu": 4}   # worlds streaming at once; the rest wait in the queue
# Uploads over 20 MB are refused by Gradio. Gradio keeps every page's state (a copy of this UI's
# config, ~67 KB) until its LRU of state_session_capacity evicts it, closed pages included; only live
# pages get one (player.guard), so 256 bounds it at ~17 MB and still outlasts any open page in use.
LAUNCH = dict(css=CSS, theme=THEME, max_file_size="20mb", state_session_capacity=256)
HELP = """**Keyboard** W A S D move · Shift sprint · Space jump · Ctrl/C crouch · E use · arrows look ·
Backspace rewinds 3 s · **Mouse** click the world, then move to look (Esc releases) · **Touch** left
stick moves, drag on the right looks · **Gamepad** sticks + A/B/X/LB · **Timeline** under the view: drag
back to return to any moment of the last 30 s."""


def build_demo(app: WorldApp, default_model: str) -> gr.Blocks:
    """Wire the components to the handlers of ``app``."""
    with gr.Blocks(title="World Player", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# World Player\nA world model dreams every frame as you walk. Type a prompt, press "
                    "**Start**, then click the view and play.", elem_id="wm-title")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=360):
                player = WorldPlayer(message="Press Start to enter the world", elem_id="wm-player")
                with gr.Row(elem_id="wm-buttons"):
                    start = gr.Button("\u25b6 Start", variant="primary")
                    pause = gr.Button("\u275a\u275a Pause")
                    reset = gr.Button("\u21ba Reset")
                status = gr.Markdown(elem_id="wm-status")
                gr.Markdown(HELP)
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0]["prompt"], lines=2,
                                    max_length=MAX_PROMPT_CHARS, submit_btn="Apply",
                                    info="Changes apply to the next frames while you play.")
                gr.Examples([[e["prompt"]] for e in EXAMPLES], inputs=[prompt], label="Try a world",
                            fn=app.set_prompt, run_on_click=True)   # applies at once while playing
                with gr.Row():
                    seed = gr.Number(label="Seed", value=EXAMPLES[0]["seed"], precision=0, minimum=0)
                    steps = gr.Slider(0, MAX_STEPS, value=0, step=1, label="Steps",
                                      info="Denoising steps; 0 = the model's default")
                model = gr.Dropdown([(m.label, m.key) for m in app.models.values()], value=default_model,
                                    label="Model", allow_custom_value=app.allow_custom_models,
                                    info="A local folder path also works." if app.allow_custom_models else None)
                with gr.Accordion("Start image", open=False):
                    start_file = gr.File(label="Seed the world with a picture (optional)", file_types=["image"],
                                         height=120)
                    start_preview = gr.Image(label="Start image", interactive=False, visible=False, height=160)
                    start_png = gr.State(None)
                    gr.Examples([[str(p)] for p in START_IMAGES], inputs=[start_file], label="Example start images")
                with gr.Accordion("Scripted camera path & replays", open=False):
                    script = gr.Textbox(label="Camera path", placeholder="w*8, a+left*4, space, idle*3", lines=2,
                                        info="Keys w a s d space shift ctrl e, looks left right up down, idle; "
                                             "+ holds together, *N repeats for N frames.")
                    run_path = gr.Button("\u25b6 Run path")
                    gr.Examples([[e["path"], e["prompt"], e["seed"]] for e in EXAMPLES], inputs=[script, prompt, seed],
                                label="Example paths")
                    log_file = gr.File(label="Replay a control log (.json)", file_types=[".json"], height=120)
                    path_note = gr.Markdown()
                with gr.Accordion("Record", open=False):
                    overlay = gr.Checkbox(value=True, label="Draw the controls on the video")
                    download = gr.Button("\u2b07 Download recording")
                    with gr.Row():
                        video_out = gr.File(label="Video (animated WebP)")
                        mp4_out = gr.File(label="Video (MP4, H.264)")
                        log_out = gr.File(label="Control log (JSON)")

        play_inputs = [prompt, seed, model, steps, start_png]
        # preprocess=False: the handlers check every raw value themselves (one validation path, with
        # readable escaped errors) instead of Gradio's bare "Error" for a seed of "abc".
        common = dict(outputs=[player, status], concurrency_id="play", show_progress="hidden",
                      show_progress_on=[status], js=SHOW_STARTING, preprocess=False)
        start.click(app.play, play_inputs, **common).failure(None, js=CLEAR_STARTING)
        run_path.click(app.play_path, [script, *play_inputs], **common).failure(None, js=CLEAR_STARTING)
        pause.click(app.pause, None, None, queue=False, show_progress="hidden")
        reset.click(app.reset, None, [player, status], queue=False, show_progress="hidden")
        player.control(app.control, None, None, queue=False, trigger_mode="multiple", show_progress="hidden",
                       api_visibility="private")
        player.rewind(app.rewind, None, [player], queue=False, show_progress="hidden", api_visibility="private")
        player.resync(app.resync, None, None, queue=False, show_progress="hidden", api_visibility="private")
        prompt.submit(app.set_prompt, [prompt], None, queue=False, show_progress="hidden", preprocess=False)
        steps.release(app.set_steps, [steps], None, queue=False, show_progress="hidden", preprocess=False)
        # Not preprocessed either: gr.File's preprocessing leaves an empty temp file behind on every call.
        start_file.change(app.load_start_image, [start_file], [start_png, start_preview], preprocess=False)
        log_file.upload(app.load_log, [log_file], [prompt, seed, model, steps, path_note], preprocess=False)
        download.click(app.download, [overlay], [video_out, mp4_out, log_out])
        timer = gr.Timer(1.0)
        timer.tick(app.warmup_status, None, [status, timer], queue=False, show_progress="hidden")
        demo.load(app.current_status, None, status, queue=False)
        demo.unload(app.unload)
    return demo


def configure_queue(demo: gr.Blocks, concurrency: int) -> gr.Blocks:
    """The bounded queue, with positions re-sent every second. Queued handlers run only through it:
    off a Space, Gradio would also run them on a direct POST to /gradio_api/run/<name>, outside the
    concurrency limit and the gate's queue checks."""
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=concurrency, status_update_rate=STATUS_UPDATE_S,
                      api_open=False)


def launch_kwargs(app: WorldApp, demo: gr.Blocks) -> dict[str, Any]:
    """``demo.launch`` arguments: the page styling plus the gate (live pages, per-client limits,
    body sizes) in front of Gradio."""
    return {**LAUNCH, **app.attach(demo)}


def private_temp_dir() -> Path:
    """Gradio's uploads and our downloads in one folder of this process, removed when it exits
    (also on SIGTERM); an operator's own GRADIO_TEMP_DIR is kept, only our folders in it go."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return Path(os.environ["GRADIO_TEMP_DIR"])
    folder = Path(tempfile.mkdtemp(prefix="world-player-gradio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _stop_on_sigterm() -> None:
    """SIGTERM (a container stopping) closes the server like Ctrl+C, so the exit hooks run."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[],
                        help="a model folder or Hub repo id to offer (repeatable; the first is the default)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (default 127.0.0.1, or $GRADIO_SERVER_NAME as on Spaces)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs Internet)")
    parser.add_argument("--fps", type=float, default=20.0, help="target frames per second (default 20)")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="pause after this many seconds without input (default 300; 60 on ZeroGPU)")
    parser.add_argument("--trust-forwarded-for", action=argparse.BooleanOptionalAction, default=None,
                        help="tell visitors apart by the first X-Forwarded-For hop (default: only on Hugging Face "
                             "Spaces, whose proxy sets it); without a trusted proxy a client could forge it")
    parser.add_argument("--cpu-compile", choices=("auto", "on", "off"), default="auto",
                        help="compile the CPU model with torch.compile after warm-up, playing eager meanwhile "
                             "(~1.5x the fps; minutes the first time, then cached). auto: where a C++ compiler is")
    parser.add_argument("--batch-sessions", type=int, default=1,
                        help="make up to this many visitors' frames of one model in one batched forward: on a "
                             "CPU two visitors on one core instead of two, each at a lower fps; on a local GPU "
                             "several visitors for little more than one (default 1: off; docs/benchmarks.md)")
    args = parser.parse_args()

    kind = detect_kind()
    public = args.share or args.host not in ("127.0.0.1", "localhost", "::1") or bool(os.environ.get("SPACE_ID"))
    private_temp_dir()
    _stop_on_sigterm()
    models = model_catalog(args.model, kind)
    if not models:
        parser.error("no model to serve: the embedded model is missing from this checkout; pass --model <folder>")
    cpu_compile = args.cpu_compile == "on" or (args.cpu_compile == "auto" and cpu_compiler_available())
    backend = create_backend(kind, segment_seconds=60.0 if kind == "zerogpu" else 3600.0, cpu_compile=cpu_compile,
                             batch_sessions=max(1, args.batch_sessions))
    idle = args.idle_timeout if args.idle_timeout is not None else (60.0 if kind == "zerogpu" else 300.0)
    trust = args.trust_forwarded_for if args.trust_forwarded_for is not None else bool(os.environ.get("SPACE_ID"))
    # a local GPU plays one world at a time, or as many as it batches into one forward
    concurrency = max(CONCURRENCY[kind], args.batch_sessions) if kind == "cuda" else CONCURRENCY[kind]
    limits = Limits.for_concurrency(concurrency, trust_forwarded_for=trust)
    app = WorldApp(backend, models, allow_custom_models=not public, fps=args.fps, idle_timeout_s=idle, limits=limits)
    if kind == "zerogpu":
        backend.warm_up(models)             # weights must be in place before the first GPU fork
    else:
        threading.Thread(target=backend.warm_up, args=(models,), daemon=True).start()
    demo = build_demo(app, models[0].key)
    configure_queue(demo, concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(app, demo))


if __name__ == "__main__":
    main()
