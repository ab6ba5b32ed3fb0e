"""Keeping the co-simulation build cache small and usable.

A Verilated simulator links cocotb's VPI library through an absolute RUNPATH into the
virtual environment that built it. When that environment is deleted (a fresh clone in a
temporary folder, a CI checkout), its builds can never run again; left alone they fill
the disk (~200 MB each with precompiled headers). :func:`prune` removes

* finished builds whose recorded cocotb library folder or Verilator root no longer exists,
* finished builds not used for ``max_age_days`` (:func:`touch` marks a use),

together with the raw-Verilator binaries linked from them. Builds still in progress (no
stamp yet) and builds of live environments that are in use are never touched.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

__all__ = ["STAMP", "write_stamp", "read_stamp", "touch", "drop_build_leftovers", "prune"]

STAMP = ".complete"
_RUNPATH = re.compile(rb"(/[^\0]*?/cocotb/libs)\0")


def write_stamp(folder: Path, key: str, *, cocotb_libs: str, verilator_root: str) -> None:
    """Mark ``folder`` a finished build of ``key`` made for the named environment."""
    text = json.dumps({"key": key, "cocotb_libs": cocotb_libs, "verilator_root": verilator_root})
    tmp = folder / (STAMP + ".tmp")
    tmp.write_text(text)
    tmp.replace(folder / STAMP)


def read_stamp(folder: Path) -> dict | None:
    """The stamp's fields; ``None`` for no stamp. Stamps of older releases (the bare key)
    get their cocotb library folder from the simulator binary's RUNPATH."""
    try:
        text = (folder / STAMP).read_text()
    except OSError:
        return None
    try:
        fields = json.loads(text)
        if isinstance(fields, dict) and "key" in fields:
            return fields
    except ValueError:
        pass
    return {"key": text.strip(), "cocotb_libs": _runpath_from_binaries(folder / "build")}


def _runpath_from_binaries(build_dir: Path) -> str | None:
    for candidate in sorted(build_dir.glob("*_top")) if build_dir.is_dir() else []:
        try:
            found = _RUNPATH.search(candidate.read_bytes())
        except OSError:
            continue
        if found:
            return found.group(1).decode(errors="replace")
    return None


def touch(folder: Path) -> None:
    """Record that the build in ``folder`` was used now."""
    try:
        (folder / STAMP).touch()
    except OSError:
        pass


def drop_build_leftovers(build_dir: Path) -> int:
    """Delete files only the compiler needed (precompiled headers); returns bytes freed."""
    freed = 0
    for path in build_dir.glob("*.gch"):
        freed += path.stat().st_size
        path.unlink()
    return freed


def _environment_gone(fields: dict) -> bool:
    for name in ("cocotb_libs", "verilator_root"):
        where = fields.get(name)
        if where and not Path(where).is_dir():
            return True
    return False


def prune(root: Path, *, max_age_days: float = 30.0, now: float | None = None) -> list[str]:
    """Remove dead and stale builds under ``root`` (the cache root); returns their names."""
    now = time.time() if now is None else now
    builds = root / "verilator"
    removed = []
    for folder in sorted(builds.iterdir()) if builds.is_dir() else []:
        fields = read_stamp(folder)
        if fields is None:
            continue  # being built, or an interrupted build the next build() replaces
        try:
            age_days = (now - (folder / STAMP).stat().st_mtime) / 86400.0
        except OSError:
            continue
        if not (_environment_gone(fields) or age_days > max_age_days):
            continue
        # The stamp goes first, so a crash halfway leaves a folder build() rebuilds.
        (folder / STAMP).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        for raw in (root / "raw").glob(f"{folder.name}-*") if (root / "raw").is_dir() else []:
            shutil.rmtree(raw, ignore_errors=True)
        removed.append(folder.name)
    return removed
