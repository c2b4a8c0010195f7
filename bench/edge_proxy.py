#!/usr/bin/env python3
"""The built-in proxy (`shoal router --listen`) against HAProxy and Nginx, as in
shared/reference/edge.md §1: the same 3 nginx backends (`return 200 "ok\\n"`), the same
`wrk -t2 -c64 -d15s --latency` (keep-alive), interleaved rounds, CPU-s per 100k requests from
/proc/PID/stat (utime+stime of the proxy and its children), idle RSS.

Usage (after `cargo build --release -p shoal`):
    python3 bench/edge_proxy.py --shoal $CARGO_TARGET_DIR/release/shoal --rounds 3

Everything binds 127.0.33.0/24; every process is started here and stopped by its PID; every
load is bounded by wrk's -d. Prints a markdown report on stdout.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BACKENDS = ["127.0.33.101", "127.0.33.102", "127.0.33.103"]
IP = "127.0.33.1"
TICK = os.sysconf("SC_CLK_TCK")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def temp_paths(d):
    return "\n".join(
        f"    {k}_temp_path {d}/tmp/{k};" for k in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    )


def backend_conf(d):
    listens = "\n".join(f"        listen {ip}:8080;" for ip in BACKENDS)
    return f"""worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths(d)}
    default_type text/plain;
    server {{
{listens}
        location / {{ add_header X-Backend $server_addr; return 200 "ok\\n"; }}
    }}
}}
"""


def haproxy_conf(d, port):
    servers = "\n".join(f"    server b{k} {ip}:8080 check inter 2s" for k, ip in enumerate(BACKENDS, 1))
    return f"""global
    nbthread 2
    maxconn 8000
    stats socket {d}/stats.sock mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client  30s
    timeout server  30s
    timeout http-keep-alive 30s
    option http-keep-alive
    http-reuse safe
frontend fe
    bind {IP}:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
"""


def nginx_proxy_conf(d, port):
    servers = "\n".join(f"        server {ip}:8080;" for ip in BACKENDS)
    return f"""worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths(d)}
    upstream be {{
{servers}
        keepalive 64;
    }}
    server {{
        listen {IP}:{port};
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(p))
            except OSError:
                pass
    return out


def cpu_ticks(pid):
    """utime+stime of pid and its direct children (nginx's workers), in ticks."""
    total = 0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pid):
    total = 0
    for p in [pid] + children(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_idle_fraction(secs):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)

    i0, t0 = read()
    time.sleep(secs)
    i1, t1 = read()
    return (i1 - i0) / max(1, t1 - t0)


def wait_idle(log, max_wait):
    """Waits (at most max_wait s) until the CPU is >= 90 % idle for 5 s; returns (idle, loadavg)."""
    deadline = time.time() + max_wait
    while True:
        idle = cpu_idle_fraction(5)
        load = open("/proc/loadavg").read().split()[0]
        if idle >= 0.90 or time.time() > deadline:
            log(f"cpu idle {idle:.0%} over 5 s, load {load}")
            return idle, load
        log(f"waiting for an idle CPU: {idle:.0%} idle, load {load}")


def get(url, host):
    req = urllib.request.Request(url, headers={"Host": host})
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.status, r.read()


def wait_serving(url, host, secs=20):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            if get(url, host)[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} (Host {host}) did not answer 200 within {secs}s")


def backend_of(url):
    req = urllib.request.Request(url, headers={"Host": "web.shoal"})
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.headers["X-Backend"]


