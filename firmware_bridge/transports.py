"""Byte transports for the LED-zone link: serial (UART / USB CDC), SPI, UDP, and pty pairs.

A transport moves raw bytes; framing lives in ``protocol.py``. Every transport is
a small object that owns its device, opens it on ``open()`` (again after a
``close()``, which is how the link reconnects after an unplug), and raises
``TransportError`` when the device fails or disappears. ``fileno()`` lets the link
wait on the device with ``select`` (SPI has none and is polled). Hardware
libraries (pyserial, spidev) are imported when a transport opens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    import serial
    import spidev
    from typing_extensions import Self

    Address: TypeAlias = tuple[str, int]  # (host, port) of a UDP peer

__all__ = [
    "TransportError",
    "Transport",
    "SerialTransport",
    "SpiTransport",
    "UdpTransport",
    "UdpControllerEndpoint",
    "FdTransport",
    "PtyPair",
    "open_transport",
    "parse_transport_spec",
]


class TransportError(OSError):
    """The device failed, was unplugged, or cannot be opened; the message says which and what to do."""


class Transport:
    """Base class: context manager around ``open``/``close``."""

    name = "transport"
    # Writes the transport gave up on without an error (a datagram the kernel had no room for, or sent before the
    # peer listened): lost bytes the link's stats report as ``tx_dropped``.
    dropped_sends = 0

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, max_bytes: int = 65536) -> bytes:
        """Bytes available now (``b""`` if none); never blocks for long."""
        raise NotImplementedError

    def fileno(self) -> int | None:
        return None

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialTransport(Transport):
    """UART or USB CDC through pyserial, at any baud rate (USB CDC ignores it; 2 Mbaud+ on real UARTs).

    Parameters
    ----------
    port : str
        Device path, e.g. ``/dev/ttyACM0``, a udev symlink such as ``/dev/serial/by-id/...``
        (stable across replugs), or a pty slave.
    baudrate : int
    write_timeout_s : float
        A write that cannot drain in this time raises ``TransportError`` (a wedged device).
    """

    def __init__(self, port: str, baudrate: int = 2_000_000, *, write_timeout_s: float = 0.5,
                 exclusive: bool = True) -> None:
        self.port = str(port)
        self.baudrate = int(baudrate)
        self.write_timeout_s = write_timeout_s
        self.exclusive = exclusive
        self._serial: serial.Serial | None = None
        self.name = f"serial:{self.port}@{self.baudrate}"

    def open(self) -> None:
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a core dependency
            raise TransportError("pyserial is not installed: pip install pyserial") from exc
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=self.write_timeout_s,
                                         exclusive=self.exclusive)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._serial = None
            raise TransportError(f"{self.port}: cannot open serial port ({exc}); check the cable, the path and "
                                 "that your user is in the 'dialout' group (see the udev rules)") from exc

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def fileno(self) -> int | None:
        return self._serial.fileno() if self._serial is not None else None

    def write(self, data: bytes) -> None:
        import serial

        if self._serial is None:
            raise TransportError(f"{self.port}: not open")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"{self.port}: write failed ({exc}); device unplugged?") from exc

    def read(self, max_bytes: int = 65536) -> bytes:
        import serial

        if self._serial is None:
            raise TransportError(f"{self.port}: not open")
        try:
            return self._serial.read(max_bytes)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"{self.port}: read failed ({exc}); device unplugged?") from exc


class SpiTransport(Transport):
    """SPI master through spidev: frames go out in chunks of at most the kernel's buffer size.

    SPI is full duplex: every transfer also clocks in the controller's bytes, which
    ``read`` returns. When the host has nothing to send, ``read`` polls by clocking
    out ``poll_bytes`` zero bytes (idle fill, ignored by the decoder).

    Parameters
    ----------
    bus, device : int
        ``/dev/spidev<bus>.<device>``.
    speed_hz : int
    mode : int
        SPI mode 0..3 (the controller's choice; 0 for most MCUs).
    chunk_bytes : int, optional
        Transfer size; default the spidev ``bufsiz`` module parameter (4096 unless raised).
    """

    def __init__(self, bus: int = 0, device: int = 0, *, speed_hz: int = 10_000_000, mode: int = 0,
                 chunk_bytes: int | None = None, poll_bytes: int = 64) -> None:
        self.bus, self.device = int(bus), int(device)
        self.speed_hz, self.mode = int(speed_hz), int(mode)
        self.chunk_bytes = chunk_bytes
        self.poll_bytes = int(poll_bytes)
        self._spi: spidev.SpiDev | None = None
        self._rx = bytearray()
        self.name = f"spi:/dev/spidev{self.bus}.{self.device}@{self.speed_hz}"

    @staticmethod
    def kernel_buffer_size(default: int = 4096) -> int:
        """The spidev driver's maximum transfer size (``/sys/module/spidev/parameters/bufsiz``)."""
        try:
            return int(Path("/sys/module/spidev/parameters/bufsiz").read_text().strip())
        except (OSError, ValueError):
            return default

    def open(self) -> None:
        try:
            import spidev
        except ImportError as exc:
            raise TransportError("spidev is not installed: pip install 'edgehdr[spi]' on a Linux board "
                                 "with SPI enabled (e.g. dtparam=spi=on on a Raspberry Pi)") from exc
        path = f"/dev/spidev{self.bus}.{self.device}"
        spi = spidev.SpiDev()
        try:
            spi.open(self.bus, self.device)
            spi.max_speed_hz = self.speed_hz
            spi.mode = self.mode
        except OSError as exc:
            with contextlib.suppress(Exception):
                spi.close()
            raise TransportError(f"{path}: cannot open SPI device ({exc}); enable SPI in the device tree and "
                                 "check permissions (see the udev rules)") from exc
        self._spi = spi
        self._rx.clear()  # what a failed session left half-read belongs to that session, not to this one
        if self.chunk_bytes is None:
            self.chunk_bytes = self.kernel_buffer_size()

    def close(self) -> None:
        if self._spi is not None:
            with contextlib.suppress(Exception):
                self._spi.close()
            self._spi = None

    @property
    def is_open(self) -> bool:
        return self._spi is not None

    def _transfer(self, data: bytes) -> None:
        if self._spi is None:
            raise TransportError(f"{self.name}: not open")
        chunk = self.chunk_bytes if self.chunk_bytes is not None else self.kernel_buffer_size()  # open() sets it
        try:
            for start in range(0, len(data), chunk):
                self._rx += bytes(self._spi.xfer2(list(data[start:start + chunk])))
        except OSError as exc:
            raise TransportError(f"{self.name}: transfer failed ({exc})") from exc

    def write(self, data: bytes) -> None:
        self._transfer(data)

    def read(self, max_bytes: int = 65536) -> bytes:
        if not self._rx:
            self._transfer(bytes(self.poll_bytes))
        out = bytes(self._rx[:max_bytes])
        del self._rx[:max_bytes]
        return out


class _DatagramSocket(Transport):
    """A non-blocking UDP socket bound to ``bind``; the base of both link ends over UDP."""

    def __init__(self, bind: Address | None, connect_to: Address | None = None) -> None:
        self.bind = bind
        self._sock: socket.socket | None = None
        self._connect_to = connect_to

    def open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self.bind is not None:
                sock.bind(self.bind)
            if self._connect_to is not None:
                # A connected datagram socket: the kernel delivers only the peer's datagrams, so no other
                # host or port on the network can inject frames into the link.
                sock.connect(self._connect_to)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = f"connect to {self._connect_to}" if self._connect_to else f"bind {self.bind}"
            raise TransportError(f"{self.name}: cannot {where} ({exc})") from exc
        self._sock = sock

    @property
    def local_address(self) -> Address | None:
        return self._sock.getsockname() if self._sock else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock else None

    def _send(self, data: bytes, address: Address | None) -> None:
        if self._sock is None:
            raise TransportError(f"{self.name}: not open")
        try:
            if address is None:
                self._sock.send(data)  # connected socket
            else:
                self._sock.sendto(data, address)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EAGAIN):
                self.dropped_sends += 1  # nobody listening yet / buffer full: lost, counted, and the link copes
                return
            raise TransportError(f"{self.name}: send failed ({exc})") from exc

    def _receive_all(self, max_bytes: int, accept: Callable[[Address], bool]) -> bytes:
        """Drain the socket; keep datagrams whose sender ``accept(peer)`` approves."""
        if self._sock is None:
            raise TransportError(f"{self.name}: not open")
        chunks: list[bytes] = []
        total = 0
        while total < max_bytes:
            try:
                data, peer = self._sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            except OSError as exc:
                raise TransportError(f"{self.name}: receive failed ({exc})") from exc
            if accept(peer):
                chunks.append(data)
                total += len(data)
        return b"".join(chunks)


