#!/usr/bin/env python3
"""Import circles among the top-level modules of each crate.

    scripts/module-cycles.py            # every crate under crates/
    scripts/module-cycles.py crates/tenancy-cli/src

A module's edges are the `crate::<module>` paths in its files (comments
left out; a directory module counts as one). Prints the edges that lie on
a circle, and exits 1 when there is any.
"""
import os
import re
import sys


def graph(root):
    mods = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            top = parts[0] if parts else "<root>"
            with open(path, encoding="utf-8") as f:
                source = re.sub(r"//.*", "", f.read())
            uses = set(re.findall(r"crate::([a-z_0-9]+)", source))
            mods.setdefault(top, set()).update(u for u in uses if u != top)
    return {m: {d for d in deps if d in mods} for m, deps in mods.items()}


def reach(g, start):
    seen, stack = set(), [start]
    while stack:
        for nxt in g.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def main():
    roots = sys.argv[1:] or sorted(
        os.path.join("crates", c, "src") for c in os.listdir("crates")
        if os.path.isdir(os.path.join("crates", c, "src"))
    )
    found = False
    for root in roots:
        g = graph(root)
        edges = sorted((a, b) for a in g for b in g[a] if a in reach(g, b))
        print(f"{root}: {len(edges)} edges on a circle")
        for a, b in edges:
            print(f"  {a} -> {b}")
        found |= bool(edges)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
