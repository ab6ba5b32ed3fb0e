"""cocotb testbench that serves one endpoint's host link to an outside host process.

Started by :mod:`qkdlink.cosim.serve`. It opens a pseudo-terminal (or listens on a Unix
socket), writes the address into the ready file, and then moves bytes both ways between that
file descriptor and the test top's ``link_pump`` while the simulated clock runs freely:
Python wakes every ``poll_cycles`` clocks (never per clock), copies what the host wrote
into the pump's input ring and what the device sent back out. Output the host has not yet
read waits in a bounded buffer (a pty holds only a few kB). It stops when the stop file
appears or its parent process is gone.

With a Unix socket, one host is served at a time; a new connection replaces the old one (a
restarted host). With a pty, the testbench keeps its own handle on the slave side so a host
closing the device never makes the master fail.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tty
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, Timer

CLOCK_PERIOD_NS = 2
MAX_PENDING_BYTES = 1 << 20


class _Pty:
    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        fcntl.fcntl(self.master, fcntl.F_SETFL, fcntl.fcntl(self.master, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.address = os.ttyname(self.slave)

    def read(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EIO):
                return b""
            raise

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EIO):
                return 0
            raise

    def close(self):
        os.close(self.master)
        os.close(self.slave)


class _UnixServer:
    def __init__(self, path: str):
        if os.path.exists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.client = None
        self.address = "unix://" + path
        self.path = path

    def _accept(self):
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        if self.client is not None:
            self.client.close()
        self.client = conn

    def read(self) -> bytes:
        # The current host's bytes first: a new connection replaces it only once everything it
        # sent has been read (else a host that writes and closes just before the next one
        # connects would lose its last bytes).
        data = self._recv()
        if data:
            return data
        self._accept()
        return self._recv()

    def _recv(self) -> bytes:
        if self.client is None:
            return b""
        try:
            data = self.client.recv(65536)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:               # the host went away
            self.client.close()
            self.client = None
        return data

    def write(self, data: bytes) -> int:
        if self.client is None:
            return len(data)       # nobody listening: the bytes are gone, as on an open wire
        try:
            return self.client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self.client.close()
            self.client = None
            return len(data)

    def close(self):
        if self.client is not None:
            self.client.close()
        self.listener.close()
        os.unlink(self.path)


@cocotb.test()
async def serve(dut):
    spec = json.loads(Path(os.environ["QKDLINK_SERVE_SPEC"]).read_text())
    poll = int(spec.get("poll_cycles", 256))
    stop_file, parent = Path(spec["stop"]), int(spec["parent_pid"])
    clk, pump = dut.clk, dut.pump
    if spec["role"] == "alice":
        dut.qrng_valid.value = 0
        dut.qrng_payload.value = 0
    dut.rst.value = 1
    await ClockCycles(clk, 4)
    dut.rst.value = 0
    await ClockCycles(clk, 2)

    port = _Pty() if spec["transport"] == "pty" else _UnixServer(spec["address"])
    ready = Path(spec["ready"])
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": port.address, "pid": os.getpid()}))
    tmp.replace(ready)

    depth = int(spec.get("ring_depth", 65536))
    sent = taken = 0
    pending = b""
    dropped = 0
    wake = 0
    try:
        while True:
            wake += 1
            if wake % 64 == 0 and (stop_file.exists() or os.getppid() != parent):
                break
            data = port.read()
            if data:
                room = depth - (sent - int(pump.in_count.value))
                data = data[:room]                 # a full ring drops, as a UART FIFO would
                mem = pump.in_mem
                for i, b in enumerate(data):
                    mem[(sent + i) % depth].value = b
                sent += len(data)
                pump.in_len.value = sent
            await Timer(poll * CLOCK_PERIOD_NS, unit="ns")
            count = int(pump.out_count.value)
            if count != taken:
                mem = pump.out_mem
                pending += bytes(int(mem[i % depth].value) for i in range(max(taken, count - depth), count))
                taken = count
            if pending:
                n = port.write(pending)
                pending = pending[n:]
                if len(pending) > MAX_PENDING_BYTES:
                    dropped += len(pending) - MAX_PENDING_BYTES
                    pending = pending[-MAX_PENDING_BYTES:]
    finally:
        port.close()
    Path(spec["stop"] + ".done").write_text(json.dumps({"dropped_bytes": dropped, "host_bytes": sent,
                                                        "device_bytes": taken}))
