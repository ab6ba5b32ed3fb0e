"""Link configuration: one YAML schema, typed and validated at the boundary.

A link config has five sections — ``source``, ``channel``, ``detectors``, ``gateware``,
``postprocessing`` — each a dataclass below. Every field carries its unit in its name, a
range, and (in ``docs/config.md``) the source of its default. Defaults ship in the package
(``qkdlink/host/defaults/link.yaml``); a user file only needs the fields it changes.

Errors are :class:`ConfigError` and name the file, the field, the bad value and what is
allowed, e.g. ``link.yaml: channel.length_km = -3: must be in [0, 5000] km``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "LinkConfig", "SourceConfig", "ChannelConfig", "DetectorConfig",
           "GatewareConfig", "PostprocessingConfig", "load_link_config", "default_link_config",
           "link_config_from_dict", "DEFAULT_LINK_YAML"]


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range."""


def _f(default, lo=None, hi=None, unit="", doc="", choices=None, integer=False):
    """A config field with its allowed range (inclusive), unit and one-line description."""
    return field(default=default, metadata=dict(lo=lo, hi=hi, unit=unit, doc=doc,
                                                choices=choices, integer=integer))


@dataclass(frozen=True)
class SourceConfig:
    """Weak coherent pulse source and the transmitter's random choices."""
    mu_signal: float = _f(0.5, 0.0, 10.0, "photons/pulse", "mean photon number of the signal state")
    mu_decoy: float = _f(0.1, 0.0, 10.0, "photons/pulse", "mean photon number of the weak decoy")
    mu_vacuum: float = _f(0.0, 0.0, 0.1, "photons/pulse", "mean photon number of the vacuum decoy (ideal 0)")
    p_signal: float = _f(0.7, 0.0, 1.0, "", "probability of sending the signal intensity")
    p_decoy: float = _f(0.2, 0.0, 1.0, "", "probability of sending the weak decoy")
    p_vacuum: float = _f(0.1, 0.0, 1.0, "", "probability of sending the vacuum decoy")
    p_z_basis: float = _f(0.5, 0.0, 1.0, "", "probability of the Z (H/V) basis; 0.5 is symmetric BB84")
    intensity_fluctuation_rel: float = _f(0.0, 0.0, 0.5, "relative", "relative rms fluctuation of mu per pulse")
    vacuum_extinction_db: float = _f(30.0, 0.0, 80.0, "dB", "intensity-modulator extinction of the vacuum state")


@dataclass(frozen=True)
class ChannelConfig:
    """Fibre between Alice and Bob."""
    length_km: float = _f(65.0, 0.0, 5000.0, "km", "fibre length (average backbone hop)")
    loss_db_per_km: float = _f(0.2, 0.0, 10.0, "dB/km", "fibre attenuation at 1550 nm")
    connector_loss_db: float = _f(1.0, 0.0, 60.0, "dB", "connector and insertion losses")
    group_index: float = _f(1.468, 1.0, 2.0, "", "group index of the fibre (propagation delay)")
    misalignment: float = _f(0.01, 0.0, 0.5, "", "polarisation misalignment error probability")
    polarisation_drift_rad_per_sqrt_s: float = _f(0.0, 0.0, 10.0, "rad/sqrt(s)", "random-walk rate of the polarisation drift")


@dataclass(frozen=True)
class DetectorConfig:
    """Bob's four single-photon detectors (passive basis choice)."""
    efficiency: float = _f(0.10, 0.0, 1.0, "", "detection efficiency incl. Bob's optics")
    dark_count_per_gate: float = _f(6e-7, 0.0, 1e-2, "1/gate", "dark count probability per gate")
    afterpulse_probability: float = _f(0.0, 0.0, 0.5, "", "afterpulse probability after a click")
    afterpulse_decay_ns: float = _f(100.0, 0.0, 1e6, "ns", "afterpulse decay time constant")
    dead_time_ns: float = _f(50.0, 0.0, 1e6, "ns", "dead time after a click")
    timing_jitter_ps: float = _f(100.0, 0.0, 1e5, "ps", "rms timing jitter")
    efficiency_mismatch: float = _f(0.0, 0.0, 1.0, "relative", "relative efficiency difference between detectors")


