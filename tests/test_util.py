"""optimizer._util: atomic writes leave a complete file with ordinary permissions, or nothing."""

from __future__ import annotations

import os

import pytest

from optimizer._util import atomic_write


def test_atomic_write_gives_umask_mode_not_mkstemp_private_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        p = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"abc"))
    finally:
        os.umask(umask)
    assert p.read_bytes() == b"abc"
    assert p.stat().st_mode & 0o777 == 0o644


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    p = tmp_path / "b.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    atomic_write(p, lambda f: f.write(b"new"))
    assert p.read_bytes() == b"new"
    assert p.stat().st_mode & 0o777 == 0o640


def test_atomic_write_failure_leaves_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "c.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.bin"]


def test_time_interleaved_alternates_contestants_and_checks_arguments():
    from optimizer.measure import time_interleaved

    order = []
    t = time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        runs=20,
        warmup=0,
        rounds=4,
    )
    assert set(t) == {"a", "b"} and all(med > 0 and p90 >= med for med, p90 in t.values())
    # four rounds of five timed calls (plus one warm-up call each): a, b, a, b, ...
    blocks = [order[i] for i in range(0, len(order), 6)]
    assert blocks == ["a", "b"] * 4, order
    with pytest.raises(ValueError, match="runs >= 1"):
        time_interleaved({"a": lambda: None}, runs=0, warmup=0)
