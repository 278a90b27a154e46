"""Pull jobs, kept by the App (not by a screen) so that leaving a screen never loses a pull.

Each pull runs ``ModelManager.install_bundle`` on an event loop of its own in a Textual thread
worker: a 16-connection pull at full speed does its positional writes and hashing there, never
on the UI's loop, so keys stay responsive. Cancelling cancels that loop's task (the engine keeps
the ``.partial`` and its resume sidecar); resuming is pulling the bundle again.

The engine only bumps counters in the manager's ``ProgressHub``; :meth:`Pulls.sample` reads them on
the Transfers screen's clock (10 Hz), never per chunk, and turns them into :class:`TransferRow`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from modelmgr.errors import ModelMgrError, UsageError
from modelmgr.library.install import InstallReport
from modelmgr.registry.store import Asset
from modelmgr.service import ModelManager

from .calls import user_error

ACTIVE_FILE = frozenset({"waiting", "probing", "downloading", "verifying"})
"""Hub states of a file that an engine is working on right now."""


@dataclass
class PullJob:
    """One ``pull bundle`` started from the TUI."""

    bundle: str
    """Bundle name."""
    state: str = "starting"
    """starting (looking at what is present) | running | cancelling | paused | done | failed."""
    files: list[tuple[str, int | None]] = field(default_factory=list)
    """(path under the root, size if the bundle says) of each file this pull fetches."""
    report: InstallReport | None = None
    """What the install did, once it finished."""
    error: ModelMgrError | None = None
    """Why the whole pull failed (resolve, disk space...); per-file errors are in ``report``."""
    assets: dict[str, Asset] = field(default_factory=dict)
    """The registry records of its files after it finished: hashes and verification result."""
    started: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _task: asyncio.Task | None = field(default=None, repr=False)
    _cancel_requested: bool = field(default=False, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "cancelling")

    @property
    def summary(self) -> str:
        """One line for the job's row and notifications."""
        if self.state == "done":
            if self.report is not None and self.report.nothing_to_do:
                return "already installed"
            return f"installed, {len(self.files)} file(s) verified"
        if self.state == "failed":
            failed = [f for f in (self.report.files if self.report else []) if f.error]
            return f"failed: {len(failed)} file(s)" if failed else "failed"
        if self.state == "paused":
            return "paused (partial kept; resume to continue)"
        return self.state


@dataclass(frozen=True)
class TransferRow:
    """One row of the Transfers table: a pull (``relpath`` None) or one of its files."""

    key: str
    bundle: str
    relpath: str | None
    state: str
    done: int
    total: int | None
    speed: float
    eta: float | None
    connections: int
    retries: int
    note: str = ""
    """Longer text for the details line: the error, or the verification result."""


