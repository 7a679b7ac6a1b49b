"""Exports: deterministic bytes (twice, after a restart, after a rebuild), the formats read
back, Minari round trip, import, CLI vs client over gRPC, and the manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.cli import main
from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import InvalidArgumentError
from replaybuf.export import Chunk, read_export
from replaybuf.table_config import TableConfig

try:
    import pyarrow  # noqa: F401 - optional extra ("replaybuf[export]")

    FORMATS = ("npz", "parquet")
except ImportError:
    FORMATS = ("npz",)

SIG = {"obs": (np.float32, (3,)), "action": np.int32, "reward": np.float32,
       "next_obs": (np.float32, (3,)), "done": np.bool_, "pix": (np.uint8, (2, 2))}


def _fill(engine: Engine) -> tuple[int, int]:
    """Two episodes of 6 and one unfinished of 4; a correction, a priority change, an
    eviction and a draw. Returns (an LSN in the middle, the LSN at the end)."""

    engine.create_table(TableConfig("t", SIG, capacity=100))
    rng = np.random.default_rng(0)
    n = 16
    states = rng.random((n + 3, 3), np.float32)  # each episode: obs, then next_obs = obs + 1
    rows = np.concatenate([np.arange(0, 6), np.arange(7, 13), np.arange(14, 18)])
    data = {"obs": states[rows], "action": np.arange(n, dtype=np.int32),
            "reward": np.ones(n, np.float32), "next_obs": states[rows + 1],
            "done": np.isin(np.arange(n), [5, 11]),
            "pix": rng.integers(0, 255, (n, 2, 2)).astype(np.uint8)}
    ep = np.array([1] * 6 + [2] * 6 + [3] * 4)
    step = np.concatenate([np.arange(6), np.arange(6), np.arange(4)])
    engine.append("t", data, lineage={"episode_id": ep, "step": step, "model_version": 3,
                                      "timestamp_ms": 1000 + np.arange(n), "source": "actor-0",
                                      "request_id": [f"r{i}" for i in range(n)]})
    mid = engine.applied_lsn
    engine.correct_rewards("t", [2, 3], [5.0, -1.0])
    engine.update_priorities("t", [4], [7.5])
    engine.sample("t", 4, seed=1)
    engine.flush_samples()
    return mid, engine.applied_lsn


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, int, int]:
    d = tmp_path / "data"
    with Engine(d, EngineConfig.for_tests()) as engine:
        mid, end = _fill(engine)
    return d, mid, end


def test_exports_at_one_lsn_are_byte_identical_after_restart_and_rebuild(filled, tmp_path) -> None:
    d, mid, end = filled
    out = tmp_path / "out"
    with Engine(d, EngineConfig.for_tests()) as engine:
        m1 = engine.export("t", out / "a.npz", as_of_lsn=mid)
        engine.export("t", out / "b.npz", as_of_lsn=mid)
        for fmt in FORMATS:
            engine.export("t", out / f"a.{fmt}", as_of_lsn=mid, format=fmt)
        m_end = engine.export("t", out / "end.npz")
    assert _sha(out / "a.npz") == _sha(out / "b.npz")
    with Engine(d, EngineConfig.for_tests()) as engine:  # a restart
        for fmt in FORMATS:
            engine.export("t", out / f"r.{fmt}", as_of_lsn=mid, format=fmt)
    shutil.rmtree(d / "view")
    with Engine(d, EngineConfig.for_tests()) as engine:
        assert engine.rebuild_reason is not None
        m2 = engine.export("t", out / "c.npz", as_of_lsn=mid)
        for fmt in FORMATS:
            engine.export("t", out / f"c.{fmt}", as_of_lsn=mid, format=fmt)
    for fmt in FORMATS:
        assert _sha(out / f"a.{fmt}") == _sha(out / f"r.{fmt}") == _sha(out / f"c.{fmt}")
    assert m1 == {**m2, "data": "a.npz"}
    assert m_end["as_of_lsn"] == end and m_end["content_sha256"] != m1["content_sha256"]


def test_npz_holds_state_as_of_the_lsn_and_the_manifest_describes_it(filled, tmp_path) -> None:
    d, mid, end = filled
    with Engine(d, EngineConfig.for_tests()) as engine:
        engine.export("t", tmp_path / "mid.npz", as_of_lsn=mid)
        m = engine.export("t", tmp_path / "end.npz", as_of_lsn=end)
    with np.load(tmp_path / "mid.npz") as z_mid, np.load(tmp_path / "end.npz") as z:
        assert z_mid["reward"].tolist() == [1.0] * 16
        assert z["reward"][1:4].tolist() == [5.0, -1.0, 1.0]
        assert z["meta.priority"][3] == 7.5 and z_mid["meta.priority"][3] == 1.0
        assert z["meta.times_sampled"].sum() == 4 and z_mid["meta.times_sampled"].sum() == 0
        assert z["pix"].shape == (16, 2, 2) and z["pix"].dtype == np.uint8
        assert z["lineage.request_id"][2] == "r2" and z["lineage.source"][0] == "actor-0"
        assert z["meta.item_id"].tolist() == list(range(1, 17))
    on_disk = json.loads((tmp_path / "end.npz.manifest.json").read_text())
    assert on_disk == m
    assert m["item_count"] == 16 and m["as_of_lsn"] == end and m["format"] == "npz"
    assert m["fields"]["pix"] == {"dtype": "|u1", "shape": [2, 2]}
    assert m["lineage"] == {"model_versions": [3], "min_timestamp_ms": 1000,
                            "max_timestamp_ms": 1015}
    assert m["config"]["name"] == "t" and len(m["content_sha256"]) == 64 and m["log_id"]


def test_parquet_reads_back_equal_to_the_npz_arrays(filled, tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    d, _, _ = filled
    with Engine(d, EngineConfig.for_tests()) as engine:
        m1 = engine.export("t", tmp_path / "x.npz")
        m2 = engine.export("t", tmp_path / "x.parquet", format="parquet")
    assert m1["content_sha256"] == m2["content_sha256"]
    table = pq.read_table(tmp_path / "x.parquet")
    with np.load(tmp_path / "x.npz") as z:
        for name in z.files:
            col = table.column(name).to_pylist()
            assert col == z[name].tolist(), name
    back = read_export(tmp_path / "x.parquet")
    with np.load(tmp_path / "x.npz") as z:
        for name in SIG:
            np.testing.assert_array_equal(back.columns[name], z[name])


def test_import_appends_an_export_naming_the_dataset(filled, tmp_path) -> None:
    d, _, _ = filled
    with Engine(d, EngineConfig.for_tests()) as engine:
        engine.export("t", tmp_path / "x.npz")
    d2 = tmp_path / "other"
    assert main(["import", "--data-dir", str(d2), "--table", "copy",
                 "--from", str(tmp_path / "x.npz")]) == 1  # no table, no --create
    assert main(["import", "--data-dir", str(d2), "--table", "copy",
                 "--from", str(tmp_path / "x.npz"), "--create"]) == 0
    with Engine(d2, EngineConfig.for_tests()) as engine:
        got = list(engine.materialize("copy"))
        assert sum(len(c) for c in got) == 16
        c = got[0]
        assert set(c.lineage["source"]) == {"import:x.npz"}
        assert c.lineage["request_id"][2] == "r2"
        assert c.columns["reward"][1:3].tolist() == [5.0, -1.0]
        assert c.priorities[3] == 7.5
        assert engine.describe_table("copy").config.capacity == 100


def test_minari_round_trip_keeps_the_transitions(filled, tmp_path, monkeypatch) -> None:
    pytest.importorskip("pyarrow")  # minari's arrow storage
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    d, _, _ = filled
    with Engine(d, EngineConfig.for_tests()) as engine:
        engine.export("t", tmp_path / "x.npz")
        with pytest.raises(InvalidArgumentError, match="dataset id"):
            engine.export("t", "no spaces allowed", format="minari")
        with pytest.warns(UserWarning):
            engine.export("t", "replaybuf/t-v0", format="minari")
    ds = minari.load_dataset("replaybuf/t-v0")
    assert ds.total_episodes == 3 and ds.total_steps == 16
    eps = list(ds.iterate_episodes())
    assert [bool(e.terminations[-1]) for e in eps] == [True, True, False]
    assert [bool(e.truncations[-1]) for e in eps] == [False, False, True]  # unfinished
    assert (tmp_path / "minari" / "replaybuf" / "t-v0" / "replaybuf.manifest.json").is_file()
    d2 = tmp_path / "other"
    assert main(["import", "--data-dir", str(d2), "--table", "back",
                 "--from", "replaybuf/t-v0", "--create"]) == 0
    with Engine(d2, EngineConfig.for_tests()) as engine:
        (c,) = list(engine.materialize("back"))
    with np.load(tmp_path / "x.npz") as z:
        order = np.lexsort((c.lineage["step"], c.lineage["episode_id"]))
        for name in ("obs", "action", "reward", "next_obs", "done"):
            np.testing.assert_array_equal(c.columns[name][order].astype(z[name].dtype), z[name])
        assert c.lineage["episode_id"][order].tolist() == z["lineage.episode_id"].tolist()
    assert set(c.lineage["source"]) == {"import:replaybuf/t-v0"}


def test_client_export_writes_the_same_bytes_as_the_cli(make_replay_server, tmp_path,
                                                        capsys) -> None:
    from replaybuf_client import ReplayClient

    server = make_replay_server()
    engine = server.engine
    mid, end = _fill(engine)
    with ReplayClient(server.address, timeout=20) as client:
        m_npz = client.export("t", tmp_path / "c.npz", as_of_lsn=mid)
        manifests = {fmt: client.export("t", tmp_path / f"c.{fmt}", as_of_lsn=mid, format=fmt)
                     for fmt in FORMATS}
        first = client.sample("t", 3, seed=5)
        again = client.sample("t", 3, seed=5, at_lsn=first.info.lsn)
        assert again.info.item_ids.tolist() == first.info.item_ids.tolist()
        np.testing.assert_array_equal(again.info.weights, first.info.weights)
    data_dir = server.data_dir
    # The server holds DIR/log/LOCK: the CLI refuses clearly.
    assert main(["export", "--data-dir", str(data_dir), "--table", "t", "--as-of", str(mid),
                 "--out", str(tmp_path / "x.npz"), "--quiet"]) == 1
    assert "log/LOCK" in capsys.readouterr().err
    server.stop()
    for fmt in FORMATS:
        assert main(["export", "--data-dir", str(data_dir), "--table", "t", "--as-of", str(mid),
                     "--format", fmt, "--out", str(tmp_path / f"cli.{fmt}"), "--quiet"]) == 0
        assert _sha(tmp_path / f"cli.{fmt}") == _sha(tmp_path / f"c.{fmt}")
    cli_m = json.loads((tmp_path / "cli.npz.manifest.json").read_text())
    assert cli_m == {**m_npz, "data": "cli.npz"}
    assert {m["content_sha256"] for m in manifests.values()} == {m_npz["content_sha256"]}


def test_the_writers_load_neither_numba_nor_lmdb_nor_the_optional_extras() -> None:
    import subprocess
    import sys

    code = "import json, sys, replaybuf.export; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"numba", "lmdb", "pyarrow", "minari", "grpc"}


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_bytes_do_not_depend_on_how_the_items_were_chunked(filled, tmp_path, fmt) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    from replaybuf.export import write_export

    d, mid, _ = filled
    with Engine(d, EngineConfig.for_tests()) as engine, engine.as_of("t", mid) as m:
        for k in (1, 5, 4096):
            write_export(m.chunks(k), tmp_path / f"k{k}.{fmt}", fmt, info=m.info())
        # the npz writer puts numeric columns in place when it knows the count: same bytes
        write_export(m.chunks(5), tmp_path / f"total.{fmt}", fmt, info=m.info(), total=m.count)
    assert len({_sha(tmp_path / f"{k}.{fmt}") for k in ("k1", "k5", "k4096", "total")}) == 1


def test_parquet_staged_row_groups_give_the_bytes_of_add(filled, tmp_path, monkeypatch) -> None:
    """`write_export` stages chunks on the caller's thread and encodes the row groups on the
    writer's; `ParquetWriter.add` does both in one call: the same file, with several row
    groups and a short last one."""

    pytest.importorskip("pyarrow")
    import replaybuf.export_parquet as export_parquet
    from replaybuf.export import write_export
    from replaybuf.export_parquet import ParquetWriter

    monkeypatch.setattr(export_parquet, "PARQUET_ROW_GROUP", 3)
    d, mid, _ = filled
    with Engine(d, EngineConfig.for_tests()) as engine, engine.as_of("t", mid) as m:
        write_export(m.chunks(2), tmp_path / "staged.parquet", "parquet", info=m.info())
        w = ParquetWriter(tmp_path / "added.parquet", m.info())
        for c in m.chunks(5):
            w.add(c)
        w.finish()
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "staged.parquet").metadata.num_row_groups == 6  # 16 items
    assert _sha(tmp_path / "staged.parquet") == _sha(tmp_path / "added.parquet")


def test_the_caller_runs_a_bounded_number_of_items_ahead_of_the_writer(filled, tmp_path,
                                                                     monkeypatch) -> None:
    """While the writer is stuck on the first chunk, the caller hands over chunks up to
    ``_IN_FLIGHT_ITEMS`` items (here 4 of 1 item), takes the 5th from its source and waits
    there: the 6th is read only after the first chunk is written. The bytes are unchanged."""

    import threading

    import replaybuf.export as export
    from replaybuf.export_npz import NpzWriter

    d, mid, _ = filled
    monkeypatch.setattr(export, "_IN_FLIGHT_ITEMS", 4)
    fifth_read = threading.Event()
    first_written = threading.Event()
    written_before_read: dict[int, bool] = {}

    class StuckFirst(NpzWriter):
        def add(self, c: Chunk) -> None:
            if not first_written.is_set():
                fifth_read.wait(timeout=30)  # a bound only so that a failure cannot hang
            super().add(c)
            first_written.set()

    def source(chunks):
        for k, c in enumerate(chunks, 1):
            written_before_read[k] = first_written.is_set()
            if k == 5:
                fifth_read.set()
            yield c

    with Engine(d, EngineConfig.for_tests()) as engine, engine.as_of("t", mid) as m:
        info = m.info()
        monkeypatch.setattr(export, "NpzWriter", StuckFirst)
        export.write_export(source(m.chunks(1)), tmp_path / "a.npz", "npz", info=info)
        monkeypatch.undo()
        export.write_export(m.chunks(), tmp_path / "b.npz", "npz", info=info)
    assert fifth_read.is_set()
    assert [written_before_read[k] for k in range(1, 7)] == [False] * 5 + [True]
    assert _sha(tmp_path / "a.npz") == _sha(tmp_path / "b.npz")


STRING_CASES = [
    [], [""], ["", ""], ["r1", "r2", "r3"], ["req-000000001"] * 3, ["a", "bb", "", "ccc"],
    ["é", "x"], ["日本", "日本"], ["ab\x00", "ab"], ["\x00"], ["same", "same", "sam"],
]


@pytest.mark.parametrize("strings", STRING_CASES)
def test_string_columns_encode_like_the_per_string_definitions(strings) -> None:
    """The vectorized UTF-8, numpy and Arrow forms of a string column equal what encoding
    each string on its own gives (the definitions the hash and the files were written with)."""

    from replaybuf.export import empty_lineage, utf8_column
    from replaybuf.export_npz import fixed_unicode

    lengths, utf8 = utf8_column(strings)
    assert lengths.dtype == np.dtype("<u4")
    assert lengths.tolist() == [len(s.encode()) for s in strings]
    assert utf8 == b"".join(s.encode() for s in strings)
    n = len(strings)
    lineage = empty_lineage(n)
    lineage["request_id"] = list(strings)
    c = Chunk(np.arange(1, n + 1, dtype=np.uint64), {}, np.zeros(n), np.zeros(n, np.uint64),
              lineage)
    got, want = fixed_unicode(c, "request_id"), np.asarray(list(strings), dtype=str)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    if n:
        pa = pytest.importorskip("pyarrow")
        from replaybuf.export_parquet import arrow_strings

        assert arrow_strings(pa, c, "request_id").equals(pa.array(list(strings), pa.string()))


def test_minari_pieces_split_at_new_episodes_and_at_missing_steps() -> None:
    pytest.importorskip("minari")
    from replaybuf.export_minari import _minari_episodes

    # ids in append order; episodes interleave; episode 5 lost its step 2 (evicted)
    ids = np.arange(1, 9, dtype=np.uint64)
    ep = np.array([5, 7, 5, 7, 5, 5, 7, 9], np.uint64)
    step = np.array([0, 0, 1, 1, 3, 4, 2, 0], np.uint64)
    col = {"obs": ids.astype(np.float32)[:, None], "next_obs": ids.astype(np.float32)[:, None] + 0.5,
           "action": np.zeros((8, 1), np.float32), "reward": ids.astype(np.float32),
           "done": np.isin(ids, [6, 7])}
    got = [(b.infos["item_id"][:-1], b.terminations[-1], b.truncations[-1])
           for b in _minari_episodes(col, ids, ep, step)]
    assert got == [([1, 3], False, True), ([5, 6], True, False), ([2, 4, 7], True, False),
                   ([8], False, True)]


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_crc32_combine_equals_the_crc_of_the_concatenation(a, b, seed) -> None:
    from replaybuf.export_npz import crc32_combine

    start = seed  # zlib.crc32's running value may start anywhere
    assert crc32_combine(zlib.crc32(a, start), zlib.crc32(b), len(b)) == zlib.crc32(a + b, start)


def test_npz_with_every_size_in_zip64_records_reads_back_the_same(filled, tmp_path,
                                                                  monkeypatch) -> None:
    import zipfile

    from replaybuf import export_npz

    d, mid, _ = filled
    with Engine(d, EngineConfig.for_tests()) as engine:
        engine.export("t", tmp_path / "plain.npz", as_of_lsn=mid)
        monkeypatch.setattr(export_npz, "ZIP64_LIMIT", 1)  # what a file past 4 GiB needs
        engine.export("t", tmp_path / "z64.npz", as_of_lsn=mid)
    with zipfile.ZipFile(tmp_path / "z64.npz") as zf:
        assert zf.testzip() is None  # every member's CRC-32 checks
        infos = zf.infolist()
    assert infos[0].filename == "meta.item_id.npy" and len(infos) == 9 + len(SIG)
    with np.load(tmp_path / "plain.npz") as plain, np.load(tmp_path / "z64.npz") as z64:
        assert plain.files == z64.files
        for name in plain.files:
            assert plain[name].dtype == z64[name].dtype, name
            np.testing.assert_array_equal(plain[name], z64[name])


def test_a_failed_export_leaves_no_file_behind(filled, tmp_path) -> None:
    from replaybuf.errors import FailedPreconditionError
    from replaybuf.export import write_export

    d, mid, _ = filled
    out = tmp_path / "out"
    with Engine(d, EngineConfig.for_tests()) as engine, engine.as_of("t", mid) as m:
        chunks = list(m.chunks(5))
        info = m.info()
    for fmt in FORMATS:
        with pytest.raises(FailedPreconditionError, match="ascending"):
            write_export(chunks[::-1], out / f"x.{fmt}", fmt, info=info)

        def broken():
            yield chunks[0]
            raise OSError("the source went away")

        with pytest.raises(OSError, match="went away"):
            write_export(broken(), out / f"x.{fmt}", fmt, info=info)
    for total in (len(chunks) - 1, len(chunks) * 5 + 1):  # an item too many, one too few
        with pytest.raises(FailedPreconditionError, match="announced"):
            write_export(iter(chunks), out / "x.npz", "npz", info=info, total=total)
    assert not out.exists() or not list(out.iterdir())


def test_parquet_codecs_change_the_bytes_not_the_content(filled, tmp_path, capsys) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    d, mid, _ = filled
    paths = {}
    for codec in ("snappy", "zstd", "lz4", "none"):
        paths[codec] = tmp_path / f"{codec}.parquet"
        assert main(["export", "--data-dir", str(d), "--table", "t", "--as-of", str(mid),
                     "--format", "parquet", "--compression", codec, "--out",
                     str(paths[codec]), "--quiet"]) == 0
    assert main(["export", "--data-dir", str(d), "--table", "t", "--as-of", str(mid),
                 "--format", "parquet", "--out", str(tmp_path / "default.parquet"),
                 "--quiet"]) == 0
    assert _sha(tmp_path / "default.parquet") == _sha(paths["snappy"])
    hashes = {json.loads(Path(f"{p}.manifest.json").read_text())["content_sha256"]
              for p in paths.values()}
    assert len(hashes) == 1 and len({_sha(p) for p in paths.values()}) == 4
    want = pq.read_table(paths["snappy"])
    for codec, p in paths.items():
        f = pq.ParquetFile(p)
        assert f.metadata.row_group(0).column(0).compression == {
            "snappy": "SNAPPY", "zstd": "ZSTD", "lz4": "LZ4", "none": "UNCOMPRESSED"}[codec]
        assert f.read().equals(want)
    obs = want.schema.field("obs").type
    assert obs.list_size == 3 and not obs.value_field.nullable  # fixed-size list, no nulls
    assert want.schema.field("pix").type.value_type.list_size == 2
    assert main(["export", "--data-dir", str(d), "--table", "t", "--compression", "zstd",
                 "--out", str(tmp_path / "x.npz"), "--quiet"]) == 1
    assert "compression" in capsys.readouterr().err
    with Engine(d, EngineConfig.for_tests()) as engine, engine.as_of("t", mid) as m:
        from replaybuf.export import write_export

        with pytest.raises(InvalidArgumentError, match="compression is 'brotli'"):
            write_export(m.chunks(), tmp_path / "y.parquet", "parquet", info=m.info(),
                         compression="brotli")
    assert not (tmp_path / "y.parquet").exists() and not (tmp_path / "x.npz").exists()
