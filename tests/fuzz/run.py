"""Fuzzes every operation of every surface in a real corral server's /openapi.json with
schemathesis, with an admin key and without one, and fails on any 5xx, any status or body the
schema does not describe, or a server that stops answering.

    python tests/fuzz/run.py [--examples N] [--seed S] [--phases examples,coverage,fuzzing]

Starts `$CORRAL_BIN serve` (default target/debug/corral) on an ephemeral loopback port in a
fresh data directory, makes an admin key offline (`corral keys create`) and a live session
whose id is handed to every `{id}`/`{kernel_id}` parameter (so the fuzzer reaches past "not
found"), runs schemathesis twice (with the key, then without), checks the server is still up,
and stops it. `scripts/test` runs the bounded form; `--examples 100` is the long form.
The checks are the ones a schema makes true or false of a response; positive/negative data
acceptance is left out (the schema does not spell out every input rule, e.g. code size or
TTL ceilings, which are configuration).
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import json

START_DEADLINE_SECONDS = 60
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
])
# Short executions: fuzzed code that loops is cut off quickly.
CONFIG = """
[limits]
default_execution_timeout_seconds = 2
max_execution_timeout_seconds = 5
"""


def start_server(binary, data_dir, python):
    config = os.path.join(data_dir, "corral.toml")
    with open(config, "w") as file:
        file.write(CONFIG)
    process = subprocess.Popen(
        [binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", os.path.join(data_dir, "data"),
         "--python", python, "--config", config],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    found = threading.Event()
    address = {}
    log = []

    def read_log():
        for line in process.stderr:
            log.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                address["url"] = match.group(1)
                found.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not found.wait(START_DEADLINE_SECONDS):
        process.kill()
        raise SystemExit("corral did not start:\n" + "".join(log))
    return process, address["url"], log


def stop_server(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def request(url, method="GET", key=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req, timeout=60) as response:
        return response.status, json.loads(response.read() or b"null")


def schemathesis(venv_bin, url, key, session_id, arguments, workdir, label):
    config = os.path.join(workdir, f"schemathesis-{label}.toml")
    with open(config, "w") as file:
        file.write("[parameters]\n")
        for name in ("id", "kernel_id"):
            file.write(f'"path.{name}" = "{session_id}"\n')
    command = [
        os.path.join(venv_bin, "schemathesis"), "--config-file", config, "run", url + "/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(arguments.examples),
        "--seed", str(arguments.seed),
        "--phases", arguments.phases,
        "--workers", "1",
        "--request-timeout", "30",
        "--no-shrink",
        "--suppress-health-check", "all",
        "--warnings", "off",
    ]
    if key:
        command += ["--header", "Authorization: Bearer " + key]
    print(f"==> schemathesis ({label}): {' '.join(c if 'Bearer' not in c else 'Authorization: Bearer …' for c in command)}", flush=True)
    return subprocess.run(command, cwd=workdir).returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3, help="cases per operation and phase")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    arguments = parser.parse_args()
    binary = os.path.abspath(os.environ.get("CORRAL_BIN", "target/debug/corral"))
    python = os.environ.get("CORRAL_TEST_PYTHON", sys.executable)
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    workdir = tempfile.mkdtemp(prefix="corral-fuzz-")
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir)
    made = subprocess.run([binary, "keys", "create", "--scope", "admin", "--data-dir", data_dir],
                          capture_output=True, text=True, check=True)
    key = made.stdout.strip()
    process, url, log = start_server(binary, workdir, python)
    failures = []
    try:
        _, session = request(url + "/v1/sessions", "POST", key, {})
        for label, run_key in (("with-key", key), ("without-key", None)):
            if schemathesis(venv_bin, url, run_key, session["id"], arguments, workdir, label) != 0:
                failures.append(label)
        status, _ = request(url + "/healthz")
        if status != 200:
            failures.append("healthz after fuzzing")
        if any("panicked" in line for line in log):
            failures.append("a panic in the server log")
    finally:
        stop_server(process)
        if failures:
            print("".join(line for line in log if "ERROR" in line or "panicked" in line)[-20000:])
        shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        raise SystemExit("schemathesis found problems: " + ", ".join(failures))
    print("==> fuzzing found nothing", flush=True)


if __name__ == "__main__":
    main()
