"""Resource exhaustion: processes, threads, memory, CPU, disk, output, descriptors, exec size.

The server runs with memory_mib=256, max_processes=64, cpus=1, workspace_mib=64,
max_open_files=256 and a 256 KiB output cap per stream (see sec_helpers.CONFIG).
"""

import threading
import time
import uuid
from pathlib import Path

import requests

from sec_helpers import _cgroup_dirs_of
from sec_helpers import (
    MAX_OPEN_FILES,
    MAX_PROCESSES,
    MIB,
    OUTPUT_CAP_BYTES,
    WORKSPACE_MIB,
    contained,
    describe,
    execute,
    probe,
    run_ok,
    session_view,
    wait_until,
)


def assert_memory_contained(server, session_id, status, body):
    """A memory bomb either raised MemoryError in the cell or got the worker OOM-killed (the
    session is then dead with state_reason 'memory limit exceeded')."""
    assert status == 200, f"HTTP {status}: {describe(body)}"
    if body["status"] == "error":
        assert body["error"]["ename"] == "MemoryError", describe(body)
        return "MemoryError"
    assert body["status"] == "killed", describe(body)
    view = wait_until(
        lambda: (lambda v: v if v["state"] == "dead" else None)(session_view(server, session_id)), 20
    )
    assert view, f"session not dead after the kill: {session_view(server, session_id)}"
    assert view["state_reason"] == "memory limit exceeded", view
    return "killed"


def test_fork_bomb(server, bystanders, attacker):
    """A self-replicating fork bomb (every child forks too) for 5 seconds: fork fails with
    EAGAIN at the pids limit; the process count never passes max_processes."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import time, errno
me = os.getpid()
end = time.monotonic() + 5
first_error = None
failures = 0
peak = 0
while time.monotonic() < end:
    try:
        os.fork()
    except OSError as error:
        failures += 1
        if first_error is None:
            first_error = (type(error).__name__, errno.errorcode.get(error.errno))
        if os.getpid() == me:
            peak = max(peak, sum(1 for name in os.listdir('/proc') if name.isdigit()))
        time.sleep(0.01)
if os.getpid() != me:
    os._exit(0)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
result = {'failures': failures, 'first_error': first_error, 'peak': peak}
""", timeout=60)
        assert result["failures"] > 0, result
        assert result["first_error"] == ["BlockingIOError", "EAGAIN"], result
        # +1: the sandbox init is in the namespace but was counted before the limit applied.
        assert result["peak"] <= MAX_PROCESSES + 1, result
        run_ok(server, attacker, "1 + 1")


def test_thread_bomb(server, bystanders, attacker):
    """Starting threads until it fails: the pids limit (threads count) stops it below 64."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import threading
stop = threading.Event()
threads = []
failure = None
try:
    for _ in range(10000):
        thread = threading.Thread(target=stop.wait)
        thread.start()
        threads.append(thread)
except Exception as error:
    failure = (type(error).__name__, str(error))
stop.set()
for thread in threads:
    thread.join()
result = {'started': len(threads), 'failure': failure}
""")
        assert result["failure"] is not None, result
        assert result["failure"][0] == "RuntimeError", result
        assert result["started"] < MAX_PROCESSES, result


def test_memory_bomb_in_python(server, bystanders, attacker):
    """bytearray growth without end: MemoryError, or the worker is OOM-killed alone."""
    with contained(server, bystanders):
        status, body = execute(server, attacker, """
chunks = bytearray()
while True:
    chunks.extend(b'x' * (8 << 20))
""", timeout=60)
        outcome = assert_memory_contained(server, attacker, status, body)
        print(f"memory bomb outcome: {outcome}")


def test_memory_bomb_in_subprocess(server, bystanders, attacker):
    """A child python allocating without end is killed by the cgroup's OOM killer (non-zero exit);
    the worker either survives (and says so) or dies with 'memory limit exceeded'."""
    with contained(server, bystanders):
        status, body = execute(server, attacker, """
import subprocess
child = subprocess.run(
    ['python3', '-c', 'x = bytearray()\\nwhile True: x.extend(b"x" * (8 << 20))'],
    capture_output=True, timeout=60)
print('child exit', child.returncode)
""", timeout=90)
        assert status == 200, describe(body)
        if body["status"] == "ok":
            code = int(body["stdout"].split("child exit")[1].split()[0])
            assert code != 0, describe(body)
            assert code in (-9, 1, 137), f"unexpected child exit {code}: {describe(body)}"
            run_ok(server, attacker, "1 + 1")
        else:
            assert_memory_contained(server, attacker, status, body)


