"""Privileged kernel interfaces: every one must be refused to a session (no capabilities,
no_new_privs, the seccomp deny-list). Raw syscalls use x86_64 numbers."""

import os
import platform
import socket

import pytest

from sec_helpers import DENIED, contained, probe

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 syscall numbers")

SYS = {
    "ptrace": 101, "mount": 165, "umount2": 166, "unshare": 272, "setns": 308, "chroot": 161,
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "clone": 56, "clone3": 435, "fsopen": 430,
    "open_tree": 428, "pivot_root": 155, "process_vm_readv": 310, "kexec_load": 246,
    "capset": 126, "exit_group": 231, "iopl": 172, "ioperm": 173, "open_by_handle_at": 304,
    "userfaultfd": 323, "swapon": 167, "settimeofday": 164,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}

NS = {"NEWNS": 0x00020000, "NEWCGROUP": 0x02000000, "NEWUTS": 0x04000000,
      "NEWIPC": 0x08000000, "NEWUSER": 0x10000000, "NEWPID": 0x20000000,
      "NEWNET": 0x40000000, "NEWTIME": 0x00000080}

SYS_PRELUDE = f"SYS = {SYS!r}\nNS = {NS!r}\n"


def kernel_probe(server, session_id, code, timeout=30.0):
    return probe(server, session_id, SYS_PRELUDE + code, timeout)


def test_ptrace(server, bystanders, attacker):
    """PTRACE_TRACEME, PTRACE_ATTACH to the init and to its own child, PTRACE_SEIZE, and
    process_vm_readv of the init: all EPERM."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
import signal, time
PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206
result['traceme'] = syscall(SYS['ptrace'], PTRACE_TRACEME, 0, 0, 0)
result['attach_init'] = syscall(SYS['ptrace'], PTRACE_ATTACH, 1, 0, 0)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
result['attach_child'] = syscall(SYS['ptrace'], PTRACE_ATTACH, child, 0, 0)
result['seize_child'] = syscall(SYS['ptrace'], PTRACE_SEIZE, child, 0, 0)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
buffer = _ctypes.create_string_buffer(64)
iov = (_ctypes.c_void_p * 2)(_ctypes.cast(buffer, _ctypes.c_void_p), 64)
result['vm_readv_init'] = syscall(SYS['process_vm_readv'], 1, _ctypes.addressof(iov), 1,
                                  _ctypes.addressof(iov), 1, 0)
result['tracer'] = [line for line in read_text('/proc/self/status').splitlines()
                    if line.startswith('TracerPid')][0]
""")
        for label in ("traceme", "attach_init", "attach_child", "seize_child", "vm_readv_init"):
            assert result[label] == [-1, "EPERM"], (label, result)
        assert result["tracer"].split()[1] == "0", result


def test_mount(server, bystanders, attacker):
    """mount(2) of a tmpfs, a bind of / over the workspace, umount2 of /workspace and the new
    mount API (fsopen, open_tree): EPERM; the setuid mount(8) binary gets nowhere either."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
import subprocess
os.makedirs('/workspace/m', exist_ok=True)
MS_BIND, MS_REC, MNT_DETACH = 4096, 16384, 2
result['tmpfs'] = syscall(SYS['mount'], b'none', b'/workspace/m', b'tmpfs', 0, 0)
result['bind_root'] = syscall(SYS['mount'], b'/', b'/workspace/m', 0, MS_BIND | MS_REC, 0)
result['remount_usr_rw'] = syscall(SYS['mount'], 0, b'/usr', 0, 32 | MS_BIND, 0)
result['umount_workspace'] = syscall(SYS['umount2'], b'/workspace', MNT_DETACH)
result['umount_data_cover'] = syscall(SYS['umount2'], b'/proc', MNT_DETACH)
result['fsopen'] = syscall(SYS['fsopen'], b'tmpfs', 0)
result['open_tree'] = syscall(SYS['open_tree'], -100, b'/', 1)
setuid_mount = subprocess.run(['/usr/bin/mount', '-t', 'tmpfs', 'none', '/workspace/m'],
                              capture_output=True, text=True, timeout=30)
result['mount_binary'] = setuid_mount.returncode
result['is_mount'] = os.path.ismount('/workspace/m')
""")
        for label in ("tmpfs", "bind_root", "remount_usr_rw", "umount_workspace",
                      "umount_data_cover", "fsopen", "open_tree"):
            assert result[label] == [-1, "EPERM"], (label, result)
        assert result["mount_binary"] != 0, result
        assert result["is_mount"] is False, result


