"""Property tests of FileLog against a plain list: appends, reopens, reads and torn tails."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaybuf.file_log import FileLog, FileLogConfig
from replaybuf.log_format import HEADER_SIZE

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

batches = st.lists(st.binary(max_size=300), min_size=1, max_size=4)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), batches),
        st.tuples(st.just("append large"), st.integers(5_000, 80_000)),
        st.tuples(st.just("reopen"), st.none()),
        st.tuples(st.just("read"), st.tuples(st.integers(0, 10**6), st.integers(0, 40))),
    ),
    min_size=1,
    max_size=30,
)


def check_reads(log: FileLog, model: list[bytes], start: int, span: int) -> None:
    if not model:
        assert list(log.read()) == []
        return
    from_lsn = 1 + start % len(model)
    to_lsn = from_lsn + span
    got = [(r.lsn, r.payload) for r in log.read(from_lsn, to_lsn)]
    want = [(lsn, model[lsn - 1]) for lsn in range(from_lsn, min(to_lsn, len(model)) + 1)]
    assert got == want


@SETTINGS
@given(ops=operations, segment_bytes=st.sampled_from([4096, 20_000]))
def test_reads_from_any_lsn_return_exactly_what_was_appended(ops, segment_bytes):
    cfg = FileLogConfig(fsync="none", segment_bytes=segment_bytes)
    with tempfile.TemporaryDirectory() as d:
        model: list[bytes] = []
        log = FileLog(d, cfg)
        try:
            for kind, arg in ops:
                if kind == "append":
                    ack = log.append(arg)
                    assert ack.first_lsn == len(model) + 1 and ack.count == len(arg)
                    model.extend(arg)
                elif kind == "append large":
                    big = (len(model).to_bytes(8, "big") * (arg // 8 + 1))[:arg]
                    assert log.append([big, b"t"]).first_lsn == len(model) + 1
                    model.extend([big, b"t"])
                elif kind == "reopen":
                    log.close()
                    log = FileLog(d, cfg)
                else:
                    check_reads(log, model, *arg)
                assert log.last_lsn == len(model)
        finally:
            log.close()
        with FileLog(d, cfg) as log:
            assert [r.payload for r in log.read()] == model
            assert [r.lsn for r in log.read()] == list(range(1, len(model) + 1))


@SETTINGS
@given(frames=st.lists(batches, min_size=1, max_size=25), data=st.data())
def test_a_cut_anywhere_in_the_last_segment_keeps_exactly_the_whole_frames_before_it(frames, data):
    cfg = FileLogConfig(fsync="none", segment_bytes=4096)
    with tempfile.TemporaryDirectory() as d:
        ends: list[tuple[Path, int, int]] = []  # (segment, end offset, records so far)
        model: list[bytes] = []
        with FileLog(d, cfg) as log:
            for batch in frames:
                log.append(batch)
                model.extend(batch)
                segment = max(Path(d).glob("*.seg"))
                ends.append((segment, segment.stat().st_size, len(model)))
        last_segment = ends[-1][0]
        cut = data.draw(st.integers(HEADER_SIZE, last_segment.stat().st_size), label="cut")
        os.truncate(last_segment, cut)
        kept = max(
            (n for seg, end, n in ends if seg != last_segment or end <= cut), default=0
        )
        with FileLog(d, cfg) as log:
            assert log.last_lsn == kept
            assert [r.payload for r in log.read()] == model[:kept]
            assert log.append([b"next"]).first_lsn == kept + 1
