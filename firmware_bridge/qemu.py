"""The reference controller firmware (``firmware/``) built with arm-none-eabi-gcc and run in QEMU.

``build_firmware`` runs ``make`` in ``firmware_bridge/firmware``; ``QemuController``
starts ``qemu-system-arm -M mps2-an385`` with that ELF, the MCU's link UART on a
pseudo-terminal (open it with ``SerialTransport(controller.pty_path)``: the host
talks to the emulated MCU exactly as to a USB serial adapter), its monitor UART
(one line per LED frame latched: ``A <frame_id> <vsync> <crc32 of the duty
values>`` in hex, ``B <reset cause>`` at boot, ``C`` per CONFIG applied, ``F`` on
watchdog fallback) in a file read by a thread that timestamps every line, and
QEMU's human monitor on a Unix socket for ``system_reset``.

QEMU does not emulate the baud rate and never drops a received byte (it
back-pressures the sender), so line noise has to be injected on the host side
(``inject``), and the emulated MCU runs at whatever speed the host gives it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BOARDS", "FIRMWARE_DIR", "FirmwareUnavailable", "MonitorLine", "QemuController", "build_firmware",
           "toolchain_missing"]

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
# Board name (firmware/board_<name>.c) -> QEMU machine. mps2_an385's CMSDK UART holds one byte; lm3s6965evb's
# PL011 has a 16-byte receive FIFO, so the emulated link carries several times more (firmware/PORTING.md).
BOARDS = {"mps2_an385": "mps2-an385", "lm3s6965evb": "lm3s6965evb"}
_INSTALL_HINT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


class FirmwareUnavailable(RuntimeError):
    """The cross-compiler, make or QEMU is missing, or the firmware does not build or boot."""


def toolchain_missing(qemu: str = "qemu-system-arm") -> list[str]:
    """Names of the tools this module needs that are not on PATH (empty when all are there)."""
    return [tool for tool in ("make", "arm-none-eabi-gcc", qemu) if shutil.which(tool) is None]


def build_firmware(build_dir: str | os.PathLike | None = None, board: str = "mps2_an385") -> Path:
    """Build the firmware for ``board`` (``make -C firmware_bridge/firmware BOARD=...``); returns the ELF's path.

    ``build_dir`` defaults to ``firmware/build`` beside the sources; make rebuilds only what changed.
    Raises ``FirmwareUnavailable`` with the compiler's output when the build fails.
    """
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; boards: {', '.join(BOARDS)}")
    missing = [t for t in toolchain_missing() if t != "qemu-system-arm"]
    if missing:
        raise FirmwareUnavailable(f"cannot build the firmware: {', '.join(missing)} not found ({_INSTALL_HINT})")
    build = Path(build_dir) if build_dir is not None else FIRMWARE_DIR / "build"
    proc = subprocess.run(["make", "-C", str(FIRMWARE_DIR), f"BUILD={build.resolve()}", f"BOARD={board}"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FirmwareUnavailable(f"firmware build failed (make -C {FIRMWARE_DIR}):\n{proc.stdout}{proc.stderr}")
    return build.resolve() / ("controller.elf" if board == "mps2_an385" else f"controller-{board}.elf")


@dataclass(frozen=True)
class MonitorLine:
    """One line of the firmware's monitor UART, with the host's monotonic time when it was read."""

    t_ns: int
    kind: str  # "A" applied frame, "B" boot, "C" config applied, "F" watchdog fallback
    fields: tuple

    @property
    def frame_id(self) -> int:
        return int(self.fields[0], 16)

    @property
    def vsync(self) -> int:
        return int(self.fields[1], 16)

    @property
    def crc32(self) -> int:
        return int(self.fields[2], 16)


class QemuController:
    """The reference firmware running on an emulated Cortex-M3.

    Parameters
    ----------
    elf : path, optional
        Firmware image for ``board``; built with ``build_firmware`` when omitted.
    board : {'mps2_an385', 'lm3s6965evb'}
        Which board (and QEMU machine) the firmware runs on.
    qemu : str
        The QEMU system emulator binary.
    boot_timeout_s : float
        How long to wait for QEMU's pty and the firmware's boot line.
    """

    def __init__(self, elf: str | os.PathLike | None = None, *, board: str = "mps2_an385",
                 qemu: str = "qemu-system-arm", boot_timeout_s: float = 10.0) -> None:
        if board not in BOARDS:
            raise ValueError(f"unknown board {board!r}; boards: {', '.join(BOARDS)}")
        self.board = board
        self.qemu = qemu
        self.elf = Path(elf) if elf is not None else None
        self.boot_timeout_s = boot_timeout_s
        self.pty_path = ""
        self.lines: list[MonitorLine] = []
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._injector_fd = -1

    # ------------------------------------------------------------------------------------- lifecycle

    def start(self) -> QemuController:
        missing = toolchain_missing(self.qemu)
        if self.elf is not None:  # a prebuilt ELF needs QEMU only, not make and the cross-compiler
            missing = [tool for tool in missing if tool == self.qemu]
        if missing:
            raise FirmwareUnavailable(f"{', '.join(missing)} not found ({_INSTALL_HINT})")
        elf = self.elf or build_firmware(board=self.board)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgehdr-qemu-")
        tmp = Path(self._tmp.name)
        self._monitor_log = tmp / "monitor.log"
        self._monitor_log.touch()
        self._qmp_path = tmp / "hmp.sock"
        cmd = [self.qemu, "-M", BOARDS[self.board], "-display", "none", "-nodefaults", "-kernel", str(elf),
               "-serial", "pty", "-serial", f"file:{self._monitor_log}",
               "-monitor", f"unix:{self._qmp_path},server=on,wait=off", "-nic", "none"]
        # QEMU names the pty it opened ("char device redirected to /dev/pts/N (label serial0)") on stdout.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, bufsize=0)
        deadline = time.monotonic() + self.boot_timeout_s
        output_lines: list[str] = []
        assert self._proc.stdout is not None
        stdout_fd, pending = self._proc.stdout.fileno(), b""
        # Read with a deadline (select, then os.read): a QEMU that runs but never names its pty must not hang here.
        while not self.pty_path:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise FirmwareUnavailable(f"QEMU did not report its pty within {self.boot_timeout_s} s: "
                                          f"{' '.join(output_lines + [pending.decode(errors='replace')])[-500:]}")
            if not select.select([stdout_fd], [], [], remaining)[0]:
                continue
            chunk = os.read(stdout_fd, 4096)
            if not chunk:
                self.stop()
                raise FirmwareUnavailable(f"QEMU exited before opening its pty: {' '.join(output_lines)[-500:]}")
            *lines, pending = (pending + chunk).split(b"\n")
            texts = [raw.decode(errors="replace") for raw in lines]
            output_lines += [text.strip() for text in texts]
            # the line that names the pty, also while it is still unterminated (the rest may never come)
            for text in [*texts, pending.decode(errors="replace")]:
                match = re.search(r"redirected to (\S+) \(label serial0\)", text)
                if match and not self.pty_path:
                    self.pty_path = match.group(1)
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()  # keep draining
        self._reader = threading.Thread(target=self._read_monitor, name="qemu-monitor", daemon=True)
        self._reader.start()
        if not self.wait_for("B", timeout_s=max(0.0, deadline - time.monotonic())):
            self.stop()
            raise FirmwareUnavailable(f"the firmware did not boot (no boot line on the monitor UART of {elf})")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._injector_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._injector_fd)
            self._injector_fd = -1
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> QemuController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------- control

    def reset(self) -> int:
        """Reset the MCU (``system_reset`` on QEMU's monitor); returns the monotonic ns when sent."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self._qmp_path))
            t_ns = time.monotonic_ns()
            sock.sendall(b"system_reset\n")
            time.sleep(0.05)  # let the monitor read the command before the socket closes
        return t_ns

    def inject(self, data: bytes) -> None:
        """Write ``data`` into the MCU's receive line (line noise between host and MCU)."""
        if self._injector_fd < 0:
            self._injector_fd = os.open(self.pty_path, os.O_WRONLY | os.O_NOCTTY)
        os.write(self._injector_fd, data)

    # ------------------------------------------------------------------------------------- monitor

    def _read_monitor(self) -> None:
        with open(self._monitor_log, "rb") as f:
            pending = b""
            while not self._stop.is_set():
                chunk = f.read()
                if not chunk:
                    time.sleep(0.0005)
                    continue
                t_ns = time.monotonic_ns()
                pending += chunk
                *complete, pending = pending.split(b"\n")
                parsed = []
                for raw in complete:
                    parts = raw.decode("ascii", "replace").split()
                    if parts:
                        parsed.append(MonitorLine(t_ns, parts[0], tuple(parts[1:])))
                with self._lock:
                    self.lines.extend(parsed)

    def snapshot(self, since: int = 0) -> list[MonitorLine]:
        """Monitor lines from index ``since`` on."""
        with self._lock:
            return self.lines[since:]

    def wait_for(self, kind: str, *, since: int = 0, timeout_s: float = 5.0) -> MonitorLine | None:
        """The first monitor line of ``kind`` at or after index ``since``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.snapshot(since):
                if line.kind == kind:
                    return line
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)
