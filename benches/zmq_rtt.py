#!/usr/bin/env python3
"""Bare ZeroMQ REQ/REP round trip on loopback (pyzmq, one process): the floor under faissx serve's latency.
Run with the interpreter from scripts/python-env.sh."""
import zmq, time, threading, statistics
ctx = zmq.Context()
def server():
    s = ctx.socket(zmq.REP); s.bind("tcp://127.0.0.1:45991")
    for _ in range(5000):
        s.send(s.recv())
t = threading.Thread(target=server, daemon=True); t.start()
c = ctx.socket(zmq.REQ); c.connect("tcp://127.0.0.1:45991")
lat = []
for i in range(5000):
    t0 = time.perf_counter(); c.send(b"x"*64); c.recv(); lat.append(time.perf_counter() - t0)
lat = lat[500:]
print("same-process REQ/REP p50 %.1f us p99 %.1f us" % (statistics.median(lat)*1e6, sorted(lat)[int(len(lat)*0.99)]*1e6))