def test_unshare_and_setns(server, bystanders, attacker):
    """unshare(2) into any new namespace (user, mount, pid, net, ipc, uts, cgroup, time),
    `unshare -U` and setns(2) into the init's namespaces: all refused."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
import subprocess
for name, flag in NS.items():
    result['unshare_' + name] = syscall(SYS['unshare'], flag)
tool = subprocess.run(['unshare', '-U', '-r', 'id', '-u'], capture_output=True, text=True, timeout=30)
result['unshare_tool'] = [tool.returncode, tool.stdout.strip()]
for kind in ('user', 'mnt', 'net', 'pid'):
    try:
        fd = os.open('/proc/self/ns/' + kind, os.O_RDONLY)
    except OSError as error:
        result['setns_' + kind] = [-1, _errno.errorcode.get(error.errno)]
        continue
    result['setns_' + kind] = syscall(SYS['setns'], fd, 0)
    os.close(fd)
result['open_init_ns'] = attempt(os.open, '/proc/1/ns/mnt', os.O_RDONLY)
""")
        for name in ("NEWNS", "NEWCGROUP", "NEWUTS", "NEWIPC", "NEWUSER", "NEWPID", "NEWNET",
                     "NEWTIME"):
            assert result["unshare_" + name][0] == -1, (name, result)
            assert result["unshare_" + name][1] in ("EPERM", "EINVAL"), (name, result)
        assert result["unshare_tool"][0] != 0, result
        for kind in ("user", "mnt", "net", "pid"):
            assert result["setns_" + kind] == [-1, "EPERM"], (kind, result)
        assert result["open_init_ns"] in DENIED, result


def test_clone_into_new_namespaces(server, bystanders, attacker):
    """clone(2) with CLONE_NEWUSER (and other namespace flags) is EPERM; clone3(2) is ENOSYS
    (so its flags, which seccomp cannot inspect, never reach the kernel)."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
SIGCHLD = 17
def raw_clone(flags):
    ret, err = syscall(SYS['clone'], flags | SIGCHLD, 0, 0, 0, 0)
    if ret == 0:  # the child of an unexpected success: leave at once
        _libc.syscall(_ctypes.c_long(SYS['exit_group']), _ctypes.c_long(0))
    if ret > 0:
        os.waitpid(ret, 0)
    return [ret if ret < 0 else 'child', err]
for name in ('NEWUSER', 'NEWNS', 'NEWPID', 'NEWNET', 'NEWCGROUP'):
    result['clone_' + name] = raw_clone(NS[name])
class CloneArgs(_ctypes.Structure):
    _fields_ = [(name, _ctypes.c_uint64) for name in (
        'flags', 'pidfd', 'child_tid', 'parent_tid', 'exit_signal', 'stack', 'stack_size',
        'tls', 'set_tid', 'set_tid_size', 'cgroup')]
args = CloneArgs(flags=NS['NEWUSER'], exit_signal=SIGCHLD)
ret, err = syscall(SYS['clone3'], _ctypes.addressof(args), _ctypes.sizeof(args))
if ret == 0:
    _libc.syscall(_ctypes.c_long(SYS['exit_group']), _ctypes.c_long(0))
if ret > 0:
    os.waitpid(ret, 0)
result['clone3_newuser'] = [ret if ret < 0 else 'child', err]
""")
        for name in ("NEWUSER", "NEWNS", "NEWPID", "NEWNET", "NEWCGROUP"):
            assert result["clone_" + name] == [-1, "EPERM"], (name, result)
        assert result["clone3_newuser"] == [-1, "ENOSYS"], result


