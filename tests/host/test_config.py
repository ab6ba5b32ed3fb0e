"""Link config: defaults, typed validation, and errors that name file, field, value and range."""
import dataclasses

import pytest
import yaml

from qkdlink.host.config import (ConfigError, LinkConfig, default_link_config, link_config_from_dict,
                                 load_link_config, field_table)


def test_defaults_are_a_valid_65_km_hop():
    cfg = default_link_config()
    assert cfg.channel.length_km == 65.0
    assert cfg.channel.loss_db_per_km == 0.2
    assert cfg.gateware.pulse_rate_mhz == pytest.approx(625.0)
    assert cfg.gateware.samples_per_slot == 1


def test_shipped_yaml_matches_dataclass_defaults():
    """The YAML shipped in the package and the dataclass defaults are the same numbers."""
    assert default_link_config() == LinkConfig()


def test_user_file_overrides_only_what_it_names(tmp_path):
    f = tmp_path / "link.yaml"
    f.write_text("channel:\n  length_km: 100\ngateware:\n  samples_per_clock: 8\n  slots_per_clock: 2\n")
    cfg = load_link_config(f)
    assert cfg.channel.length_km == 100.0 and cfg.channel.loss_db_per_km == 0.2
    assert cfg.gateware.samples_per_slot == 4


@pytest.mark.parametrize("data, expected", [
    ({"channel": {"length_km": -3}}, "link.yaml: channel.length_km = -3: must be a number in [0, 5000] km"),
    ({"channel": {"length_km": "far"}}, "channel.length_km = 'far'"),
    ({"channel": {"length_km": float("nan")}}, "channel.length_km = nan"),
    ({"source": {"p_signal": 0.5}}, "p_signal + p_decoy + p_vacuum = 0.8: must sum to 1"),
    ({"source": {"mu_decoy": 0.6}}, "source.mu_decoy = 0.6: must be below source.mu_signal = 0.5"),
    ({"gateware": {"samples_per_clock": 2, "slots_per_clock": 4}}, "slots_per_clock = 4: must divide"),
    ({"gateware": {"samples_per_clock": 3}}, "gateware.samples_per_clock = 3: must be one of 1, 2, 4, 8"),
    ({"gateware": {"slots_per_clock": True}}, "gateware.slots_per_clock = True"),
    ({"gateware": {"choice_memory_depth_slots": 1000}}, "must be a power of two"),
    ({"gateware": {"pulse_width_samples": 2}}, "pulse_width_samples = 2: must be in [1, samples_per_clock / slots_per_clock = 1]"),
    ({"gateware": {"prng_seed": 1.5}}, "gateware.prng_seed = 1.5: must be an integer"),
    ({"gateware": {"entropy_source": "dice"}}, "gateware.entropy_source = 'dice': must be one of 'prng', 'qrng'"),
    ({"chanel": {}}, "chanel: unknown section"),
    ({"channel": {"lenght_km": 5}}, "channel.lenght_km: unknown field"),
    ({"channel": [1, 2]}, "channel must be a mapping"),
])
def test_bad_values_name_file_field_value_and_range(data, expected):
    with pytest.raises(ConfigError) as e:
        link_config_from_dict(data, "link.yaml")
    assert expected in str(e.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_link_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channel:\n  length_km: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+ not valid YAML"):
        load_link_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping with sections"):
        load_link_config(top)


def test_every_field_has_unit_range_and_doc():
    rows = field_table()
    sections = [getattr(LinkConfig(), f.name) for f in dataclasses.fields(LinkConfig)]
    assert len(rows) == sum(len(dataclasses.fields(s)) for s in sections)
    for name, allowed, default, unit, doc in rows:
        assert doc, name
        assert "in [" in allowed or "one of" in allowed, name


def test_round_trip_through_yaml(tmp_path):
    cfg = default_link_config()
    f = tmp_path / "dump.yaml"
    f.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_link_config(f) == cfg


def test_docs_table_is_current():
    from pathlib import Path
    from qkdlink.host.config import config_markdown
    page = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert config_markdown() in page.read_text(), "regenerate the table in docs/config.md"
