#!/usr/bin/env python3
"""The layering rules of qaqkv, checked (ctest `layering_test`, in every preset).

1. No folder includes another folder's internal/ headers. A test folder
   tests/X/ may include X/internal/ (it tests X's units).
2. A library or binary includes another project library's header only when it
   links that library directly (no reaching through a transitive dependency),
   and every header it includes belongs to some library.
3. A library links only what it includes: each project library and each
   external library it links (from a known table) is included by at least one
   of its sources.

Targets, their sources and their direct links come from
<build>/qaqkv_targets.json (cmake/QaqkvHelpers.cmake writes it).

  check_layering.py SOURCE_DIR BUILD_DIR
"""
import json
import os
import re
import subprocess
import sys

FOLDERS = {"base", "proto", "kernels", "storage", "service", "client", "tools", "bench", "tests"}
SOURCE_EXT = (".h", ".cc", ".cu", ".cuh", ".inc")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)

# External link -> include prefixes that use it. A link not listed here
# (abseil components, Threads, CUDA runtime) is not checked.
EXTERNAL = {
    "PkgConfig::XXHASH": ("xxhash.h", "xxh_x86dispatch.h"),
    "RocksDB::rocksdb-shared": ("rocksdb/",),
    "PkgConfig::HTTPLIB": ("httplib.h",),
    "PkgConfig::HIREDIS": ("hiredis/", "hiredis.h"),
    "PkgConfig::ZSTD": ("zstd.h",),
    "OpenSSL::Crypto": ("openssl/",),
    "CLI11::CLI11": ("CLI/",),
    "nlohmann_json::nlohmann_json": ("nlohmann/",),
    "gRPC::grpc++": ("grpcpp/", "grpc/"),
    "gRPC::grpc++_reflection": ("grpcpp/ext/proto_server_reflection",),
    "protobuf::libprotobuf": ("google/protobuf/",),
}

# Public headers installed under include/qaqkv/, and the generated proto code.
PUBLIC_HEADERS = {
    "qaqkv/client.h": "client/include/qaqkv/client.h",
    "qaqkv/nccl_transport.h": "client/include/qaqkv/nccl_transport.h",
    "qaqkv/limits.h": "proto/include/qaqkv/limits.h",
}
GENERATED_OWNER = {"qaqkv/v1/": "qaqkv_proto"}


def tracked_sources(src):
    out = subprocess.run(["git", "-C", src, "ls-files"], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        files = out.stdout.split()
    else:  # not a git checkout: walk the tree
        files = []
        for root, dirs, names in os.walk(src):
            dirs[:] = [d for d in dirs if d not in ("build", ".git")]
            files += [os.path.relpath(os.path.join(root, n), src) for n in names]
    return [f for f in files if f.endswith(SOURCE_EXT) and f.split("/")[0] in FOLDERS]


def includes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return INCLUDE.findall(f.read())


def closure(src, path, seen):
    """Every include reachable from `path` through the project's own headers
    (a link is used when something the sources pull in needs it)."""
    out = []
    for inc in includes(path):
        out.append(inc)
        header = os.path.join(src, PUBLIC_HEADERS.get(inc, inc))
        if inc.split("/")[0] in FOLDERS | {"qaqkv"} and os.path.isfile(header) and header not in seen:
            seen.add(header)
            out += closure(src, header, seen)
    return out


def target_name(link):
    """qaqkv::foo or qaqkv_foo -> qaqkv_foo; None for anything else."""
    if link.startswith("qaqkv::"):
        return "qaqkv_" + link[len("qaqkv::"):]
    if link.startswith("qaqkv_") or link == "qaqkv-server":
        return link
    return None


def main():
    src, build = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    errors = []

    # 1. internal/ headers stay inside their folder.
    for rel in tracked_sources(src):
        parts = rel.split("/")
        for inc in includes(os.path.join(src, rel)):
            ip = inc.split("/")
            if "internal" not in ip[:-1] or ip[0] not in FOLDERS:
                continue
            owner = ip[0]
            if parts[0] == owner or (parts[0] == "tests" and len(parts) > 2 and parts[1] == owner):
                continue
            errors.append(f"{rel}: includes {inc}, another folder's internal header")

    # 2 and 3: includes against direct links.
    with open(os.path.join(build, "qaqkv_targets.json")) as f:
        targets = json.load(f)
    owner_of = {}
    for name, t in targets.items():
        for s in t["sources"]:
            if s.startswith(src + "/"):
                owner_of[os.path.relpath(s, src)] = name
    for name, t in targets.items():
        links = t["links"]
        direct = {target_name(l) for l in links} - {None}
        used_targets, used_prefixes = set(), set()
        for s in t["sources"]:
            if not s.startswith(src + "/") or not s.endswith(SOURCE_EXT):
                continue
            rel = os.path.relpath(s, src)
            direct_includes = set(includes(s))
            for inc in closure(src, s, set()):
                header = PUBLIC_HEADERS.get(inc, inc)
                owner = owner_of.get(header)
                if owner is None:
                    owner = next((o for p, o in GENERATED_OWNER.items() if inc.startswith(p)), None)
                if owner is None and header.split("/")[0] in FOLDERS and "/" in header:
                    if inc in direct_includes and os.path.exists(os.path.join(src, header)):
                        errors.append(f"{rel}: includes {inc}, which no library lists in its HDRS")
                    continue
                if owner is not None:
                    used_targets.add(owner)
                    if inc in direct_includes and owner != name and owner not in direct:
                        errors.append(f"{rel} ({name}): includes {inc} of {owner} without "
                                      f"linking it directly")
                for prefixes in EXTERNAL.values():
                    for p in prefixes:
                        if inc.startswith(p):
                            used_prefixes.add(p)
        for d in sorted(direct - used_targets - {name}):
            errors.append(f"{name}: links {d} but no source of it includes its headers")
        for link in links:
            prefixes = EXTERNAL.get(link)
            if prefixes and not any(p in used_prefixes for p in prefixes):
                errors.append(f"{name}: links {link} but no source of it includes its headers")

    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} layering violation(s); see docs/contributing.md")
        return 1
    print(f"layering: {len(targets)} targets checked, no violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
