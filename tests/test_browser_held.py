"""Held now, in a real browser (issue 14): who waits behind a holder, with a wait that
grows while it waits, and a hold still going drawn on the timeline as a bar that grows
to now. Real processes on a real SQLite file; nothing of either is in the store yet.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.support.browser import open_page
from tests.support.servers import BLOCKER_SITE, MANAGE, ROOT, TOKEN, WAITER_SITE, hold

pytestmark = pytest.mark.browser


# The waiter's entry under the holder's, with its wait as the server last said (data-age)
# and as the page shows it (ticking between polls).
WAITER = """([holderSite, waiterSite]) => {
    const held = [...document.querySelectorAll('#held-now .held')]
        .find(h => h.textContent.includes(holderSite));
    if (!held) return null;
    const li = [...held.querySelectorAll('li.waiter')]
        .find(l => l.textContent.includes(waiterSite));
    if (!li) return null;
    const age = li.querySelector('.lw-age');
    return {text: li.textContent.replace(/\\s+/g, ' '), server: parseFloat(age.dataset.age),
            shown: parseFloat(age.textContent)};
}"""


def test_a_waiter_is_shown_behind_the_holder_with_its_wait_growing(world, browser, tmp_path):  # noqa: F811
    server, env = world
    page = open_page(browser, f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m")
    holder = hold(env, tmp_path / "ready")
    # write_one waits up to 60 s for the lock (a real busy handler, polling the table),
    # and the holder holds until the page has been read.
    writer = subprocess.Popen(
        [sys.executable, str(MANAGE), "write_one"], cwd=ROOT,
        env={**env, "LOCKWATCH_TEST_TIMEOUT": "60"}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        page.wait_for_function(
            f"(a) => {{ const w = ({WAITER})(a); return w && w.server > 0.5; }}",
            arg=[BLOCKER_SITE, WAITER_SITE], timeout=20_000,
        )  # fmt: skip
        first = page.evaluate(WAITER, [BLOCKER_SITE, WAITER_SITE])
        assert writer.poll() is None and holder.poll() is None, "shown only after the wait"
        assert "command:write_one" in first["text"] and f"pid {writer.pid}" in first["text"]
        # The server's figure grows (the header is polled), not only the page's ticking.
        page.wait_for_function(
            f"([h, w, s]) => {{ const x = ({WAITER})([h, w]); return x && x.server >= s + 1.0; }}",
            arg=[BLOCKER_SITE, WAITER_SITE, first["server"]], timeout=5_000,
        )  # fmt: skip
        second = page.evaluate(WAITER, [BLOCKER_SITE, WAITER_SITE])
        assert writer.poll() is None, "the wait ended before the page showed it growing"
        assert second["shown"] >= first["shown"] + 1.0, (first, second)
        assert "waiting behind it" in page.locator("#held-now").inner_text()
    finally:
        holder.release()
        out, _ = writer.communicate(timeout=30)
    # Once the holder let go the waiter got the lock: it leaves the strip.
    assert out.strip() == "ok"
    page.wait_for_function("() => !document.querySelector('#held-now li.waiter')", timeout=10_000)
    assert page.errors == []


# The bar of the hold still going in the holder's lane: its length (ms), where it ends
# (epoch ms) and how wide it is drawn (px).
OPEN_BAR = """(site) => {
    const gd = document.getElementById('plot-timeline');
    if (!gd || !gd.data) return null;
    const c = gd.data.findIndex(t => t.name === 'still held');
    if (c < 0) return null;
    const trace = gd.data[c];
    const i = trace.customdata.findIndex(row => row[1] === site);
    if (i < 0) return null;
    const bars = [...gd.querySelectorAll('.barlayer .trace')];
    const drawn = bars[gd.data.slice(0, c).filter(t => t.type === 'bar').length];
    const path = drawn && drawn.querySelectorAll('.point')[i];
    const base = window.lockwatchFigures.toMs(trace.base[i]);
    return {ms: trace.x[i], end: base + trace.x[i], held: trace.customdata[i][4],
            px: path ? path.getBoundingClientRect().width : 0,
            serverNow: Date.now() - (window.lockwatch.skew || 0)};
}"""


def test_an_open_hold_is_a_bar_that_grows_to_now(world, browser, tmp_path):  # noqa: F811
    server, env = world
    page = open_page(browser, f"http://127.0.0.1:{server.port}/?token={TOKEN}&window=5m")
    holder = hold(env, tmp_path / "ready")
    try:
        page.wait_for_function(
            f"(a) => {{ const b = ({OPEN_BAR})(a); return b && b.ms > 1500; }}",
            arg=BLOCKER_SITE, timeout=20_000,
        )  # fmt: skip
        first: dict[str, Any] = page.evaluate(OPEN_BAR, BLOCKER_SITE)
        page.wait_for_timeout(2_000)
        second: dict[str, Any] = page.evaluate(OPEN_BAR, BLOCKER_SITE)
        assert holder.poll() is None, "the bar was measured after the hold ended"
        # The tooltip says so, with real numbers, while the hold lasts.
        # Hovered again until the tooltip shows: plotly drops a hover that comes under 50 ms
        # after the last, and a live redraw in between clears it (seen on a loaded machine).
        hover = page.wait_for_function(
            """() => {
                const gd = document.getElementById('plot-timeline');
                const c = gd.data.findIndex(t => t.name === 'still held');
                if (c < 0) return null;
                Plotly.Fx.hover(gd, [{curveNumber: c, pointNumber: 0}]);
                return gd.querySelector('.hoverlayer')?.textContent || null;
            }""",
            timeout=10_000,
            polling=200,
        ).json_value()
    finally:
        holder.release()
    # It grew by about the time between the two looks, in data and on screen.
    assert second["ms"] >= first["ms"] + 1_500, (first, second)
    assert second["held"] == second["ms"]  # the tooltip's "so far" is the bar's length
    assert second["px"] > first["px"], (first, second)
    # And it reaches now (as the server's clock reads on the page), within a second.
    assert second["end"] >= second["serverNow"] - 1_000, second
    assert "still held" in hover and "so far" in hover and "NaN" not in hover, hover
    # Once it ends, the hold is an ordinary (closed) bar: nothing is left "still held".
    page.wait_for_function(
        "() => !document.getElementById('plot-timeline').data.some(t => t.name === 'still held'"
        " && t.customdata.length)",
        timeout=15_000,
    )
    assert page.errors == []
