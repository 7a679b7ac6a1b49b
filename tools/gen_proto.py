"""Regenerate the Python protobuf and gRPC modules from proto/ (run: `make proto`).

The proto package is `replaybuf.v1` and files live at proto/replaybuf/v1/, so the generated
modules land in replaybuf/v1/ and import each other as `from replaybuf.v1 import ..._pb2`
without any rewriting. Output depends only on proto/ and the pinned grpcio-tools version, and
tests/test_proto.py fails when the committed modules are stale.

Usage:
    python tools/gen_proto.py [--out DIR]   # DIR defaults to the repository root
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def proto_files() -> list[pathlib.Path]:
    return sorted((PROTO_DIR / "replaybuf" / "v1").glob("*.proto"))


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    """Generate into ``out`` (the root of the import tree); return the files written."""

    from grpc_tools import protoc  # dev-only dependency (grpcio-tools)
    import importlib.resources

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    pkg = out / "replaybuf" / "v1"
    pkg.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(PROTO_DIR)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    return sorted(p for p in pkg.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print("wrote", path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
