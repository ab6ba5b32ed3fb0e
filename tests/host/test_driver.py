"""Host driver over real byte transports.

First against the bit-exact device model (``protocol.DeviceModel``) behind a real
pseudo-terminal (pyserial on the slave side, exactly as for a board), then against the
Verilated gateware served by :mod:`qkdlink.cosim.serve` over a pty and a Unix socket:
registers, counters vs the bit-exact model, Bob's record stream, garbage on the line and a
host restart.
"""
import os
import threading
import tty

import time

import numpy as np
import pytest

from qkdlink.gateware import protocol as proto
from qkdlink.gateware.regmap import ALICE_REGISTERS, BOB_REGISTERS, ID_ALICE, ID_BOB
from qkdlink.host.driver import Device, DeviceError, LinkTimeout
from qkdlink.host.transport import SerialTransport, TransportError, open_transport


class ModelOnPty:
    """A thread that answers on a pty master with the device model (or stays silent)."""

    def __init__(self, regmap, ident):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.model = proto.DeviceModel(regmap, ro={"ID": ident, "VERSION": 1, "BUILD": 0})
        self.silent = False
        self.received = bytearray()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import select
        while not self._stop:
            r, _, _ = select.select([self.master], [], [], 0.02)
            if r:
                data = os.read(self.master, 4096)
                self.received += data
                if not self.silent:
                    out = self.model.feed(data)
                    if out:
                        os.write(self.master, out)

    def inject(self, data: bytes):
        """Device-to-host bytes out of band (line noise, late answers)."""
        os.write(self.master, data)

    def close(self):
        self._stop = True
        self.thread.join()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def alice_model():
    dev = ModelOnPty(ALICE_REGISTERS, ID_ALICE)
    yield dev
    dev.close()


def test_identify_read_write_over_pty(alice_model):
    with SerialTransport(alice_model.path, 115200) as t:
        d = Device(t, timeout_s=1.0)
        assert d.role == "alice"
        info = d.identify()
        assert info["id"] == ID_ALICE and info["version"] == 1
        d.write("SCRATCH", 0xDEADBEEF)
        assert d.read("SCRATCH") == 0xDEADBEEF
        assert alice_model.model.rw["SCRATCH"] == 0xDEADBEEF
        counters = d.link_counters()
        assert counters["RX_FRAMES"] == alice_model.model.counters["rx_frames"] >= 4


