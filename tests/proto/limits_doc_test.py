#!/usr/bin/env python3
"""The contract's limits are defined once, in proto/include/qaqkv/limits.h.
This test fails when the table in docs/limits.md or an annotation in the
proto ("1..4096 (kMaxLayers)") disagrees with that header, or when a limit
of the header is missing from the table.

  limits_doc_test.py SOURCE_DIR
"""
import os
import re
import sys


def header_values(path):
    """kName -> integer value, evaluating `<<` shifts and references to
    earlier constants."""
    values = {}
    text = open(path).read()
    for name, expr in re.findall(r"inline constexpr [\w:]+ (k\w+) = ([^;]+);", text):
        e = re.sub(r"(?:size_t|uint64_t|uint32_t|int64_t)\{(\d+)\}", r"\1", expr)
        e = re.sub(r"\b(k\w+)\b", lambda m: str(values[m.group(1)]), e)
        values[name] = int(eval(e, {"__builtins__": {}}))  # digits, shifts, names resolved
    return values


def main():
    src = sys.argv[1]
    values = header_values(os.path.join(src, "proto/include/qaqkv/limits.h"))
    errors = []

    # docs/limits.md: a table row per limit: | `kName` | value | ... |
    doc = open(os.path.join(src, "docs/limits.md")).read()
    rows = dict(re.findall(r"^\| `(k\w+)` \| ([\d,]+) \|", doc, re.M))
    for name, v in values.items():
        if name not in rows:
            errors.append(f"docs/limits.md: no row for {name} ({v})")
        elif int(rows[name].replace(",", "")) != v:
            errors.append(f"docs/limits.md: {name} is {rows[name]}, limits.h says {v}")
    for name in rows:
        if name not in values:
            errors.append(f"docs/limits.md: {name} is not in limits.h")

    # The proto's annotations: "<number> (kName)", the number being the limit.
    proto = open(os.path.join(src, "proto/qaqkv/v1/kvcache.proto")).read()
    annotated = re.findall(r"(\d+) \((k\w+)\)", proto)
    if not annotated:
        errors.append("kvcache.proto: no (kName) annotations found")
    for number, name in annotated:
        if name not in values:
            errors.append(f"kvcache.proto: ({name}) is not in limits.h")
        elif int(number) != values[name]:
            errors.append(f"kvcache.proto: {number} ({name}), limits.h says {values[name]}")

    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"{len(values)} limits; docs/limits.md and {len(annotated)} proto annotations agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
