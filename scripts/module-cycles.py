#!/usr/bin/env python3
"""Import circles among the modules of each crate, and the layers of the binary.

    scripts/module-cycles.py            # every crate under crates/
    scripts/module-cycles.py crates/tenancy-cli/src

At every level of a crate's module tree (the crate root's modules, then
the children of each directory module), the sibling modules must not
import each other in a circle. A module imports a sibling when one of its
files names a path inside it, as `crate::a::b…` or through `super::`
(comments left out; a module's children count as the module). A parent
using its children, and children using their parent's items, is how Rust
modules are made and is not counted.

The binary's layers are checked too (LAYERS below): `ops` imports neither
`cli` nor `http`, and these two do not import each other.

Prints the edges that lie on a circle and the imports across layers, and
exits 1 when there is any.
"""
import os
import re
import sys

# crate root -> {module: modules it must not import}
LAYERS = {
    os.path.join("crates", "tenancy-cli", "src"): {
        "app": {"ops", "cli", "http"},
        "ops": {"cli", "http"},
        "cli": {"http"},
        "http": {"cli"},
    },
}


def module_of(root, path):
    """The module path of a file: `ops/portability/mod.rs` -> (ops, portability)."""
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def targets(module, source):
    """The module paths a file of `module` names (absolute, from the root)."""
    found = []
    for m in re.finditer(r"\bcrate((?:::[a-z_0-9]+)+)", source):
        found.append(tuple(m.group(1).split("::")[1:]))
    for m in re.finditer(r"\b((?:super::)+)((?:[a-z_0-9]+::)*[a-z_0-9]+)", source):
        up = m.group(1).count("super::")
        base = module[: max(len(module) - up, 0)]
        found.append(base + tuple(m.group(2).split("::")))
    return found


def files(root):
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    yield module_of(root, path), re.sub(r"//.*", "", f.read())


def sibling_graphs(root):
    """For each parent module, the import graph among its children."""
    modules = set()
    sources = []
    for module, source in files(root):
        modules.add(module)
        sources.append((module, source))
    graphs = {}
    for module in modules:
        if module:
            graphs.setdefault(module[:-1], {}).setdefault(module[-1], set())
    for module, source in sources:
        for target in targets(module, source):
            # The deepest common parent of the two; the children of it on
            # each side are the siblings that import each other.
            common = 0
            while common < min(len(module), len(target)) and module[common] == target[common]:
                common += 1
            if common >= len(module) or common >= len(target):
                continue  # a parent and its descendant
            parent = module[:common]
            a, b = module[common], target[common]
            siblings = graphs.get(parent, {})
            if a in siblings and b in siblings and a != b:
                siblings[a].add(b)
    return graphs


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
        graphs = sibling_graphs(root)
        edges = []
        for parent, g in sorted(graphs.items()):
            prefix = "::".join(parent + ("",)) if parent else ""
            edges += sorted(
                (prefix + a, prefix + b) for a in g for b in g[a] if a in reach(g, b)
            )
        print(f"{root}: {len(edges)} edges on a circle ({len(graphs)} module levels)")
        for a, b in edges:
            print(f"  {a} -> {b}")
        crossing = []
        top = graphs.get((), {})
        for module, banned in LAYERS.get(os.path.normpath(root), {}).items():
            crossing += sorted((module, b) for b in top.get(module, ()) if b in banned)
        if os.path.normpath(root) in LAYERS:
            print(f"{root}: {len(crossing)} imports across layers")
        for a, b in crossing:
            print(f"  {a} -> {b} (not allowed)")
        found |= bool(edges) or bool(crossing)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