def test_cpu_spin_does_not_starve_other_sessions(server, bystanders, attacker):
    """Four threads hashing (GIL released) for 3 s: the session gets about one CPU (cpus = 1,
    the host has more), and meanwhile a bystander's small job completes. The spinner's
    execution ends by its timeout."""
    spinner = {}

    def spin():
        spinner["response"] = execute(server, attacker, """
import hashlib, os, threading, time
block = b'x' * (1 << 20)
end = time.monotonic() + 3
def burn():
    while time.monotonic() < end:
        hashlib.sha256(block).digest()
start_wall, start_cpu = time.monotonic(), sum(os.times()[:2])
threads = [threading.Thread(target=burn) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ratio = (sum(os.times()[:2]) - start_cpu) / (time.monotonic() - start_wall)
print('cpu ratio %.3f' % ratio, flush=True)
while True:
    time.sleep(0.05)
""", timeout=6)

    with contained(server, bystanders):
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        busy = wait_until(lambda: session_view(server, attacker)["state"] == "busy", 20)
        assert busy, "the spinner never started"
        time.sleep(0.5)
        # Not a speed assertion: the other session's job just has to complete.
        response = requests.post(
            server.url(f"/v1/sessions/{bystanders[0].id}/executions"),
            json={"code": "sum(range(100000))", "timeout": 30},
            timeout=60,
        )
        assert response.status_code == 200 and response.json()["status"] == "ok", response.text
        assert response.json()["result"]["text/plain"] == str(sum(range(100000)))
        thread.join(timeout=90)
        assert not thread.is_alive(), "the spinner's execution did not end"
        status, body = spinner["response"]
        assert status == 200 and body["status"] == "timeout", describe(body)
        ratio = float(body["stdout"].split("cpu ratio")[1].split()[0])
        # Four busy threads on a multi-core host would use every core; the cgroup's CFS quota
        # holds the session to about one (on a host that gives less, this cannot fail, so the
        # quota itself is checked from the host too).
        assert ratio < 1.5, f"session used {ratio:.2f} CPUs with cpus = 1"
        # From the host (sessions see no host cgroup paths): every session cgroup of the
        # server holds its sessions to at most one CPU.
        quotas = []
        for directory in _cgroup_dirs_of(server.process.pid):
            if (directory / "cpu.cfs_quota_us").exists():
                quotas.append((int((directory / "cpu.cfs_quota_us").read_text()),
                               int((directory / "cpu.cfs_period_us").read_text())))
            elif (directory / "cpu.max").exists():
                quotas.append(tuple(map(int, (directory / "cpu.max").read_text().split())))
        assert quotas, "no session cgroup with a CPU quota found on the host"
        for quota, period in quotas:
            assert 0 < quota <= period, f"CPU quota {quota}/{period} allows more than one CPU"
        run_ok(server, attacker, "1 + 1")


def test_fill_workspace(server, bystanders, attacker):
    """Writing without end in /workspace: one file stops at EFBIG (RLIMIT_FSIZE) or ENOSPC,
    many files stop at ENOSPC near workspace_mib; after deleting them the session works."""
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import errno, glob
chunk = b'\\0' * (4 << 20)
def fill(path, chunks):
    written = 0
    try:
        with open(path, 'wb') as handle:
            for _ in range(chunks):
                handle.write(chunk)
                handle.flush()
                written += len(chunk)
    except OSError as error:
        return written, errno.errorcode.get(error.errno)
    return written, None
single = fill('/workspace/big', 64)
os.remove('/workspace/big')
total, many_error = 0, None
for index in range(64):
    written, many_error = fill('/workspace/fill%d' % index, 4)
    total += written
    if many_error:
        break
