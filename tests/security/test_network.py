"""Networking and IPC: each session has its own network namespace with only loopback, and
its own IPC namespace. Nothing here ever sends a packet off the host: the "outside" addresses
are unreachable inside the sandbox, which has no route at all."""

import secrets
import select

import requests

from sec_helpers import contained, probe, run_ok


def test_connect_to_the_server_port(server, bystanders, attacker):
    """The server listens on 127.0.0.1:PORT of the host; inside the sandbox that loopback is
    another one: connection refused (also on ::1 and 0.0.0.0)."""
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import socket
def connect(family, address):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.connect(address)
        return 'connected'
    except OSError as error:
        return _errno.errorcode.get(error.errno, type(error).__name__)
    finally:
        sock.close()
result['v4'] = connect(socket.AF_INET, ('127.0.0.1', {server.port}))
result['any'] = connect(socket.AF_INET, ('0.0.0.0', {server.port}))
result['v6'] = connect(socket.AF_INET6, ('::1', {server.port}))
""")
        assert result["v4"] == "ECONNREFUSED", result
        assert result["any"] == "ECONNREFUSED", result
        assert result["v6"] in ("ECONNREFUSED", "EADDRNOTAVAIL", "ENETUNREACH", "EAFNOSUPPORT"), result


def test_connect_to_an_outside_address(server, bystanders, attacker):
    """TCP to 10.255.255.1:80 and 1.1.1.1:53, UDP to 1.1.1.1:53, IPv6 to 2606:4700:4700::1111:
    network unreachable (the namespace has only lo, no route); raw and packet sockets are
    refused."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import socket
def tcp(family, address):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.connect(address)
        return 'connected'
    except OSError as error:
        return _errno.errorcode.get(error.errno, type(error).__name__)
    finally:
        sock.close()
result['tcp_private'] = tcp(socket.AF_INET, ('10.255.255.1', 80))
result['tcp_public'] = tcp(socket.AF_INET, ('1.1.1.1', 53))
result['tcp_v6'] = tcp(socket.AF_INET6, ('2606:4700:4700::1111', 53))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
result['udp'] = attempt(udp.sendto, b'\\0' * 12, ('1.1.1.1', 53))
udp.close()
result['raw'] = attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
result['packet'] = attempt(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0)
result['interfaces'] = [name for _, name in socket.if_nameindex()]
result['routes'] = read_text('/proc/net/route').splitlines()[1:]
""")
        assert result["tcp_private"] == "ENETUNREACH", result
        assert result["tcp_public"] == "ENETUNREACH", result
        assert result["tcp_v6"] in ("ENETUNREACH", "EADDRNOTAVAIL", "EAFNOSUPPORT"), result
        assert result["udp"] == "ENETUNREACH", result
        assert result["raw"] in ("EPERM", "EACCES"), result
        assert result["packet"] in ("EPERM", "EACCES"), result
        assert result["interfaces"] == ["lo"], result
        assert result["routes"] == [], result


def test_connect_to_a_host_abstract_socket(server, bystanders, attacker):
    """An abstract UNIX socket listening on the host (abstract names are per network
    namespace): connection refused, and the host listener sees nobody."""
    name = server.abstract_name
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(3)
result['connect'] = attempt(sock.connect, {name!r})
sock.close()
""")
        assert result["connect"] == "ECONNREFUSED", result
        readable, _, _ = select.select([server.abstract_socket], [], [], 0)
        assert not readable, "a session connected to the host's abstract socket"


def test_connect_to_a_host_unix_socket_file(server, bystanders, attacker):
    """A root-only (0600) UNIX socket file on the host, in a directory the sandbox shows
    read-only: connecting is refused (EACCES: the session is not the host's root)."""
    path = str(server.host_socket_path)
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(3)
result['exists'] = os.path.exists({path!r})
result['connect'] = attempt(sock.connect, {path!r})
sock.close()
""")
        assert result["connect"] in ("EACCES", "EPERM", "ENOENT", "ECONNREFUSED"), result
        readable, _, _ = select.select([server.host_socket], [], [], 0)
        assert not readable, "a session connected to the host's UNIX socket"


def test_connect_to_a_world_writable_host_unix_socket(server, bystanders, attacker):
    """A UNIX socket file any local user may connect to (0777, like many services' sockets),
    outside the replaced /run and /tmp: the sandbox's read-only view of the host must not be a
    way to reach host services, so the connection must fail (and the host sees nobody)."""
    path = str(server.public_socket_path)
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(3)
result['exists'] = os.path.exists({path!r})
result['connect'] = attempt(sock.connect, {path!r})
if result['connect'] == 'ok':
    result['send'] = attempt(sock.sendall, b'hello from a session')
sock.close()
""")
        readable, _, _ = select.select([server.public_socket], [], [], 0)
        accepted = b""
        if readable:
            connection, _ = server.public_socket.accept()
            connection.settimeout(3)
            try:
                accepted = connection.recv(100)
            except OSError:
                pass
            connection.close()
        assert result["connect"] in ("EACCES", "EPERM", "ENOENT", "ECONNREFUSED"), (
            f"a session reached a host service's UNIX socket ({result}); the host read {accepted!r}")