def test_garbage_and_stale_answers_are_survived(alice_model):
    rng = np.random.default_rng(11)
    with SerialTransport(alice_model.path) as t:
        d = Device(t, timeout_s=1.0)
        # noise towards the device: a partial frame and random bytes, then a normal request
        t.write(bytes([proto.FLAG]) + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        d.resync()
        d.write("SCRATCH", 7)
        assert d.read("SCRATCH") == 7
        # noise and a late answer to an old sequence number towards the host
        late = proto.encode_frame(proto.MsgType.READ_DATA, 0,
                                  proto.ReadData((d.seq + 100) & 0xFF, 3, 1, 0, (99,)).payload())
        alice_model.inject(rng.integers(0, 256, 100, dtype=np.uint8).tobytes() + late)
        assert d.read("SCRATCH") == 7
        assert d.stale_answers >= 1


def test_host_restart_gets_a_working_link(alice_model):
    t = SerialTransport(alice_model.path)
    d = Device(t, timeout_s=1.0)
    d.write("SCRATCH", 1)
    t.write(proto.encode_frame(proto.MsgType.REG_WRITE, 5, proto.reg_write(3, 2))[:-4])  # dies mid-frame
    t.close()
    with SerialTransport(alice_model.path) as t2:
        d2 = Device(t2, timeout_s=1.0)
        assert d2.read("SCRATCH") == 1        # the torn frame never reached the register
        d2.write("SCRATCH", 3)
        assert d2.read("SCRATCH") == 3


def test_errors_are_clear(alice_model):
    with SerialTransport(alice_model.path) as t:
        d = Device(t, timeout_s=0.3, read_retries=1)
        with pytest.raises(KeyError, match="no register 'NOPE'"):
            d.read("NOPE")
        with pytest.raises(DeviceError, match="BAD_ADDRESS|0x7fff"):
            d.write(0x7FFF, 1)
        with pytest.raises(DeviceError):
            d.write("ID", 1)                      # read-only
        alice_model.silent = True
        with pytest.raises(LinkTimeout, match="REG_WRITE"):
            d.write("SCRATCH", 1)
    with pytest.raises(TransportError, match="cannot open"):
        SerialTransport("/dev/does-not-exist-qkdlink")
    with pytest.raises(TransportError, match="scheme"):
        open_transport("ftp://x")


def test_device_role_must_match_id():
    dev = ModelOnPty(BOB_REGISTERS, 0x12345678)
    try:
        with SerialTransport(dev.path) as t:
            with pytest.raises(DeviceError, match="not an Alice"):
                Device(t, timeout_s=0.5)
    finally:
        dev.close()


# --- against the Verilated gateware -----------------------------------------------------------

@pytest.mark.verilator
@pytest.mark.parametrize("transport, uart", [("pty", True), ("pty", False), ("unix", False)],
                         ids=["pty-uart", "pty-bytes", "unix-bytes"])
def test_alice_gateware_over_transport(transport, uart, tmp_path):
    from qkdlink.cosim.serve import serving
    from qkdlink.gateware.alice import AliceParams
    from qkdlink.gateware.alice_model import AliceSettings, alice_model as model
    from qkdlink.host.config import default_link_config
    from qkdlink.host.device_cli import _configure
    cfg = default_link_config()
    slots = 40_000
    with serving("alice", transport=transport, uart=uart, work_dir=tmp_path) as address:
        with open_transport(address) as t:
            d = Device(t, timeout_s=30.0)    # liveness bound; the simulator may be starved on a loaded machine
            assert d.identify()["role"] == "alice"
            _configure(d, None)
            d.write("STOP_AT_SLOT_LO", slots)
            d.write("STOP_AT_SLOT_HI", 0)
            d.write("CTRL", d.field_value("CTRL", RUN=1))
            deadline = time.monotonic() + 300       # liveness only: a loaded CI machine is slow
            while d.snapshot()["SNAP_SLOT"] < slots and time.monotonic() < deadline:
                pass
            snap = d.snapshot()
        # garbage on the line, then a restarted host
        with open_transport(address) as t:
            t.write(bytes(np.random.default_rng(5).integers(0, 256, 500, dtype=np.uint8)))
        with open_transport(address) as t:
            d = Device(t, timeout_s=30.0)    # liveness bound; the simulator may be starved on a loaded machine
            deadline = time.monotonic() + 60     # the garbage may still be on its way through the bridge
            while True:
                stats = d.link_counters()
                errors = (stats["RX_CRC_ERRORS"] + stats["RX_FRAMING_ERRORS"] + stats["RX_OVERSIZE"]
                          + stats["RX_TRUNCATED"])
                if errors > 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert d.snapshot()["SNAP_SLOT"] == slots
    params = AliceParams.from_config(cfg.gateware)
    expected = model(params, AliceSettings.from_config(cfg), [slots // params.slots_per_clock]).snapshots[-1]
    assert snap["SNAP_SLOT"] == slots
    for name in ("SNAP_SENT_SIGNAL_Z", "SNAP_SENT_DECOY_X", "SNAP_SENT_VACUUM_Z", "SNAP_DIGEST_SYMBOLS"):
        assert snap[name] == expected[name], name
    assert stats["RX_CRC_ERRORS"] + stats["RX_FRAMING_ERRORS"] + stats["RX_OVERSIZE"] + stats["RX_TRUNCATED"] > 0


@pytest.mark.verilator
def test_bob_record_stream_over_pty(tmp_path):
    from qkdlink.cosim.bob import write_events
    from qkdlink.cosim.bob_stimulus import make_stimulus
    from qkdlink.cosim.serve import serving
    from qkdlink.gateware.bob import BobParams
    from qkdlink.gateware.bob_model import bob_model
    from qkdlink.cosim.fulllink import bob_settings_from_config
    from qkdlink.host.config import default_link_config
    from qkdlink.host.device_cli import _configure
    cfg = default_link_config()
    params = BobParams.from_config(cfg.gateware)
    S, P = params.samples_per_clock, params.slots_per_clock
    n = 20_000
    codes = np.random.default_rng(3).integers(0, 12, n * P).astype(np.uint8)
    stim = make_stimulus(S, P, n, codes, alice_first_slot=1000, frame_log2=params.frame_log2, eta=0.01,
                         dark=1e-5, seed=4)
    det, sync = stim.det, stim.sync
    write_events(tmp_path / "stim.hex", det, sync, S)
    with serving("bob", stim=str(tmp_path / "stim.hex"), work_dir=tmp_path / "w") as address:
        with open_transport(address) as t:
            d = Device(t, timeout_s=30.0)    # liveness bound; the simulator may be starved on a loaded machine
            _configure(d, None)
            d.write("CTRL", d.field_value("CTRL", RUN=1, RECORDS=1, RECORD_BITS=1))
            got = []
            deadline = time.monotonic() + 300       # liveness only: a loaded CI machine is slow
            while len(got) < 300 and time.monotonic() < deadline:
                got.extend(d.records(timeout_s=0.2).tolist())
            d.write("CTRL", 0)
    expected = bob_model(params, bob_settings_from_config(cfg, cfg.gateware.prng_seed + 1), det, sync).records
    assert len(got) >= 250
    assert np.array_equal(np.array(got, np.uint64), expected[:len(got)])


@pytest.mark.verilator
def test_device_cli_over_served_gateware(tmp_path, capsys):
    """`qkdlink device` configures, starts and reads an endpoint; the same commands a board gets."""
    import json
    from qkdlink.cosim.serve import serving
    from qkdlink.host.cli import main
    with serving("alice", transport="unix", work_dir=tmp_path) as address:
        assert main(["device", "--port", address, "--json", "info"]) == 0
        assert json.loads(capsys.readouterr().out)["role"] == "alice"
        assert main(["device", "--port", address, "configure"]) == 0
        assert main(["device", "--port", address, "start", "--slots", "8000"]) == 0
        capsys.readouterr()
        for _ in range(100):
            assert main(["device", "--port", address, "--json", "counters"]) == 0
            snap = json.loads(capsys.readouterr().out)
            if snap["SNAP_SLOT"] == 8000:
                break
        assert snap["SNAP_SLOT"] == 8000
        assert sum(v for k, v in snap.items() if k.startswith("SNAP_SENT_")) == 8000
        assert main(["device", "--port", address, "read", "NO_SUCH_REG"]) == 1
        assert "NO_SUCH_REG" in capsys.readouterr().err
