"""systemd's notify protocol, spoken directly (no dependency on systemd or python-systemd).

A ``Type=notify`` service gets ``$NOTIFY_SOCKET`` (a Unix datagram socket; a
leading ``@`` means the abstract namespace) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``. The daemon sends ``READY=1`` when frames flow, ``STATUS=...``
lines, ``WATCHDOG=1`` at half the watchdog period while healthy, and ``STOPPING=1``.
Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["SystemdNotifier"]


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET")
        usec = env.get("WATCHDOG_USEC")
        self.watchdog_interval_s = int(usec) / 2e6 if usec and usec.isdigit() else None
        self._sock: socket.socket | None = None
        if self.address:
            if self.address.startswith("@"):
                self.address = "\0" + self.address[1:]
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; returns False when not under systemd or the send failed."""
        if self._sock is None or not self.address:  # the socket exists only with an address
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
