"""Drives Shoal's catalog, health and agent APIs with a real Consul client library (py-consul), as an
unchanged Consul tool would: registration with HTTP and TTL checks, TTL updates, maintenance,
blocking queries on /v1/health/service, catalog registrations of external nodes, filters, and bad
input.

Usage: consul_catalog.py HOST PORT NODE_NAME. Exits non-zero with a message on the first mismatch.
"""
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import consul
from consul import Check

host, port, node_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = consul.Consul(host=host, port=port)
base = f"http://{host}:{port}"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def eventually(what, fn, timeout=15.0):
    """Polls fn until it returns a truthy value (bounded); fails with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    check(False, f"{what} (last: {last})")


def status_of(entry):
    """Consul's AggregatedStatus."""
    worst = "passing"
    for ck in entry["Checks"]:
        if ck["CheckID"] == "_node_maintenance" or ck["CheckID"].startswith("_service_maintenance:"):
            return "maintenance"
        if ck["Status"] == "critical":
            worst = "critical"
        elif ck["Status"] == "warning" and worst == "passing":
            worst = "warning"
    return worst


def health(name, **kw):
    _, entries = c.health.service(name, **kw)
    return {e["Service"]["ID"]: status_of(e) for e in entries}


def raw_put(path, body):
    req = urllib.request.Request(base + path, data=body.encode(), method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- agent/self and the built-in consul service -------------------------------------------------
me = c.agent.self()
check(me["Config"]["Datacenter"] == "dc1", f"agent/self datacenter: {me['Config']}")
check(me["Config"]["NodeName"] == node_name, f"agent/self node name: {me['Config']}")
check(me["Stats"]["consul"]["leader_addr"] != "", f"agent/self leader_addr: {me['Stats']}")
_, services = c.catalog.services()
check("consul" in services, f"catalog lists the consul service: {services}")
check(c.catalog.datacenters() == ["dc1"], "datacenters")
_, nodes = c.catalog.nodes()
check([n["Node"] for n in nodes] == [node_name], f"catalog nodes: {nodes}")
_, serf = c.health.node(node_name)
check([k["CheckID"] for k in serf] == ["serfHealth"] and serf[0]["Status"] == "passing", f"serfHealth: {serf}")

# --- an HTTP-checked service, its health followed by a blocking query --------------------------
state = {"code": 200}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(state["code"])
        self.end_headers()
        self.wfile.write(b"ok\n" if state["code"] == 200 else b"unhealthy\n")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
web_port = server.server_address[1]

check(
    c.agent.service.register(
        "web",
        service_id="web-1",
        address="127.0.0.1",
        port=web_port,
        tags=["v1", "primary"],
        meta={"version": "1"},
        check=Check.http(f"http://127.0.0.1:{web_port}/health", "200ms", timeout="1s"),
    )
    is True,
    "agent service register",
)
eventually("web-1 turns passing", lambda: health("web") == {"web-1": "passing"})
_, svc = c.catalog.service("web")
check(svc[0]["ServicePort"] == web_port and svc[0]["ServiceTags"] == ["v1", "primary"], f"catalog service: {svc}")
check(svc[0]["ServiceMeta"]["version"] == "1", f"meta: {svc[0]['ServiceMeta']}")
check(c.catalog.service("web", tag="primary")[1] != [], "?tag= matches")
check(c.catalog.service("web", tag="nope")[1] == [], "?tag= filters")
check("web-1" in c.agent.services(), "agent services lists web-1")
check("service:web-1" in c.agent.checks(), f"agent checks: {list(c.agent.checks())}")

index, _ = c.health.service("web")
result = {}


def watch():
    t0 = time.monotonic()
    i, entries = c.health.service("web", index=index, wait="20s")
    result["elapsed"] = time.monotonic() - t0
    result["status"] = [status_of(e) for e in entries]
    result["index"] = i


t = threading.Thread(target=watch)
t.start()
time.sleep(0.3)
state["code"] = 503
t.join(timeout=30)
check(result.get("status") == ["critical"], f"the blocking query saw web-1 go critical: {result}")
check(result["elapsed"] < 5, f"the blocking query answered on the change, not at its wait: {result}")
check(int(result["index"]) > int(index), "the index moved")
check(health("web", passing=True) == {}, "?passing leaves the critical instance out")
state["code"] = 429
eventually("429 is warning", lambda: health("web") == {"web-1": "warning"})
check(health("web", passing=True) == {}, "?passing leaves a warning instance out too")
state["code"] = 200
eventually("back to passing", lambda: health("web") == {"web-1": "passing"})
check(health("web", passing=True) == {"web-1": "passing"}, "?passing keeps it")

# --- TTL checks ---------------------------------------------------------------------------------
check(c.agent.service.register("batch", service_id="batch-1", port=9000, check=Check.ttl("2s")) is True, "ttl register")
check(health("batch") == {"batch-1": "critical"}, "a new TTL check starts critical")
check(c.agent.check.ttl_pass("service:batch-1", "all good") is True, "ttl pass")
check(health("batch") == {"batch-1": "passing"}, "passing after pass")
_, checks = c.health.checks("batch")
check(checks[0]["Output"] == "all good" and checks[0]["Type"] == "ttl", f"ttl note is the output: {checks}")
c.agent.check.ttl_warn("service:batch-1", "slow")
check(health("batch") == {"batch-1": "warning"}, "warning after warn")
c.agent.check.ttl_fail("service:batch-1", "broken")
check(health("batch") == {"batch-1": "critical"}, "critical after fail")
c.agent.check.ttl_pass("service:batch-1", "again")
eventually("the TTL expires without updates", lambda: health("batch") == {"batch-1": "critical"}, timeout=10)
_, checks = c.health.checks("batch")
check(checks[0]["Output"].startswith("TTL expired"), f"expiry output: {checks[0]['Output']}")

# --- maintenance --------------------------------------------------------------------------------
c.agent.service.maintenance("web-1", True, "upgrading")
check(health("web") == {"web-1": "maintenance"}, "service maintenance")
_, maint = c.health.state("critical")
check(any(k["CheckID"] == "_service_maintenance:web-1" and k["Notes"] == "upgrading" for k in maint), f"{maint}")
c.agent.service.maintenance("web-1", False)
check(health("web") == {"web-1": "passing"}, "service maintenance off")
c.agent.maintenance(True)
check(health("web") == {"web-1": "maintenance"}, "node maintenance")
c.agent.maintenance(False)
check(health("web") == {"web-1": "passing"}, "node maintenance off")

# --- filters -----------------------------------------------------------------------------------
_, crit = c.health.state("any", filter_expr='ServiceName == "batch"')
check([k["CheckID"] for k in crit] == ["service:batch-1"], f"filter on health/state: {crit}")
_, tagged = c.catalog.services(filter_expr='"primary" in ServiceTags')
check(set(tagged) == {"web"}, f"filter on catalog/services: {tagged}")
status, text = raw_put("/v1/agent/service/register", '{"Name":"x","Check":{"HTTP":"http://127.0.0.1:1/","Interval":"0s"}}')
check(status == 400 and "Interval greater than 0" in text, f"a 0 interval is refused: {status} {text}")
status, text = raw_put("/v1/agent/service/register", '{"Name":"x","Check":{"GRPC":"127.0.0.1:1","Interval":"1s"}}')
check(status == 400 and "not supported" in text, f"an unknown check type is refused: {status} {text}")
status, text = raw_put("/v1/agent/service/register", '{"Name": ')
check(status == 400 and "decode" in text, f"a malformed body is refused: {status} {text}")
try:
    c.health.service("web", filter_expr="Service.Port ==")
    check(False, "a filter that does not parse is refused")
except consul.base.ConsulException as e:
    check("Failed to create boolean expression evaluator" in str(e), f"filter error: {e}")
check("x" not in c.catalog.services()[1], "nothing stored by the refused registrations")

# --- catalog registrations: an external node ---------------------------------------------------
check(
    c.catalog.register(
        "db-host",
        "192.0.2.7",
        service={"Service": "pg", "ID": "pg-1", "Port": 5432, "Tags": ["primary"]},
        check={"CheckID": "pg-alive", "Name": "pg alive", "Status": "passing", "ServiceID": "pg-1"},
        node_meta={"rack": "r1"},
    )
    is True,
    "catalog register",
)
_, pg = c.catalog.service("pg")
check(pg[0]["Address"] == "192.0.2.7" and pg[0]["Node"] == "db-host", f"external node: {pg}")
check(health("pg") == {"pg-1": "passing"}, "catalog check status as written")
_, racked = c.catalog.nodes(node_meta={"rack": "r1"})
check([n["Node"] for n in racked] == ["db-host"], f"node-meta: {racked}")
check(c.catalog.deregister("db-host") is True, "catalog deregister")
check("pg" not in c.catalog.services()[1], "the external node's service left with it")

# --- deregistration ------------------------------------------------------------------------------
check(c.agent.service.deregister("web-1") is True, "deregister")
check(health("web") == {}, "web is gone")
check("service:web-1" not in c.agent.checks(), "its checks went with it")
c.agent.service.deregister("batch-1")
server.shutdown()
print("all catalog checks passed")