@dataclass(frozen=True)
class GatewareConfig:
    """Build and run-time parameters of the endpoint gateware."""
    samples_per_clock: int = _f(4, choices=(1, 2, 4, 8), unit="samples/clock", integer=True,
                                doc="output/input samples per system clock (I/O gearing)")
    slots_per_clock: int = _f(4, choices=(1, 2, 4), unit="slots/clock", integer=True,
                              doc="pulse slots per system clock; pulse rate = clock x slots")
    clock_mhz: float = _f(156.25, 1.0, 1000.0, "MHz", "system clock frequency")
    choice_memory_depth_slots: int = _f(16384, 8, 1 << 22, "slots", "depth of Alice's choice memory (power of two)", integer=True)
    sync_frame_log2: int = _f(12, 7, 24, "log2(slots)", "log2 of the sync frame length", integer=True)
    pulse_delay_samples: int = _f(0, 0, 8, "samples", "pulse delay from the slot start", integer=True)
    pulse_width_samples: int = _f(1, 1, 8, "samples", "pulse width", integer=True)
    entropy_source: str = _f("prng", choices=("prng", "qrng"), doc="prng: simulation only, NOT secure; qrng: external QRNG input")
    prng_seed: int = _f(1, 0, (1 << 64) - 1, "", "seed of the simulation PRNG", integer=True)
    health_min_entropy_bits: float = _f(6.0, 0.5, 8.0, "bits/sample", "assessed min-entropy of one 8-bit QRNG sample (SP 800-90B)")
    health_alpha_log2: float = _f(-40.0, -64.0, -20.0, "log2", "false-alarm probability per sample of each health test (SP 800-90B)")

    @property
    def samples_per_slot(self) -> int:
        return self.samples_per_clock // self.slots_per_clock

    @property
    def pulse_rate_mhz(self) -> float:
        return self.clock_mhz * self.slots_per_clock


@dataclass(frozen=True)
class PostprocessingConfig:
    """Key distillation security parameters."""
    eps_sec: float = _f(1e-9, 1e-30, 1e-2, "", "secrecy parameter epsilon_sec")
    eps_cor: float = _f(1e-15, 1e-30, 1e-2, "", "correctness parameter epsilon_cor")
    block_bits: int = _f(1_000_000, 1000, 1 << 30, "bits", "sifted bits per privacy-amplification block", integer=True)
    reconciliation: str = _f("auto", choices=("auto", "cascade", "ldpc"), doc="error-correction method")
    qber_abort: float = _f(0.11, 0.0, 0.5, "", "abort the block above this estimated QBER")


