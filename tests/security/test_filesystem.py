"""The filesystem: a read-only host, a hidden data directory, private workspaces and scratch
space, no device nodes, no way around them through links or the cgroup filesystem."""

import json
import os
import uuid
from pathlib import Path

from sec_helpers import _cgroup_dirs_of
from sec_helpers import DENIED, MEMORY_MIB, PYTHON, contained, probe, run_ok


def test_write_to_system_directories(server, bystanders, attacker):
    """Creating files in /usr, /etc, /bin, /var, /root, /home, /opt, the repository and the
    interpreter's installation fails (read-only), and nothing appears on the host."""
    name = f"corral-evil-{uuid.uuid4().hex}"
    targets = ["/usr", "/etc", "/bin", "/var", "/var/tmp", "/root", "/home", "/opt",
               "/work", str(Path(__file__).parent), os.path.dirname(PYTHON), "/"]
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
for directory in {targets!r}:
    path = os.path.join(directory, {name!r})
    result[directory] = attempt(write_file, path, 'owned', 'w')
result['/etc/passwd append'] = attempt(write_file, '/etc/passwd', 'evil::0:0::/:/bin/sh\\n', 'a')
result['/usr/bin mkdir'] = attempt(os.mkdir, '/usr/bin/{name}')
result['/etc/hosts rename'] = attempt(os.rename, '/etc/hosts', '/etc/hosts.{name}')
result['/usr/bin/python3 chmod'] = attempt(os.chmod, '/usr/bin/python3', 0o777)
""")
        for target, outcome in result.items():
            # ENOENT: the directory is not in the sandbox at all (a checkout under /tmp).
            assert outcome in ("EROFS", "EACCES", "EPERM", "ENOENT"), f"{target}: {outcome} ({result})"
        for target in targets:
            assert not os.path.exists(os.path.join(target, name)), target


def test_write_into_the_data_directory(server, bystanders, attacker):
    """The server's data directory is hidden: nothing in it can be listed, created or
    opened (an empty, mode-0000, read-only tmpfs covers it)."""
    data_dir = str(server.data_dir)
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
data_dir = {data_dir!r}
result['list'] = attempt(os.listdir, data_dir)
if result['list'] == 'ok':
    result['entries'] = os.listdir(data_dir)
result['create'] = attempt(lambda: open(os.path.join(data_dir, 'evil'), 'w'))
result['mkdir'] = attempt(os.mkdir, os.path.join(data_dir, 'workspaces-evil'))
result['sqlite_exists'] = os.path.exists(os.path.join(data_dir, 'corral.sqlite3'))
result['runtime_exists'] = os.path.exists(os.path.join(data_dir, 'runtime'))
result['write_sqlite'] = attempt(lambda: open(os.path.join(data_dir, 'corral.sqlite3'), 'r+b'))
""")
        assert result["list"] in DENIED or result.get("entries") == [], result
        assert result["create"] in DENIED, result
        assert result["mkdir"] in DENIED, result
        assert result["write_sqlite"] in DENIED, result
        assert result["sqlite_exists"] is False and result["runtime_exists"] is False, result
        assert not (server.data_dir / "evil").exists()


def test_write_into_another_sessions_workspace(server, bystanders, attacker):
    """A bystander's workspace lives at DATA_DIR/workspaces/<id> on the host; from inside the
    attacker that path does not exist and cannot be written."""
    paths = [str(server.workspace_on_host(person.id)) for person in bystanders]
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
for path in {paths!r}:
    result[path] = {{
        'exists': os.path.exists(path),
        'write': attempt(write_file, os.path.join(path, 'planted.txt'), 'gotcha', 'w'),
        'overwrite': attempt(write_file, os.path.join(path, 'secret.txt'), 'gotcha', 'w'),
    }}
