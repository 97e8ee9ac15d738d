"""Writes build/hot-text.ld from callgrind profiles, or checks it against a
binary (both run by scripts/hot-order.sh).

    hot-order.py ORDER BINARY PROFILE...
    hot-order.py --check ORDER BINARY

ORDER is the linker script, BINARY the gateway the profiles were taken of
(callgrind with --demangle=no) or to check, PROFILE its callgrind outputs.
--check prints how many listed functions BINARY has and exits 1 below 95 %.
"""

import bisect
import collections
import os
import re
import subprocess
import sys

LINE = re.compile(r"^(c?fn|c?ob)=\((\d+)\)(?: (.*))?$")
# A legacy-mangled Rust name ends in a hash of its crate's metadata, which
# differs between `cargo build --release` and `cargo bench` and changes with
# a dependency's upgrade.
HASHED = re.compile(r"^(_ZN.*17h)[0-9a-f]{16}E$")
# LTO gives the copies of a local function a numbered suffix (`write_str.7406`,
# 22 copies of it); the numbers move with any change anywhere in the crate.
LOCAL = re.compile(r"^(.*)\.\d+$")


def executed(path, binary):
    """Instructions per function of `binary` (known by its file name: the
    profile may have been taken of a copy elsewhere) in one callgrind output."""
    cost = collections.Counter()
    names, objects, obj, fn = {}, {}, None, None
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                kind, i, name = m.group(1), int(m.group(2)), m.group(3)
                if kind.endswith("ob"):
                    if name:
                        objects[i] = name.strip()
                    if kind == "ob":
                        obj = objects.get(i)
                else:
                    if name:
                        names[i] = re.sub(r"'\d+$", "", name.strip())
                    if kind == "fn":
                        fn = names[i] if obj and os.path.basename(obj) == os.path.basename(binary) else None
            elif fn and line[:1].isdigit():
                parts = line.split()
                if len(parts) >= 2:
                    cost[fn] += int(parts[1])
    return cost


def symbols(binary):
    """The names of the symbols `binary` defines."""
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in nm.stdout.splitlines() if line.strip()]


def listed(order):
    """The function names (a trailing `*` for any hash) `write` put in `order`:
    its lines `*(.text.<name> .text.unlikely.<name>)`."""
    names = []
    with open(order) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith("*(.text.") and parts[1].startswith(".text.unlikely."):
                names.append(parts[0][len("*(.text."):])
    return names


def check(order, binary):
    have = symbols(binary)
    exact = set(have)
    ordered = sorted(have)

    def present(name):
        if not name.endswith("*"):
            return name in exact
        i = bisect.bisect_left(ordered, name[:-1])
        return i < len(ordered) and ordered[i].startswith(name[:-1])

    wanted = listed(order)
    found = sum(1 for name in wanted if present(name))
    share = found / max(len(wanted), 1)
    print(f"hot-order: {found} of {len(wanted)} listed functions are in {binary} ({share:.0%})")
    # 95 %: a new direct dependency changed the crate's metadata hash and
    # took 551 of 2,219 generic instantiations out of the match (75 %);
    # the binary then kept 3.5 MB more of its file resident under load
    # (docs/benchmarks.md, "Hot code together"). Edits to a few functions
    # cost a handful of entries.
    if share < 0.95:
        print(f"hot-order: the layout file is stale: run scripts/hot-order.sh and commit {order}", file=sys.stderr)
        sys.exit(1)


def write(order, binary, profiles):
    cost = collections.Counter()
    for path in profiles:
        found = executed(path, binary)
        print(f"hot-order: {path}: {len(found)} functions", file=sys.stderr)
        cost.update(found)
    have = symbols(binary)
    have_set = set(have)
    # A function is matched by its name before the hash where that name is
    # (nearly) its own; generic instantiations share it (`Arc::drop_slow`
    # has 200), so those are named whole, hash and all.
    stems = collections.Counter(m.group(1) for m in map(HASHED.match, have) if m)
    patterns, seen = [], set()
    for name, _ in cost.most_common():
        if name not in have_set:
            continue
        local = LOCAL.match(name)
        base = local.group(1) if local else name
        m = HASHED.match(base)
        if m and stems[m.group(1)] <= 2:
            pattern = m.group(1) + "*"
        elif local:
            # Every numbered copy: they are small, and which one ran is
            # an accident of numbering.
            pattern = base + ".*"
        else:
            pattern = name
        if pattern not in seen:
            seen.add(pattern)
            patterns.append(pattern)
    with open(order, "w") as f:
        f.write(
            "/* Generated by scripts/hot-order.sh: the sections of the functions that\n"
            "   proxy_hop's runs execute in the release gateway, most instructions first\n"
            "   (LLVM puts a function it deems cold in .text.unlikely.<name>), then the\n"
            "   rest of .text as GNU ld's default script groups it. The output section\n"
            "   stays .text (valgrind reads symbols only there). build.rs hands it to\n"
            "   the linker; INSERT keeps the default layout for everything else. Do not\n"
            "   edit by hand. */\n"
        )
        f.write("SECTIONS\n{\n  .text : {\n")
        for p in patterns:
            f.write(f"    *(.text.{p} .text.unlikely.{p})\n")
        f.write(
            "    *(.text.unlikely .text.*_unlikely .text.unlikely.*)\n"
            "    *(.text.exit .text.exit.*)\n"
            "    *(.text.startup .text.startup.*)\n"
            "    *(.text.hot .text.hot.*)\n"
            "    *(.text .stub .text.*)\n"
            "  }\n}\nINSERT BEFORE .fini;\n"
        )
    print(f"hot-order: {len(patterns)} functions written to {order} ({len(cost)} profiled)", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
    else:
        write(sys.argv[1], sys.argv[2], sys.argv[3:])
