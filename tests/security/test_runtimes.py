"""The attacks that apply to the JavaScript and Bash runtimes: they run in the same sandbox as
Python, so from a Node.js or bash session the workspace cannot be escaped, other sessions
cannot be seen or reached, the server's secrets stay hidden and the network is only the
session's own loopback. Python's bystanders must stay unharmed throughout."""

import json

import pytest
import requests

from sec_helpers import HTTP_TIMEOUT, contained, delete_session, execute

RESULT = "@@RUNTIME-RESULT@@"


@pytest.fixture(params=["javascript", "bash"])
def runtime_attacker(request, server, bystanders):
    """A session of each non-Python runtime (created while the bystanders are live)."""
    response = requests.post(server.url("/v1/sessions"), json={"runtime": request.param},
                             timeout=HTTP_TIMEOUT)
    assert response.status_code == 201, response.text
    session_id = response.json()["id"]
    try:
        yield request.param, session_id
    finally:
        delete_session(server, session_id)


def run(server, session_id, code, timeout=30.0):
    status, body = execute(server, session_id, code, timeout)
    assert status == 200, body
    return body


def outcome(body):
    """The JSON a probe printed after RESULT."""
    for line in reversed(body.get("stdout", "").splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise AssertionError(f"no result in {json.dumps(body)[:3000]}")


def js_probe(server, session_id, code):
    """Runs JavaScript that fills `result`; returns it."""
    body = run(server, session_id, "{ const result = {};\n" + code
               + f"\nconsole.log({RESULT!r} + JSON.stringify(result)); }}")
    assert body["status"] == "ok", body
    return outcome(body)


JS_TRY = """
const fs = require('fs');
const tryIt = (fn) => { try { fn(); return 'ok'; } catch (e) { return e.code || e.name; } };
"""


def test_runtime_sessions_cannot_escape_the_workspace(server, bystanders, runtime_attacker):
    """Writing to system directories, the data directory, the config file and the bystanders'
    workspaces (by their host paths) is refused; their secrets are nowhere to be read."""
    language, session_id = runtime_attacker
    targets = ["/usr/corral-attack", "/etc/corral-attack", str(server.data_dir / "attack"),
               *(str(server.workspace_on_host(person.id) / "attack") for person in bystanders)]
    reads = [str(server.config_path), str(server.data_dir / "corral.sqlite3"),
             *(str(server.workspace_on_host(person.id) / "secret.txt") for person in bystanders)]
    secrets_ = [person.secret for person in bystanders]
    with contained(server, bystanders):
        if language == "javascript":
            result = js_probe(server, session_id, JS_TRY + f"""
result.writes = {json.dumps(targets)}.map(p => tryIt(() => fs.writeFileSync(p, 'x')));
result.reads = {json.dumps(reads)}.map(p => tryIt(() => fs.readFileSync(p)));
const found = [];
for (const root of ['/workspace', '/tmp', '/dev/shm', '/run']) {{
  const walk = (dir) => {{
    let entries = [];
    try {{ entries = fs.readdirSync(dir, {{ withFileTypes: true }}); }} catch (e) {{ return; }}
    for (const entry of entries) {{
      const path = dir + '/' + entry.name;
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) {{
        try {{
          const data = fs.readFileSync(path, 'utf8');
          if ({json.dumps(secrets_)}.some(s => data.includes(s))) found.push(path);
        }} catch (e) {{}}
      }}
    }}
  }};
  walk(root);
}}
result.found = found;
""")
        else:
            script = "\n".join(
                [f"w=$( (echo x > {path}) 2>&1 && echo ok || echo refused ); echo \"write $w\""
                 for path in targets]
                + [f"r=$( (cat {path} >/dev/null) 2>&1 && echo ok || echo refused ); echo \"read $r\""
                   for path in reads]
                + ["found=$(grep -rlF -e " + " -e ".join(secrets_)
                   + " /workspace /tmp /dev/shm /run 2>/dev/null | tr '\\n' ' ')",
                   f"echo {RESULT}\"{{\\\"found\\\": \\\"$found\\\"}}\""])
            body = run(server, session_id, script)
            lines = body["stdout"].splitlines()
            result = {
                "writes": [line.split()[1] for line in lines if line.startswith("write ")],
                "reads": [line.split()[1] for line in lines if line.startswith("read ")],
                "found": outcome(body)["found"].split(),
            }
        assert len(result["writes"]) == len(targets), result
        assert "ok" not in result["writes"], result
        assert len(result["reads"]) == len(reads), result
        assert "ok" not in result["reads"], result
        assert result["found"] == [], result


def test_runtime_sessions_see_no_other_session(server, bystanders, runtime_attacker):
    """The process list holds only the session's own processes (no Python bystander, no
    server), the server's environment secret is absent, and killing every pid in sight
    harms nobody else."""
    language, session_id = runtime_attacker
    with contained(server, bystanders):
        if language == "javascript":
            result = js_probe(server, session_id, JS_TRY + """
const pids = fs.readdirSync('/proc').filter(n => /^\\d+$/.test(n));
const cmdline = (p) => { try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\\0').join(' '); } catch (e) { return ''; } };
result.commands = pids.map(cmdline);
result.env = JSON.stringify(process.env);
for (const p of pids) { const n = Number(p); if (n !== process.pid && n !== 1) { try { process.kill(n, 'SIGKILL'); } catch (e) {} } }
""")
            commands, environment = result["commands"], result["env"]
        else:
            body = run(server, session_id,
                       "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done;"
                       " echo ENV; env; kill -9 -1 2>/dev/null; true")
            listing, _, environment = body["stdout"].partition("ENV\n")
            commands = listing.splitlines()
        assert not any("corral serve" in command for command in commands), commands
        own_driver = {"javascript": "/run/corral/driver.js", "bash": "/run/corral/driver-bash.py"}
        assert any(own_driver[language] in command for command in commands), commands
        # Only this session's driver: no Python bystander's.
        assert not any("/run/corral/driver.py" in command for command in commands), commands
        assert len([command for command in commands if command.strip()]) < 10, commands
        assert server.env_secret not in environment
        assert "CORRAL" not in environment


def test_runtime_sessions_reach_no_network(server, bystanders, runtime_attacker):
    """The server's port on the host's loopback is another loopback inside (refused); outside
    addresses have no route; a Unix socket on the host is not there."""
    language, session_id = runtime_attacker
    host_socket = str(server.host_socket_path)
    with contained(server, bystanders):
        if language == "javascript":
            body = run(server, session_id, f"""
const net = require('net');
const attempt = (options) => new Promise(resolve => {{
  const socket = net.connect(options);
  socket.setTimeout(3000, () => {{ socket.destroy(); resolve('timeout'); }});
  socket.on('connect', () => {{ socket.destroy(); resolve('connected'); }});
  socket.on('error', (e) => resolve(e.code));
}});
const result = {{
  server: await attempt({{ host: '127.0.0.1', port: {server.port} }}),
  outside: await attempt({{ host: '1.1.1.1', port: 53 }}),
  private: await attempt({{ host: '10.255.255.1', port: 80 }}),
  unix: await attempt({{ path: {json.dumps(host_socket)} }}),
}};
console.log({RESULT!r} + JSON.stringify(result));
""")
            result = outcome(body)
        else:
            body = run(server, session_id, f"""
try() {{ (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && echo connected || echo refused; }}
echo {RESULT}"{{\\"server\\": \\"$(try 127.0.0.1 {server.port})\\", \\"outside\\": \\"$(try 1.1.1.1 53)\\", \\"private\\": \\"$(try 10.255.255.1 80)\\", \\"unix\\": \\"$(test -e {host_socket} && echo present || echo absent)\\"}}"
""")
            result = outcome(body)
        assert result["server"] in ("ECONNREFUSED", "refused"), result
        assert result["outside"] in ("ENETUNREACH", "refused"), result
        assert result["private"] in ("ENETUNREACH", "refused"), result
        assert result["unix"] in ("ENOENT", "absent"), result