class Pulls:
    """Every pull of this session, by bundle, in start order."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.jobs: dict[str, PullJob] = {}

    @property
    def active(self) -> list[PullJob]:
        return [j for j in self.jobs.values() if j.active]

    def new_job(self, bundle: str) -> PullJob:
        """A fresh job for ``bundle`` (replacing a finished or paused one)."""
        old = self.jobs.get(bundle)
        if old is not None and old.active:
            raise UsageError(f"{bundle} is already being pulled",
                             "see Transfers (3); cancel it there first")
        self.jobs.pop(bundle, None)  # re-insert: a resumed pull moves to the end
        job = self.jobs[bundle] = PullJob(bundle)
        return job

    # -- in the worker thread ----------------------------------------------------------------
    def run(self, job: PullJob) -> PullJob:
        """Run ``job`` to its end on this thread; never raises (the job records what happened)."""
        try:
            _, statuses, _ = self.manager.bundle_status(job.bundle)
            job.files = [(s.file.relpath, s.file.size) for s in statuses if s.state != "present"]
            self._forget_stale_progress(job)
            if not job._cancel_requested:  # else it stays "cancelling" until the task ends
                job.state = "running"
            with asyncio.Runner() as runner:
                job.report = runner.run(self._install(job))
            paths = {rel for rel, _ in job.files}
            job.assets = {a.path: a for a, _ in self.manager.assets() if a.path in paths}
            job.state = "done" if job.report.ok else "failed"
        except asyncio.CancelledError:
            job.state = "paused"
        except Exception as exc:  # noqa: BLE001 - shown to the user as the CLI would word it
            job.error, job.state = user_error(exc), "failed"
        finally:
            job.finished.set()
        return job

    async def _install(self, job: PullJob) -> InstallReport:
        job._loop, job._task = asyncio.get_running_loop(), asyncio.current_task()
        if job._cancel_requested:
            raise asyncio.CancelledError
        return await self.manager.install_bundle(job.bundle)

    def _forget_stale_progress(self, job: PullJob) -> None:
        """Drop hub entries left by an earlier (paused or finished) pull of these files, so a
        resumed file starts from what the engine reports now, not from stale counters."""
        busy = {rel for other in self.active if other is not job for rel, _ in other.files}
        for rel, _ in job.files:
            if rel not in busy:
                self.manager.progress.files.pop(rel, None)

    # -- from the UI thread ------------------------------------------------------------------
    def cancel(self, bundle: str) -> bool:
        """Cancel a running pull's task; False when there is nothing to cancel."""
        job = self.jobs.get(bundle)
        if job is None or not job.active:
            return False
        job._cancel_requested = True
        job.state = "cancelling"
        loop, task = job._loop, job._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed in between: the pull already ended
                pass
        return True

    def stop_all(self, timeout: float) -> None:
        """Cancel every running pull and wait (bounded) until each has saved its resume state."""
        for job in self.active:
            self.cancel(job.bundle)
        deadline = time.monotonic() + timeout
        for job in list(self.jobs.values()):
            job.finished.wait(max(0.0, deadline - time.monotonic()))

    def activity(self) -> str:
        """``↓ bundle 45%`` for the navigation bar; "" when nothing runs. Reads no speeds."""
        active = self.active
        if not active:
            return ""
        done = total = 0
        known = True
        for job in active:
            for rel, size in job.files:
                fp = self.manager.progress.files.get(rel)
                done += fp.done if fp else 0
                size = fp.total if fp is not None and fp.total is not None else size
                known = known and size is not None
                total += size or 0
        label = active[0].bundle if len(active) == 1 else f"{len(active)} pulls"
        return f"↓ {label}" + (f" {100 * done / total:.0f}%" if known and total else "")

    def sample(self, now: float | None = None) -> list[TransferRow]:
        """Rows for every job and its files from the hub's counters, read once, now."""
        now = time.monotonic() if now is None else now
        rows: list[TransferRow] = []
        for job in self.jobs.values():
            files = [self._file_row(job, rel, size, now) for rel, size in job.files]
            totals = [r.total for r in files]
            total = None if any(t is None for t in totals) else sum(totals)  # type: ignore[misc]
            done = sum(r.done for r in files)
            rate = sum(r.speed for r in files)
            left = (total - done) / rate if rate and total is not None else None
            note = str(job.error) if job.error else job.summary
            rows.append(TransferRow(job.bundle, job.bundle, None, job.state, done, total, rate,
                                    left if job.active else None,
                                    sum(r.connections for r in files),
                                    sum(r.retries for r in files), note))
            rows.extend(files)
        return rows

    def _file_row(self, job: PullJob, rel: str, size: int | None, now: float) -> TransferRow:
        fp = self.manager.progress.files.get(rel)
        if fp is None:  # the engine has not reached this file yet
            done, total, rate, state, note, connections, retries = 0, size, 0.0, "queued", "", 0, 0
        else:
            done, total, state, note = fp.done, fp.total if fp.total is not None else size, \
                fp.status, fp.message
            rate = fp.speed(now) if job.active and fp.status == "downloading" else 0.0
            connections, retries = (fp.connections if job.active else 0), fp.retries
        outcome = next((f for f in job.report.files if f.relpath == rel), None) \
            if job.report else None
        if outcome is not None:
            if outcome.error is not None:
                state, note = "failed", str(outcome.error)
            else:
                state, note = "verified", _verification_note(job.assets.get(rel))
        elif not job.active and state in ACTIVE_FILE | {"queued"}:
            state = "paused" if job.state == "paused" else "stopped"
        left = (total - done) / rate if rate and total is not None else None
        return TransferRow(f"{job.bundle}\n{rel}", job.bundle, rel, state, done, total, rate, left,
                           connections, retries, note)


def _verification_note(asset: Asset | None) -> str:
    if asset is None:
        return "verified"
    digest = f"sha256 {asset.sha256}" if asset.sha256 else \
        (f"blake3 {asset.blake3}" if asset.blake3 else "no hash")
    return f"{asset.verify_detail or 'verified'}: {digest}"
