#!/usr/bin/env python3
"""Benchmark: a fleet of corral nodes on one PostgreSQL, 1 node vs 3 nodes.

    python3 benches/fleet.py --database-url postgres://corral@127.0.0.1:PORT/postgres \
        [--corral target/release/corral] [--python PYTHON] [--sessions 30] [--executions 300]

(`scripts/postgres start` runs a private PostgreSQL under target/pg and prints its URL.)
For each fleet size it creates a fresh database on that server (Debian's `createdb`), starts
the nodes on 127.0.0.1 with real sandboxed workers, and measures:
  creates/s    `--sessions` sessions created from 4 client threads spread over the nodes
               (then closed, untimed);
  executes/s   `--executions` executions of `1 + 1` from 4 client threads, over one session
               per node, each request sent to a node chosen round-robin (with 3 nodes, two
               thirds are forwarded to the session's owner);
  latency      `--samples` sequential executions sent to the session's own node (direct) and,
               with 3 nodes, to another node (forwarded): median and p95.
Every node is stopped by PID at the end. Nothing is asserted; numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_SECRET = "benchmark-node-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(method: str, url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"{}")


def createdb(server_url: str) -> str:
    base, _, _ = server_url.rpartition("/")
    name = f"corral_bench_{uuid.uuid4().hex[:12]}"
    createdb_bin = shutil.which("createdb") or "/usr/lib/postgresql/15/bin/createdb"
    subprocess.run([createdb_bin, "--maintenance-db", server_url, name], check=True)
    return f"{base}/{name}"


class Node:
    def __init__(self, corral: str, python: str, database: str, index: int, home: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home / f"node-{index}.log", "wb")
        self.process = subprocess.Popen(
            [corral, "serve", "--bind", f"127.0.0.1:{self.port}",
             "--data-dir", str(home / f"node-{index}"), "--python", python,
             "--database-url", database, "--node-id", f"bench-{index}",
             "--node-secret", NODE_SECRET],
            stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                call("GET", f"{self.url}/healthz")
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"node {index} did not start; see {self.log.name}")
                time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def in_threads(count: int, jobs: list) -> float:
    """Runs the callables in `jobs` on `count` threads; returns the wall time."""
    lock = threading.Lock()
    pending = list(jobs)

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop()
            job()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def latency(url: str, session: str, samples: int) -> dict:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call("POST", f"{url}/v1/sessions/{session}/executions", {"code": "1 + 1"})
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 2)}


def run_fleet(size: int, arguments) -> dict:
    database = createdb(arguments.database_url)
    home = Path(tempfile.mkdtemp(prefix=f"corral-fleet-bench-{size}-"))
    nodes = []
    try:
        nodes = [Node(arguments.corral, arguments.python, database, index, home)
                 for index in range(size)]
        created = []
        created_lock = threading.Lock()

        def create(index):
            def job():
                body = call("POST", f"{nodes[index % size].url}/v1/sessions", {})
                with created_lock:
                    created.append(body["id"])
            return job

        create_seconds = in_threads(4, [create(index) for index in range(arguments.sessions)])
        in_threads(4, [lambda id=id: call("DELETE", f"{nodes[0].url}/v1/sessions/{id}")
                       for id in created])

        owned = [call("POST", f"{node.url}/v1/sessions", {})["id"] for node in nodes]
        execute_jobs = [
            (lambda index=index: call(
                "POST",
                f"{nodes[index % size].url}/v1/sessions/{owned[(index // size) % size]}/executions",
                {"code": "1 + 1"}))
            for index in range(arguments.executions)
        ]
        execute_seconds = in_threads(4, execute_jobs)
        result = {
            "nodes": size,
            "creates_per_second": round(arguments.sessions / create_seconds, 2),
            "executes_per_second": round(arguments.executions / execute_seconds, 2),
            "direct": latency(nodes[0].url, owned[0], arguments.samples),
        }
        if size > 1:
            result["forwarded"] = latency(nodes[1].url, owned[0], arguments.samples)
        return result
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="a PostgreSQL server (e.g. from scripts/postgres start)")
    parser.add_argument("--corral", default=str(ROOT / "target" / "release" / "corral"))
    parser.add_argument("--python", default="python3")
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    results = [run_fleet(size, arguments) for size in (1, 3)]
    if arguments.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            line = (f"{result['nodes']} node(s): {result['creates_per_second']} creates/s, "
                    f"{result['executes_per_second']} executes/s, direct execute "
                    f"{result['direct']['median_ms']} ms median / {result['direct']['p95_ms']} ms p95")
            if "forwarded" in result:
                line += (f", forwarded {result['forwarded']['median_ms']} ms median / "
                         f"{result['forwarded']['p95_ms']} ms p95")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