""")
        for path, outcome in result.items():
            assert outcome["exists"] is False, (path, outcome)
            assert outcome["write"] in DENIED and outcome["overwrite"] in DENIED, (path, outcome)
        for person in bystanders:
            body = run_ok(server, person.id, "sorted(os.listdir('/workspace')) if 'os' in dir() "
                          "else sorted(__import__('os').listdir('/workspace'))")
            assert body["result"]["text/plain"] == repr(["secret.txt"]), body


def test_read_another_sessions_workspace(server, bystanders, attacker):
    """The bystanders keep a secret in /workspace/secret.txt; the attacker's /workspace is its
    own, the host paths of theirs do not exist, and a search of the places a workspace could
    show up finds no secret."""
    paths = [str(server.workspace_on_host(person.id)) for person in bystanders]
    secrets_ = [person.secret for person in bystanders]
    data_dir = str(server.data_dir)
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import time
secrets_ = {secrets_!r}
result['own_workspace'] = sorted(os.listdir('/workspace'))
result['host_paths_exist'] = [os.path.exists(p) for p in {paths!r}]
result['host_paths_read'] = [attempt(read_text, os.path.join(p, 'secret.txt')) for p in {paths!r}]
found = []
deadline = time.monotonic() + 20
roots = ['/workspace', '/tmp', '/dev/shm', '/run', '/var/tmp', {data_dir!r}, '/proc/1/root', '/proc/1/cwd']
for root in roots:
    for directory, _, files in os.walk(root):
        if time.monotonic() > deadline:
            break
        for name in files:
            path = os.path.join(directory, name)
            try:
                with open(path, 'rb') as handle:
                    data = handle.read(1 << 16)
            except OSError:
                continue
            if any(secret.encode() in data for secret in secrets_):
                found.append(path)
result['found'] = found
""", timeout=60)
        assert result["own_workspace"] == [], result
        assert result["host_paths_exist"] == [False, False], result
        assert all(outcome in DENIED for outcome in result["host_paths_read"]), result
        assert result["found"] == [], result


def test_read_the_server_database(server, bystanders, attacker):
    """DATA_DIR/corral.sqlite3 (world-readable on the host, holding every session's code and
    output) is not visible: reading it, its -wal file, or any file under the data directory
    fails."""
    data_dir = str(server.data_dir)
    assert (server.data_dir / "corral.sqlite3").exists()
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
base = {data_dir!r}
for name in ('corral.sqlite3', 'corral.sqlite3-wal', 'corral.sqlite3-shm'):
    path = os.path.join(base, name)
    result[name] = {{'exists': os.path.exists(path), 'read': attempt(read_text, path)}}
""")
        for name, outcome in result.items():
            assert outcome["exists"] is False and outcome["read"] in DENIED, (name, outcome)


def test_read_the_server_config_file(server, bystanders, attacker):
    """The config file passed with --config is hidden (reads as empty)."""
    path = str(server.config_path)
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
result['read'] = attempt(read_text, {path!r})
result['content'] = read_text({path!r}) if result['read'] == 'ok' else None
result['write'] = attempt(write_file, {path!r}, '[sandbox]\\nmemory_mib = 99999\\n', 'w')
""")
        assert result["read"] in DENIED or result["content"] == "", result
        assert "memory_mib" not in (result["content"] or ""), result
        assert f"memory_mib = {MEMORY_MIB}" in server.config_path.read_text()


def test_symlink_tricks(server, bystanders, attacker):
    """Symlinks in the workspace to /etc/shadow, the database, a bystander's workspace and
    the init's root: reading through them fails; /etc/shadow itself is unreadable."""
    targets = {
        "shadow": "/etc/shadow",
        "database": str(server.data_dir / "corral.sqlite3"),
        "bystander": str(server.workspace_on_host(bystanders[0].id) / "secret.txt"),
        "init_root": "/proc/1/root/etc/shadow",
        "leak": str(server.leak_path),
    }
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
for label, target in {targets!r}.items():
    link = '/workspace/link-' + label
    os.symlink(target, link)
    result[label] = attempt(read_text, link)
result['shadow_direct'] = attempt(read_text, '/etc/shadow')
os.symlink('/', '/workspace/rootlink')
result['rootlink_data'] = attempt(os.listdir, '/workspace/rootlink' + {str(server.data_dir)!r})
""")
        for label, outcome in result.items():
            assert outcome in DENIED, (label, outcome, result)


def test_hardlink_to_host_files(server, bystanders, attacker):
    """Hard links from the workspace to /etc/shadow or the server's binary: EXDEV (another
    mount) or EPERM; nothing readable appears."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
