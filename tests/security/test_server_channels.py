"""Attacks on the server through the channels a session legitimately has: its control socket
(fd 3 of the worker) and its outputs. The server must stay up and bounded."""

import json

from sec_helpers import (
    OUTPUT_CAP_BYTES,
    contained,
    describe,
    execute,
    run_ok,
    session_view,
    wait_until,
)


def server_rss_kib(server):
    with open(f"/proc/{server.process.pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def assert_session_ok_or_dead_alone(server, session_id, status, body):
    assert status == 200, describe(body)
    if body["status"] in ("ok", "error"):
        run_ok(server, session_id, "1 + 1")
        return
    assert body["status"] == "killed", describe(body)
    dead = wait_until(lambda: session_view(server, session_id)["state"] == "dead", 20)
    assert dead, session_view(server, session_id)


def test_control_socket_oversized_frame(server, bystanders, attacker):
    """The cell writes a frame header announcing 4 GiB (over the 64 MiB frame limit) to the
    control socket: the server drops that worker (or ignores it); it stays healthy."""
    with contained(server, bystanders):
        status, body = execute(server, attacker, """
import os
os.write(3, (0xFFFFFFFF).to_bytes(4, 'big') + b'garbage' * 100)
import time
time.sleep(2)
print('still here')
""", timeout=20)
        assert_session_ok_or_dead_alone(server, attacker, status, body)


def test_control_socket_malformed_and_forged_frames(server, bystanders, attacker):
    """The cell writes a malformed JSON frame and frames of unknown types / foreign execution
    ids to the control socket: the server stays healthy and the session either carries on or
    is marked dead on its own."""
    with contained(server, bystanders):
        status, body = execute(server, attacker, """
import os, json
def frame(payload):
    return len(payload).to_bytes(4, 'big') + payload
os.write(3, frame(json.dumps({'type': 'done', 'id': 'not-this-execution', 'status': 'ok'}).encode()))
os.write(3, frame(json.dumps({'type': 'ready', 'protocol': 99, 'language': 'x', 'language_version': 'x', 'pid': 1}).encode()))
os.write(3, frame(json.dumps({'type': 'no-such-type', 'id': 'x'}).encode()))
os.write(3, frame(b'{not json at all'))
import time
time.sleep(2)
print('still here')
""", timeout=20)
        assert_session_ok_or_dead_alone(server, attacker, status, body)


def test_rich_output_flood(server, bystanders, attacker):
    """display() of 16 strings of 4 MiB each, and a 16 MiB last-expression result: the output
    cap (256 KiB per stream here) must bound what one execution makes the server hold, return
    and store; without it a session can exhaust the server's memory and the store's disk."""
    rss_before = server_rss_kib(server)
    with contained(server, bystanders):
        status_display, body_display = execute(server, attacker, """
for index in range(16):
    display('x' * (4 << 20))
""", timeout=60)
        status_result, body_result = execute(server, attacker, "'y' * (16 << 20)", timeout=60)
        rss_after = server_rss_kib(server)
        assert status_display == 200 and status_result == 200, (status_display, status_result)
        display_bytes = len(json.dumps(body_display.get("outputs", [])))
        result_bytes = len(json.dumps(body_result.get("result")))
        bound = 4 * OUTPUT_CAP_BYTES
        assert display_bytes <= bound and result_bytes <= bound, (
            f"one execution returned {display_bytes} bytes of displays and a {result_bytes}-byte "
            f"result with output_cap_bytes = {OUTPUT_CAP_BYTES} (truncated: "
            f"{body_display.get('truncated')}/{body_result.get('truncated')}); server RSS "
            f"{rss_before} KiB -> {rss_after} KiB")
