"""Soak and attack benchmark of the app, over HTTP only, as browsers and scripts would use it.

Starts ``python app.py`` on localhost (its own temp folder, one X-Forwarded-For address per client
so per-client limits apply as they would on a Space), then runs

* ``--mode soak`` (default 600 s): a few real visitors play, steer, download recordings, close the
  tab and come back, while attackers keep trying the cheap tricks of issue 11 (made-up sessions,
  unread streams, frozen acks, huge control logs, decompression bombs, 50 MB control messages).
  Every ``--sample-s`` it prints the server's RSS and the files/bytes in its temp folder; at the end
  the RSS series, its growth and the temp-file growth.
* ``--mode attack``: one real visitor alone (fps), then the same visitor under all attacks at once
  (time to first frame, fps, worst gap between frames, the server's CPU use).

The attackers run in a process of their own (``AttackProcess``), so their client-side work does not
slow down the measuring client; on a small machine they still share its cores with the server.

    python bench/soak.py --seconds 600            # the 10-minute soak (not part of CI)
    python bench/soak.py --seconds 60             # a smoke run
    python bench/soak.py --mode attack --seconds 20

Not CI: it takes minutes and measures, it does not assert. ``Visitor`` (a raw page-like client) is
also what tests/test_reliability.py drives the app with.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


# ---- a page-like client --------------------------------------------------------------------------
def apply_diff(value: Any, edits: list) -> Any:
    """Apply Gradio's streaming diff (``gradio.utils.diff``) to the previous output value."""
    for op, path, new in edits:
        if not path:
            value = new if op != "append" else value + new
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        key = path[-1]
        if op == "replace":
            target[key] = new
        elif op == "append":
            target[key] = target[key] + new
        elif op == "add":
            if isinstance(target, list):
                target.insert(key, new)
            else:
                target[key] = new
        elif op == "delete":
            del target[key]
    return value


