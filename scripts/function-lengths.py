#!/usr/bin/env python3
"""The longest functions under a folder of Rust crates (lines from `fn` to its
closing brace; `tests/` folders and trailing `#[cfg(test)] mod tests` left out).

    python3 scripts/function-lengths.py [CRATES_DIR] [HOW_MANY]

A rough, text-based count (a function's closing brace is the first line at its
own indentation that starts with `}`), for the code-size figures in issue notes.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "crates"
most = int(sys.argv[2]) if len(sys.argv) > 2 else 15
found = []
for folder, _, files in os.walk(root):
    if "/tests" in folder or "target" in folder:
        continue
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(folder, name)
        lines = open(path, encoding="utf-8").read().split("\n")
        for i, line in enumerate(lines):
            if re.match(r"\s*#\[cfg\(test\)\]", line) and i + 1 < len(lines) and "mod tests" in lines[i + 1]:
                break
            m = re.match(r"(\s*)(pub(\([a-z]+\))? )?(async )?(unsafe )?fn (\w+)", line)
            if not m or line.rstrip().endswith(";"):
                continue
            indent = len(m.group(1))
            for j in range(i + 1, len(lines)):
                end = lines[j]
                if end.startswith(" " * indent + "}") and (len(end) == indent + 1 or end[indent + 1] in " ;),"):
                    found.append((j - i + 1, f"{os.path.relpath(path, root)}:{m.group(6)}"))
                    break
found.sort(reverse=True)
for n, where in found[:most]:
    print(n, where)