def test_setuid_and_capabilities(server, bystanders, attacker):
    """setuid/setgid to another uid fails (EPERM, or EINVAL for an unmapped id); setuid(0) is a
    no-op for uid 0 of the session's user namespace, which maps to an unprivileged host uid;
    every capability set is empty, no_new_privs is on, seccomp is filtering; capset cannot
    raise anything."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
result['setuid_1000'] = attempt(os.setuid, 1000)
result['setgid_1000'] = attempt(os.setgid, 1000)
result['setgroups'] = attempt(os.setgroups, [0, 1000])
result['setuid_0'] = attempt(os.setuid, 0)
status = dict(line.split(':\\t', 1) for line in read_text('/proc/self/status').splitlines() if ':\\t' in line)
result['caps'] = {key: status[key].strip() for key in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')}
result['no_new_privs'] = status['NoNewPrivs'].strip()
result['seccomp'] = status['Seccomp'].strip()
result['uid_map'] = read_text('/proc/self/uid_map').split()
class Header(_ctypes.Structure):
    _fields_ = [('version', _ctypes.c_uint32), ('pid', _ctypes.c_int)]
class Data(_ctypes.Structure):
    _fields_ = [('effective', _ctypes.c_uint32), ('permitted', _ctypes.c_uint32),
                ('inheritable', _ctypes.c_uint32)]
header = Header(0x20080522, 0)
data = (Data * 2)(Data(0xffffffff, 0xffffffff, 0xffffffff), Data(0xff, 0xff, 0xff))
result['capset'] = syscall(SYS['capset'], _ctypes.addressof(header), _ctypes.addressof(data))
result['caps_after'] = [line for line in read_text('/proc/self/status').splitlines() if line.startswith('CapEff')]
""")
        assert result["setuid_1000"] in ("EPERM", "EINVAL"), result
        assert result["setgid_1000"] in ("EPERM", "EINVAL"), result
        assert result["setgroups"] in ("EPERM", "EINVAL"), result
        assert result["setuid_0"] in ("ok", "EPERM"), result
        assert set(result["caps"].values()) == {"0000000000000000"}, result
        assert result["no_new_privs"] == "1" and result["seccomp"] == "2", result
        inside, outside, count = result["uid_map"][:3]
        assert inside == "0" and outside != "0" and count == "1", result
        assert result["capset"][0] == -1, result
        assert result["caps_after"] == ["CapEff:\t0000000000000000"], result


def test_chroot(server, bystanders, attacker):
    """chroot(2) (the first step of the classic chroot escape), pivot_root(2) and chroot(8):
    EPERM."""
    if not os.path.exists("/usr/sbin/chroot"):
        pytest.skip("no /usr/sbin/chroot on this host")
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
import subprocess
os.makedirs('/workspace/jail', exist_ok=True)
result['chroot'] = attempt(os.chroot, '/workspace/jail')
result['chroot_raw'] = syscall(SYS['chroot'], b'/')
result['pivot_root'] = syscall(SYS['pivot_root'], b'/workspace', b'/workspace/jail')
tool = subprocess.run(['/usr/sbin/chroot', '/', 'true'], capture_output=True, timeout=30)
result['chroot_tool'] = tool.returncode
""")
        assert result["chroot"] == "EPERM", result
        assert result["chroot_raw"] == [-1, "EPERM"], result
        assert result["pivot_root"] == [-1, "EPERM"], result
        assert result["chroot_tool"] != 0, result


def test_write_proc_sys(server, bystanders, attacker):
    """Kernel tunables in /proc/sys (core_pattern: the classic container escape; sysrq,
    drop_caches, hostname) and /proc/sysrq-trigger cannot be written. The values written are
    harmless, in case they were accepted."""
    with open("/proc/sys/kernel/core_pattern") as handle:
        core_pattern = handle.read()
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
def write(path, value):
    write_file(path, value)
def current(path, default):
    try:
        return read_text(path)
    except OSError:
        return default
result['core_pattern'] = attempt(write, '/proc/sys/kernel/core_pattern', current('/proc/sys/kernel/core_pattern', 'core'))
result['sysrq'] = attempt(write, '/proc/sys/kernel/sysrq', current('/proc/sys/kernel/sysrq', '0'))
result['modprobe'] = attempt(write, '/proc/sys/kernel/modprobe', current('/proc/sys/kernel/modprobe', '/sbin/modprobe'))
result['drop_caches'] = attempt(write, '/proc/sys/vm/drop_caches', '1')
result['hostname'] = attempt(write, '/proc/sys/kernel/hostname', 'corral')
result['sysrq_trigger'] = attempt(write, '/proc/sysrq-trigger', 'h')
result['sys_kernel'] = attempt(write, '/sys/kernel/uevent_helper', '')
""")
        for label, outcome in result.items():
            assert outcome in DENIED, (label, result)
        with open("/proc/sys/kernel/core_pattern") as handle:
            assert handle.read() == core_pattern


