"""Regenerate the README screenshots from a running `make run` (http://127.0.0.1:8000).

    .venv/bin/python docs/take_screenshots.py

Logs in with the admin password `make run` printed (var/admin-password.txt) and uses Debian's
Chromium through Playwright.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main() -> None:
    password = (ROOT / "var" / "admin-password.txt").read_text(encoding="utf-8").strip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{BASE}/admin/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_load_state("load")
        page.goto(f"{BASE}/admin/participants/participant/?q=niams-ani-vascular+NIH-CC-001")
        page.get_by_role("link", name=re.compile("NIH-CC-001")).first.click()
        page.wait_for_load_state("load")
        page.locator("#visits-group").screenshot(
            path=str(ROOT / "docs" / "participant-calendar.png")
        )
        page.goto(f"{BASE}/admin/trials/protocolversion/")
        page.screenshot(path=str(ROOT / "docs" / "protocol-versions.png"))
        browser.close()


if __name__ == "__main__":
    main()
