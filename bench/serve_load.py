"""Load benchmark of `signlab serve` on loopback: start the server in a subprocess, send N classify requests
from C concurrent clients (threads, one keep-alive connection each), report requests/s, latency percentiles,
errors and the server's memory before and after.

    .venv/bin/python bench/serve_load.py RUN [--requests 2000] [--concurrency 16]

The uploads are photos rendered from signlab's drawn signs (signlab.synth), never dataset images. The clients
run on the same machine as the server and take CPU from it: the figures are a floor, not the server alone.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
from PIL import Image


def payloads(n: int = 16) -> list[bytes]:
    """n PNG photos of drawn signs, different classes and renderings."""
    from signlab.synth.pictograms import draw_sign
    from signlab.synth.render import render_variant

    out = []
    for i in range(n):
        photo, _ = render_variant(draw_sign((7 * i) % 43, 128), np.random.default_rng(i))
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak so far (VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int, max_concurrent: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "signlab", "serve", run, "--port", str(port), "--max-concurrent", str(max_concurrent)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); its log:\n{log.read_text()}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not answer within 120 s; its log:\n{log.read_text()}")


def fire(url: str, bodies: list[bytes], requests: int, concurrency: int) -> tuple[list[float], dict, dict, float]:
    """Send `requests` uploads from `concurrency` threads: latencies (s), error counts by kind, the top class
    answered for each body, and the wall time."""
    lock, next_index = threading.Lock(), iter(range(requests))
    latencies, errors, answers = [], {}, {}

    def client() -> None:
        with httpx2.Client(timeout=30) as http:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = http.post(url, files={"file": ("sign.png", body, "image/png")})
                    kind = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx2.HTTPError as e:
                    kind, r = type(e).__name__, None
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if kind:
                        errors[kind] = errors.get(kind, 0) + 1
                    else:
                        answers.setdefault(i % len(bodies), set()).add(r.json()["class_id"])

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    return latencies, errors, answers, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder or weights file to serve")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    ap.add_argument("--server-max-concurrent", type=int, default=None,
                    help="the server's --max-concurrent (default: --concurrency, so no request is turned away)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    bodies = payloads()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(args.run, port, args.server_max_concurrent or args.concurrency, log)
        try:
            before = rss_mb(proc.pid)
            latencies, errors, answers, wall = fire(f"http://127.0.0.1:{port}/api/classify", bodies,
                                                    args.requests, args.concurrency)
            after = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    ms = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "wall_s": round(wall, 2),
        "requests_per_s": round(args.requests / wall, 1),
        "latency_ms": {"p50": round(ms[0], 1), "p95": round(ms[1], 1), "p99": round(ms[2], 1),
                       "max": round(1000 * max(latencies), 1)},
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "same_answer_per_image": all(len(v) == 1 for v in answers.values()),
        "upload_kb_mean": round(sum(map(len, bodies)) / len(bodies) / 1024, 1),
        "server_rss_mb": {"before": round(before["VmRSS"], 1), "after": round(after["VmRSS"], 1),
                          "peak": round(after["VmHWM"], 1)},
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
                   f"Python {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        print(f"{args.requests} requests, {args.concurrency} concurrent clients, {result['wall_s']} s: "
              f"{result['requests_per_s']} requests/s")
        print(f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
        print(f"errors: {result['errors']} {errors or ''}  same answer for each image: "
              f"{result['same_answer_per_image']}")
        rss = result["server_rss_mb"]
        print(f"server RSS MB: before {rss['before']}  after {rss['after']}  peak {rss['peak']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
