"""One reconcile cycle: the wanted bundles against the registry and the files on the volume.

A cycle (``run_cycle``) loads the catalogue afresh (so a bundle whose pinned revision changed is
noticed: its files' source or sha256 no longer match the registry, they read ``unverified``),
then:

1. quick verify (size, mtime, header) of the wanted files that are recorded;
2. pull: for each wanted bundle, lease the files that are not in place on the volume
   (``volume_lock``), all or none, and let ``ModelManager.install_bundle`` fetch them; bundles
   whose files another machine is fetching wait until it is done, then find them present;
3. deep verify (re-hash) when due, and pull again whatever it found damaged;
4. prune, when enabled and every wanted bundle is in place: bundles no longer wanted, and files an
   updated bundle dropped, but only files modelmgr installed and no installed bundle uses;
5. record the cycle (``cycles.py``).

Download, verification, placement and recording are the library's and the engine's; this module
only decides what to ask for, in which order, under which lease.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import traceback
from typing import Any, Callable, Mapping

from ..catalogue.model import Bundle
from ..errors import ExitCode, LockedError, ModelMgrError, NotFoundError
from ..library.layout import STATE_DIR
from ..service import ModelManager
from .config import DaemonConfig
from .cycles import BundleOutcome, CycleReport, CycleStore
from .events import EventLog, progress_reporter
from .metrics import Metrics
from .notify import Notifier
from .volume_lock import Lease, LeaseLocks, keep_alive

LOCKS_DIR = "locks"
REPAIRABLE = ("mismatch", "bad-header", "unsafe")
"""Verify results whose recorded hash no longer describes the file: forgotten, so the file reads
``unverified`` and the next pull fetches it again (the engine replaces it atomically)."""
PERMANENT = (ExitCode.INTEGRITY, ExitCode.BAD_FILE)
"""Failures where the bytes arrived and were wrong: fetching the same definition again would
fetch the same wrong bytes (and quarantine another copy), so such a bundle is held back until its
definition changes or an operator asks (daemon start or reload, ``sync --retry-failed``)."""


async def run_cycle(config: DaemonConfig, env: Mapping[str, str], log: EventLog, *,
                    trigger: str, retry_failed: bool = False, notifier: Notifier | None = None,
                    metrics: Metrics | None = None) -> CycleReport:
    """Run one cycle and record it; cancelling it keeps partial downloads resumable.

    ``retry_failed``: also try bundles held back after a permanent failure (``PERMANENT``).
    """
    store = CycleStore(config.root, config.name)
    started = time.time()
    if not config.root.is_dir():  # never create the root: an unmounted volume must stay empty
        report = CycleReport(0, config.name, trigger, started)
        report.error = NotFoundError(
            f"the models root {config.root} does not exist",
            "mount the volume (RequiresMountsFor= in the unit) or create the folder").to_dict()
        return _finish(report, log, metrics)
    report = CycleReport(store.next_cycle(), config.name, trigger, started)
    deep = store.deep_due(config.deep_every, started)
    log("cycle.start", cycle=report.cycle, trigger=trigger, root=str(config.root),
        bundles=",".join(config.bundles) or "-", deep_verify=deep)
    manager = ModelManager(config.settings(env))
    locks = LeaseLocks(config.root / STATE_DIR / LOCKS_DIR, config.lease,
                       max_skew=config.max_clock_skew, on_event=log)
    reconciler = Reconciler(manager, config, locks, log, metrics=metrics,
                            previous=None if retry_failed else store.last_outcomes())
    status = notifier.status if notifier else None
    background = [asyncio.create_task(keep_alive(locks, reconciler.on_lost)),
                  asyncio.create_task(progress_reporter(manager.progress, log,
                                                        config.progress_every, status))]
    try:
        await reconciler.run(report, deep)
    except asyncio.CancelledError:
        report.interrupted = True
        raise
    except ModelMgrError as exc:
        report.error = exc.to_dict()
    except OSError as exc:  # the volume itself: read-only, wrong owner, gone stale
        report.error = ModelMgrError(
            f"cannot use {config.root}: {exc.strerror or exc}",
            "check that the volume is mounted read-write for the service user").to_dict()
    finally:  # no await before the record is written: a second cancel cannot skip it
        for task in background:
            task.cancel()
        locks.release_all(list(locks.held.values()))
        manager.close()
        _finish(report, log, metrics)
        try:
            store.append(report, deep_verified=any(v["mode"] == "deep" for v in report.verify))
        except OSError as exc:
            log("cycle.record_failed", level="error", path=str(store.path),
                error=exc.strerror or str(exc))
        await asyncio.gather(*background, return_exceptions=True)
    return report


def _finish(report: CycleReport, log: EventLog, metrics: Metrics | None) -> CycleReport:
    report.finished = time.time()
    if report.error is not None:
        log("cycle.error", level="error", cycle=report.cycle, error=report.error["message"],
            hint=report.error.get("hint"), code=report.error["exit_code"])
    log("cycle.done", level="info" if report.ok else "warning", cycle=report.cycle,
        ok=report.ok, interrupted=report.interrupted or None, fetched=report.fetched,
        in_place=sum(b.ok for b in report.bundles.values()), failed=len(report.failed),
        missing=len(report.missing), pruned=len(report.pruned) or None,
        seconds=round(report.finished - report.started, 3))
    if metrics is not None:
        metrics.cycle_done(report)
    return report


class Reconciler:
    """The steps of one cycle against one root (see the module docstring)."""

    def __init__(self, manager: ModelManager, config: DaemonConfig, locks: LeaseLocks,
                 log: EventLog, *, metrics: Metrics | None = None,
                 previous: dict[str, dict] | None = None) -> None:
        self.manager = manager
        self.previous = previous or {}
        self.config = config
        self.locks = locks
        self.log = log
        self.metrics = metrics
        self.poll = min(2.0, max(0.05, config.lease / 6))
        self._install: tuple[asyncio.Task, set[str]] | None = None
        self._lost: str | None = None
        self._dropped: set[str] = set()
        self._known: dict[str, Bundle] = {}

    async def run(self, report: CycleReport, deep: bool) -> None:
        self.locks.sweep()
        wanted = self._wanted(report)
        if self.config.verify_quick:
            await self.verify(report, wanted, deep=False)
        await self.pull(report, wanted)
        if deep and await self.verify(report, wanted, deep=True):
            await self.pull(report, wanted)
        report.missing = self._missing()
        if self.config.prune:
            await self.prune(report, self._known)

    def _wanted(self, report: CycleReport) -> dict[str, Bundle]:
        """The wanted bundles to work on this cycle (unknown and held-back ones are reported)."""
        catalogue = self.manager.catalogue
        wanted = {}
        for name in self.config.bundles:
            try:
                bundle = catalogue.get(name)
            except ModelMgrError as exc:  # unknown, or its YAML is broken: report it, go on
                self._outcome(report, BundleOutcome(name, "failed", error=exc.to_dict()))
                continue
            self._known[name] = bundle
            before = self.previous.get(name) or {}
            error = before.get("error") or {}
            if before.get("state") == "failed" and error.get("exit_code") in PERMANENT \
                    and before.get("fingerprint") == fingerprint(bundle):
                self.log("bundle.held", level="warning", bundle=name, error=error["message"],
                         hint="fix the bundle (or its source), then reload the daemon or run "
                              "`modelmgr sync --retry-failed`")
                self._outcome(report, BundleOutcome(name, "failed", error=error,
                                                    fingerprint=before["fingerprint"], held=True))
                continue
            wanted[name] = bundle
        return wanted

    def _missing(self) -> list[str]:
        """Files of the wanted bundles (held-back ones included) not in place now."""
        library = self.manager.library
        return sorted({s.file.relpath for b in self._known.values()
                       for s in library.bundle_status(b) if s.state != "present"})

    # -- pull --------------------------------------------------------------------------------
    async def pull(self, report: CycleReport, wanted: dict[str, Bundle]) -> None:
        """Install every wanted bundle, waiting for files that other machines hold."""
        pending = dict(wanted)
        told: set[tuple[str, str]] = set()
        last_progress = time.monotonic()
        while pending:
            progressed = False
            for name, bundle in list(pending.items()):
                todo = [s.file.relpath for s in self.manager.library.bundle_status(bundle)
                        if s.state != "present"]
                leases, busy = self.locks.try_acquire_all(todo)
                if busy is not None:
                    if (name, busy) not in told:
                        told.add((name, busy))
                        holder = self.locks.holder_of(busy)
                        self.log("lock.wait", bundle=name, file=busy,
                                 holder=holder.describe() if holder else "unknown")
                    continue
                outcome = await self._install_leased(bundle, todo, leases)
                if outcome is None:
                    continue  # our lease was taken over: the new holder finishes, we wait
                self._outcome(report, outcome)
                del pending[name]
                progressed = True
            if progressed or not pending:
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress > self.config.lock_wait:
                for name in pending:
                    busy = next(iter(sorted(f for n, f in told if n == name)), "?")
                    err = LockedError(f"{name}: {busy} is still being fetched by "
                                      f"{_who(self.locks, busy)} after {self.config.lock_wait:g}s",
                                      "the next cycle tries again; raise locks.wait to wait longer")
                    self._outcome(report, BundleOutcome(name, "waiting", error=err.to_dict()))
                return
            await asyncio.sleep(self.poll)

    async def _install_leased(self, bundle: Bundle, todo: list[str],
                              leases: list[Lease]) -> BundleOutcome | None:
        """Run install_bundle while holding ``leases``; None when one of them was lost."""
        registry = self.manager.library.registry
        before = set(registry.bundle_paths(bundle.name))
        if todo:
            self.log("bundle.pull", bundle=bundle.name, files=len(todo), todo=",".join(todo))
        task = asyncio.create_task(self.manager.install_bundle(bundle.name))
        self._install, self._lost = (task, {lease.key for lease in leases}), None
        try:
            result = await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if self._lost is None or (me is not None and me.cancelling()):
                raise
            self.log("lock.lost", level="warning", bundle=bundle.name, reason=self._lost)
            return None
        except ModelMgrError as exc:
            return self._failed(bundle, exc.to_dict())
        except Exception as exc:  # noqa: BLE001 - a bug in one bundle must not stop the daemon
            self.log("bundle.crash", level="error", bundle=bundle.name,
                     traceback="".join(traceback.format_exception(exc))[-2000:])
            return self._failed(bundle, ModelMgrError(
                f"internal error: {exc!r}", "report it with the daemon's log").to_dict())
        finally:
            self._install = None
            self.locks.release_all(leases)
        downloaded = [f.relpath for f in result.files if f.state == "downloaded"]
        fetched = sum(f.fetched for f in result.files)
        if not result.ok:
            bad = next(f for f in result.files if f.error is not None)
            for f in result.files:
                if f.error is not None:
                    self.log("file.failed", level="error", bundle=bundle.name, file=f.relpath,
                             error=f.error.message, hint=f.error.hint, code=f.error.exit_code)
            error = dict(bad.error.to_dict(), path=bad.relpath)  # type: ignore[union-attr]
            return BundleOutcome(bundle.name, "failed", fetched, downloaded, error,
                                 fingerprint(bundle))
        self._dropped |= before - {f.relpath for f in bundle.files}
        self.log("bundle.in_place", bundle=bundle.name, downloaded=len(downloaded),
                 fetched=fetched, seconds=round(result.seconds, 3))
        return BundleOutcome(bundle.name, "installed" if downloaded else "in-place", fetched,
                             downloaded, fingerprint=fingerprint(bundle))

    def _failed(self, bundle: Bundle, error: dict) -> BundleOutcome:
        self.log("bundle.failed", level="error", bundle=bundle.name, error=error["message"],
                 hint=error.get("hint"), code=error["exit_code"])
        return BundleOutcome(bundle.name, "failed", error=error, fingerprint=fingerprint(bundle))

    def on_lost(self, lease: Lease) -> None:
        """Heartbeat callback: stop the install that relies on a lease we no longer hold."""
        if self._install is not None and lease.key in self._install[1]:
            self._lost = f"{lease.key}: {lease.lost}"
            self._install[0].cancel()

    def _outcome(self, report: CycleReport, outcome: BundleOutcome) -> None:
        report.outcome(outcome)
        if self.metrics is not None:
            self.metrics.bundle_done(outcome)

    # -- verify ------------------------------------------------------------------------------
    async def verify(self, report: CycleReport, wanted: dict[str, Bundle], *,
                     deep: bool) -> list[dict]:
        """Verify the recorded wanted files one by one (a stop is noticed between files);
        returns the problems, having forgotten the hashes of damaged files."""
        library = self.manager.library
        paths = sorted({f.relpath for b in wanted.values() for f in b.files
                        if library.registry.get(f.relpath) is not None})
        mode = "deep" if deep else "quick"
        started = time.monotonic()
        problems = []
        for path in paths:
            result = await in_daemon_thread(library.verify, deep, [path])
            for asset, status, detail in result.results:
                if status == "ok":
                    continue
                problems.append({"path": asset.path, "status": status, "detail": detail})
                self.log("verify.problem", level="warning", mode=mode, path=asset.path,
                         status=status, detail=detail)
                if status in REPAIRABLE:
                    library.registry.update(asset.path, sha256=None, blake3=None)
        seconds = round(time.monotonic() - started, 3)
        report.verify.append({"mode": mode, "checked": len(paths), "problems": problems,
                              "seconds": seconds})
        self.log("verify.done", mode=mode, checked=len(paths), problems=len(problems),
                 seconds=seconds)
        return problems

    # -- prune -------------------------------------------------------------------------------
    async def prune(self, report: CycleReport, wanted: dict[str, Bundle]) -> None:
        """Delete what is no longer wanted; only once the wanted state is fully reached, so a
        failed or unknown wanted bundle can never lose a shared file to a prune."""
        if not report.ok or report.missing:
            self.log("prune.skipped", reason="not every wanted bundle is in place")
            return
        library = self.manager.library
        registry = library.registry
        catalogue = self.manager.catalogue
        for name in sorted(set(registry.installed_bundles()) - set(wanted)):
            leases, busy = self.locks.try_acquire_all(registry.bundle_paths(name))
            if busy is not None:
                self.log("prune.skipped", bundle=name, reason=f"{busy} is held by "
                         f"{_who(self.locks, busy)}")
                continue
            try:
                deleted, kept = library.remove(name, catalogue.bundles)
            finally:
                self.locks.release_all(leases)
            report.pruned += deleted
            self.log("prune.bundle", bundle=name, deleted=",".join(deleted) or "-",
                     kept=len(kept))
        wanted_paths = {f.relpath for b in wanted.values() for f in b.files}
        for path in sorted(self._dropped - wanted_paths):
            asset = registry.get(path)
            if asset is None or not asset.managed or registry.bundles_using(path):
                continue
            leases, busy = self.locks.try_acquire_all([path])
            if busy is not None:
                continue
            try:
                deleted, _ = library.remove(str(library.path_of(path)), catalogue.bundles)
            finally:
                self.locks.release_all(leases)
            report.pruned += deleted
            self.log("prune.file", path=path, reason="no longer part of an updated bundle")


def fingerprint(bundle: Bundle) -> str:
    """A short digest of what a bundle asks for (files, sources, pins, formats)."""
    return hashlib.sha256(repr(bundle.files).encode()).hexdigest()[:16]


def _who(locks: LeaseLocks, key: str) -> str:
    holder = locks.holder_of(key)
    return holder.describe() if holder else "another process"


async def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a daemon thread: a stop never waits for a long hash to finish (its result
    is only a verification, which the next cycle repeats)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def work() -> None:
        try:
            outcome = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=work, name=f"modelmgr-{getattr(fn, '__name__', 'work')}",
                     daemon=True).start()
    return await future