def test_kernel_keyrings_and_bpf(server, bystanders, attacker):
    """keyctl, add_key and request_key (kernel keyrings, normally open to any user) and bpf
    (map creation): EPERM."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, KEY_SPEC_PROCESS_KEYRING = 0, -3, -2
result['keyctl'] = syscall(SYS['keyctl'], KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)
result['add_key'] = syscall(SYS['add_key'], b'user', b'corral', b'secret', 6, KEY_SPEC_PROCESS_KEYRING)
result['request_key'] = syscall(SYS['request_key'], b'user', b'corral', 0, 0)
class MapAttr(_ctypes.Structure):
    _fields_ = [('map_type', _ctypes.c_uint32), ('key_size', _ctypes.c_uint32),
                ('value_size', _ctypes.c_uint32), ('max_entries', _ctypes.c_uint32),
                ('pad', _ctypes.c_uint8 * 112)]
attr = MapAttr(2, 4, 4, 1)  # BPF_MAP_TYPE_ARRAY
result['bpf_map_create'] = syscall(SYS['bpf'], 0, _ctypes.addressof(attr), _ctypes.sizeof(attr))
""")
        for label, outcome in result.items():
            assert outcome == [-1, "EPERM"], (label, result)


def test_perf_event_open(server, bystanders, attacker):
    """perf_event_open of a software counter on itself (allowed to any user by default at
    perf_event_paranoid <= 2): EPERM."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
attr = (_ctypes.c_uint8 * 128)()
_ctypes.memmove(attr, (1).to_bytes(4, 'little') + (128).to_bytes(4, 'little'), 8)  # type SOFTWARE, size
result['perf'] = syscall(SYS['perf_event_open'], _ctypes.addressof(attr), 0, -1, -1, 0)
""")
        assert result["perf"] == [-1, "EPERM"], result


def test_kernel_modules(server, bystanders, attacker):
    """init_module, finit_module (of a file in the workspace) and delete_module: EPERM."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
open('/workspace/evil.ko', 'wb').write(b'\\x7fELF' + b'\\0' * 60)
fd = os.open('/workspace/evil.ko', os.O_RDONLY)
image = _ctypes.create_string_buffer(b'\\x7fELF' + b'\\0' * 60)
result['init_module'] = syscall(SYS['init_module'], _ctypes.addressof(image), 64, b'')
result['finit_module'] = syscall(SYS['finit_module'], fd, b'', 0)
result['delete_module'] = syscall(SYS['delete_module'], b'ext4', 0)
os.close(fd)
""")
        for label, outcome in result.items():
            assert outcome == [-1, "EPERM"], (label, result)


def test_reboot(server, bystanders, attacker):
    """reboot(2) (with the harmless CAD_OFF command): EPERM; the host is of course still up."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF = 0xfee1dead, 672274793, 0
result['reboot'] = syscall(SYS['reboot'], LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, 0)
result['kexec_load'] = syscall(SYS['kexec_load'], 0, 0, 0, 0)
""")
        assert result["reboot"] == [-1, "EPERM"], result
        assert result["kexec_load"] == [-1, "EPERM"], result


def test_change_hostname(server, bystanders, attacker):
    """sethostname/setdomainname: EPERM; the session's own hostname stays 'corral' and the
    host's is unchanged."""
    host_name = socket.gethostname()
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
import socket
result['sethostname'] = syscall(SYS['sethostname'], b'evil', 4)
result['setdomainname'] = syscall(SYS['setdomainname'], b'evil', 4)
result['hostname_tool'] = __import__('subprocess').run(['hostname', 'evil'], capture_output=True, timeout=30).returncode
result['name'] = socket.gethostname()
""")
        assert result["sethostname"] == [-1, "EPERM"], result
        assert result["setdomainname"] == [-1, "EPERM"], result
        assert result["hostname_tool"] != 0, result
        assert result["name"] == "corral", result
        assert socket.gethostname() == host_name


def test_raise_resource_limits(server, bystanders, attacker):
    """Raising the hard RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE or RLIMIT_CORE, its own or
    (via prlimit) the sandbox init's: refused (Python reports EPERM as ValueError)."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