def follow_changes(api, url, log):
    """Deregisters be3, times until 30 requests in a row avoid it; registers it again, times until
    it answers. Returns the two times in ms."""
    def catalog(path, body):
        req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), method="PUT")
        urllib.request.urlopen(req, timeout=5).read()

    ip = BACKENDS[2]
    t = time.time()
    catalog("/v1/catalog/deregister", {"Node": "be3"})
    clean = 0
    while clean < 30:
        clean = clean + 1 if backend_of(url) != ip else 0
        time.sleep(0.001)
    left = (time.time() - t) * 1000
    t = time.time()
    catalog("/v1/catalog/register", {"Node": "be3", "Address": ip,
                                     "Service": {"ID": "web-3", "Service": "web", "Address": ip, "Port": 8080}})
    while backend_of(url) != ip:
        time.sleep(0.001)
    joined = (time.time() - t) * 1000
    log(f"change → route: removed in {left:.0f} ms (incl. 30 clean requests), added in {joined:.0f} ms")
    return {"removed_ms_incl_30_requests": round(left, 1), "added_ms": round(joined, 1)}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "requests": total,
        "p50": pct(50),
        "p99": pct(99),
        "errors": errors.group(1) if errors else "",
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", default="15s")
    ap.add_argument("--gap", type=float, default=5)
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--perf", action="store_true",
                    help="after the rounds, profile the current_thread proxy under the same wrk load (perf record -g)")
    ap.add_argument("--max-idle-wait", type=float, default=300, help="seconds to wait for a 90 %% idle CPU per round")
    args = ap.parse_args()
    log = lambda m: print(f"# {time.strftime('%H:%M:%S', time.gmtime())} {m}", file=sys.stderr, flush=True)
    procs = []
    d = tempfile.mkdtemp(prefix="edge-bench-")

    def start(name, cmd, **kw):
        logf = open(f"{d}/{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        procs.append((name, p))
        return p

    try:
        for sub in ["be", "hap", "ngx"]:
            for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]:
                os.makedirs(f"{d}/{sub}/tmp/{t}", exist_ok=True)
        write(f"{d}/be/nginx.conf", backend_conf(f"{d}/be"))
        write(f"{d}/hap/bench.cfg", haproxy_conf(f"{d}/hap", 8000))
        write(f"{d}/ngx/bench.conf", nginx_proxy_conf(f"{d}/ngx", 8001))
        start("backends", ["nginx", "-e", f"{d}/be/error.log", "-p", f"{d}/be/", "-c", f"{d}/be/nginx.conf", "-g", "daemon off;"])
        hap = start("haproxy", ["haproxy", "-f", f"{d}/hap/bench.cfg"])
        ngx = start("nginx", ["nginx", "-e", f"{d}/ngx/error.log", "-p", f"{d}/ngx/", "-c", f"{d}/ngx/bench.conf", "-g", "daemon off;"])
        # A one-node Shoal that runs nothing; the backends go into its catalog as external instances.
        env = dict(os.environ, SHOAL_LOG="warn")
        start("shoal-node", [args.shoal, "agent", "--init", "--data-dir", f"{d}/node", "--bind", IP, "--runtime", "none",
                            "--docker-port", "0", "--no-dns"], env=env)
        api = f"http://{IP}:8500"
        wait_serving(f"{api}/v1/status/leader", "x", 30)
        for k, ip in enumerate(BACKENDS, 1):
            body = json.dumps({"Node": f"be{k}", "Address": ip,
                               "Service": {"ID": f"web-{k}", "Service": "web", "Address": ip, "Port": 8080}}).encode()
            req = urllib.request.Request(f"{api}/v1/catalog/register", data=body, method="PUT")
            urllib.request.urlopen(req, timeout=5).read()
        shoal = {}
        for name, port, threads in [("shoal-1t", 8002, 1), ("shoal-2t", 8003, 2)]:
            shoal[name] = start(name, [args.shoal, "--http-addr", f"{IP}:8500", "router", "--listen", f"{IP}:{port}",
                                       "--proxy-threads", str(threads)], env=env)
        targets = [
            ("floor: wrk → one backend", None, f"http://{BACKENDS[0]}:8080/"),
            ("HAProxy, nbthread 2", hap, f"http://{IP}:8000/"),
            ("Nginx, 2 workers", ngx, f"http://{IP}:8001/"),
            ("Shoal, current_thread", shoal["shoal-1t"], f"http://{IP}:8002/"),
            ("Shoal, multi_thread(2)", shoal["shoal-2t"], f"http://{IP}:8003/"),
        ]
        for _, _, url in targets:
            wait_serving(url, "web.shoal")
        # All three backends answer through the built-in proxy (X-Backend says which).
        seen = set()
        for _ in range(6):
            req = urllib.request.Request(f"http://{IP}:8002/", headers={"Host": "web.shoal"})
            with urllib.request.urlopen(req, timeout=2) as r:
                seen.add(r.headers["X-Backend"])
        log(f"the built-in proxy reaches {sorted(seen)}")
        follow = follow_changes(api, f"http://{IP}:8002/", log)
        time.sleep(2)
        idle_rss = {name: rss_kib(p.pid) for name, p in shoal.items()}
        idle_rss["haproxy"] = rss_kib(hap.pid)
        idle_rss["nginx"] = rss_kib(ngx.pid)
        log(f"idle RSS KiB: {idle_rss}")
        rounds = []
        for r in range(args.rounds):
            idle, load = wait_idle(log, args.max_idle_wait)
            row = {"round": r + 1, "utc": time.strftime("%H:%M:%S", time.gmtime()), "idle": idle, "load": load, "results": {}}
            for name, p, url in targets:
                c0 = cpu_ticks(p.pid) if p else 0
                out = subprocess.run(["wrk", "-t2", "-c64", f"-d{args.duration}", "--latency", "-H", "Host: web.shoal", url],
                                     capture_output=True, text=True, timeout=120).stdout
                c1 = cpu_ticks(p.pid) if p else 0
                res = parse_wrk(out)
                res["cpu_s"] = (c1 - c0) / TICK
                res["cpu_per_100k"] = res["cpu_s"] / res["requests"] * 100_000 if p else None
                row["results"][name] = res
                log(f"round {r + 1} {name}: {res['rps']:.0f} req/s p50 {res['p50']:.2f} p99 {res['p99']:.2f} ms "
                    f"cpu {res['cpu_s']:.2f}s errors {res['errors']!r} non2xx {res['non2xx']}")
                time.sleep(args.gap)
            rounds.append(row)
        after_rss = {name: rss_kib(p.pid) for name, p in shoal.items()}
        if rounds:
            report(targets, rounds, idle_rss, after_rss)
            print()
            print(f"Catalog change → route (built-in proxy, polled every 1 ms): {follow}")
        if args.perf:
            profile(shoal["shoal-1t"].pid, f"http://{IP}:8002/", d, log)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rounds": rounds, "idle_rss": idle_rss, "after_rss": after_rss}, f, indent=1)
    finally:
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def profile(pid, url, d, log):
    """perf record -g of `pid` for 10 s under wrk; prints the top of the flat and the by-DSO report."""
    data = f"{d}/perf.data"
    wrk = subprocess.Popen(["wrk", "-t2", "-c64", "-d12s", "--latency", "-H", "Host: web.shoal", url],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    subprocess.run(["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", data, "--", "sleep", "10"],
                   capture_output=True, timeout=60)
    out = wrk.communicate(timeout=60)[0]
    log("profiled run: " + " ".join(re.search(r"Requests/sec:.*", out).group(0).split()))
    for args in (["--sort", "dso"], ["--no-children", "--sort", "symbol"]):
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "1.5", "-g", "none"] + args,
                             capture_output=True, text=True, timeout=120).stdout
        print("```text")
        print("\n".join(l for l in rep.splitlines() if l.strip() and not l.startswith("#"))[:6000])
        print("```")