@dataclass
class Job:
    """One queued request as the page sees it: queue positions, frames, the end."""

    event_id: str
    outputs: list = field(default_factory=list)
    frames: list = field(default_factory=list)         # (monotonic time, frame number)
    ranks: list = field(default_factory=list)          # (monotonic time, rank, queue size)
    messages: list = field(default_factory=list)       # player overlay messages seen
    started: float | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    joined: float = field(default_factory=time.monotonic)


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class Visitor:
    """A page: a session hash with (optionally) a heartbeat, queue joins read over SSE, and control
    messages that acknowledge frames like the player's JS does."""

    def __init__(self, url: str, address: str | None = None, session_hash: str | None = None) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.hash = session_hash or secrets.token_hex(6)
        headers = {"X-Forwarded-For": address} if address else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(30.0, read=None))
        self.config = self.http.get(self.url + "config").json()
        self.fns = {}
        for dep in self.config["dependencies"]:
            self.fns.setdefault(dep.get("api_name"), dep["id"])
        self.jobs: dict[str, Job] = {}
        self.ack = True                  # acknowledge frames (a live page); False: a stream nobody reads
        self.frozen_ack: int | None = None
        self.state: dict[str, Any] = {"keys": 0, "vis": True}
        self._seq = 0
        self._last_ack = 0.0
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._streams: list[http.client.HTTPConnection] = []
        self.heartbeat_status: int | None = None
        self._hb_open = threading.Event()
        self._closed = False

    # page life
    def open_page(self, wait: float = 5.0) -> "Visitor":
        threading.Thread(target=self._beat, daemon=True).start()
        if not self._hb_open.wait(wait):
            raise RuntimeError("heartbeat did not open")
        return self

    def _open_stream(self, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """A streaming GET on a plain socket, so closing the page really closes the connection
        (closing an httpx stream from another thread does not)."""
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=None)
        conn.request("GET", path, headers=dict(self.http.headers))
        self._streams.append(conn)
        return conn, conn.getresponse()

    def _beat(self) -> None:
        try:
            _, response = self._open_stream(f"/gradio_api/heartbeat/{self.hash}")
            self.heartbeat_status = response.status
            self._hb_open.set()
            while not self._closed and response.readline():
                pass
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            pass            # the page was closed under the read
        finally:
            self._hb_open.set()

    def close_page(self) -> None:
        """Close the tab: the heartbeat and every stream go away."""
        self._closed = True
        for conn in self._streams:
            try:
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        try:
            self.http.close()
        except RuntimeError:
            pass

    # requests
    def join(self, api_name: str, data: list, event_data: Any = None) -> Job:
        body = {"data": data, "fn_index": self.fns[api_name], "session_hash": self.hash, "event_data": event_data,
                "trigger_id": None}
        response = self.http.post(self.url + "gradio_api/queue/join", json=body)
        if response.status_code != 200:
            raise Refused(response.status_code, _detail(response))
        job = Job(response.json()["event_id"])
        with self._lock:
            self.jobs[job.event_id] = job
            if self._reader is None or not self._reader.is_alive():
                self._reader = threading.Thread(target=self._read, daemon=True)
                self._reader.start()
        return job

    def play(self, prompt: str = "", seed: int = 1, model: str = "reality", steps: Any = 0) -> Job:
        return self.join("play", [prompt, seed, model, steps, None])

    def play_path(self, path: str, seed: int = 1, model: str = "reality") -> Job:
        return self.join("play_path", [path, "", seed, model, 0, None])

    def upload(self, name: str, data: bytes) -> dict:
        response = self.http.post(self.url + "gradio_api/upload", files={"files": (name, data)})
        if response.status_code != 200:
            raise Refused(response.status_code, _detail(response))
        path = response.json()[0]
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name: str, data: list, timeout: float = 60.0) -> Job:
        """Join and wait for the end."""
        job = self.join(api_name, data)
        job.done.wait(timeout)
        return job

    def run(self, api_name: str, data: list, event_data: Any = None) -> httpx.Response:
        """A queue-less call (controls, prompt, steps, pause)."""
        body = {"data": data, "fn_index": self.fns[api_name], "session_hash": self.hash, "event_data": event_data}
        return self.http.post(self.url + "gradio_api/run/predict", json=body)

    def control(self, **changes: Any) -> httpx.Response:
        with self._lock:
            self.state.update(changes)
            self._seq += 1
            state = {**self.state, "seq": self._seq}
        return self.run("control", [], event_data=state)

    # the stream
    def _read(self) -> None:
        try:
            _, response = self._open_stream(f"/gradio_api/queue/data?session_hash={self.hash}")
            while not self._closed:
                raw = response.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("data:") and self._handle(json.loads(line[5:])):
                    break
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            pass            # the page was closed under the read
        finally:
            for job in list(self.jobs.values()):
                if not job.done.is_set() and self._closed:
                    job.error = job.error or "page closed"
                    job.done.set()

    def _handle(self, msg: dict) -> bool:
        """One SSE message; True when the stream is over."""
        if msg.get("msg") == "close_stream":
            return True
        job = self.jobs.get(msg.get("event_id"))
        if job is None:
            return False
        kind, now = msg.get("msg"), time.monotonic()
        if kind == "estimation":
            job.ranks.append((now, msg.get("rank"), msg.get("queue_size")))
        elif kind == "process_starts":
            job.started = now
        elif kind in ("process_generating", "process_completed"):
            output = msg.get("output", {})
            if kind == "process_completed" and not msg.get("success", True):
                job.error = output.get("error") or "error"
                job.done.set()
                return False
            data = output.get("data") or []
            if kind == "process_generating" and job.outputs:
                job.outputs = [apply_diff(old, edits) for old, edits in zip(job.outputs, data)]
            else:
                job.outputs = [json.loads(json.dumps(d)) for d in data]
            value = job.outputs[0] if job.outputs else None
            if isinstance(value, dict):
                self._frame(job, value, now)
            if kind == "process_completed":
                job.done.set()
        return False

    def _frame(self, job: Job, value: dict, now: float) -> None:
        if value.get("msg") and (not job.messages or job.messages[-1] != value["msg"]):
            job.messages.append(value["msg"])
        n = value.get("n")
        if "img" in value and n is not None and (not job.frames or job.frames[-1][1] != n):
            job.frames.append((now, n))
            if self.ack and now - self._last_ack > 0.05:
                self._last_ack = now
                ack = self.frozen_ack if self.frozen_ack is not None else n
                threading.Thread(target=self._ack, args=(ack,), daemon=True).start()

    def _ack(self, n: int) -> None:
        try:
            self.control(ack=n)
        except (httpx.HTTPError, RuntimeError):
            pass


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:200]


