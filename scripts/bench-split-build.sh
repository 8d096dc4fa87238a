#!/usr/bin/env bash
# Split-build benchmark (BENCHMARKS.md, "Split builds (issue 17)"), run by hand, not in CI.
# It measures what a build split into tasks costs against one `faissx build` of the same data:
# CPU (user+sys) and wall time of train, of N `add --task-count N` tasks run as parallel local
# processes (JOB_COMPLETION_INDEX set, as a Kubernetes Indexed Job does), and of the merge
# (in memory and --on-disk), with peak memory of each step; then it checks that every merged
# index answers queries exactly like the single build.
#
#   bash scripts/bench-split-build.sh               # every stage (~10 min on 2 cores at the full size)
#   bash scripts/bench-split-build.sh data          # only the synthetic vector files
#   bash scripts/bench-split-build.sh single        # only the single-machine builds (after data)
#   bash scripts/bench-split-build.sh split         # train, tasks, merges (after data)
#   bash scripts/bench-split-build.sh check         # search results equal? exits 1 if not (after single, split)
#   bash scripts/bench-split-build.sh report        # the tables of BENCHMARKS.md from the records
#   SIZE=200000 bash scripts/bench-split-build.sh   # a quick run on fewer vectors
#
# Stages are arguments, run in the order given; each is a function below, so a stage (e.g. one
# reading the inputs from object storage) is added as one more function and one more `case` line.
#
# Settings (environment): SIZE vectors (default 2,000,000), FACTORIES (default "IVF1024,Flat
# IVF1024,PQ16"), TRAIN_SIZE (default 100,000, the same for every build), TASKS (default
# "1 2 4"), THREADS ("default" = FAISS's default of all cores, or a number passed as
# --threads to each process; default "default 1"), NPROBE for the check (default 16),
# RESULTS (the records file, default results.jsonl in the work directory; `report` shows the
# newest record of each step in it), RUNS (several records files, one per run: `report` adds
# each run's totals side by side).
#
# Data: SIZE × 128 float32 vectors, clustered Gaussian (1,000 centres ~ N(0, 1), points = centre
# + N(0, 0.6²), seed 17) written as 8 .npy files of unequal sizes (weights 3 5 4 6 2 7 5 4, so
# tasks start and end inside files) plus the same rows in one file, all.npy, for the single
# build (`faissx build` takes one INPUT); 1,000 queries from the same mixture (seed 18).
#
# Measuring: every faissx process runs under a small Python wrapper (written to the work
# directory) that waits for it with wait4 (user and system CPU, ru_maxrss = peak resident set
# including mapped file pages) and samples /proc/PID/status every 5 ms for the peak of RssAnon
# (heap) and RssFile (mapped files). Everything runs under `nice -n 10`.
#
# Everything goes to $FAISSX_CACHE/bench-split/n$SIZE (default ~/.cache/faissx/bench-split/):
# data/, idx/<factory>/, logs/ (stderr of each step) and results.jsonl (one record per process).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
size="${SIZE:-2000000}"
factories="${FACTORIES:-IVF1024,Flat IVF1024,PQ16}"
train_size="${TRAIN_SIZE:-100000}"
tasks="${TASKS:-1 2 4}"
threads="${THREADS:-default 1}"
nprobe="${NPROBE:-16}"
work="$FAISSX_CACHE/bench-split/n$size"
data="$work/data"
res="${RESULTS:-$work/results.jsonl}"
mkdir -p "$data" "$work/idx" "$work/logs"
bin="${FAISSX_BENCH_BIN:-$FAISSX_BIN}"
py="$(bash scripts/python-env.sh)"

slug() { echo "$1" | tr 'A-Z,' 'a-z-'; }
thread_args() { [ "$1" = default ] && return; echo "--threads $1"; }

# The measuring wrapper: measure.py KEY=VALUE... -- COMMAND...; appends one JSON record to
# $res and passes the command's exit status on.
cat > "$work/measure.py" <<'PY'
import json, os, subprocess, sys, time
sep = sys.argv.index("--")
rec = dict(a.split("=", 1) for a in sys.argv[1:sep])
cmd = sys.argv[sep + 1:]
log = open(rec.pop("log"), "w")
out = rec.pop("out")
t0 = time.perf_counter()
p = subprocess.Popen(cmd, stdout=log, stderr=log)
peak = {"RssAnon": 0, "RssFile": 0}
status = None
while status is None:
    try:
        with open("/proc/%d/status" % p.pid) as f:
            for line in f:
                k = line.split(":")[0]
                if k in peak:
                    peak[k] = max(peak[k], int(line.split()[1]))
    except (FileNotFoundError, ProcessLookupError):
        pass
    pid, st, ru = os.wait4(p.pid, os.WNOHANG)
    if pid:
        status = st
    else:
        time.sleep(0.005)
