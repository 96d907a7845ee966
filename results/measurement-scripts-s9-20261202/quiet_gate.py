"""Wait until the hypervisor steal while both cores work (6 s probe) is below 3%; at most argv[1] minutes."""
import subprocess, sys, time
def stat():
    v=[int(x) for x in open('/proc/stat').readline().split()[1:]]
    return v[7], sum(v[:8])
limit=float(sys.argv[1]) if len(sys.argv)>1 else 20
t_end=time.time()+limit*60
while True:
    s0,t0=stat()
    ps=[subprocess.Popen([sys.executable,'-c','import time\nt=time.time()\nwhile time.time()-t<6: pass']) for _ in range(2)]
    for p in ps: p.wait()
    s1,t1=stat()
    steal=100*(s1-s0)/max(t1-t0,1)
    print(time.strftime('%H:%M:%S'), f"steal under load {steal:.1f}%", flush=True)
    if steal < 3 or time.time() > t_end:
        break
    time.sleep(30)