class UdpTransport(_DatagramSocket):
    """Network-attached controller: one wire frame per datagram.

    Parameters
    ----------
    host, port : str, int
        The controller's address.
    bind : (str, int), optional
        Local address to bind before connecting; by default the kernel picks the
        interface that routes to the controller and a free port. The socket is
        connected to the controller, so datagrams from any other address or port
        are dropped by the kernel, never seen by the link.
    """

    def __init__(self, host: str, port: int, *, bind: Address | None = None) -> None:
        self.address = (host, int(port))
        super().__init__(bind, connect_to=self.address)
        self.name = f"udp:{host}:{port}"

    def write(self, data: bytes) -> None:
        self._send(data, None)

    def read(self, max_bytes: int = 65536) -> bytes:
        return self._receive_all(max_bytes, lambda peer: True)  # connected: the kernel drops other senders


class UdpControllerEndpoint(_DatagramSocket):
    """The controller's end over UDP: replies go to whoever sent the last datagram."""

    def __init__(self, bind: Address = ("127.0.0.1", 0)) -> None:
        super().__init__(bind)
        self._peer: Address | None = None
        self.name = "udp-controller"

    @property
    def address(self) -> Address | None:
        return self.local_address

    def write(self, data: bytes) -> None:
        if self._peer is not None:
            self._send(data, self._peer)

    def read(self, max_bytes: int = 65536) -> bytes:
        def remember(peer: Address) -> bool:
            self._peer = peer
            return True

        return self._receive_all(max_bytes, remember)


