"""Idle RSS and process-start-to-/ready time of keel, over repeated runs.

Usage: python3 bench/startup_rss.py KEEL_BINARY WORK_DIR ROUNDS
Each run starts `keel serve` on a free port with a fresh data dir, polls GET /ready every 0.5 ms
until it answers 200 (start-to-ready), waits 3 s for the process to settle, then reads VmRSS.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(32).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    keel, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    starts, rsss = [], []
    env = dict(os.environ)
    for i in range(rounds):
        data = os.path.join(work, f"startup-{i}")
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [keel, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        while not ready(port):
            if time.perf_counter() - t0 > 10:
                raise SystemExit("keel did not become ready in 10 s")
            time.sleep(0.0005)
        started = (time.perf_counter() - t0) * 1000
        time.sleep(3)
        rss = rss_kib(proc.pid) / 1024
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)
        starts.append(started)
        rsss.append(rss)
        print(f"run {i + 1}: start-to-ready {started:.1f} ms, idle RSS {rss:.1f} MiB")
    print(f"median: start-to-ready {statistics.median(starts):.1f} ms (target <= 100), "
          f"idle RSS {statistics.median(rsss):.1f} MiB (target <= 20 MB)")


if __name__ == "__main__":
    main()
