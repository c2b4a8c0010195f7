"""Drives Shoal's KV API with a real Consul client library (py-consul), as an unchanged Consul tool would.

Usage: consul_client.py HOST PORT. Exits non-zero with a message on the first mismatch.
"""
import sys
import threading
import time

import consul

host, port = sys.argv[1], int(sys.argv[2])
c = consul.Consul(host=host, port=port)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


check(c.status.leader() != "", "status.leader is set")
check(len(c.status.peers()) == 1, "one peer")

check(c.kv.put("app/config/db", "10.0.0.5") is True, "put")
index, data = c.kv.get("app/config/db")
check(data["Value"] == b"10.0.0.5", f"get value: {data}")
check(int(index) >= 1 and data["ModifyIndex"] >= 1, "indexes")

check(c.kv.put("app/config/port", "5432", flags=7) is True, "put with flags")
_, data = c.kv.get("app/config/port")
check(data["Flags"] == 7, "flags round trip")

check(c.kv.put("app/config/db", "x", cas=0) is False, "cas=0 on an existing key fails")
check(c.kv.put("app/config/db", "10.0.0.6", cas=data["ModifyIndex"] + 1000) is False, "stale cas fails")
_, cur = c.kv.get("app/config/db")
check(c.kv.put("app/config/db", "10.0.0.6", cas=cur["ModifyIndex"]) is True, "cas with the current index")

_, items = c.kv.get("app/", recurse=True)
check([i["Key"] for i in items] == ["app/config/db", "app/config/port"], f"recurse: {items}")
_, keys = c.kv.get("app/", keys=True, separator="/")
check(keys == ["app/config/"], f"keys with separator: {keys}")

index, missing = c.kv.get("nope")
check(missing is None and int(index) >= 1, "missing key: None with an index")

# A blocking query returns when another client writes.
index, _ = c.kv.get("app/config/db")
result = {}


def watcher():
    t0 = time.monotonic()
    result["index"], result["data"] = c.kv.get("app/config/db", index=index, wait="10s")
    result["took"] = time.monotonic() - t0


t = threading.Thread(target=watcher)
t.start()
time.sleep(0.3)
check(c.kv.put("app/config/db", "10.0.0.7") is True, "put during watch")
t.join(15)
check(result.get("data", {}).get("Value") == b"10.0.0.7", f"blocking query saw the write: {result}")
check(int(result["index"]) > int(index) and result["took"] < 5, f"blocking query woke on the write: {result}")

# Consistency modes are accepted.
_, d = c.kv.get("app/config/db", consistency="consistent")
check(d["Value"] == b"10.0.0.7", "consistent read")
_, d = c.kv.get("app/config/db", consistency="stale")
check(d["Value"] == b"10.0.0.7", "stale read")

check(c.kv.delete("app/", recurse=True) is True, "delete recurse")
_, gone = c.kv.get("app/", recurse=True)
check(gone is None, "all gone")
print("py-consul: all KV checks passed")
