#!/usr/bin/env python3
"""Fails when an import crosses a wall the wrong way (see ../shared/DESIGN.md, registry/src/lib.rs).

1. Crates: each workspace crate may depend only on the shoal crates listed for it below.
2. shoal-model's normal dependency tree holds none of the runtime, consensus, storage, TLS or HTTP
   crates.
3. Rooms of registry/: a module may import (`crate::ROOM`) only from its own room or a lower one.
   With the rooms ranked and every import going down or sideways inside a room, there can be no
   import cycle between rooms.
Prints every violation with file and line; exits 1 if there is one.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Which shoal crates each crate may depend on (normal dependencies).
ALLOWED = {
    "shoal-model": set(),
    "shoal-gossip": set(),
    "shoal-lincheck": set(),
    "shoal-registry": {"shoal-model"},
    "shoal-api": {"shoal-model", "shoal-registry"},
    "shoal-scheduler": {"shoal-model", "shoal-registry"},
    "shoal-agent": {"shoal-model", "shoal-registry"},
    "shoal-dns": {"shoal-model", "shoal-registry"},
    "shoal-router": {"shoal-model", "shoal-api"},
    "shoal-testkit": {"shoal-model", "shoal-api"},
    "shoal-bench": {"shoal-model", "shoal-registry", "shoal-scheduler", "shoal-api", "shoal-dns"},
    "shoal": None,  # the binary wires everything together
}

FORBIDDEN_IN_MODEL = ["tokio", "openraft", "axum", "hyper", "rcgen", "rustls", "redb", "reqwest", "bollard", "rand"]

# registry/src rooms, lowest first; the files at the crate root are the ground floor.
RANKS = {"error": 0, "files": 0, "datadir": 0, "host": 0, "ids": 0, "pki": 1, "store": 2, "rpc": 3, "cluster": 4,
         "control": 5, "node": 6}

problems = []


def check_crates():
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"], cwd=ROOT))
    for pkg in meta["packages"]:
        name = pkg["name"]
        deps = {d["name"] for d in pkg["dependencies"] if d["name"].startswith("shoal") and d.get("kind") is None}
        if name not in ALLOWED:
            problems.append(f"crate {name}: not in scripts/check-rooms.py's ALLOWED table; add it with the crates it may use")
            continue
        allowed = ALLOWED[name]
        if allowed is None:
            continue
        for d in sorted(deps - allowed):
            problems.append(f"crate {name} depends on {d}: it may use only {sorted(allowed) or 'no shoal crate'}")


def check_model_tree():
    out = subprocess.check_output(
        ["cargo", "tree", "-p", "shoal-model", "-e", "normal", "--prefix", "none", "--offline"], cwd=ROOT, text=True)
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    for f in FORBIDDEN_IN_MODEL:
        if f in names:
            problems.append(f"shoal-model's dependency tree holds {f}: the model does no I/O and knows no runtime")


USE_GROUP = re.compile(r"crate::\{([^}]*)\}", re.S)
USE_PATH = re.compile(r"\bcrate::([a-z_]+)")


def room_of(rel):
    first = rel.split("/")[0]
    return first[:-3] if first.endswith(".rs") else first


def check_registry_rooms():
    src = os.path.join(ROOT, "registry", "src")
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)
            if rel == "lib.rs":
                continue
            own = room_of(rel)
            if own not in RANKS:
                problems.append(f"registry/src/{rel}: room {own!r} has no rank in scripts/check-rooms.py")
                continue
            # Comments (doc links included) are no imports: blank them, keeping line numbers.
            text = re.sub(r"//[^\n]*", "", open(path).read())
            targets = []
            for m in USE_GROUP.finditer(text):
                for part in m.group(1).split(","):
                    part = part.strip().split("::")[0].strip()
                    if part:
                        targets.append((m.start(), part))
            for m in USE_PATH.finditer(text):
                targets.append((m.start(), m.group(1)))
            for pos, target in targets:
                if target not in RANKS:
                    continue
                if RANKS[target] > RANKS[own]:
                    line = text.count("\n", 0, pos) + 1
                    problems.append(f"registry/src/{rel}:{line}: {own}/ imports {target}/, a room above it")


check_crates()
check_model_tree()
check_registry_rooms()
if problems:
    print("upward or forbidden imports:", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print("rooms: every import goes down (crates, shoal-model's tree, registry/ rooms)")
