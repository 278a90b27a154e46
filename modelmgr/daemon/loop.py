"""``modelmgr daemon``: the long-running reconcile loop, shaped for systemd (``Type=notify``).

* Start: read and check the config (a bad one exits 2 before READY, naming the field), start the
  optional metrics endpoint, send ``READY=1``, run a cycle at once.
* Between cycles: sleep ``interval`` (shorter after a transient failure, a network error or
  files still held elsewhere: 30 s, doubling, capped at the interval), ping the watchdog at half
  of ``WATCHDOG_USEC`` all the time, keep ``STATUS=`` current. Bundles whose bytes failed their
  checks are held back until their definition changes or the daemon is restarted or reloaded.
* SIGHUP: re-read the config now; a bad one is logged and the old one kept; a good one applies
  from the next cycle, which starts as soon as the current one ends.
* SIGTERM / SIGINT: ``STOPPING=1``, cancel the running cycle (the engine saves every partial's
  resume state, leases are released) and exit 0, within seconds.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Mapping

from ..errors import ConfigError, ExitCode
from .config import DaemonConfig, load_config
from .cycles import CycleReport
from .events import EventLog
from .metrics import Metrics, MetricsServer
from .notify import Notifier
from .reconcile import run_cycle

RETRY_FIRST = 30.0
TRANSIENT = (ExitCode.NETWORK, ExitCode.LOCKED)


class Daemon:
    """One daemon process: config, signals, the cycle loop, the watchdog and metrics."""

    def __init__(self, config_path: Path, env: Mapping[str, str], *,
                 log: EventLog | None = None, notifier: Notifier | None = None) -> None:
        self.config_path = Path(config_path)
        self.env = env
        self.log = log or EventLog()
        self.notifier = notifier or Notifier(env)
        self.metrics = Metrics()
        self.config: DaemonConfig = _checked(load_config(self.config_path), env)
        self._pending: DaemonConfig | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._cycle: asyncio.Task | None = None
        self._server: MetricsServer | None = None
        self._failures = 0

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop,
                    signal.SIGHUP: self.reload}
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler, sig)
        watchdog = asyncio.create_task(self.notifier.watchdog_loop())
        try:
            await self._serve_metrics(self.config, fatal=True)
            self.log("daemon.start", config=str(self.config_path), root=str(self.config.root),
                     name=self.config.name, bundles=",".join(self.config.bundles) or "-",
                     interval=self.config.interval, lease=self.config.lease,
                     prune=self.config.prune, watchdog=self.notifier.watchdog_interval)
            self.notifier.ready(f"started; first cycle for {len(self.config.bundles)} bundle(s)")
            trigger = "start"
            while not self._stopping:
                self._cycle = asyncio.create_task(run_cycle(
                    self.config, self.env, self.log, trigger=trigger,
                    retry_failed=trigger in ("start", "reload"), notifier=self.notifier,
                    metrics=self.metrics))
                try:
                    report = await self._cycle
                except asyncio.CancelledError:
                    if self._stopping:
                        break
                    raise
                finally:
                    self._cycle = None
                trigger = await self._idle(report)
        finally:
            self.notifier.stopping()
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            if self._server is not None:
                await self._server.stop()
            for sig in handlers:
                loop.remove_signal_handler(sig)
            self.notifier.close()
        self.log("daemon.stop")
        return 0

    # -- signals -----------------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.log("daemon.stopping", signal=signal.Signals(sig).name)
        self.notifier.stopping("stopping: saving partial downloads")
        self._wake.set()
        if self._cycle is not None:
            self._cycle.cancel()

    def reload(self, sig: int = signal.SIGHUP) -> None:
        try:
            config = _checked(load_config(self.config_path), self.env)
        except ConfigError as exc:
            self.log("config.rejected", level="error", config=str(self.config_path),
                     error=exc.message, kept="the previous config")
            return
        self.log("config.reloaded", config=str(self.config_path),
                 bundles=",".join(config.bundles) or "-", applies="from the next cycle")
        self._pending = config
        self._wake.set()

    # -- between cycles ----------------------------------------------------------------------
    async def _idle(self, report: CycleReport) -> str:
        """Wait for the next cycle; returns its trigger."""
        self._failures = self._failures + 1 if _transient(report) else 0
        wait = self.config.interval
        if self._failures:
            wait = min(wait, RETRY_FIRST * 2 ** (self._failures - 1))
        self.notifier.status(_summary(report, wait))
        if self._pending is None and not self._stopping:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                return "retry" if self._failures else "interval"
        if self._pending is not None:
            await self._apply(self._pending)
            return "reload"
        return "interval"

    async def _apply(self, config: DaemonConfig) -> None:
        self._pending = None
        old, self.config = self.config, config
        if old.metrics_listen != config.metrics_listen:
            if self._server is not None:
                await self._server.stop()
                self._server = None
            await self._serve_metrics(config, fatal=False)

    async def _serve_metrics(self, config: DaemonConfig, *, fatal: bool) -> None:
        if config.metrics_listen is None:
            return
        server = MetricsServer(self.metrics)
        try:
            host, port = await server.start(*config.metrics_listen)
        except OSError as exc:
            where = config.where.get("metrics", f"{config.path}: metrics.listen")
            error = ConfigError(f"{where}: cannot listen: {exc.strerror or exc}",
                                "pick a free port")
            if fatal:
                raise error from None
            self.log("metrics.failed", level="error", error=error.message)
            return
        self._server = server
        self.log("metrics.listening", address=f"{host}:{port}", path="/metrics")


def _transient(report: CycleReport) -> bool:
    """Worth retrying soon: the cycle itself failed (volume, registry) or a bundle hit the
    network or files another machine still held."""
    return report.error is not None or any(
        b.error is not None and b.error.get("exit_code") in TRANSIENT for b in report.failed)


def _checked(config: DaemonConfig, env: Mapping[str, str]) -> DaemonConfig:
    """The config, once its settings (environment included) are known to be valid."""
    config.settings(env)
    return config


def _summary(report: CycleReport, wait: float) -> str:
    """The STATUS= line between cycles."""
    in_place = sum(b.ok for b in report.bundles.values())
    state = "ok" if report.ok else (
        report.error["message"] if report.error else
        "failed: " + ", ".join(b.name for b in report.failed))
    return (f"cycle {report.cycle} {state}; {in_place}/{len(report.bundles)} bundle(s) in place; "
            f"next cycle in {wait:.0f}s")


def run_daemon(config_path: Path, env: Mapping[str, str]) -> int:
    """The ``modelmgr daemon`` entry point; ConfigError (exit 2) before READY on a bad config."""

    async def main() -> int:
        return await Daemon(config_path, env).run()

    return asyncio.run(main())


def run_once(config: DaemonConfig, env: Mapping[str, str], log: EventLog, *,
             retry_failed: bool = False) -> CycleReport | None:
    """The ``modelmgr sync`` entry point: one cycle; SIGTERM (a timer's unit being stopped)
    cancels it like Ctrl-C, keeping partial downloads resumable. None when interrupted."""

    async def main() -> CycleReport | None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:  # a second SIGTERM gets the default action: exit at once
            loop.remove_signal_handler(signal.SIGTERM)
            task.cancel()  # type: ignore[union-attr]

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await run_cycle(config, env, log, trigger="sync", retry_failed=retry_failed)
        except asyncio.CancelledError:
            return None
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())
