"""A keep-alive HTTPS load generator: several processes x threads, one connection per thread."""

from __future__ import annotations

import http.client
import multiprocessing
import ssl
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    port: int
    ca_file: str
    method: str
    path: str
    body: bytes = b""


def _thread(target: Target, count: int, out: list[float], errors: list[int]) -> None:
    ctx = ssl.create_default_context(cafile=target.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", target.port, context=ctx, timeout=30)
    headers = {"Content-Type": "application/json"} if target.body else {}
    for _ in range(count):
        started = time.perf_counter()
        conn.request(target.method, target.path, body=target.body or None, headers=headers)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - started)
        if resp.status != 200:
            errors.append(resp.status)
    conn.close()


def _process(target: Target, threads: int, per_thread: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    latencies: list[float] = []
    errors: list[int] = []
    workers = [threading.Thread(target=_thread, args=(target, per_thread, latencies, errors)) for _ in range(threads)]
    first = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((latencies, errors, first, time.perf_counter()))


def run(target: Target, *, concurrency: int, total: int) -> tuple[list[float], float, int]:
    """Send ``total`` requests at ``concurrency``; returns latencies (s), wall time (s), error count."""
    processes = min(concurrency, 4)
    threads = max(1, concurrency // processes)
    per_thread = max(1, total // (processes * threads))
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.Process(target=_process, args=(target, threads, per_thread, queue))
             for _ in range(processes)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    latencies = [v for r in results for v in r[0]]
    errors = sum(len(r[1]) for r in results)
    return latencies, wall, errors
