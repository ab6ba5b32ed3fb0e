"""Byte transports under the host driver: a serial port, or a socket to a co-simulation.

DESIGN contract 4: the driver speaks one framed protocol (``gateware/protocol.py``) and does
not know what carries the bytes. A transport only moves bytes:

* :class:`SerialTransport` — a serial device through pyserial: a board's USB-UART, or the
  pseudo-terminal that :mod:`qkdlink.cosim.serve` bridges to the Verilated gateware's UART
  pins (``qkdlink serve-sim --uart``);
* :class:`SocketTransport` — a TCP or Unix socket to :mod:`qkdlink.cosim.serve` without a
  UART in between (the co-simulation's byte-level host link).

:func:`open_transport` turns a URL into one: ``serial:///dev/ttyUSB0?baud=115200``,
``/dev/pts/5`` (a path is a serial device), ``tcp://127.0.0.1:5555``, ``unix:///tmp/x.sock``.
"""
from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from urllib.parse import parse_qs, urlparse

__all__ = ["Transport", "TransportError", "SerialTransport", "SocketTransport", "open_transport",
           "DEFAULT_BAUD"]

DEFAULT_BAUD = 115_200


class TransportError(OSError):
    """The transport could not be opened or failed while in use (message names it)."""


class Transport(ABC):
    """Interface: ``write`` all bytes, ``read`` what arrives within ``timeout_s``, ``close``."""

    name = "transport"

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of ``data``."""

    @abstractmethod
    def read(self, timeout_s: float) -> bytes:
        """Bytes that arrived, waiting at most ``timeout_s`` for the first one (b"" if none)."""

    @abstractmethod
    def close(self) -> None:
        """Release the port or socket."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A serial port (pyserial): real UART or pseudo-terminal; 8N1, no flow control."""

    def __init__(self, port: str, baud: int = DEFAULT_BAUD):
        import serial
        if not isinstance(baud, int) or baud <= 0:
            raise TransportError(f"serial {port}: baud = {baud!r} must be a positive integer")
        self.name = f"serial {port} @ {baud} baud"
        try:
            self._port = serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1,
                                       timeout=0, xonxoff=False, rtscts=False)
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(f"cannot open {self.name}: {e}") from e

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except Exception as e:  # pyserial raises SerialException (an OSError subclass) or OSError
            raise TransportError(f"{self.name}: write failed: {e}") from e

    def read(self, timeout_s: float) -> bytes:
        self._port.timeout = max(0.0, timeout_s)
        try:
            first = self._port.read(1)
            if not first:
                return b""
            self._port.timeout = 0
            return first + self._port.read(self._port.in_waiting or 0)
        except Exception as e:
            raise TransportError(f"{self.name}: read failed: {e}") from e

    def close(self) -> None:
        self._port.close()


class SocketTransport(Transport):
    """A stream socket (TCP ``host:port`` or a Unix socket path) to a co-simulation server."""

    def __init__(self, address, *, family=socket.AF_INET, connect_timeout_s: float = 10.0):
        self.name = f"socket {address}"
        deadline = time.monotonic() + connect_timeout_s
        while True:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.connect(address)
                break
            except OSError as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise TransportError(f"cannot connect to {self.name}: {e}") from e
                time.sleep(0.05)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise TransportError(f"{self.name}: write failed: {e}") from e

    def read(self, timeout_s: float) -> bytes:
        self._sock.settimeout(max(timeout_s, 1e-6))
        try:
            data = self._sock.recv(65536)
        except socket.timeout:
            return b""
        except OSError as e:
            raise TransportError(f"{self.name}: read failed: {e}") from e
        if not data:
            raise TransportError(f"{self.name}: closed by the other end")
        return data

    def close(self) -> None:
        self._sock.close()


def open_transport(url: str, *, baud: int | None = None) -> Transport:
    """A transport from a URL or device path (see the module docstring)."""
    if not isinstance(url, str) or not url:
        raise TransportError(f"transport URL {url!r}: must be a non-empty string")
    if url.startswith("/"):
        return SerialTransport(url, baud or DEFAULT_BAUD)
    u = urlparse(url)
    if u.scheme == "serial":
        query = parse_qs(u.query)
        try:
            rate = int(query["baud"][0]) if "baud" in query else (baud or DEFAULT_BAUD)
        except ValueError as e:
            raise TransportError(f"transport URL {url!r}: baud must be an integer") from e
        return SerialTransport(u.path, rate)
    if u.scheme == "tcp":
        if not u.hostname or not u.port:
            raise TransportError(f"transport URL {url!r}: expected tcp://HOST:PORT")
        return SocketTransport((u.hostname, u.port))
    if u.scheme == "unix":
        return SocketTransport(u.path, family=socket.AF_UNIX)
    raise TransportError(f"transport URL {url!r}: scheme must be serial, tcp or unix (or a device path)")
