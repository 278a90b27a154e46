"""An optional Prometheus text endpoint (``metrics.listen`` in the config; off by default).

It has no authentication, so the config accepts only loopback addresses: scrape it with a local
agent (node_exporter's textfile collector, a Prometheus agent, Grafana Alloy). Counters live in
this process and start at zero on restart, as Prometheus counters may.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .cycles import BundleOutcome, CycleReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Metrics:
    """What the endpoint serves; the reconcile loop updates it."""

    bytes_pulled: int = 0
    failures: int = 0
    cycles: int = 0
    last_success: float | None = None
    last_cycle_ok: bool | None = None
    files_missing: int | None = None
    bundles_wanted: int = 0

    def bundle_done(self, outcome: BundleOutcome) -> None:
        self.bytes_pulled += outcome.fetched
        if not outcome.ok:
            self.failures += 1

    def cycle_done(self, report: CycleReport) -> None:
        self.cycles += 1
        self.bundles_wanted = len(report.bundles)
        self.last_cycle_ok = report.ok
        if report.error is None and not report.interrupted:
            self.files_missing = len(report.missing)
        if report.ok:
            self.last_success = report.finished

    def render(self) -> str:
        rows = [
            ("modelmgr_bytes_pulled_total", "counter", "Bytes downloaded by this daemon.",
             self.bytes_pulled),
            ("modelmgr_failures_total", "counter", "Wanted bundles that failed in a cycle.",
             self.failures),
            ("modelmgr_cycles_total", "counter", "Reconcile cycles run.", self.cycles),
            ("modelmgr_last_success_timestamp_seconds", "gauge",
             "End of the last cycle that left every wanted bundle in place.", self.last_success),
            ("modelmgr_last_cycle_ok", "gauge", "1 when the last cycle left everything in place.",
             None if self.last_cycle_ok is None else int(self.last_cycle_ok)),
            ("modelmgr_files_missing", "gauge", "Wanted files not in place after the last cycle.",
             self.files_missing),
            ("modelmgr_bundles_wanted", "gauge", "Bundles the config wants.", self.bundles_wanted),
        ]
        lines = []
        for name, kind, help_text, value in rows:
            if value is None:
                continue
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on a loopback address."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound (host, port) (port 0 picks a free one). OSError if taken."""
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.address = runner.addresses[0][:2]
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render().encode(),
                            headers={"Content-Type": CONTENT_TYPE})
