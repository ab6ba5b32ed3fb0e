"""The co-simulation build cache drops builds of deleted environments and stale builds."""
import os
import time

import pytest

from qkdlink.cosim import build_cache


def _finished_build(root, name, *, libs, verilator, age_days=0.0, now):
    folder = root / "verilator" / name
    (folder / "build").mkdir(parents=True)
    (folder / "build" / "Vtop__ALL.a").write_bytes(b"x" * 100)
    build_cache.write_stamp(folder, name * 4, cocotb_libs=str(libs), verilator_root=str(verilator))
    stamp_time = now - age_days * 86400
    os.utime(folder / build_cache.STAMP, (stamp_time, stamp_time))
    raw = root / "raw" / f"{name}-0123456789abcdef"
    raw.mkdir(parents=True)
    (raw / "raw_main").write_bytes(b"\x7fELF")
    return folder


@pytest.fixture
def env(tmp_path):
    libs = tmp_path / "venv" / "cocotb" / "libs"
    verilator = tmp_path / "venv" / "verilator"
    libs.mkdir(parents=True)
    verilator.mkdir(parents=True)
    return tmp_path / "cache", libs, verilator


def test_builds_of_a_deleted_environment_and_stale_builds_go_live_ones_stay(env, tmp_path):
    root, libs, verilator = env
    now = time.time()
    live = _finished_build(root, "alice-s1p1-aaaa", libs=libs, verilator=verilator, age_days=29, now=now)
    dead = _finished_build(root, "bob-s1p1-bbbb", libs=tmp_path / "gone" / "cocotb" / "libs",
                           verilator=verilator, now=now)
    stale = _finished_build(root, "link-s2p1-cccc", libs=libs, verilator=verilator, age_days=31, now=now)
    no_verilator = _finished_build(root, "link-s4p4-dddd", libs=libs, verilator=tmp_path / "old-verilator",
                                   now=now)
    in_progress = root / "verilator" / "fulllink-s4p4-eeee"
    (in_progress / "src").mkdir(parents=True)

    removed = build_cache.prune(root, max_age_days=30, now=now)

    assert sorted(removed) == sorted(f.name for f in (dead, stale, no_verilator))
    assert live.is_dir() and in_progress.is_dir()
    assert sorted(p.name for p in (root / "raw").iterdir()) == ["alice-s1p1-aaaa-0123456789abcdef"]
    assert build_cache.prune(root, max_age_days=30, now=now) == []


def test_old_stamps_take_the_environment_from_the_binary_runpath(env, tmp_path):
    root, libs, _ = env
    for name, runpath in (("alice-old-live", libs), ("bob-old-dead", tmp_path / "deleted" / "cocotb" / "libs")):
        folder = root / "verilator" / name
        (folder / "build").mkdir(parents=True)
        (folder / "build" / "alice_top").write_bytes(b"\x7fELF\0junk\0" + str(runpath).encode() + b"\0more")
        (folder / build_cache.STAMP).write_text("f" * 64)
    assert build_cache.read_stamp(root / "verilator" / "alice-old-live")["cocotb_libs"] == str(libs)
    assert build_cache.prune(root) == ["bob-old-dead"]
    assert (root / "verilator" / "alice-old-live").is_dir()


def test_use_refreshes_the_age_and_leftovers_are_dropped(env):
    root, libs, verilator = env
    now = time.time()
    folder = _finished_build(root, "alice-s4p4-ffff", libs=libs, verilator=verilator, age_days=40, now=now)
    build_cache.touch(folder)
    (folder / "build" / "Vtop__pch.h.fast.gch").write_bytes(b"p" * 1000)
    assert build_cache.drop_build_leftovers(folder / "build") == 1000
    assert build_cache.prune(root, max_age_days=30) == []
    assert (folder / "build" / "Vtop__ALL.a").exists()
    assert build_cache.read_stamp(folder)["key"] == "alice-s4p4-ffff" * 4
