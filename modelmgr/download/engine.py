"""The download engine: many ranged connections per file, several files at once, resumable.

Shape (after ollama's downloader, with its gaps closed):

* ``Engine.pull(jobs)`` checks free space for the whole job, opens one HTTP session, and runs up
  to ``parallel_files`` files at once under a global connection cap.
* ``FileDownload`` locks the target, probes the URL once (following redirects by hand, so the
  credential stays on its origin and all parts hit the same pinned URL), resumes from the sidecar
  when the remote identity is unchanged, then lets up to ``connections`` workers claim segments.
  Idle workers steal the second half of the busiest segment, so a slow tail is finished by many.
* Each attempt is classified by ``retry.py``; stalls reconnect for free, transient failures back
  off with jitter and honour Retry-After / RateLimit, expired signed URLs are re-resolved, and a
  server that ignores Range falls back to one stream without rewinding the hash.
* The hash follows the contiguous prefix while bytes arrive; finalize verifies size and hash,
  fsyncs and renames atomically, or quarantines.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp

from ..errors import (AuthError, DiskSpaceError, ModelMgrError, NotFoundError,
                      RemoteChangedError, RemoteError, UsageError)
from ..settings import Settings
from ..sources.base import RemoteFile, origin_of
from . import locks
from .finalize import finalize
from .hashing import PrefixHasher, hash_file
from .http import (make_session, normalize_etag, open_following, parse_content_range,
                   request_headers)
from .plan import (Segment, chunk_size, claim, contiguous_prefix, filled_bytes, initial_plan,
                   restart_from_prefix, steal)
from .prealloc import preallocate
from .progress import FileProgress, ProgressHub
from .ratelimit import RateLimiter
from .retry import RETRY_STATUSES, Backoff, PartFailure, Verdict, server_delay
from .safe_paths import redact_url, safe_join
from .state import DownloadState, load_state, remove_state, save_state, state_path
from .transfer import PartStats, PartTarget, fetch_part

UNKNOWN_SIZE_END = 1 << 62
MAX_STALLS_PER_PART = 50
STEAL_POLL = 0.2
STEAL_MIN = 256 * 1024  # a stolen half is at least this big
SPACE_MARGIN = 64 * 1024 * 1024


@dataclass(frozen=True)
class FileJob:
    """One remote file and the directory it goes into."""

    remote: RemoteFile
    dest: Path
    check: Callable[[Path], Any] | None = None
    """Called on the verified partial before it is renamed (a header/format check); an error
    it raises quarantines the file. Its return value lands in ``FileResult.checked``."""

    @property
    def final(self) -> Path:
        return safe_join(self.dest, self.remote.name)


@dataclass
class FileResult:
    """What happened to one file of a pull."""

    name: str
    path: str
    source: str
    status: str
    """downloaded | present | failed"""
    size: int | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    revision: str | None = None
    fetched: int = 0
    """Bytes received in this run (less than ``size`` after a resume)."""
    resumed_from: int = 0
    seconds: float = 0.0
    retries: int = 0
    error: ModelMgrError | None = None
    checked: Any = None
    """What ``FileJob.check`` returned (e.g. the header inspection)."""

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("error", "checked")}
        out["error"] = self.error.to_dict() if self.error else None
        return out


@dataclass(frozen=True)
class Probe:
    """What the first request told us about the bytes behind a URL."""

    url: str
    size: int | None
    ranges: bool
    validator: str | None


class Engine:
    """Runs pulls; one instance may run several pulls one after another."""

    def __init__(self, settings: Settings, progress: ProgressHub | None = None, *,
                 hash_always: bool = True) -> None:
        self.settings = settings
        self.progress = progress or ProgressHub()
        self.hash_always = hash_always
        self.backoff = Backoff(settings.retry_base, settings.retry_cap)
        self.limiter = RateLimiter(settings.limit_rate)
        self.conn_slots = asyncio.Semaphore(settings.max_connections)

    async def pull(self, jobs: list[FileJob]) -> list[FileResult]:
        """Download every job; failures are reported per file, other files go on."""
        finals = [job.final for job in jobs]
        if len(set(finals)) != len(finals):
            raise UsageError("two files of this pull have the same destination path",
                             "pull them into different folders")
        check_free_space(jobs)
        file_slots = asyncio.Semaphore(self.settings.parallel_files)
        async with make_session(self.settings) as session:
            async def one(job: FileJob) -> FileResult:
                async with file_slots:
                    return await FileDownload(self, session, job).run()

            return list(await asyncio.gather(*(one(j) for j in jobs)))


def check_free_space(jobs: list[FileJob]) -> None:
    """Refuse to start when the bytes still to fetch do not fit, per filesystem."""
    need: dict[int, list] = {}
    for job in jobs:
        if job.remote.size is None:
            continue
        final = job.final
        folder = _existing_parent(final.parent)
        remaining = job.remote.size
        partial = final.with_name(final.name + ".partial")
        state = load_state(state_path(partial))
        if state is not None and state.size == job.remote.size:
            remaining -= filled_bytes(state.segments)
        if final.exists() and final.stat().st_size == job.remote.size:
            remaining = 0
        dev = folder.stat().st_dev
        entry = need.setdefault(dev, [folder, 0])
        entry[1] += remaining
    for folder, remaining in need.values():
        free = shutil.disk_usage(folder).free
        if remaining and free < remaining + SPACE_MARGIN:
            raise DiskSpaceError(
                f"not enough disk space in {folder}: need {_gib(remaining + SPACE_MARGIN)} "
                f"(incl. 64 MiB margin), {_gib(free)} free",
                "free some space or choose another destination with --dest/--root")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


class FileDownload:
    """Downloads one file; see the module docstring for the flow."""

    def __init__(self, engine: Engine, session: aiohttp.ClientSession, job: FileJob) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.session = session
        self.job = job
        self.remote = job.remote
        self.final = job.final
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.state_file = state_path(self.partial)
        self.prog: FileProgress = engine.progress.file(self.remote.name)
        self.segments: list[Segment] = []
        self.size: int | None = None
        self.single = False
        self.target: PartTarget | None = None
        self.identity: dict = {}
        self.fetched = 0
        self.hasher: PrefixHasher | None = None
        self._dirty = False
        self._save_task: asyncio.Future | None = None
        self._rate: float | None = None
        self._latency: float | None = None

    # -- top level -------------------------------------------------------------------------
    async def run(self) -> FileResult:
        started = time.monotonic()
        result = FileResult(name=self.remote.name, path=str(self.final), source=self.remote.source,
                            status="failed", size=self.remote.size, revision=self.remote.revision)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.prog.status = "waiting"
            lock = await locks.acquire(self.final, self.settings.lock_wait, self._note)
            with lock:
                present = await self._already_present()
                if present is not None:
                    if self.job.check is not None:
                        result.checked = await asyncio.to_thread(self.job.check, self.final)
                    result.status, result.hashes, result.size = "present", present, self.final.stat().st_size
                    self.prog.status, self.prog.total = "present", result.size
                    self.prog.done = result.size
                    return result
                for attempt in (1, 2):
                    try:
                        result.hashes, result.checked = await self._download()
                        break
                    except RemoteChangedError as exc:
                        if attempt == 2:
                            raise
                        self._note(f"{self.remote.name}: {exc.message}; starting over")
                        self._discard_partial()
                result.status, result.size = "downloaded", self.size
                self.prog.status = "done"
        except ModelMgrError as exc:
            result.error = exc
            self.prog.status, self.prog.message = "failed", exc.message
        except OSError as exc:
            result.error = ModelMgrError(f"{self.remote.name}: {exc.strerror or exc}",
                                         f"check permissions and space at {self.final.parent}")
            self.prog.status, self.prog.message = "failed", str(result.error)
        finally:
            result.fetched = self.fetched
            result.resumed_from = self.prog.resumed_from
            result.retries = self.prog.retries
            result.seconds = round(time.monotonic() - started, 3)
        return result

    def _note(self, text: str) -> None:
        self.prog.message = text
        self.engine.progress.event(text)

    async def _already_present(self) -> dict[str, str] | None:
        """The digests of an existing final file that already matches, else None."""
        if not self.final.is_file():
            return None
        size = self.final.stat().st_size
        if self.remote.size is not None and self.remote.size_is_exact and size != self.remote.size:
            return None
        expected = self.remote.expected_hash
        if expected is None:
            return {} if self.remote.size is not None and self.remote.size_is_exact else None
        self.prog.status = "verifying"
        algo, want = expected
        got = await asyncio.to_thread(hash_file, self.final, algo)
        return {algo: got} if got == want else None

    def _discard_partial(self) -> None:
        remove_state(self.state_file)
        try:
            self.partial.unlink()
        except FileNotFoundError:
            pass

    # -- one download ----------------------------------------------------------------------
    async def _download(self) -> tuple[dict[str, str], Any]:
        self.prog.status = "probing"
        async with self.engine.conn_slots:  # the probe is a connection too (refreshes run in a
            probe = await self._probe()     # worker that already holds its slot)
        self.size = self._decide_size(probe)
        self.identity = self.remote.identity() | {"size": self.size}
        if not (self.remote.expected_hash or self.remote.revision):
            self.identity["validator"] = probe.validator
        self._prepare_partial(probe)
        fd = os.open(self.partial, os.O_RDWR)
        try:
            self.target = PartTarget(
                session=self.session, url=probe.url,
                headers=request_headers(self.remote, self.settings, probe.url),
                at_origin=origin_of(probe.url) == self.remote.auth_origin,
                size=self.size,
                etag=None if (probe.validator or "lm:").startswith("lm:") else probe.validator,
                fd=fd, limiter=self.engine.limiter, on_written=self._on_written)
            algo = self._hash_algorithm()
            if algo:
                self.hasher = PrefixHasher(self.partial, algo)
                self.hasher.start()
                self.hasher.advance(contiguous_prefix(self.segments))
            self.prog.status = "downloading"
            flusher = asyncio.create_task(self._flush_loop())
            try:
                await self._run_workers()
            finally:
                flusher.cancel()
                try:
                    await flusher
                except asyncio.CancelledError:
                    pass
                if self._save_task is not None:  # let an in-flight sidecar write land first
                    await asyncio.gather(self._save_task, return_exceptions=True)
                if not self._complete():
                    self._save_state(fd)
            self.prog.status = "verifying"
            if self.size is None:
                self.size = self.segments[-1].position
                os.ftruncate(fd, self.size)
            digest = await self.hasher.finish(self.size) if self.hasher else None
        finally:
            if self.hasher:
                await self.hasher.close()
            os.close(fd)
        checked = await asyncio.to_thread(
            finalize, self.partial, self.final, size=self.size, expected=self.remote.expected_hash,
            actual_digest=digest, source=self.remote.source, check=self.job.check)
        remove_state(self.state_file)
        return ({self.hasher.algorithm: digest} if self.hasher and digest else {}), checked

    def _hash_algorithm(self) -> str | None:
        expected = self.remote.expected_hash
        if expected:
            return expected[0]
        return "sha256" if self.engine.hash_always else None

    def _decide_size(self, probe: Probe) -> int | None:
        if self.remote.size is not None and self.remote.size_is_exact:
            if probe.size is not None and probe.size != self.remote.size:
                raise RemoteChangedError(
                    f"{self.remote.name}: the server has {probe.size} bytes but the source says "
                    f"{self.remote.size}", "the file changed upstream; resolve it again")
            return self.remote.size
        return probe.size

    def _prepare_partial(self, probe: Probe) -> None:
        """Resume from the sidecar when it describes this very remote file, else start fresh."""
        state = load_state(self.state_file) if self.size is not None else None
        usable = (state is not None and state.identity == self.identity and state.size == self.size
                  and self.partial.is_file() and self.partial.stat().st_size == self.size)
        if usable:
            self.segments = state.segments
            for seg in self.segments:
                seg.active = False
            done = filled_bytes(self.segments)
            self.prog.resumed_from = done
            if done:
                self._note(f"{self.remote.name}: resuming at {done} of {self.size} bytes")
        else:
            if state is not None or self.partial.exists():
                self._note(f"{self.remote.name}: partial download does not match the remote "
                           "file any more; starting over")
            self._discard_partial()
            with open(self.partial, "wb") as fh:
                if self.size is not None:
                    preallocate(fh.fileno(), self.size)
            self.segments = initial_plan(UNKNOWN_SIZE_END if self.size is None else self.size)
        self.single = not probe.ranges or self.size is None
        if self.single and len(self.segments) > 1:
            self.segments = restart_from_prefix(self.segments, self.size)
        self.prog.total = self.size
        self.prog.done = filled_bytes(self.segments) if self.size is not None else 0
        if self.size is not None:
            self._save_state(None)

    def _complete(self) -> bool:
        return all(seg.done for seg in self.segments)

    # -- state -----------------------------------------------------------------------------
    def _save_state(self, fd: int | None) -> None:
        """fdatasync the data, then write the sidecar: it never claims unwritten bytes."""
        if self.size is None:
            return
        if fd is not None:
            os.fdatasync(fd)
        save_state(self.state_file, DownloadState(self.identity, self.size,
                                                  [Segment(s.start, s.end, s.filled)
                                                   for s in self.segments]))
        self._dirty = False

    async def _flush_loop(self) -> None:
        assert self.target is not None
        while True:
            await asyncio.sleep(self.settings.state_interval)
            if self._dirty and self.size is not None:
                snapshot = DownloadState(self.identity, self.size,
                                         [Segment(s.start, s.end, s.filled) for s in self.segments])
                self._dirty = False
                self._save_task = asyncio.ensure_future(
                    asyncio.to_thread(_durable_save, self.target.fd, self.state_file, snapshot))
                await asyncio.shield(self._save_task)

    def _on_written(self, n: int) -> None:
        self.fetched += n
        self.prog.done += n
        self._dirty = True
        if self.hasher is not None:
            self.hasher.advance(contiguous_prefix(self.segments))

    # -- workers ---------------------------------------------------------------------------
    async def _run_workers(self) -> None:
        count = 1 if self.single else self.settings.connections
        try:
            async with asyncio.TaskGroup() as group:
                for i in range(count):
                    group.create_task(self._worker(), name=f"part-worker-{i}")
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None

    def _claim(self) -> Segment | None:
        if self.single:
            if any(s.active for s in self.segments):
                return None
            return claim(self.segments, UNKNOWN_SIZE_END, time.monotonic())
        now = time.monotonic()
        chunk = chunk_size(self._rate, self._latency, self.settings.min_part_size)
        return claim(self.segments, chunk, now) or steal(
            self.segments, STEAL_MIN, now, self._rate, chunk)

    def _record(self, stats: PartStats) -> None:
        """Fold one request's timing into the running estimates that size the next chunks."""
        if stats.rate <= 0:
            return
        if self._rate is None or self._latency is None:
            self._rate, self._latency = stats.rate, stats.latency
        else:
            self._rate = 0.7 * self._rate + 0.3 * stats.rate
            self._latency = 0.7 * self._latency + 0.3 * stats.latency

    async def _worker(self) -> None:
        async with self.engine.conn_slots:
            while True:
                seg = self._claim()
                if seg is None:
                    if self.single or not any(s.active for s in self.segments):
                        return
                    await asyncio.sleep(STEAL_POLL)  # stay around to help a straggler
                    continue
                self.prog.connections += 1
                try:
                    await self._fetch_with_retries(seg)
                finally:
                    seg.active = False
                    self.prog.connections -= 1

    async def _fetch_with_retries(self, seg: Segment) -> None:
        assert self.target is not None
        failures = stalls = bad_ranges = 0
        was_single = self.single
        while not seg.done and self.single == was_single:
            before = seg.filled
            try:
                self._record(await fetch_part(self.target, seg, ranged=not self.single))
                if self.size is None and not seg.done:
                    seg.end = seg.position  # a stream of unknown length ended: that is the size
                    continue
                if seg.done or seg.filled > before:  # a short but valid reply: ask for the rest
                    continue
                failure = PartFailure(Verdict.BACKOFF, "the server closed the reply early")
            except PartFailure as exc:
                failure = exc
            if seg.filled > before:  # count only failures that made no progress at all
                failures = 0
            if failure.verdict is Verdict.FREE:
                stalls += 1
                if stalls > MAX_STALLS_PER_PART:
                    raise RemoteError(f"{self.remote.name}: the server keeps stalling",
                                      "try again later or with fewer --connections")
                self._note(f"{self.remote.name}: {failure.reason}; reconnecting")
                continue
            if failure.verdict is Verdict.FINAL:
                raise self._final_error(failure.status, failure.reason)
            if failure.status == 206:
                bad_ranges += 1
            if failure.verdict is Verdict.SINGLE or bad_ranges >= 3:
                self._switch_to_single(failure.reason)
                return
            failures += 1
            self.prog.retries += 1
            if failures > self.settings.max_retries:
                raise RemoteError(
                    f"{self.remote.name}: giving up after {failures} failed attempts "
                    f"({failure.reason})", "run the same command again to resume")
            if failure.verdict is Verdict.REFRESH:
                await self._refresh_url()
            delay = self.engine.backoff.delay(failures, failure.delay)
            self._note(f"{self.remote.name}: {failure.reason}; retry {failures} in {delay:.1f}s")
            await asyncio.sleep(delay)

    def _switch_to_single(self, reason: str) -> None:
        """Fall back to one plain stream continuing after the hashed prefix."""
        if self.single:
            return
        self._note(f"{self.remote.name}: {reason}; falling back to a single connection")
        for seg in self.segments:
            seg.end = min(seg.end, seg.position)  # stop every other connection after its chunk
        self.segments = restart_from_prefix(
            [Segment(s.start, s.end, s.filled) for s in self.segments], self.size)
        self.single = True
        self.prog.done = filled_bytes(self.segments)

    async def _refresh_url(self) -> None:
        """Re-resolve from the origin (signed CDN URLs expire) and point every part at it."""
        assert self.target is not None
        probe = await self._probe()
        if self.size is not None and probe.size is not None and probe.size != self.size:
            raise RemoteChangedError(f"{self.remote.name}: the file's size changed upstream",
                                     "pull again to start over")
        self.target.url = probe.url
        self.target.headers = request_headers(self.remote, self.settings, probe.url)
        self.target.at_origin = origin_of(probe.url) == self.remote.auth_origin

    # -- probe -----------------------------------------------------------------------------
    async def _probe(self) -> Probe:
        """``GET bytes=0-0`` with redirects followed by hand; retried like a part."""
        failures = 0
        while True:
            hops: list[str] = []
            try:
                resp, url = await open_following(self.session, "GET", self.remote.url, self.remote,
                                                 self.settings, {"Range": "bytes=0-0"}, hops)
                try:
                    return await self._read_probe(resp, url, hops)
                finally:
                    resp.close()
            except PartFailure as exc:
                failure = exc
            except (asyncio.TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                failure = PartFailure(Verdict.BACKOFF, f"{type(exc).__name__}: {exc}")
            failures += 1
            if failures > self.settings.max_retries:
                raise RemoteError(f"{self.remote.name}: cannot reach "
                                  f"{redact_url(self.remote.url)} ({failure.reason})",
                                  "check the network / endpoint and try again")
            self.prog.retries += 1
            delay = self.engine.backoff.delay(failures, failure.delay)
            self._note(f"{self.remote.name}: {failure.reason}; retry {failures} in {delay:.1f}s")
            await asyncio.sleep(delay)

    async def _read_probe(self, resp: aiohttp.ClientResponse, url: str, hops: list[str]) -> Probe:
        login = next((hop for hop in hops if "reason=download-auth" in hop), None)
        if login is not None:
            raise self._final_error(307, "redirected to a login page", location=login)
        if resp.status in RETRY_STATUSES:
            raise PartFailure(Verdict.BACKOFF, f"HTTP {resp.status}", server_delay(resp.headers),
                              resp.status)
        if resp.status == 416 and (resp.headers.get("Content-Range") or "").strip() == "bytes */0":
            return Probe(url, 0, False, normalize_etag(resp.headers.get("ETag")))  # an empty file
        if resp.status not in (200, 206):
            body = await resp.content.read(2048)
            raise self._final_error(resp.status, body.decode("utf-8", "replace").strip()[:200],
                                    body=body)
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html") and not self.remote.name.endswith((".html", ".htm")):
            raise RemoteError(f"{self.remote.name}: {redact_url(url)} returned a web page, "
                              "not the file (a login or error page?)",
                              "check the URL and your token; open it in a browser to see why")
        validator = normalize_etag(resp.headers.get("ETag"))
        if validator is None and resp.headers.get("Last-Modified"):
            validator = "lm:" + resp.headers["Last-Modified"]
        if resp.status == 206:
            cr = parse_content_range(resp.headers.get("Content-Range"))
            if cr is not None and cr.total is not None:
                # a reply for other bytes than asked: ranges here cannot be trusted
                return Probe(url, cr.total, cr.first == 0, validator)
            return Probe(url, None, False, validator)
        return Probe(url, _content_length(resp), False, validator)

    def _final_error(self, status: int | None, detail: str, *, location: str | None = None,
                     body: bytes = b"") -> ModelMgrError:
        name, where = self.remote.name, redact_url(self.remote.url)
        if self.remote.credential == "civitai" and status is not None:
            from ..sources.civitai import civitai_download_error

            err = civitai_download_error(status, body, location, what=name,
                                         token_set=bool(self.settings.token_for("civitai")))
            if err is not None:
                return err
        if status in (401, 403) or (status is not None and 300 <= status < 400):
            hint = {"hf": "accept the licence on the repo page and/or set HF_TOKEN",
                    "civitai": "set CIVITAI_TOKEN (the creator requires login or early access)"
                    }.get(self.remote.credential or "", "this URL needs credentials")
            return AuthError(f"{name}: access denied by {where} (HTTP {status}: {detail})", hint)
        if status in (404, 410):
            return NotFoundError(f"{name}: not found at {where} (HTTP {status})",
                                 "check the name and revision")
        if status == 416:
            return RemoteChangedError(f"{name}: the server refused the byte range (HTTP 416); "
                                      "the file probably shrank", "pull again to start over")
        return RemoteError(f"{name}: {where} answered HTTP {status}: {detail}",
                           "try again later")


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a failed task group: a ModelMgrError if any, else the first."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, ModelMgrError):
            return exc
    return leaves[0]


def _content_length(resp: aiohttp.ClientResponse) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _durable_save(fd: int, path: Path, state: DownloadState) -> None:
    os.fdatasync(fd)
    save_state(path, state)

