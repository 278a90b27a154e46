"""Transfers: a pull started in the TUI finishes verified while the user moves between screens;
cancel keeps the partial and resume picks it up; progress is sampled, at most 10 times a second.

The CDN is rate-capped per connection so that a pull of the tiny bundle lasts one to two seconds
(the stall timeout is raised to match: the capped server sends its first 64 KiB after a second).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter

from modelmgr_tui.app import ModelMgrApp

from .conftest import static_text, wait_for

BUNDLE = "bf16-tiny"
DM = "diffusion_models/tiny_bf16.safetensors"
FILES = (DM, "text_encoders/clip_l.safetensors", "vae/ae.safetensors")
RATE = 45_000
"""Bytes/s per connection: the 644 KiB diffusion model (in 64 KiB parts) takes about 1.5 s."""


def slow_app(world, managers) -> ModelMgrApp:
    world.hub.cdn.per_connection_rate = RATE
    return ModelMgrApp(managers(world, stall_timeout=5.0))


def cell(app: ModelMgrApp, rel: str | None, column: str) -> str:
    key = BUNDLE if rel is None else f"{BUNDLE}\n{rel}"
    return str(app.screen.query_one("#transfers").get_cell(key, column))


async def test_pull_finishes_verified_while_moving_between_screens(tui_world, managers):
    app = slow_app(tui_world, managers)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        started = time.monotonic()
        await pilot.press("p")
        job = app.pulls.jobs[BUNDLE]
        seen: set[str] = set()
        for key in itertools.cycle("3213?2"):
            if not job.active:
                break
            assert time.monotonic() - started < 30, "the pull did not finish"
            await pilot.press(key)
            await pilot.pause(0.05)
            seen.add(app.current_mode)
            assert app.pulls.jobs[BUNDLE] is job  # leaving a screen never loses the pull
        assert time.monotonic() - started > 0.5, "the pull was too fast to move around in"
        assert seen == {"catalogue", "library", "transfers", "help"}
        assert job.state == "done", job.error

        await pilot.press("3")
        await pilot.pause()
        assert cell(app, None, "state") == "done"
        assert [cell(app, rel, "state") for rel in FILES] == ["verified"] * 3
        assert all(cell(app, rel, "progress").startswith("100%") for rel in FILES)
        await pilot.press("down")
        note = static_text(app, "#transfer-note")
        sha = tui_world.hub.file("org/tiny", f"split_files/{DM}").sha256
        assert DM in note and f"verified on download: sha256 {sha}" in note

        await pilot.press("1")
        table = app.screen.query_one("#bundles")
        await wait_for(pilot, lambda: table.get_cell(BUNDLE, "state") == "installed",
                       what="the catalogue to show the bundle installed")
        await pilot.press("2")
        await wait_for(pilot, lambda: app.screen.query_one("#assets").row_count == 6,
                       what="the library to show the new files")


async def test_cancel_keeps_the_partial_and_resume_finishes_it(tui_world, managers):
    app = slow_app(tui_world, managers)
    hub = app.manager.progress
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        await pilot.press("p", "3")
        await wait_for(pilot, lambda: DM in hub.files and hub.files[DM].done > 0,
                       what="the first bytes")
        await pilot.press("c")  # the cursor is on the pull's row
        job = app.pulls.jobs[BUNDLE]
        await wait_for(pilot, lambda: job.state == "paused", what="the pull to stop")
        partial = tui_world.root / (DM + ".partial")
        assert partial.exists() and partial.with_name(partial.name + ".json").exists()
        assert not (tui_world.root / DM).exists()
        await pilot.pause(0.15)
        assert cell(app, None, "state") == "paused"
        assert cell(app, DM, "state") == "paused"

        await pilot.press("u")
        resumed = app.pulls.jobs[BUNDLE]
        assert resumed is not job
        await wait_for(pilot, lambda: not resumed.active, timeout=30, what="the resumed pull")
        assert resumed.state == "done", resumed.error
        outcome = next(f for f in resumed.report.files if f.relpath == DM)
        assert 0 < outcome.fetched < outcome.size  # it went on from the partial
        assert (tui_world.root / DM).read_bytes() == tui_world.files[f"split_files/{DM}"]
        assert not partial.exists()


async def test_progress_is_sampled_at_most_ten_times_a_second(tui_world, managers):
    app = slow_app(tui_world, managers)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        await pilot.press("p", "3")
        screen = app.screen
        table = screen.query_one("#transfers")
        updates: Counter[str] = Counter()
        update_cell = table.update_cell

        def counting(row_key, column_key, value, **kw):
            updates[(str(row_key.value if hasattr(row_key, "value") else row_key),
                     screen.samples)] += 1
            return update_cell(row_key, column_key, value, **kw)

        table.update_cell = counting
        job = app.pulls.jobs[BUNDLE]
        started, first = time.monotonic(), screen.samples
        await wait_for(pilot, lambda: not job.active, timeout=30, what="the pull")
        elapsed = time.monotonic() - started
        samples = screen.samples - first
        assert samples <= 10 * elapsed + 2
        per_row = Counter(row for row, _ in updates)  # distinct samples that touched each row
        assert per_row and max(per_row.values()) <= samples
        assert job.state == "done"


async def test_quit_pauses_a_running_pull_and_keeps_the_partial(tui_world, managers):
    app = slow_app(tui_world, managers)
    hub = app.manager.progress
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#bundles").row_count == 3,
                       what="the bundles")
        await pilot.press("p")
        await wait_for(pilot, lambda: DM in hub.files and hub.files[DM].done > 0,
                       what="the first bytes")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running, what="the app to quit")
    job = app.pulls.jobs[BUNDLE]
    assert job.state == "paused" and job.finished.is_set()
    partial = tui_world.root / (DM + ".partial")
    assert partial.exists() and partial.with_name(partial.name + ".json").exists()
