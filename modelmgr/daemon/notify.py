"""The systemd notification protocol (sd_notify) without libsystemd.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: an AF_UNIX datagram socket, a path
or (leading ``@``) a Linux abstract name. Each datagram is newline-separated ``KEY=VALUE`` pairs:
``READY=1`` once the service works, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` at
least every ``WATCHDOG_USEC`` microseconds (we ping at half of it, as sd_watchdog_enabled(3)
advises), ``STOPPING=1`` on the way out. ``WATCHDOG_PID``, when set, names the process the
watchdog is meant for; any other process must not ping. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Mapping


class Notifier:
    """Sends sd_notify datagrams; silent when there is no ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self.address = raw
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False when it could not be delivered."""
        if self.address is None:
            return False
        message = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
            return True
        except OSError:  # systemd gone or the socket not there: the service keeps working
            return False

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def watchdog_loop(self) -> None:
        """Ping at half the watchdog interval until cancelled; returns at once when off.

        It runs on the event loop, so a loop blocked by some synchronous call stops the pings
        and systemd restarts the service: that is the point of the watchdog.
        """
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_interval)