result['shadow'] = attempt(os.link, '/etc/shadow', '/workspace/shadow')
result['binary'] = attempt(os.link, '/proc/1/exe', '/workspace/corral')
result['tmp_shadow'] = attempt(os.link, '/etc/shadow', '/tmp/shadow')
result['listing'] = sorted(os.listdir('/workspace'))
""")
        for label in ("shadow", "binary", "tmp_shadow"):
            assert result[label] in ("EXDEV", "EPERM", "EACCES", "ENOENT"), result
        assert result["listing"] == [], result


def test_create_device_nodes(server, bystanders, attacker):
    """mknod of a character device (/dev/mem's 1:1) or block device (the host disk) in the
    workspace, /tmp or /dev: PermissionError."""
    disk = os.stat("/").st_dev
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import stat
for directory in ('/workspace', '/tmp', '/dev', '/dev/shm'):
    result[directory + ' chr'] = attempt(os.mknod, directory + '/mem', stat.S_IFCHR | 0o666, os.makedev(1, 1))
    result[directory + ' blk'] = attempt(os.mknod, directory + '/disk', stat.S_IFBLK | 0o666, {disk})
""")
        for label, outcome in result.items():
            assert outcome in ("EPERM", "EACCES", "EROFS"), (label, result)


def test_tamper_with_the_driver_and_interpreter(server, bystanders, attacker):
    """The driver (/run/corral/driver.py, shared by every session) and the interpreter's
    site-packages are read-only: backdooring them for other sessions fails."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import site, sysconfig
result['driver'] = attempt(write_file, '/run/corral/driver.py', '# backdoor\\n', 'a')
result['driver_replace'] = attempt(os.rename, '/run/corral/driver.py', '/run/corral/old.py')
purelib = sysconfig.get_paths()['purelib']
result['sitecustomize'] = attempt(write_file, os.path.join(purelib, 'sitecustomize.py'), 'print(1)', 'w')
result['pth'] = attempt(write_file, os.path.join(purelib, 'zz-evil.pth'), 'import os', 'w')
stdlib = sysconfig.get_paths()['stdlib']
result['stdlib'] = attempt(write_file, os.path.join(stdlib, 'json', '__init__.py'), '#', 'a')
result['interpreter'] = attempt(lambda: open(sys.executable, 'ab'))
""")
        for label, outcome in result.items():
            assert outcome in ("EROFS", "EACCES", "EPERM", "EBUSY", "ETXTBSY"), (label, result)
        # A fresh session still gets the untouched driver.
        for person in bystanders:
            run_ok(server, person.id, "1 + 1")


def test_other_sessions_tmp_and_dev_shm(server, bystanders, attacker):
    """The bystanders wrote secret.txt into their /tmp and /dev/shm; the attacker's are
    private and empty of it."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
result['tmp'] = sorted(os.listdir('/tmp'))
result['shm'] = sorted(os.listdir('/dev/shm'))
result['read_tmp'] = attempt(read_text, '/tmp/secret.txt')
result['read_shm'] = attempt(read_text, '/dev/shm/secret.txt')
""")
        assert "secret.txt" not in result["tmp"] and "secret.txt" not in result["shm"], result
        assert result["read_tmp"] == "ENOENT" and result["read_shm"] == "ENOENT", result
        assert not Path("/tmp/secret.txt").exists() or all(
            Path("/tmp/secret.txt").read_text() != person.secret for person in bystanders
        )


def test_other_sessions_workspaces_absent_from_mount_table(server, bystanders, attacker):
    """The attacker's mount table must not hold the bystanders' workspace mounts (copies made
    when its namespace was cloned, covered by the data directory's tmpfs): they reveal the
    other live sessions' ids and host uids."""
    ids = [person.id for person in bystanders]
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
mountinfo = read_text('/proc/self/mountinfo')
result['lines'] = [line for line in mountinfo.splitlines()
                   if any(session_id in line for session_id in {ids!r})]
""")
        assert result["lines"] == [], (
            "other sessions' workspaces are mounted in the attacker's namespace:\n"
            + "\n".join(result["lines"])
        )


def test_escape_the_cgroup(server, bystanders, attacker):
    """The cgroup filesystem is read-only: raising its own memory limit, moving itself to the
    root cgroup, setting a release_agent or creating a child cgroup all fail, and the host still
    sees the original limit."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