import resource
for name in ('RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_FSIZE', 'RLIMIT_CORE'):
    which = getattr(resource, name)
    soft, hard = resource.getrlimit(which)
    result[name] = [hard, attempt(resource.setrlimit, which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))]
    result['prlimit_init_' + name] = attempt(resource.prlimit, 1, which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
""")
        for name in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CORE"):
            hard, outcome = result[name]
            assert hard != -1, (name, result)
            assert outcome in ("ValueError", "EPERM"), (name, result)
            assert result["prlimit_init_" + name] in ("ValueError", "EPERM"), (name, result)


def test_raw_devices(server, bystanders, attacker):
    """/dev/mem, /dev/kmem, /dev/port, the host's disks, /dev/kvm, /dev/kmsg: absent; /dev
    holds only null, zero, full, random, urandom, tty, the fd links and shm."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
for path in ('/dev/mem', '/dev/kmem', '/dev/port', '/dev/vda', '/dev/sda', '/dev/nvme0n1',
             '/dev/kvm', '/dev/kmsg', '/dev/console', '/dev/fuse', '/dev/loop0', '/dev/net/tun'):
    result[path] = attempt(lambda: open(path, 'rb').close())
result['listing'] = sorted(os.listdir('/dev'))
""")
        listing = result.pop("listing")
        for path, outcome in result.items():
            assert outcome in ("ENOENT", "EACCES", "EPERM", "ENXIO"), (path, result)
        allowed = {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout",
                   "stderr", "shm", "pts", "ptmx"}
        assert set(listing) <= allowed, listing


def test_other_privileged_syscalls(server, bystanders, attacker):
    """iopl/ioperm (raw I/O ports), open_by_handle_at (the 'shocker' bind-mount escape),
    userfaultfd, swapon, settimeofday: EPERM."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
handle = (_ctypes.c_uint8 * 136)()
result['iopl'] = syscall(SYS['iopl'], 3)
result['ioperm'] = syscall(SYS['ioperm'], 0x80, 1, 1)
result['open_by_handle_at'] = syscall(SYS['open_by_handle_at'], -100, _ctypes.addressof(handle), 0)
result['userfaultfd'] = syscall(SYS['userfaultfd'], 0)
result['swapon'] = syscall(SYS['swapon'], b'/workspace/swap', 0)
tv = (_ctypes.c_long * 2)(0, 0)
result['settimeofday'] = syscall(SYS['settimeofday'], _ctypes.addressof(tv), 0)
""")
        for label, outcome in result.items():
            assert outcome == [-1, "EPERM"], (label, result)


def test_make_itself_oom_immune(server, bystanders, attacker):
    """Lowering /proc/self/oom_score_adj (to -1000: never OOM-killed) needs CAP_SYS_RESOURCE:
    refused, and the value stays where it was."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
before = read_text('/proc/self/oom_score_adj').strip()
result['before'] = before
result['lower'] = attempt(write_file, '/proc/self/oom_score_adj', '-1000', 'w')
result['after'] = read_text('/proc/self/oom_score_adj').strip()
result['init'] = attempt(write_file, '/proc/1/oom_score_adj', '-1000', 'w')
""")
        assert result["lower"] in ("EACCES", "EPERM"), result
        assert result["after"] == result["before"], result
        assert result["init"] in DENIED, result


def test_io_uring(server, bystanders, attacker):
    """io_uring (a large kernel attack surface whose operations bypass per-syscall filtering):
    io_uring_setup with a valid parameter block, io_uring_enter and io_uring_register on a
    descriptor: all EPERM, so no ring ever exists."""
    with contained(server, bystanders):
        result = kernel_probe(server, attacker, """
params = (_ctypes.c_uint8 * 120)()
result['setup'] = syscall(SYS['io_uring_setup'], 8, _ctypes.addressof(params))
fd = os.open('/workspace', os.O_RDONLY)
result['enter'] = syscall(SYS['io_uring_enter'], fd, 1, 0, 0, 0, 0)
result['register'] = syscall(SYS['io_uring_register'], fd, 0, 0, 0)
os.close(fd)
""")
        for label, outcome in result.items():
            assert outcome == [-1, "EPERM"], (label, result)