def test_connect_to_another_sessions_tcp_listener(server, bystanders, attacker):
    """A bystander listens on 127.0.0.1:PORT in its sandbox (and can reach itself); the
    attacker's 127.0.0.1:PORT is another loopback: refused."""
    victim = bystanders[0].id
    body = run_ok(server, victim, """
import socket
_listener = socket.socket()
_listener.bind(('127.0.0.1', 0))
_listener.listen(8)
_probe = socket.create_connection(_listener.getsockname(), timeout=3)
_probe.close()
_listener.getsockname()[1]
""")
    port = int(body["result"]["text/plain"])
    try:
        with contained(server, bystanders):
            result = probe(server, attacker, f"""
import socket
sock = socket.socket()
sock.settimeout(3)
result['connect'] = attempt(sock.connect, ('127.0.0.1', {port}))
sock.close()
""")
            assert result["connect"] == "ECONNREFUSED", result
    finally:
        run_ok(server, victim, "_listener.close()")


def test_connect_to_another_sessions_abstract_socket(server, bystanders, attacker):
    """A bystander listens on an abstract UNIX socket; the attacker cannot connect to it
    (another network namespace)."""
    victim = bystanders[0].id
    name = "\0corral-bystander-" + secrets.token_hex(8)
    run_ok(server, victim, f"""
import socket
_abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
_abstract.bind({name!r})
_abstract.listen(8)
""")
    try:
        with contained(server, bystanders):
            result = probe(server, attacker, f"""
import socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(3)
result['connect'] = attempt(sock.connect, {name!r})
sock.close()
""")
            assert result["connect"] == "ECONNREFUSED", result
    finally:
        run_ok(server, victim, "_abstract.close()")


def test_reach_another_sessions_sysv_ipc(server, bystanders, attacker):
    """A bystander creates a world-accessible System V shared memory segment and message queue
    under a known key; in the attacker's IPC namespace that key does not exist."""
    victim = bystanders[0].id
    key = 0x5EC0000 + secrets.randbelow(0xFFFF)
    setup = f"""
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT, IPC_RMID = 0o1000, 0
_shm = _libc.shmget({key}, 4096, IPC_CREAT | 0o666)
_msg = _libc.msgget({key}, IPC_CREAT | 0o666)
(_shm >= 0, _msg >= 0)
"""
    body = run_ok(server, victim, setup)
    assert body["result"]["text/plain"] == "(True, True)", body
    try:
        with contained(server, bystanders):
            result = probe(server, attacker, f"""
result['shmget'] = [_libc.shmget({key}, 0, 0), _errno.errorcode.get(_ctypes.get_errno())]
result['msgget'] = [_libc.msgget({key}, 0), _errno.errorcode.get(_ctypes.get_errno())]
result['visible'] = [line for line in read_text('/proc/sysvipc/shm').splitlines()[1:]
                     + read_text('/proc/sysvipc/msg').splitlines()[1:]
                     if line.split() and line.split()[0] == str({key})]
""")
            assert result["shmget"] == [-1, "ENOENT"], result
            assert result["msgget"] == [-1, "ENOENT"], result
            assert result["visible"] == [], result
    finally:
        run_ok(server, victim, "_libc.shmctl(_shm, IPC_RMID, None); _libc.msgctl(_msg, IPC_RMID, None)")


# A session with a network (slirp4netns + nftables, see docs/network.md) cannot widen it from
# inside: it has no capabilities in its namespaces, so routes, rules, name files and raw
# sockets stay as corral set them before its code ran.

NETWORKED = {"allow": ["host.corral.internal:9", "svc.test:9"]}


def create_networked_session(server):
    response = requests.post(server.url("/v1/sessions"), json={"network": NETWORKED}, timeout=30)
    assert response.status_code == 201, response.text
    assert sorted(response.json()["network"]["allow"]) == sorted(NETWORKED["allow"]), response.text
    return response.json()["id"]


