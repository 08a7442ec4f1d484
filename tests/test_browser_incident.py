"""The incident view in a real browser (issue 14): a hold shown while it is held, real
numbers in every tooltip, a table that fits 1280 px, and a call site's link that lands
on its filtered events.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.browser import open_page
from tests.support.dashboard import HOLDER, WAITER, insert
from tests.support.servers import BLOCKER_SITE, MANAGE, ROOT, TOKEN, contention

pytestmark = pytest.mark.browser


HELD_OVER = """([site, seconds]) => {
    const strip = document.getElementById('held-now');
    if (!strip || !strip.textContent.includes(site)) return false;
    const age = strip.querySelector('.lw-age');
    return age !== null && parseFloat(age.textContent) > seconds;
}"""


def test_a_long_hold_shows_as_held_while_it_is_held(world, browser, tmp_path):  # noqa: F811
    server, env = world
    page = open_page(browser, f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m")
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, str(MANAGE), "hold_lock", "--seconds", "10", "--ready-file", str(ready)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "no lock taken"
            time.sleep(0.02)
        # Nothing of the hold is in the store yet: the page reads the live holder table.
        page.wait_for_function(HELD_OVER, arg=[BLOCKER_SITE, 5.0], timeout=9_000)
        assert holder.poll() is None, "the page showed the hold only after it ended"
        strip = page.locator("#held-now").inner_text()
        assert "command:hold_lock" in strip and f"pid {holder.pid}" in strip
        assert "still held" in page.locator("#header .figures").inner_text()
    finally:
        holder.kill()
        holder.wait(10)
    assert page.errors == []


# Hover every point of every drawn chart through plotly's own hover, and collect the text.
# plotly drops a hover that comes less than 50 ms after the last: 70 ms apart, or the
# same tooltip would be read again for the next point.
HOVER_ALL = """async () => {
    const texts = [];
    for (const id of ['plot-busy', 'plot-waits', 'plot-durations', 'plot-timeline']) {
        const gd = document.getElementById(id);
        if (!gd || !gd.data) continue;
        for (const [c, trace] of gd.data.entries()) {
            if (trace.hoverinfo === 'skip') continue;
            for (const [i, y] of (trace.y || []).entries()) {
                if (y === null || y === 0) continue;
                Plotly.Fx.unhover(gd);
                await new Promise(r => setTimeout(r, 70));
                Plotly.Fx.hover(gd, [{curveNumber: c, pointNumber: i}]);
                const layer = gd.querySelector('.hoverlayer');
                texts.push(id + ': ' + (layer ? layer.textContent : ''));
            }
        }
        Plotly.Fx.unhover(gd);
    }
    return texts;
}"""
CHARTS_DRAWN = """() => ['plot-busy', 'plot-waits', 'plot-durations', 'plot-timeline'].every(id => {
    const gd = document.getElementById(id);
    return gd && gd.data && gd.data.length > 0;
})"""
HOLD_BAR = """() => {
    const gd = document.getElementById('plot-timeline');
    gd.scrollIntoView({block: 'center'});
    const c = gd.data.findIndex(t => t.name === 'transaction hold');
    const trace = gd.data[c];
    const i = trace.x.indexOf(Math.max(...trace.x));
    const bar = gd.querySelectorAll('.barlayer .trace')[0].querySelectorAll('.point')[i];
    const box = bar.getBoundingClientRect();
    return [box.left + box.width / 2, box.top + box.height / 2];
}"""


def test_no_nan_in_any_tooltip(world, browser, tmp_path):  # noqa: F811
    server, env = world
    assert contention(env, tmp_path / "ready1", seconds=1.0) == "failed: database is locked"
    page = open_page(browser, f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m", 1440)
    page.wait_for_function(CHARTS_DRAWN, timeout=15_000)
    texts = page.evaluate(HOVER_ALL)
    charts = {t.split(":")[0] for t in texts}
    assert charts == {"plot-busy", "plot-waits", "plot-durations", "plot-timeline"}, texts
    assert all(t.split(": ", 1)[1].strip() for t in texts), texts  # every hover shows text
    assert [t for t in texts if "NaN" in t or "undefined" in t] == []
    # And with the mouse, on the hold bar the user saw "held NaN ms" on.
    x, y = page.evaluate(HOLD_BAR)
    page.mouse.move(x, y)
    page.wait_for_selector("#plot-timeline .hoverlayer .hovertext", timeout=5_000)
    hover = page.locator("#plot-timeline .hoverlayer").text_content() or ""
    assert "held" in hover and "NaN" not in hover and BLOCKER_SITE in hover
    assert page.errors == []


LONG_SITE = (
    "src/very_long_package_name/subsystem/another_level/handlers/inventory_reconciliation"
    "_batch_processor.py:1234 in reconcile_inventory_for_every_warehouse_in_the_region"
)
FITS = """() => {
    const scroller = document.querySelector('#events-table .scroll');
    const blocker = [...document.querySelectorAll('#events-table th')]
        .find(th => th.textContent.trim() === 'blocker_call_site');
    const box = blocker.getBoundingClientRect();
    return {
        sideways: scroller.scrollWidth - scroller.clientWidth,
        page: document.documentElement.scrollWidth - window.innerWidth,
        blockerRight: box.right, width: window.innerWidth,
    };
}"""
CUT_SITES = """() => [...document.querySelectorAll('#events-table td.site')]
    .filter(td => td.scrollWidth > td.clientWidth + 1 && td.title !== td.textContent.trim())
    .map(td => td.textContent)"""


def test_the_blocker_column_fits_1280_px_and_call_sites_are_never_cut(
    story_server, browser, tmp_path
):
    now = time.time()
    insert(story_server.store, [
        dict(ts=now - 5, kind="busy", classification="timeout", duration_ms=5.0, wait_ms=5.0,
             pid=7, thread="Thread-12 (process_request_thread)", call_site=LONG_SITE,
             context="request:POST /api/v2/warehouses/reconcile/inventory/batch/",
             blocker_pid=100, blocker_thread="MainThread", blocker_call_site=LONG_SITE,
             blocker_context="command:reconcile", sql="UPDATE inventory SET " + "x = ?, " * 80),
    ])  # fmt: skip
    page = open_page(browser, f"http://127.0.0.1:{story_server.port}/?token={TOKEN}")
    page.wait_for_selector("#events-table table")
    page.locator("#events").scroll_into_view_if_needed()
    fits = page.evaluate(FITS)
    assert fits["sideways"] <= 1, fits
    assert fits["page"] <= 0, fits
    assert fits["blockerRight"] <= fits["width"], fits
    assert page.evaluate(CUT_SITES) == []
    row = page.locator("#events-table tr.kind-busy", has_text="reconcile_inventory").first
    assert LONG_SITE in row.inner_text().replace("\n", "")  # wrapped, in full
    assert page.errors == []


EVENTS_IN_VIEW = """() => {
    const box = document.getElementById('events').getBoundingClientRect();
    return box.top >= 0 && box.top < window.innerHeight / 2;
}"""


def test_a_call_site_click_lands_on_its_filtered_events(story_server, browser):
    base = f"http://127.0.0.1:{story_server.port}"
    page = open_page(browser, f"{base}/?token={TOKEN}")
    page.wait_for_selector("#callsites table")
    page.wait_for_selector("#events-table table")
    page.locator("#callsites a", has_text=HOLDER).click()
    page.wait_for_selector("#lw-active-filters", timeout=5_000)
    assert HOLDER in page.locator("#lw-active-filters").inner_text()
    assert "4 events match the filters" in page.locator("#events-table .count").inner_text()
    page.wait_for_function(EVENTS_IN_VIEW, timeout=5_000)
    assert "call_site=" in page.url and page.url.endswith("#events")
    # A reload (or the same link opened in a new tab) lands there too.
    page.reload()
    page.wait_for_selector("#lw-active-filters", timeout=10_000)
    page.wait_for_function(EVENTS_IN_VIEW, timeout=5_000)
    # The filter clears with one click.
    page.locator("#lw-active-filters [data-clear='all']").click()
    page.wait_for_selector("#lw-active-filters", state="detached", timeout=5_000)
    assert "7 events" in page.locator("#events-table .count").inner_text()
    assert "call_site" not in page.url
    assert WAITER in page.locator("#events-table").inner_text()
    assert page.errors == []


def test_an_endpoint_leads_to_its_events_and_a_request_to_its_page(story_server, browser):
    page = open_page(browser, f"http://127.0.0.1:{story_server.port}/?token={TOKEN}")
    page.wait_for_selector("#endpoints table")
    page.locator("#endpoints a[data-context='command:sync_stock']").click()
    page.wait_for_selector("#lw-active-filters", timeout=5_000)
    assert "command:sync_stock" in page.locator("#lw-active-filters").inner_text()
    assert "4 events match the filters" in page.locator("#events-table .count").inner_text()
    page.wait_for_function(EVENTS_IN_VIEW, timeout=5_000)
    # The story's request: its event page links to the request's page.
    page.locator("#lw-active-filters [data-clear='all']").click()
    page.wait_for_selector("#lw-active-filters", state="detached", timeout=5_000)
    page.locator("#events-table tr.kind-request a").first.click()
    page.wait_for_selector("#lw-request-link")
    page.click("#lw-request-link")
    page.wait_for_url("**/events/*/request/")
    assert "story-request" in page.locator("main").inner_text()
    assert page.errors == []
