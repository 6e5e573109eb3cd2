#!/usr/bin/env bash
# Import circles between the files of each crate: a file's module depends on another when its code
# names `crate::other` (in a `use` or a path, groups `use crate::{a, b::C}` included; comments
# skipped). Files in a folder count as the folder's module (`machine/pass.rs` is `machine`);
# `lib.rs` and `main.rs` are the root that assembles the modules and are left out. Prints, per
# crate, the modules that form a circle (strongly connected components of more than one module)
# and the edges inside them; the last line is the total number of modules in circles. Exits 1
# when there is any circle, so CI can use it. Usage: scripts/import-circles.sh [CRATE_DIR...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then set -- crates/*; fi
exec python3 - "$@" <<'PY'
import os, re, sys

USE_GROUP = re.compile(r"crate::\{([^}]*)\}", re.S)
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")

def modules(src):
    """file -> top-level module name, for every .rs file under src (lib.rs/main.rs left out)."""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)
            parts = rel.split(os.sep)
            if len(parts) == 1:
                if f in ("lib.rs", "main.rs"):
                    continue
                out[p] = f[:-3]
            else:
                if parts[0] == "bin":
                    continue
                out[p] = parts[0]
    return out

def refs(text):
    code = "\n".join(l.split("//", 1)[0] for l in text.splitlines())
    found = set(PATH.findall(code))
    for group in USE_GROUP.findall(code):
        for item in group.split(","):
            name = item.strip().split("::", 1)[0].strip()
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                found.add(name)
    return found

def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out

total = 0
for crate in sys.argv[1:]:
    src = os.path.join(crate, "src")
    if not os.path.isdir(src):
        continue
    mods = modules(src)
    names = set(mods.values())
    edges = {}
    for path, m in mods.items():
        with open(path, encoding="utf-8") as fh:
            for r in refs(fh.read()):
                if r in names and r != m:
                    edges.setdefault(m, set()).add(r)
    circles = [c for c in sccs(names, edges) if len(c) > 1]
    if not circles:
        continue
    print(f"{crate}:")
    for c in circles:
        total += len(c)
        inner = sorted(f"{a}->{b}" for a in c for b in edges.get(a, ()) if b in c)
        print(f"  circle of {len(c)}: {' '.join(c)}")
        print(f"    edges: {' '.join(inner)}")
print(f"modules in import circles: {total}")
sys.exit(1 if total else 0)
PY