def test_a_networked_session_cannot_change_its_routes_rules_or_names(server, bystanders):
    session = create_networked_session(server)
    with contained(server, bystanders):
        result = probe(server, session, """
import subprocess, socket
def run(*command):
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=10)
        return done.returncode
    except FileNotFoundError:
        return 'missing'
result['route_del'] = run('/usr/sbin/ip', 'route', 'del', 'default')
result['route_add'] = run('/usr/sbin/ip', 'route', 'add', '169.254.0.0/16', 'dev', 'tap0')
result['addr_add'] = run('/usr/sbin/ip', 'addr', 'add', '10.0.2.200/24', 'dev', 'tap0')
result['nft_flush'] = run('/usr/sbin/nft', 'flush', 'ruleset')
result['nft_list'] = run('/usr/sbin/nft', 'list', 'ruleset')
result['routes'] = subprocess.run(['/usr/sbin/ip', 'route'], capture_output=True, text=True).stdout
result['resolv_write'] = attempt(open, '/etc/resolv.conf', 'w')
result['hosts_write'] = attempt(open, '/etc/hosts', 'a')
result['hosts'] = open('/etc/hosts').read()
MS_BIND = 4096
result['mount_over_hosts'] = 'ok' if _libc.mount(b'/tmp', b'/etc/hosts', None, MS_BIND, None) == 0 else _errno.errorcode.get(_ctypes.get_errno())
result['umount_hosts'] = 'ok' if _libc.umount2(b'/etc/hosts', 2) == 0 else _errno.errorcode.get(_ctypes.get_errno())
result['raw'] = attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
result['packet'] = attempt(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0)
def connect(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect((host, port))
        return 'connected'
    except OSError as error:
        return _errno.errorcode.get(error.errno, type(error).__name__)
    finally:
        sock.close()
result['metadata'] = connect('169.254.169.254', 80)
result['server'] = connect('10.0.2.2', %d)
result['slirp_dns'] = connect('10.0.2.3', 53)
result['names_other_port'] = connect('10.0.2.50', 22)
def dns(name):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(3)
    query = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00' + b''.join(bytes([len(part)]) + part.encode() for part in name.split('.')) + b'\\x00\\x00\\x01\\x00\\x01'
    try:
        udp.sendto(query, ('10.0.2.3', 53))
        reply = udp.recvfrom(512)[0]
        return {'rcode': reply[3] & 15, 'answers': reply[7], 'tail': list(reply[-4:])}
    except OSError as error:
        return _errno.errorcode.get(error.errno, type(error).__name__) if error.errno else type(error).__name__
    finally:
        udp.close()
result['dns_outside'] = dns('example.com')
result['dns_allowed'] = dns('svc.test')
result['resolve_outside'] = attempt(socket.getaddrinfo, 'example.com', 80)
""" % server.port)
    for key in ("route_del", "route_add", "addr_add", "nft_flush", "nft_list"):
        assert result[key] not in (0, "missing"), result
    assert "default via 10.0.2.2" in result["routes"], result
    assert result["resolv_write"] in ("EROFS", "EACCES", "EPERM"), result
    assert result["hosts_write"] in ("EROFS", "EACCES", "EPERM"), result
    assert "10.0.2.50\tsvc.test" in result["hosts"], result
    assert result["mount_over_hosts"] == "EPERM", result
    assert result["umount_hosts"] == "EPERM", result
    assert result["raw"] == "EPERM", result
    assert result["packet"] == "EPERM", result
    for key in ("metadata", "server", "slirp_dns", "names_other_port"):
        assert result[key] != "connected", result
    # The session's DNS answers only its own names: others are NXDOMAIN, never forwarded.
    assert result["dns_outside"] == {"rcode": 3, "answers": 0, "tail": result["dns_outside"]["tail"]}, result
    assert result["dns_allowed"]["rcode"] == 0 and result["dns_allowed"]["tail"] == [10, 0, 2, 50], result
    assert result["resolve_outside"] != "ok", result


def test_the_proxy_refuses_a_name_the_session_was_not_given(server, bystanders):
    """Connecting to the proxy with another name in the HTTP Host or without any name is
    refused, whatever address the session aims at."""
    session = create_networked_session(server)
    with contained(server, bystanders):
        result = probe(server, session, """
import socket
def ask(host_header):
    sock = socket.create_connection(('svc.test', 9), timeout=10)
    try:
        sock.sendall(('GET / HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n' % host_header).encode())
        return sock.recv(200).decode(errors='replace').split('\\r\\n')[0]
    except OSError as error:
        return _errno.errorcode.get(error.errno, type(error).__name__)
    finally:
        sock.close()
result['other'] = ask('metadata.google.internal')
result['address'] = ask('169.254.169.254')
result['host_loopback'] = ask('host.corral.internal')
""")
    for key in ("other", "address", "host_loopback"):
        assert result[key].startswith("HTTP/1.1 403"), result