def fps_of(job: Job, since: float | None = None) -> float:
    times = [t for t, _ in job.frames if since is None or t >= since]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0


def worst_gap(job: Job, since: float | None = None) -> float:
    times = [t for t, _ in job.frames if since is None or t >= since]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


# ---- payloads of the attacks -----------------------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    """A valid, tiny PNG that claims ``width x height`` pixels (all black)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])   # 8-bit grey
    raw = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


_BOMB = png_bomb(8000, 5000)        # 40 megapixels in ~50 KB


def control_log(n_frames: int, model: str = "reality", **changes: Any) -> bytes:
    """A control log of ``n_frames`` idle frames (``changes`` replace its fields)."""
    data = {"format": "world-player-log/1", "model": model, "seed": 1, "prompt": "", "steps": 0, "fps": 20,
            "start_image_png": None, "complete": True, "events": [], "frames": [[[], 0, 0]] * n_frames}
    data.update(changes)
    return json.dumps(data, separators=(",", ":")).encode()


# ---- the server ------------------------------------------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen
    url: str
    temp: Path
    log: Path

    def rss_mb(self) -> float:
        total = 0.0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                pass
        return total

    def cpu_s(self) -> float:
        """CPU seconds the server has used so far, with its finished children (video encoders)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def temp_files(self) -> tuple[int, int]:
        """Files in the server's temp folder and their bytes (a download replaced meanwhile is skipped)."""
        count = size = 0
        for path in self.temp.rglob("*"):
            try:
                if path.is_file():
                    size += path.stat().st_size
                    count += 1
            except OSError:
                pass
        return count, size

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        """Stop the server and remove its temp folder and log (after the report has used them)."""
        self.stop()
        shutil.rmtree(self.temp, ignore_errors=True)
        self.log.unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(fps: float, extra: list[str] | None = None, temp: Path | None = None) -> Server:
    temp = temp or Path(tempfile.mkdtemp(prefix="soak-gradio-"))
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, str(ROOT / "app.py"), "--model", "reality", "--port", str(port), "--fps", str(fps),
           "--trust-forwarded-for", *(extra or [])]
    # The server's log goes to a file: an unread pipe fills up (every refused request logs a
    # traceback) and then blocks the server.
    log = Path(tempfile.mkstemp(prefix="soak-server-", suffix=".log")[1])
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the app exited: " + log.read_text(errors="replace")[-2000:])
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return Server(process, url, temp, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the app did not start within 300 s")


# ---- attackers ---------------------------------------------------------------------------------------
def attack_once(url: str, address: str, kind: str) -> str:
    """One round of one attack; returns what the server answered, briefly."""
    if kind == "made-up-sessions":
        v = Visitor(url, address)
        codes = []
        for i in range(20):
            v.hash = secrets.token_hex(6)
            if i % 5:
                codes.append(v.run("set_prompt_1", ["spam"]).status_code)
                continue
            try:
                v.play()
                codes.append(200)
            except Refused as exc:
                codes.append(exc.status)
        v.http.close()
        return f"codes {sorted(set(codes))}"
    if kind in ("unread-stream", "frozen-ack"):
        v = Visitor(url, address).open_page()
        if kind == "unread-stream":
            v.ack = False
        else:
            v.frozen_ack = 0
        try:
            job = v.play()
            job.done.wait(30)
            return f"ended: {job.messages[-1:] or job.error}"
        except Refused as exc:
            return f"refused {exc.status}"
        finally:
            v.close_page()
    if kind == "huge-log":
        v = Visitor(url, address).open_page()
        try:
            answers = []
            for payload in (control_log(13_000), b"[" * 3_000_000, control_log(5, frames=[[[99999], 0, 0]] * 5),
                            control_log(5, frames=[[[], 1e39, 0]] * 5)):
                try:
                    job = v.call("load_log", [v.upload("log.json", payload)])
                    answers.append((job.error or "accepted")[:40])
                except Refused as exc:
                    answers.append(f"refused {exc.status}")
            return "; ".join(answers)
        finally:
            v.close_page()
    if kind == "bomb":
        v = Visitor(url, address).open_page()
        try:
            job = v.call("load_start_image", [v.upload("bomb.png", _BOMB)])
            return (job.error or "accepted")[:60]
        except Refused as exc:
            return f"refused {exc.status}"
        finally:
            v.close_page()
    if kind == "big-body":
        response = httpx.post(url + "gradio_api/run/predict", content=b"x" * (50 << 20),
                              headers={"X-Forwarded-For": address, "content-type": "application/json"}, timeout=60)
        return f"status {response.status_code}"
    raise ValueError(kind)


ATTACKS = ("made-up-sessions", "unread-stream", "frozen-ack", "huge-log", "bomb", "big-body")


def attackers(url: str, stop: threading.Event, log: list, addresses: tuple[str, ...] = ("198.51.100.7",)) -> list:
    def loop(kind: str, address: str) -> None:
        while not stop.is_set():
            try:
                log.append((time.monotonic(), kind, attack_once(url, address, kind)))
            except Exception as exc:        # an attack that errors is still an attack; keep going
                log.append((time.monotonic(), kind, f"{type(exc).__name__}: {exc}"[:80]))
            stop.wait(1.0)

    threads = [threading.Thread(target=loop, args=(kind, addresses[i % len(addresses)]), daemon=True)
               for i, kind in enumerate(ATTACKS)]
    for t in threads:
        t.start()
    return threads


class AttackProcess:
    """Every attack at once, in a process of its own: the attackers' client-side work (building
    payloads, reading streams) must not take this process's GIL from the visitor being measured."""

    def __init__(self, url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop, self.rounds = ctx.Event(), ctx.Value("i", 0)
        self._log, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_attack_main, args=(url, self._stop, self.rounds, child), daemon=True)
        self.process.start()

    def stop(self) -> list:
        """End the attacks; their log, one ``(time, kind, answer)`` per round."""
        self._stop.set()
        log = self._log.recv() if self._log.poll(120) else []
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
        return log


def _attack_main(url: str, stop: Any, rounds: Any, conn: Any) -> None:
    log: list = []
    local = threading.Event()
    threads = attackers(url, local, log)
    while not stop.wait(0.5):
        rounds.value = len(log)
    local.set()
    for t in threads:
        t.join(timeout=60)
    conn.send(list(log))


# ---- real visitors -------------------------------------------------------------------------------------
def real_visitor(url: str, address: str, stop: threading.Event, stats: list, play_s: float = 20.0) -> None:
    rng = random.Random(address)
    while not stop.is_set():
        v = Visitor(url, address).open_page()
        try:
            job = v.play(seed=rng.randrange(1000))
            t0 = time.monotonic()
            while time.monotonic() - t0 < play_s and not job.done.is_set() and not stop.is_set():
                v.control(keys=rng.choice([0, 1, 2, 4, 8, 1 | 16]), lx=rng.uniform(-500, 500))
                time.sleep(0.3)
            v.run("pause", [])
            job.done.wait(10)
            first = job.frames[0][0] - job.joined if job.frames else None
            stats.append({"address": address, "frames": len(job.frames), "fps": fps_of(job),
                          "first_frame_s": first, "end": (job.messages[-1:] or [job.error])[0]})
            download = v.call("download", [True], timeout=120)
            stats[-1]["download"] = "ok" if download.error is None else download.error[:40]
        except Refused as exc:
            stats.append({"address": address, "refused": exc.detail})
        finally:
            v.close_page()
        stop.wait(1.0)


def soak(args: argparse.Namespace) -> None:
    server = start_server(args.fps)
    print(f"server pid {server.process.pid} at {server.url}, temp folder {server.temp}, log {server.log}")
    stop, stats = threading.Event(), []
    threads = [threading.Thread(target=real_visitor, args=(server.url, f"203.0.113.{i + 1}", stop, stats), daemon=True)
               for i in range(args.visitors)]
    for t in threads:
        t.start()
    attack_process = AttackProcess(server.url)
    series = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds:
            files, size = server.temp_files()
            series.append((time.monotonic() - t0, server.rss_mb(), files, size))
            print(f"t={series[-1][0]:6.0f} s  rss {series[-1][1]:7.1f} MB  temp files {files:4d}  "
                  f"{size / 2**20:7.2f} MB  plays {len(stats)}  attacks {attack_process.rounds.value}", flush=True)
            time.sleep(args.sample_s)
    finally:
        stop.set()
        try:
            log = attack_process.stop()
            for t in threads:
                t.join(timeout=60)
            files, size = server.temp_files()
            series.append((time.monotonic() - t0, server.rss_mb(), files, size))
        finally:
            server.stop()
    rss = [r for _, r, _, _ in series]
    half = rss[len(rss) // 2:]
    print("\nRSS series (MB):", " ".join(f"{r:.0f}" for r in rss))
    print(f"RSS first {rss[0]:.0f} MB, max {max(rss):.0f} MB, last {rss[-1]:.0f} MB; second half "
          f"{min(half):.0f}..{max(half):.0f} MB")
    print(f"temp files: first {series[0][2]} ({series[0][3] / 2**20:.2f} MB), last {series[-1][2]} "
          f"({series[-1][3] / 2**20:.2f} MB), max {max(s[2] for s in series)}")
    played = [s for s in stats if "frames" in s]
    if played:
        print(f"real visitor plays: {len(played)}, median fps {statistics.median(s['fps'] for s in played):.1f}, "
              f"first frame median {statistics.median(s['first_frame_s'] or 99 for s in played):.2f} s, "
              f"downloads ok {sum(s.get('download') == 'ok' for s in played)}/{len(played)}")
        other = sorted({s.get("download", "not tried (stopped)") for s in played} - {"ok"})
        if other:
            print(f"  downloads not ok: {other}")
    refused = [s for s in stats if "refused" in s]
    if refused:
        print(f"real visitor refusals: {len(refused)} ({refused[0]['refused'][:80]})")
    kinds = {}
    for _, kind, answer in log:
        kinds.setdefault(kind, answer)
    print(f"attack rounds: {len(log)}; first answer of each:")
    for kind, answer in kinds.items():
        print(f"  {kind:18s} {answer}")
    ours = [p for p in server.temp.glob("world-player-*")]
    print(f"after SIGTERM: {server.temp_files()[0]} files left in the server's "
          f"GRADIO_TEMP_DIR (the operator's folder: uploads stay until Gradio's delete_cache), "
          f"{len(ours)} world-player-* folders of the app in it")
    server.remove()


def attack(args: argparse.Namespace) -> None:
    server = start_server(args.fps)
    print(f"server pid {server.process.pid} at {server.url}")
    try:
        def measure(label: str) -> dict:
            v = Visitor(server.url, "203.0.113.1").open_page()
            cpu0, t0 = server.cpu_s(), time.monotonic()
            job = v.play()
            t_end = time.monotonic() + args.seconds
            while time.monotonic() < t_end and not job.done.is_set():
                v.control(keys=1, lx=random.uniform(-200, 200))
                time.sleep(0.25)
            first = job.frames[0][0] - job.joined if job.frames else float("nan")
            since = job.frames[0][0] + 1.0 if job.frames else None
            out = {"first_frame_s": first, "fps": fps_of(job, since), "worst_gap_s": worst_gap(job, since),
                   "server_cpu": (server.cpu_s() - cpu0) / (time.monotonic() - t0)}
            v.run("pause", [])
            job.done.wait(10)
            v.close_page()
            print(f"{label:16s} first frame {out['first_frame_s']:.2f} s, {out['fps']:.1f} fps, "
                  f"worst gap {out['worst_gap_s']:.2f} s, server CPU {out['server_cpu']:.2f} cores", flush=True)
            return out

        alone = measure("alone")
        attack_process = AttackProcess(server.url)
        time.sleep(5.0)             # let every attack get going (the attack process starts in ~1 s)
        loaded = measure("under attack")
        log = attack_process.stop()
        print(f"under attack: {100 * loaded['fps'] / max(alone['fps'], 1e-9):.0f} % of the fps alone (issue 11: "
              f">= 80 %), first frame after {loaded['first_frame_s']:.2f} s (< 5 s); {len(log)} attack rounds")
        for kind in ATTACKS:
            answers = [a for _, k, a in log if k == kind]
            print(f"  {kind:18s} x{len(answers)}  {answers[0] if answers else '-'}")
    finally:
        server.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["soak", "attack"], default="soak")
    parser.add_argument("--seconds", type=float, default=600.0, help="soak length / each attack-mode measurement")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS / temp-file samples")
    parser.add_argument("--visitors", type=int, default=2, help="real visitors during the soak")
    parser.add_argument("--fps", type=float, default=20.0)
    args = parser.parse_args()
    soak(args) if args.mode == "soak" else attack(args)


if __name__ == "__main__":
    main()