def report(targets, rounds, idle_rss, after_rss):
    def med(name, key):
        vals = [r["results"][name][key] for r in rounds if r["results"][name][key] is not None]
        return (statistics.median(vals), min(vals), max(vals)) if vals else (None, None, None)

    print("| target | req/s (median) | min–max | p50 ms | p99 ms | proxy CPU s / 100k req | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in targets:
        rps, lo, hi = med(name, "rps")
        cpu = med(name, "cpu_per_100k")[0]
        errs = sum(1 for r in rounds if r["results"][name]["errors"] or r["results"][name]["non2xx"])
        cpu_s = f"{cpu:.2f}" if cpu is not None else "—"
        print(f"| {name} | {rps:,.0f} | {lo:,.0f}–{hi:,.0f} | {med(name, 'p50')[0]:.2f} | {med(name, 'p99')[0]:.2f} | {cpu_s} | "
              f"{'none' if errs == 0 else f'{errs} round(s)'} |")
    print()
    print("Per round (req/s · p99 ms · CPU s/100k):")
    print()
    print("| round (UTC, CPU idle before, load) | " + " | ".join(n for n, _, _ in targets) + " |")
    print("|---" * (len(targets) + 1) + "|")
    for r in rounds:
        cells = []
        for n, _, _ in targets:
            x = r["results"][n]
            cpu = f" · {x['cpu_per_100k']:.2f}" if x["cpu_per_100k"] is not None else ""
            cells.append(f"{x['rps']:,.0f} · {x['p99']:.2f}{cpu}")
        print(f"| {r['round']} ({r['utc']}, {r['idle']:.0%}, {r['load']}) | " + " | ".join(cells) + " |")
    print()
    print("Ratios, per round then the median (Shoal / peer; req/s higher is better, CPU lower is better):")
    print()
    print("| Shoal runtime | vs | req/s ratio | p99 ratio | CPU/100k ratio |")
    print("|---|---|---|---|---|")
    for s in ["Shoal, current_thread", "Shoal, multi_thread(2)"]:
        for peer in ["HAProxy, nbthread 2", "Nginx, 2 workers"]:
            rr = [r["results"][s]["rps"] / r["results"][peer]["rps"] for r in rounds]
            pr = [r["results"][s]["p99"] / r["results"][peer]["p99"] for r in rounds]
            cr = [r["results"][s]["cpu_per_100k"] / r["results"][peer]["cpu_per_100k"] for r in rounds]
            f = lambda v: " ".join(f"{x:.2f}" for x in v) + f" (median {statistics.median(v):.2f})"
            print(f"| {s} | {peer} | {f(rr)} | {f(pr)} | {f(cr)} |")
    print()
    print(f"Idle RSS (KiB, after start-up and 7 requests): {idle_rss}; the Shoal routers after the rounds: {after_rss}")


if __name__ == "__main__":
    main()
