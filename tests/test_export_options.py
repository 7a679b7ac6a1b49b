"""Export options: the Parquet codec through `Engine.export` and `ReplayClient.export` (the same
bytes as ``replaybuf export --compression``), and the writer's statistics choice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from replaybuf.cli import main
from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import InvalidArgumentError

from test_export import _fill, filled  # noqa: F401 - the fixture, shared

pq = pytest.importorskip("pyarrow.parquet")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(d: Path, lsn: int, out: Path, *extra: str) -> None:
    assert main(["export", "--data-dir", str(d), "--table", "t", "--as-of", str(lsn),
                 "--format", "parquet", "--out", str(out), "--quiet", *extra]) == 0


def test_engine_export_takes_the_codec_of_the_cli(filled, tmp_path) -> None:  # noqa: F811
    d, mid, end = filled
    _cli(d, mid, tmp_path / "cli-zstd.parquet", "--compression", "zstd")
    _cli(d, mid, tmp_path / "cli-default.parquet")
    with Engine(d, EngineConfig.for_tests()) as engine:
        zstd = engine.export("t", tmp_path / "e-zstd.parquet", as_of_lsn=mid, format="parquet",
                             compression="zstd")
        plain = engine.export("t", tmp_path / "e-none.parquet", as_of_lsn=mid,
                              format="parquet", compression="none")
        engine.export("t", tmp_path / "e-default.parquet", as_of_lsn=mid, format="parquet")
        with pytest.raises(InvalidArgumentError, match="compression is 'zstd' but format is"):
            engine.export("t", tmp_path / "x.npz", as_of_lsn=mid, compression="zstd")
        with pytest.raises(InvalidArgumentError, match="compression is 'gzip'"):
            engine.export("t", tmp_path / "y.parquet", as_of_lsn=mid, format="parquet",
                          compression="gzip")
    assert _sha(tmp_path / "e-zstd.parquet") == _sha(tmp_path / "cli-zstd.parquet")
    assert _sha(tmp_path / "e-default.parquet") == _sha(tmp_path / "cli-default.parquet")
    assert _sha(tmp_path / "e-zstd.parquet") != _sha(tmp_path / "e-none.parquet")
    assert zstd["content_sha256"] == plain["content_sha256"]
    col = pq.ParquetFile(tmp_path / "e-zstd.parquet").metadata.row_group(0).column(0)
    assert col.compression == "ZSTD"
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.parquet").exists()


def test_client_export_takes_the_codec_and_writes_the_cli_bytes(make_replay_server,
                                                                tmp_path) -> None:
    from replaybuf_client import ReplayClient

    server = make_replay_server()
    mid, _ = _fill(server.engine)
    with ReplayClient(server.address, timeout=20) as client:
        m = client.export("t", tmp_path / "c.parquet", as_of_lsn=mid, format="parquet",
                          compression="lz4")
        with pytest.raises(InvalidArgumentError, match="compression is 'lz4' but format is"):
            client.export("t", tmp_path / "c.npz", as_of_lsn=mid, compression="lz4")
    server.stop()
    _cli(server.data_dir, mid, tmp_path / "cli.parquet", "--compression", "lz4")
    assert _sha(tmp_path / "c.parquet") == _sha(tmp_path / "cli.parquet")
    assert pq.ParquetFile(tmp_path / "c.parquet").metadata.row_group(0).column(0).compression \
        == "LZ4"
    assert m["item_count"] > 0 and not (tmp_path / "c.npz").exists()


def test_parquet_statistics_cover_the_scalar_columns_only(filled, tmp_path) -> None:  # noqa: F811
    d, mid, _ = filled
    out = tmp_path / "s.parquet"
    _cli(d, mid, out)
    meta = pq.ParquetFile(out).metadata
    table = pq.read_table(out)
    stats = {}
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for i in range(rg.num_columns):
            c = rg.column(i)
            stats[c.path_in_schema] = c.statistics if c.is_stats_set else None
    tensors = [p for p in stats if p.split(".")[0] in ("obs", "next_obs", "pix")]
    assert tensors and all(stats[p] is None for p in tensors)
    ids = table.column("meta.item_id").to_pylist()
    s = stats["meta.item_id"]
    assert s is not None and s.has_min_max and (s.min, s.max) == (min(ids), max(ids))
    for name in ("meta.priority", "reward", "action", "lineage.episode_id", "lineage.source"):
        assert stats[name] is not None and stats[name].has_min_max, name
    prio = table.column("meta.priority").to_pylist()
    assert (stats["meta.priority"].min, stats["meta.priority"].max) == (min(prio), max(prio))
