"""README's screenshot: the demo's dashboard mid-incident, in Debian's Chromium.

Run by scripts/screenshot.sh while scripts/demo.sh runs phase 1: it waits until the
restock batch holds the write lock (the dashboard's "Write lock held now" strip) and
busy errors have arrived, then takes the picture.

    python scripts/screenshot.py URL OUTPUT.png
"""

from __future__ import annotations

import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def main() -> None:
    url, out = sys.argv[1], sys.argv[2]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        deadline = time.monotonic() + 120
        while True:
            try:
                page.goto(url, timeout=5_000)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        # Mid-incident: requests have failed, and the restock batch has held the lock for
        # over a second (the picture is taken the moment the page shows both).
        page.wait_for_function(
            "() => parseInt(document.getElementById('fig-busy')?.textContent || '0') >= 5",
            timeout=120_000,
            polling=200,
        )
        page.wait_for_function(
            # The holder itself (not one of its waiters) is the batch, held for over 1 s.
            """() => [...document.querySelectorAll('#held-now .held.bad')]
                       .some(e => e.querySelector(':scope > .ctx')?.textContent
                                    .includes('command:restock')
                                  && parseFloat(e.querySelector(':scope > .lw-age')
                                                 ?.dataset.age || '0') >= 1)""",
            timeout=120_000,
            polling=100,
        )
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=out, full_page=False)
        browser.close()
    print(f"screenshot: {out}")


if __name__ == "__main__":
    main()