used = sum(os.path.getsize(p) for p in glob.glob('/workspace/fill*'))
for path in glob.glob('/workspace/fill*'):
    os.remove(path)
result = {{'single': single, 'many_error': many_error, 'used': used}}
""", timeout=60)
        assert result["single"][1] in ("EFBIG", "ENOSPC"), result
        assert result["single"][0] <= WORKSPACE_MIB * MIB, result
        assert result["many_error"] == "ENOSPC", result
        assert result["used"] <= WORKSPACE_MIB * MIB, result
        body = run_ok(server, attacker, "open('/workspace/after', 'wb').write(b'y' * (1 << 20))")
        assert body["result"]["text/plain"] == str(1 << 20)


def test_fill_tmp_and_dev_shm(server, bystanders, attacker):
    """/tmp and /dev/shm are private, size-limited tmpfs: filling them stops at ENOSPC/EFBIG,
    and nothing lands in the host's /tmp or /dev/shm."""
    marker = f"corral-fill-{uuid.uuid4().hex}"
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import errno
chunk = b'\\0' * (4 << 20)
result = {{}}
for directory in ('/tmp', '/dev/shm'):
    written, error_name, index = 0, None, 0
    try:
        while index < 64:
            with open('%s/{marker}-%d' % (directory, index), 'wb') as handle:
                for _ in range(4):
                    handle.write(chunk)
                    handle.flush()
                    written += len(chunk)
            index += 1
    except OSError as error:
        error_name = errno.errorcode.get(error.errno)
    for name in os.listdir(directory):
        if name.startswith('{marker}'):
            os.remove(os.path.join(directory, name))
    result[directory] = [written, error_name]
""", timeout=60)
        for directory in ("/tmp", "/dev/shm"):
            written, error_name = result[directory]
            assert error_name in ("ENOSPC", "EFBIG"), result
            assert written <= WORKSPACE_MIB * MIB, result
            leaked = list(Path(directory).glob(marker + "*"))
            assert not leaked, f"the session's files appeared on the host: {leaked}"
        run_ok(server, attacker, "open('/tmp/after', 'w').write('fine')")


def test_print_without_end(server, bystanders, attacker):
    """Printing forever with a short timeout: the execution times out, its output is capped
    (truncated: true) and the server stays fine."""
    with contained(server, bystanders):
        status, body = execute(server, attacker, """
line = 'x' * 1023
while True:
    print(line)
""", timeout=3)
        assert status == 200, describe(body)
        assert body["status"] == "timeout", describe(body)
        assert body["truncated"] is True, describe(body)
        assert len(body["stdout"].encode()) <= OUTPUT_CAP_BYTES + 4096, len(body["stdout"])
        run_ok(server, attacker, "1 + 1")


def test_too_many_open_files(server, bystanders, attacker):
    """Opening files until it fails: EMFILE at max_open_files (RLIMIT_NOFILE)."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import errno
opened, failure = [], None
try:
    for _ in range(100000):
        opened.append(os.open('/dev/null', os.O_RDONLY))
except OSError as error:
    failure = errno.errorcode.get(error.errno)
for descriptor in opened:
    os.close(descriptor)
result = {'opened': len(opened), 'failure': failure}
""")
        assert result["failure"] == "EMFILE", result
        assert result["opened"] <= MAX_OPEN_FILES, result


def test_huge_argv_and_environment_exec(server, bystanders, attacker):
    """exec with a 1 MiB argument, 64 MiB of arguments, or a 1 MiB environment variable: the
    kernel refuses (E2BIG) and the session carries on."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import subprocess
def try_exec(args, env=None):
    try:
        subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        return 'ok'
    except OSError as error:
        return _errno.errorcode.get(error.errno, str(error.errno))
result['one_big_arg'] = try_exec(['true', 'a' * (1 << 20)])
result['many_args'] = try_exec(['true'] + ['b' * 4096] * (16 * 1024))
result['big_env'] = try_exec(['true'], env={'BIG': 'c' * (1 << 20)})
""", timeout=60)
        assert result == {"one_big_arg": "E2BIG", "many_args": "E2BIG", "big_env": "E2BIG"}, result
        run_ok(server, attacker, "1 + 1")
