"""slirp4netns as corral's launcher starts it (same flags): set-up time from spawn to its
ready fd on a fresh user + network namespace (median of 20), and TCP throughput from inside
the namespace to a sink on the host's loopback through slirp's gateway (2 GiB, one stream).
Needs root or unprivileged user namespaces, slirp4netns and nsenter; run on a quiet machine:

    python3 benches/slirp4netns.py
"""
import os, subprocess, time, statistics, socket, threading, sys
def netns():
    p = subprocess.Popen(["unshare","--user","--map-root-user","--net","sleep","30"])
    for _ in range(200):
        if os.readlink(f"/proc/{p.pid}/ns/net") != os.readlink("/proc/self/ns/net"): break
        time.sleep(0.005)
    return p
times=[]
for i in range(20):
    p = netns()
    r, w = os.pipe()
    er, ew = os.pipe()
    t0 = time.perf_counter()
    s = subprocess.Popen(["slirp4netns","--configure","--mtu=65520","--enable-seccomp","--disable-host-loopback","--ready-fd=3","--exit-fd=4",str(p.pid),"tap0"],
        pass_fds=(w, er), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: (os.dup2(w,3), os.dup2(er,4)))
    os.close(w); os.close(er)
    os.read(r, 1)
    times.append((time.perf_counter()-t0)*1000)
    os.close(ew); s.wait(); p.kill(); p.wait(); os.close(r)
print("setup ms: median %.1f min %.1f max %.1f (n=%d)" % (statistics.median(times), min(times), max(times), len(times)))
# throughput: netns client -> host loopback server via 10.0.2.2
srv = socket.socket(); srv.bind(("127.0.0.1",0)); srv.listen(1); port = srv.getsockname()[1]
got = [0]
def sink():
    c,_ = srv.accept()
    while True:
        b = c.recv(1<<20)
        if not b: break
        got[0]+=len(b)
threading.Thread(target=sink, daemon=True).start()
p = netns()
s = subprocess.Popen(["slirp4netns","--configure","--mtu=65520","--enable-seccomp",str(p.pid),"tap0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
size = 2<<30
code = f"import socket,time;s=socket.create_connection(('10.0.2.2',{port}));b=b'x'*(1<<20);t=time.perf_counter()\nfor _ in range({size>>20}): s.sendall(b)\ns.close();print(time.perf_counter()-t)"
out = subprocess.run(["nsenter","-t",str(p.pid),"-U","-n","--preserve-credentials","python3","-c",code],capture_output=True,text=True)
el = float(out.stdout.strip())
time.sleep(0.5)
print("throughput: %.2f Gbit/s (%d MiB sent in %.2f s, %d MiB received)" % (size*8/el/1e9, size>>20, el, got[0]>>20))
s.kill(); p.kill()
