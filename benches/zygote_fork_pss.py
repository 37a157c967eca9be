# Measures what a zygote would save: a Python that imported corral's driver forks N idle
# children; each child's smaps_rollup (PSS, private) is read while all are alive.
import os, sys, importlib.util, time
N = int(sys.argv[2])
spec = importlib.util.spec_from_file_location("corral_driver", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
import gc; gc.collect(); gc.freeze()
kids = []
for _ in range(N):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        import random; random.seed()
        os.read(r, 1)  # idle until the parent closes
        os._exit(0)
    os.close(r); kids.append((pid, w))
time.sleep(1)
def roll(pid):
    d = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        p = line.split()
        if p[0].rstrip(":") in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            d[p[0].rstrip(":")] = int(p[1])
    return d
rs = [roll(p) for p, _ in kids]
avg = lambda k: sum(r[k] for r in rs) / len(rs)
print(f"children={N} parent={roll(os.getpid())} child avg KiB: Rss={avg('Rss'):.0f} Pss={avg('Pss'):.0f} USS={avg('Private_Clean')+avg('Private_Dirty'):.0f}")
for p, w in kids: os.close(w); os.waitpid(p, 0)