wall = time.perf_counter() - t0
code = os.waitstatus_to_exitcode(status)
rec.update(wall_s=round(wall, 3), user_s=round(ru.ru_utime, 3), sys_s=round(ru.ru_stime, 3),
           maxrss_kib=ru.ru_maxrss, peak_anon_kib=peak["RssAnon"], peak_file_kib=peak["RssFile"], exit=code)
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
if code != 0:
    sys.stderr.write("failed (exit %d): %s (log: %s)\n" % (code, " ".join(cmd), log.name))
sys.exit(code)
PY

measure() { # KEY=VALUE... -- faissx args...: one measured faissx process
  local kv=()
  while [ "$1" != -- ]; do kv+=("$1"); shift; done
  shift
  "$py" "$work/measure.py" out="$res" "${kv[@]}" -- nice -n 10 "$bin" "$@"
}

data() {
  [ -f "$data/all.npy" ] && [ -f "$data/query.npy" ] && return
  "$py" - "$data" "$size" <<'EOF'
import os, sys
import numpy as np
out, n = sys.argv[1], int(sys.argv[2])
d, nc = 128, 1000
rng = np.random.default_rng(17)
centres = rng.standard_normal((nc, d), dtype=np.float32)
def points(rng, m):
    lab = rng.integers(0, nc, m)
    return (centres[lab] + 0.6 * rng.standard_normal((m, d), dtype=np.float32)).astype(np.float32)
w = np.array([3, 5, 4, 6, 2, 7, 5, 4])
bounds = np.concatenate([[0], np.cumsum(w)]) * n // w.sum()
allf = np.lib.format.open_memmap(out + "/all.npy.tmp", mode="w+", dtype=np.float32, shape=(n, d))
for s in range(0, n, 100_000):
    allf[s:s + 100_000] = points(rng, min(100_000, n - s))
for i in range(len(w)):
    a, b = bounds[i], bounds[i + 1]
    np.save(out + "/part.tmp.npy", allf[a:b])
    os.replace(out + "/part.tmp.npy", out + "/base-%d.npy" % i)
allf.flush(); del allf
os.replace(out + "/all.npy.tmp", out + "/all.npy")
np.save(out + "/query.tmp.npy", points(np.random.default_rng(18), 1000))
os.replace(out + "/query.tmp.npy", out + "/query.npy")
print("files:", [int(bounds[i + 1] - bounds[i]) for i in range(len(w))], file=sys.stderr)
EOF
}

# One `faissx build` of all.npy per factory and thread setting.
single() {
  for f in $factories; do
    local ix="$work/idx/$(slug "$f")"
    mkdir -p "$ix"
    for th in $threads; do
      rm -f "$ix/single-t$th.index"*
      measure factory="$f" step=single threads="$th" tasks=0 log="$work/logs/$(slug "$f")-single-t$th.log" \
        -- $(thread_args "$th") build "$data/all.npy" -o "$ix/single-t$th.index" --factory "$f" --train-size "$train_size" --force
    done
  done
}

# Per factory and thread setting: train once, then for each task count N: N parallel
# `add --task-count N` processes, then (N ≥ 2) merge in memory and --on-disk.
split() {
  local inputs=("$data"/base-?.npy)
  for f in $factories; do
    local ix="$work/idx/$(slug "$f")"
    mkdir -p "$ix"
    for th in $threads; do
      measure factory="$f" step=train threads="$th" tasks=0 log="$work/logs/$(slug "$f")-t$th-train.log" \
        -- $(thread_args "$th") train "${inputs[@]}" -o "$ix/trained-t$th.index" --factory "$f" --train-size "$train_size" --force
      for n in $tasks; do
        local run="$ix/t$th-n$n"
        rm -rf "$run"
        mkdir -p "$run"
        local t0=$EPOCHREALTIME pids=()
        for ((i = 0; i < n; i++)); do
          JOB_COMPLETION_INDEX=$i measure factory="$f" step=task threads="$th" tasks="$n" task="$i" \
            log="$work/logs/$(slug "$f")-t$th-n$n-task$i.log" \
            -- $(thread_args "$th") add "$ix/trained-t$th.index" "${inputs[@]}" --task-count "$n" -o "$run/parts" &
          pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
        local t1=$EPOCHREALTIME
        "$py" -c 'import json,sys; print(json.dumps(dict(factory=sys.argv[1], step="phase", threads=sys.argv[2], tasks=int(sys.argv[3]), wall_s=round(float(sys.argv[5])-float(sys.argv[4]),3))))' \
          "$f" "$th" "$n" "$t0" "$t1" >> "$res"
        [ "$n" -ge 2 ] || continue
        local parts=("$run"/parts/part-*-of-"$n".index)
        measure factory="$f" step=merge threads="$th" tasks="$n" log="$work/logs/$(slug "$f")-t$th-n$n-merge.log" \
          -- $(thread_args "$th") merge "${parts[@]}" -o "$run/merged.index"
        measure factory="$f" step=merge-disk threads="$th" tasks="$n" log="$work/logs/$(slug "$f")-t$th-n$n-merge-disk.log" \
          -- $(thread_args "$th") merge "${parts[@]}" -o "$run/merged-disk.index" --on-disk
        "$py" -c 'import json,os,sys; p=sys.argv[4]; print(json.dumps(dict(factory=sys.argv[1], step="size", threads=sys.argv[2], tasks=int(sys.argv[3]), index_bytes=os.path.getsize(p), ivfdata_bytes=os.path.getsize(p + ".ivfdata"))))' \
          "$f" "$th" "$n" "$run/merged-disk.index" >> "$res"
      done
    done
  done
}