groups = {}
for line in read_text('/proc/self/cgroup').splitlines():
    _, controllers, path = line.split(':', 2)
    for controller in controllers.split(','):
        groups[controller] = path
memory = '/sys/fs/cgroup/memory' + groups['memory']
pids = '/sys/fs/cgroup/pids' + groups['pids']
result['memory_cgroup'] = groups['memory']
result['raise_memory'] = attempt(write_file, memory + '/memory.limit_in_bytes', '-1', 'w')
result['raise_pids'] = attempt(write_file, pids + '/pids.max', 'max', 'w')
result['move_to_root'] = attempt(write_file, '/sys/fs/cgroup/memory/cgroup.procs', str(os.getpid()), 'w')
result['move_to_parent'] = attempt(write_file, '/sys/fs/cgroup/memory/corral/cgroup.procs', str(os.getpid()), 'w')
result['release_agent'] = attempt(write_file, '/sys/fs/cgroup/memory/release_agent', '/workspace/x', 'w')
result['notify'] = attempt(write_file, memory + '/notify_on_release', '1', 'w')
result['mkdir'] = attempt(os.mkdir, memory + '/child')
result['cgroup_after'] = read_text('/proc/self/cgroup')
""")
        for label in ("raise_memory", "raise_pids", "move_to_root", "move_to_parent",
                      "release_agent", "notify", "mkdir"):
            assert result[label] in ("EROFS", "EACCES", "EPERM", "ENOENT"), (label, result)
        assert "memory:" + result["memory_cgroup"] in result["cgroup_after"], result
        # From the host: every session cgroup of the server still has the configured limit.
        limits = [directory / "memory.limit_in_bytes"
                  for directory in _cgroup_dirs_of(server.process.pid)]
        for limit in limits:
            if limit.exists():
                assert int(limit.read_text()) == MEMORY_MIB * 1024 * 1024, limit
        assert json.dumps(result)  # keep the whole outcome in the failure message above


def test_read_the_host_cgroup_tree_and_sys(server, bystanders, attacker):
    """/sys holds only the CPU topology and the session's own cgroups, in a cgroup namespace:
    /proc/self/cgroup names no host path, the host's cgroup tree (other sessions' memory and
    CPU use, by name) is absent, and so are /sys's devices, kernel tunables and classes. The
    session still reads its own limits and the CPU count interpreters need."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import glob
result['sys'] = sorted(os.listdir('/sys'))
result['fs'] = sorted(os.listdir('/sys/fs'))
result['cgroup_lines'] = read_text('/proc/self/cgroup').splitlines()
result['corral_dirs'] = glob.glob('/sys/fs/cgroup/*/corral') + glob.glob('/sys/fs/cgroup/corral')
result['other_usage'] = sorted(glob.glob('/sys/fs/cgroup/**/memory.usage_in_bytes', recursive=True))
result['kernel'] = attempt(os.listdir, '/sys/kernel')
result['class_net'] = attempt(os.listdir, '/sys/class/net')
result['block'] = attempt(os.listdir, '/sys/block')
result['cpu_count'] = os.cpu_count()
result['online'] = read_text('/sys/devices/system/cpu/online').strip()
own = '/sys/fs/cgroup/memory/memory.limit_in_bytes'
result['own_limit'] = read_text(own).strip() if os.path.exists(own) else read_text('/sys/fs/cgroup/memory.max').strip()
result['write_sys'] = attempt(os.mkdir, '/sys/fs/cgroup/x')
""")
        assert result["sys"] == ["devices", "fs"], result
        assert result["fs"] == ["cgroup"], result
        for line in result["cgroup_lines"]:
            assert line.split(":", 2)[2] == "/", result
        assert result["corral_dirs"] == [], result
        # Only the session's own memory cgroup (at the top of its view) is there.
        assert result["other_usage"] in ([], ["/sys/fs/cgroup/memory/memory.usage_in_bytes"]), result
        for label in ("kernel", "class_net", "block"):
            assert result[label] == "ENOENT", (label, result)
        assert isinstance(result["cpu_count"], int) and result["cpu_count"] >= 1, result
        assert result["online"], result
        assert int(result["own_limit"]) == MEMORY_MIB * 1024 * 1024, result
        assert result["write_sys"] in ("EROFS", "EACCES", "EPERM"), result
