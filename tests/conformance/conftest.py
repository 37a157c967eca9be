"""Fixtures for the conformance tests: a real corral server on an ephemeral loopback port.

The server binary comes from $CORRAL_BIN (scripts/test sets it); sessions run on this
interpreter (the test venv), so they can import matplotlib and pandas.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import pytest
import requests

START_DEADLINE_SECONDS = 60


class Server:
    def __init__(self, base_url, process):
        self.base_url = base_url
        self.process = process
        self.http = requests.Session()

    def url(self, path):
        return self.base_url + path


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("CORRAL_BIN", "target/debug/corral")
    data_dir = tempfile.mkdtemp(prefix="corral-conformance-")
    process = subprocess.Popen(
        [binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir, "--python", sys.executable],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = threading.Event()
    address = {}

    def read_log():
        for line in process.stderr:
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                address["url"] = match.group(1)
                found.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not found.wait(START_DEADLINE_SECONDS):
            raise RuntimeError("corral did not start")
        yield Server(address["url"], process)
    finally:
        stop(process, data_dir)


def stop(process, data_dir):
    """SIGTERM (graceful: sessions closed, workspaces released), SIGKILL if that hangs, then
    unmount any workspace a killed server left (they are links to tmpfs mounts under /run)."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    workspaces = os.path.join(data_dir, "workspaces")
    if os.path.isdir(workspaces):
        for name in os.listdir(workspaces):
            link = os.path.join(workspaces, name)
            if os.path.islink(link):
                target = os.readlink(link)
                subprocess.run(["umount", "-l", target], check=False, timeout=30,
                               stderr=subprocess.DEVNULL)
                try:
                    os.rmdir(target)
                except OSError:
                    pass
    subprocess.run(["rm", "-rf", "--one-file-system", data_dir], check=False, timeout=60)