# Top-10 ids (and distances) of 1,000 queries at nprobe $nprobe: every single build, every
# merged index (in memory and on disk) and every N = 1 part must equal the part of the
# one-task build with default threads (the same trained index, every row added by one
# process). Exits 1 naming the first index that differs.
check() {
  for f in $factories; do
    local ix="$work/idx/$(slug "$f")" out="$work/idx/$(slug "$f")/check"
    rm -rf "$out"
    mkdir -p "$out"
    local list=()
    local ref="$ix/tdefault-n1/parts/part-0-of-1.index"
    for x in "$ref" "$ix"/single-t*.index "$ix"/t*-n*/parts/part-0-of-1.index "$ix"/t*-n*/merged.index \
      "$ix"/t*-n*/merged-disk.index; do
      [ -f "$x" ] || continue
      [ "$x" != "$ref" ] || [ ${#list[@]} -eq 0 ] || continue
      local name="${x#"$ix"/}"
      name="${name//\//_}"
      nice -n 10 "$bin" -q search "$x" "$data/query.npy" -k 10 --nprobe "$nprobe" --format npy -o "$out/$name.npy"
      list+=("$out/$name.npy")
    done
    "$py" - "$f" "${list[@]}" <<'EOF'
import sys
import numpy as np
f, ref, others = sys.argv[1], sys.argv[2], sys.argv[3:]
a = np.load(ref); ad = np.load(ref[:-4] + ".distances.npy")
bad = 0
for o in others:
    b = np.load(o); bd = np.load(o[:-4] + ".distances.npy")
    same = (a == b).all(axis=1)
    if not same.all() or not np.allclose(ad, bd, rtol=1e-6, atol=1e-6):
        q = int(np.argmin(same)) if not same.all() else -1
        print("%s: %s differs from %s: %d of %d queries have other top-10 ids (first: query %d)"
              % (f, o, ref, int((~same).sum()), len(same), q), file=sys.stderr)
        bad += 1
if bad:
    sys.exit(1)
print("%s: top-10 ids of %d queries identical in %d indices (%s and %s)"
      % (f, len(a), len(others) + 1, ref.rsplit("/", 1)[1], ", ".join(o.rsplit("/", 1)[1] for o in others)))
EOF
  done
}

# The tables of BENCHMARKS.md: per factory and thread setting, each step's CPU and wall
# time, total work and wall over the single build, and peak memory against the merged index.
report() {
  "$py" - "$res" ${RUNS:-} <<'EOF'
import json, statistics, sys
from collections import OrderedDict

def load(path):
    """The newest record of each (factory, step, threads, tasks, task) in a results file."""
    last = OrderedDict()
    for line in open(path):
        r = json.loads(line)
        last[(r["factory"], r["step"], str(r["threads"]), int(r["tasks"]), r.get("task"))] = r
    return last

cpu = lambda r: r["user_s"] + r["sys_s"]
mib = lambda kib: kib / 1024

def builds(last, f):
    """Per thread setting: the single build, then each split build (N, merge kind) with its
    train, tasks and merge CPU and wall, and the totals over the single build."""
    get = lambda step, th, n, task=None: last.get((f, step, th, n, task))
    for th in OrderedDict.fromkeys(k[2] for k in last if k[0] == f):
        s, t = get("single", th, 0), get("train", th, 0)
        if s:
            yield dict(th=th, what="single `build`", cpu=cpu(s), wall=s["wall_s"], x_cpu=1.0, x_wall=1.0)
        if not t:
            continue
        for n in sorted({k[3] for k in last if k[:3] == (f, "phase", th)}):
            tk = [r for k, r in last.items() if k[:4] == (f, "task", th, n)]
            ph = get("phase", th, n)
            for label, m in (("in memory", get("merge", th, n)), ("--on-disk", get("merge-disk", th, n))):
                if n == 1 and label == "--on-disk":
                    continue
                row = dict(th=th, what="N=%d, merge %s" % (n, label) if n > 1 else "N=1 (no merge)",
                           train_cpu=cpu(t), tasks_cpu=sum(map(cpu, tk)), merge_cpu=cpu(m) if m else None,
                           train_wall=t["wall_s"], phase_wall=ph["wall_s"], merge_wall=m["wall_s"] if m else None)
                row["cpu"] = row["train_cpu"] + row["tasks_cpu"] + (row["merge_cpu"] or 0)
                row["wall"] = row["train_wall"] + row["phase_wall"] + (row["merge_wall"] or 0)
                row["x_cpu"] = row["cpu"] / cpu(s) if s else None
                row["x_wall"] = row["wall"] / s["wall_s"] if s else None
                yield row

num = lambda v, f="%.1f": "–" if v is None else f % v
last = load(sys.argv[1])
factories = list(OrderedDict.fromkeys(k[0] for k in last))
for f in factories:
    get = lambda step, th, n, task=None: last.get((f, step, th, n, task))
    print("\n**%s**: CPU = user + system seconds; wall in seconds; × = over the single build with the same threads\n" % f)
    print("| threads | build | train CPU | tasks CPU (sum) | merge CPU | **total CPU** | **× single** | train wall | task phase wall | merge wall | **total wall** | **× single** |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in builds(last, f):
        g = lambda k, fmt="%.1f": num(r.get(k), fmt) if k in r else ""
        print("| %s | %s | %s | %s | %s | %.1f | %s | %s | %s | %s | %.1f | %s |" % (
            r["th"], r["what"], g("train_cpu"), g("tasks_cpu"), g("merge_cpu"), r["cpu"], num(r["x_cpu"], "%.2f"),
            g("train_wall"), g("phase_wall"), g("merge_wall"), r["wall"], num(r["x_wall"], "%.2f")))
    print("\nPeak memory, MiB (RssAnon = private memory, RssFile = pages of mapped files, maxrss = ru_maxrss, both;"
          " index = merged index file + .ivfdata):\n")
    print("| threads | N | process | index | RssAnon | RssFile | maxrss | RssAnon / index | maxrss / index |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|")
    for th in OrderedDict.fromkeys(k[2] for k in last if k[0] == f):
        s = get("single", th, 0)
        if s:
            print("| %s | | single `build` | | %.0f | %.0f | %.0f | | |" % (th, mib(s["peak_anon_kib"]), mib(s["peak_file_kib"]), mib(s["maxrss_kib"])))
        for n in sorted({k[3] for k in last if k[:3] == (f, "phase", th)}):
            sz = get("size", th, n)
            size = (sz["index_bytes"] + sz["ivfdata_bytes"]) / 2**20 if sz else None
            tk = [r for k, r in last.items() if k[:4] == (f, "task", th, n)]
            big = max(tk, key=lambda r: r["maxrss_kib"])
            rows = [("largest task", big, False), ("merge", get("merge", th, n), True), ("merge --on-disk", get("merge-disk", th, n), True)]
            for name, r, rel in rows:
                if not r:
                    continue
                pct = lambda v: "%.1f %%" % (100 * mib(v) / size) if rel and size else ""
                print("| %s | %d | %s | %s | %.0f | %.0f | %.0f | %s | %s |" % (
                    th, n, name, "%.0f" % size if rel and size else "", mib(r["peak_anon_kib"]), mib(r["peak_file_kib"]),
                    mib(r["maxrss_kib"]), pct(r["peak_anon_kib"]), pct(r["maxrss_kib"])))

# RUNS="a.jsonl b.jsonl ...": the totals over the single build of every run, side by side.
runs = [load(p) for p in sys.argv[2:]]
for f in factories if runs else []:
    print("\n**%s**, %d runs: total CPU × single build / total wall × single build (median CPU ×)\n" % (f, len(runs)))
    print("| threads | build | " + " | ".join("run %d" % (i + 1) for i in range(len(runs))) + " | median CPU × |")
    print("|---|---|" + "--:|" * (len(runs) + 1))
    per = [{(r["th"], r["what"]): r for r in builds(l, f)} for l in runs]
    for key in per[0]:
        if key[1].startswith("single"):
            continue
        xs = [p.get(key) for p in per]
        cells = ["%.2f / %.2f" % (x["x_cpu"], x["x_wall"]) if x and x["x_cpu"] else "" for x in xs]
        med = statistics.median(x["x_cpu"] for x in xs if x and x["x_cpu"])
        print("| %s | %s | %s | **%.2f** |" % (key[0], key[1], " | ".join(cells), med))
EOF
}

[ $# -gt 0 ] || set -- data single split check report
for stage in "$@"; do
  case "$stage" in
    data) data ;;
    single) single ;;
    split) split ;;
    check) check ;;
    report) report ;;
    *) echo "usage: bench-split-build.sh [data|single|split|check|report]... (default: all, in that order)" >&2; exit 2 ;;
  esac
done