@dataclass(frozen=True)
class LinkConfig:
    """A whole point-to-point link."""
    source: SourceConfig = field(default_factory=SourceConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    detectors: DetectorConfig = field(default_factory=DetectorConfig)
    gateware: GatewareConfig = field(default_factory=GatewareConfig)
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTION_TYPES = {"source": SourceConfig, "channel": ChannelConfig, "detectors": DetectorConfig,
                  "gateware": GatewareConfig, "postprocessing": PostprocessingConfig}

DEFAULT_LINK_YAML = "link.yaml"


def _range_text(meta) -> str:
    if meta["choices"] is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    kind = "an integer" if meta["integer"] else "a number"
    return f"{kind} in [{meta['lo']:g}, {meta['hi']:g}]" + (f" {meta['unit']}" if meta["unit"] else "")


def _check_value(where: str, meta, value):
    bad = f"{where} = {value!r}: must be {_range_text(meta)}"
    if meta["choices"] is not None:
        if isinstance(value, bool) or value not in meta["choices"]:
            raise ConfigError(bad)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(bad)
    if meta["integer"]:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(bad)
        value = int(value)
    else:
        value = float(value)
    if not math.isfinite(value) or not meta["lo"] <= value <= meta["hi"]:
        raise ConfigError(bad)
    return value


def _build_section(name: str, cls, data: Any, origin: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {name} must be a mapping of field: value, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{origin}: {name}.{unknown[0]}: unknown field; {name} has "
                          + ", ".join(sorted(known)))
    values = {k: _check_value(f"{origin}: {name}.{k}", known[k].metadata, v) for k, v in data.items()}
    return cls(**values)


def _cross_checks(cfg: LinkConfig, origin: str) -> None:
    s, g = cfg.source, cfg.gateware
    total = s.p_signal + s.p_decoy + s.p_vacuum
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(f"{origin}: source.p_signal + p_decoy + p_vacuum = {total:.12g}: must sum to 1")
    if not s.mu_decoy < s.mu_signal:
        raise ConfigError(f"{origin}: source.mu_decoy = {s.mu_decoy!r}: must be below source.mu_signal = {s.mu_signal!r}")
    if not s.mu_vacuum < s.mu_decoy:
        raise ConfigError(f"{origin}: source.mu_vacuum = {s.mu_vacuum!r}: must be below source.mu_decoy = {s.mu_decoy!r}")
    if g.samples_per_clock % g.slots_per_clock:
        raise ConfigError(f"{origin}: gateware.slots_per_clock = {g.slots_per_clock}: must divide "
                          f"gateware.samples_per_clock = {g.samples_per_clock}")
    depth = g.choice_memory_depth_slots
    if depth & (depth - 1) or depth < 2 * g.slots_per_clock:
        raise ConfigError(f"{origin}: gateware.choice_memory_depth_slots = {depth}: must be a power of two "
                          f">= 2 x slots_per_clock = {2 * g.slots_per_clock}")
    if g.pulse_delay_samples > g.samples_per_clock:
        raise ConfigError(f"{origin}: gateware.pulse_delay_samples = {g.pulse_delay_samples}: must be in "
                          f"[0, samples_per_clock = {g.samples_per_clock}]")
    if g.pulse_width_samples > g.samples_per_slot:
        raise ConfigError(f"{origin}: gateware.pulse_width_samples = {g.pulse_width_samples}: must be in "
                          f"[1, samples_per_clock / slots_per_clock = {g.samples_per_slot}]")


def _merge(base: dict, over: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def _default_dict() -> dict:
    text = resources.files("qkdlink.host").joinpath("defaults", DEFAULT_LINK_YAML).read_text()
    return yaml.safe_load(text)


def link_config_from_dict(data: Any, origin: str = "<dict>", *, defaults: bool = True) -> LinkConfig:
    """Validate a mapping (as read from YAML) over the built-in defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a link config must be a mapping with sections "
                          + ", ".join(_SECTION_TYPES) + f"; got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTION_TYPES))
    if unknown:
        raise ConfigError(f"{origin}: {unknown[0]}: unknown section; allowed: " + ", ".join(_SECTION_TYPES))
    merged = _merge(_default_dict(), data) if defaults else data
    sections = {name: _build_section(name, cls, merged.get(name), origin) for name, cls in _SECTION_TYPES.items()}
    cfg = LinkConfig(**sections)
    _cross_checks(cfg, origin)
    return cfg


def default_link_config() -> LinkConfig:
    """The built-in defaults (a ~65 km backbone hop)."""
    return link_config_from_dict({}, f"<built-in {DEFAULT_LINK_YAML}>")


def load_link_config(path: str | Path | None) -> LinkConfig:
    """Load and validate a link YAML file; ``None`` gives the built-in defaults."""
    if path is None:
        return default_link_config()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{at} not valid YAML: {getattr(e, 'problem', e)}") from None
    return link_config_from_dict(data, str(path))


def field_table() -> list[tuple[str, str, Any, str, str]]:
    """(section.field, allowed, default, unit, description) rows for docs and ``--help``."""
    rows = []
    for sname, cls in _SECTION_TYPES.items():
        for f in dataclasses.fields(cls):
            m = f.metadata
            rows.append((f"{sname}.{f.name}", _range_text(m), f.default, m["unit"], m["doc"]))
    return rows


def config_markdown() -> str:
    """docs/config.md's field table (generated; a test keeps the page current)."""
    lines = ["| field | default | allowed | unit | meaning |", "|---|---|---|---|---|"]
    for name, allowed, default, unit, doc in field_table():
        lines.append(f"| `{name}` | `{default!r}` | {allowed} | {unit} | {doc} |")
    return "\n".join(lines) + "\n"