class FdTransport(Transport):
    """A raw file descriptor (the controller end of a pty pair in the simulator)."""

    def __init__(self, fd: int, name: str = "fd", *, write_timeout_s: float = 0.25) -> None:
        self._fd: int | None = fd
        self.name = name
        self.write_timeout_s = float(write_timeout_s)

    def open(self) -> None:
        if self._fd is None:
            raise TransportError(f"{self.name}: closed")

    def close(self) -> None:
        self._fd = None  # the owner (PtyPair) closes the descriptor

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int | None:
        return self._fd

    def write(self, data: bytes) -> None:
        """Write ``data`` without ever blocking for long, as a controller's UART transmits whether anyone listens or
        not. A peer that reads nothing for ``write_timeout_s`` (the pty's buffer full: a host that stopped or went
        away) has the bytes queued for it discarded (``tcflush``), and this write goes on into the emptied buffer;
        what is lost is counted in ``dropped_sends``. The simulator thus neither hangs on a silent host nor stops,
        and a host that comes back reads current frames."""
        view = memoryview(data)
        deadline: float | None = None
        flushed = False
        while view:
            if self._fd is None:
                raise TransportError(f"{self.name}: closed")
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                now = time.monotonic()
                deadline = now + self.write_timeout_s if deadline is None else deadline
                if now >= deadline:
                    self.dropped_sends += 1
                    if flushed:  # still full after discarding the queue: this frame goes too
                        return
                    import termios  # POSIX, as the pty this end belongs to

                    with contextlib.suppress(OSError, termios.error):
                        termios.tcflush(self._fd, termios.TCOFLUSH)
                    flushed, deadline = True, now + self.write_timeout_s
                    continue
                select.select([], [self._fd], [], min(0.05, deadline - now))
                continue
            except OSError as exc:
                raise TransportError(f"{self.name}: write failed ({exc})") from exc
            view = view[n:]

    def read(self, max_bytes: int = 65536) -> bytes:
        if self._fd is None:
            raise TransportError(f"{self.name}: closed")
        try:
            ready, _, _ = select.select([self._fd], [], [], 0)
            return os.read(self._fd, max_bytes) if ready else b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""  # pty with no reader attached yet
            raise TransportError(f"{self.name}: read failed ({exc})") from exc


