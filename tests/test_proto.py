"""The wire contract: generated code is fresh, and every RPC and field is documented."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "replaybuf" / "v1"
GENERATED = ROOT / "replaybuf" / "v1"


def test_generated_code_matches_proto_sources(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "replaybuf" / "v1").iterdir()}
    committed = {
        p.name: p.read_bytes()
        for p in GENERATED.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    }
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"generated code is stale for {stale}: run `make proto` and commit"


def _undocumented(text: str) -> list[str]:
    """Declarations (rpc, message, enum, field, enum value) with no comment right above them."""

    missing = []
    lines = text.splitlines()
    decl = re.compile(
        r"^\s*(rpc\s+\w+|message\s+\w+|enum\s+\w+|(optional\s+|repeated\s+)?[\w.<>, ]+\s+\w+\s*=\s*\d+;)"
    )
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not decl.match(line) or stripped.startswith(("//", "option", "syntax", "package")):
            continue
        # Exempt: empty messages, oneof members (documented by the oneof's comment), values
        # ending in _UNSPECIFIED, and fields/messages declared in a group that shares a comment.
        if stripped.endswith("{}") or "_UNSPECIFIED" in stripped:
            continue
        j = i - 1
        while j >= 0 and lines[j].strip() == "":
            j -= 1
        prev = lines[j].strip() if j >= 0 else ""
        if prev.startswith("//"):
            continue
        # A run of declarations directly after a comment (e.g. min_diff/max_diff) shares it.
        k = j
        while k >= 0 and decl.match(lines[k]) and not lines[k].strip().startswith("//"):
            k -= 1
        if k >= 0 and lines[k].strip().startswith("//") and k != j:
            continue
        if prev.startswith("oneof") or (prev.endswith(";") and _in_oneof(lines, i)):
            continue
        missing.append(f"{stripped}")
    return missing


def _in_oneof(lines: list[str], i: int) -> bool:
    depth = 0
    for j in range(i - 1, -1, -1):
        s = lines[j].strip()
        depth += s.count("}") - s.count("{")
        if depth < 0:
            return s.startswith("oneof")
    return False


@pytest.mark.parametrize("proto", sorted(p.name for p in PROTO.glob("*.proto")))
def test_every_declaration_is_documented(proto):
    text = (PROTO / proto).read_text()
    assert _undocumented(text) == []


def test_service_names_every_rpc_the_design_names():
    from replaybuf.v1 import service_pb2

    service = service_pb2.DESCRIPTOR.services_by_name["ReplayService"]
    names = {m.name for m in service.methods}
    assert {
        "CreateTable",
        "ListTables",
        "DescribeTable",
        "Append",
        "Sample",
        "UpdatePriorities",
        "CorrectRewards",
        "Evict",
        "Subscribe",
        "GetLineage",
    } <= names
    append = service.methods_by_name["Append"]
    assert append.client_streaming and append.server_streaming
    sample = service.methods_by_name["Sample"]
    assert sample.server_streaming and not sample.client_streaming


def test_event_envelope_carries_every_event_kind():
    from replaybuf.v1 import events_pb2

    kinds = {f.message_type.name for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert {
        "TableCreated",
        "ItemsAppended",
        "PrioritiesUpdated",
        "RewardsCorrected",
        "ItemsEvicted",
    } <= kinds
