"""Native (C++) kernels for the host hot loops, compiled once with the machine's g++.

The fresh-machine contract provides ``g++`` (Verilator needs it too), so hot loops that
numpy cannot vectorise are written in C++ next to this file and loaded with :mod:`ctypes`.
:func:`load` compiles ``<name>.cpp`` into a shared library cached under
``$QKDLINK_CACHE/native`` (or ``~/.cache/qkdlink/native``); the file name carries a SHA-256
of the source, the flags, the compiler version and the CPU feature flags, so an edited
kernel, another compiler or another CPU gets its own build. Concurrent test workers wait
on a file lock instead of compiling twice. ``-march=native`` is safe because the cache is
per machine and keyed by the CPU flags.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = ["NativeBuildError", "load", "DEFAULT_FLAGS"]

DEFAULT_FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno")


class NativeBuildError(RuntimeError):
    """A native kernel could not be compiled or loaded (message names the kernel and why)."""


def _cache_dir() -> Path:
    root = Path(os.environ.get("QKDLINK_CACHE") or Path.home() / ".cache" / "qkdlink")
    folder = root / "native"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@lru_cache(maxsize=None)
def _compiler_id(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise NativeBuildError(f"C++ compiler {cxx!r} not usable: {e}") from e
    return out.stdout.splitlines()[0] if out.stdout else cxx


@lru_cache(maxsize=None)
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    import platform
    return platform.machine()


@lru_cache(maxsize=None)
def load(name: str, flags: tuple[str, ...] = DEFAULT_FLAGS) -> ctypes.CDLL:
    """Compile (once) and load the kernel ``host/native/<name>.cpp``; returns the library.

    Callers declare ``argtypes``/``restype`` on the returned library themselves.
    """
    import fcntl
    src = resources.files("qkdlink.host.native").joinpath(f"{name}.cpp")
    try:
        code = src.read_text()
    except FileNotFoundError as e:
        raise NativeBuildError(f"native kernel {name!r}: source {name}.cpp not found") from e
    cxx = os.environ.get("CXX", "g++")
    h = hashlib.sha256()
    for part in (code, " ".join(flags), _compiler_id(cxx), _cpu_flags()):
        h.update(part.encode() + b"\0")
    folder = _cache_dir()
    lib = folder / f"{name}-{h.hexdigest()[:16]}.so"
    if not lib.exists():
        with open(folder / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not lib.exists():
                cpp = folder / f"{name}-{h.hexdigest()[:16]}.cpp"
                cpp.write_text(code)
                tmp = lib.with_suffix(f".tmp{os.getpid()}")
                cmd = [cxx, *flags, str(cpp), "-o", str(tmp)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise NativeBuildError(f"native kernel {name!r}: {' '.join(cmd)} failed:\n"
                                           f"{res.stderr[-4000:]}")
                os.replace(tmp, lib)  # atomic: other workers see a whole library or none
    try:
        return ctypes.CDLL(str(lib))
    except OSError as e:
        raise NativeBuildError(f"native kernel {name!r}: cannot load {lib}: {e}") from e
