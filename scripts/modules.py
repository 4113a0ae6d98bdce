#!/usr/bin/env python3
"""The library's module graph: which top-level module (a file directly in src/, or a
folder, counted as one) uses which, from `crate::` paths in code (comments and doc links
are not uses). Prints the graph, and exits 1 naming the modules and the lines that make a
circle, if there is one.

    scripts/modules.py            the graph, and a check for circles
    scripts/modules.py --dot      the graph in Graphviz's dot language
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# The binary uses the library by its crate name, not through `crate::`; lib.rs only
# declares the modules.
SKIP = {"main", "lib"}

USE = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def code(line: str) -> str:
    """The line without its comment (a `//` outside a string literal, roughly: good
    enough for paths, which never hold `//`)."""
    stripped = line.lstrip()
    if stripped.startswith("//"):
        return ""
    cut = line.find("//")
    return line if cut < 0 else line[:cut]


def uses():
    edges = defaultdict(lambda: defaultdict(list))
    for path in sorted(SRC.rglob("*.rs")):
        here = module_of(path)
        if here in SKIP:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for group, single in USE.findall(code(line)):
                names = [single] if single else [n.strip().split("::")[0] for n in group.split(",")]
                for name in names:
                    if name and name != here and name not in ("self", "super"):
                        edges[here][name].append(f"{path.relative_to(SRC.parent)}:{number}")
    return edges


def circles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def main():
    edges = uses()
    if "--dot" in sys.argv[1:]:
        print("digraph sluice {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    for a in sorted(edges):
        print(f"{a} -> {', '.join(sorted(edges[a]))}")
    found = circles(edges)
    for component in found:
        print(f"\nerror: a circle between top-level modules: {' , '.join(component)}", file=sys.stderr)
        members = set(component)
        for a in component:
            for b, where in sorted(edges[a].items()):
                if b in members:
                    print(f"  {a} -> {b}: {', '.join(where[:3])}{' …' if len(where) > 3 else ''}", file=sys.stderr)
    if found:
        return 1
    print("\nno circle between top-level modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