class PtyPair:
    """A pseudo-terminal pair standing in for a USB serial cable.

    The host opens ``path`` (a stable symlink to the slave, like a udev
    ``/dev/serial/by-id`` link) with ``SerialTransport``; the controller simulator
    uses ``controller`` (the master side). ``close()`` is an unplug: the slave
    disappears and the host's reads and writes fail; a new ``PtyPair`` at the same
    ``link_path`` is the replug.
    """

    def __init__(self, link_path: str | os.PathLike[str] | None = None) -> None:
        import tty

        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        os.set_blocking(self.master_fd, False)
        self.slave_path = os.ttyname(self.slave_fd)
        self.link_path = Path(link_path) if link_path is not None else None
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            os.replace(tmp, self.link_path)
        self.controller = FdTransport(self.master_fd, name=f"pty-master:{self.slave_path}")

    @property
    def path(self) -> str:
        return str(self.link_path) if self.link_path is not None else self.slave_path

    def close(self) -> None:
        """Unplug: drop the link, close both ends."""
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link_path.is_symlink() and os.readlink(self.link_path) == self.slave_path:
                    self.link_path.unlink()
        self.controller.close()
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master_fd = self.slave_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_transport_spec(spec: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """``(kind, args, kwargs)`` of a transport spec without opening anything: ``("udp", (host, port), {})``,
    ``("spi", (bus, device), {"speed_hz": hz})`` or ``("serial", (path,), {})``; ValueError names a bad one."""
    if spec.startswith("udp:"):
        host, _, port = spec[4:].rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"bad UDP transport {spec!r}; write udp:HOST:PORT with a port of 1-65535")
        if any(c in host for c in ":[]"):
            raise ValueError(f"bad UDP transport {spec!r}: the UDP link is IPv4 (udp:HOST:PORT with a host name or "
                             f"an IPv4 address)")
        return "udp", (host, int(port)), {}
    if spec.startswith("spi:"):
        rest, _, speed = spec[4:].partition("@")
        bus, _, dev = rest.partition(".")
        if not (bus.isdigit() and dev.isdigit()) or (speed and not speed.isdigit()):
            raise ValueError(f"bad SPI transport {spec!r}; write spi:BUS.DEVICE[@SPEED_HZ]")
        return "spi", (int(bus), int(dev)), ({"speed_hz": int(speed)} if speed else {})
    if not spec:
        raise ValueError("empty transport; give a serial device, udp:HOST:PORT or spi:BUS.DEVICE")
    return "serial", (spec,), {}


def open_transport(spec: str, *, baudrate: int = 2_000_000) -> Transport:
    """Transport from a spec: ``/dev/ttyACM0`` (serial), ``udp:HOST:PORT``, ``spi:BUS.DEV[@HZ]``."""
    kind, args, kwargs = parse_transport_spec(spec)
    if kind == "udp":
        return UdpTransport(*args)
    if kind == "spi":
        return SpiTransport(*args, **kwargs)
    return SerialTransport(spec, baudrate=baudrate)

