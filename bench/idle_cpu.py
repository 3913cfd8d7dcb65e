"""CPU the Streamlit server burns while a tab sits open and nobody touches it (goal: <= 2 % of a core).

Starts the app (as the README does) on the current cache, measures the server process's CPU time over
`--seconds` with no tab, then with one Chromium tab open on each page in turn (after the page has
settled), and prints the percentage of one core for each. Usage: python bench/idle_cpu.py [--seconds 20]
"""

import argparse
import os
import time
from pathlib import Path

from _appserver import CHROMIUM, CHROMIUM_ARGS, IDLE, running_app

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live children."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    with running_app() as (url, server):

        def measure() -> float:
            c0, t0 = cpu_seconds(server.pid), time.monotonic()
            time.sleep(args.seconds)
            return 100.0 * (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)

        rows = [("no tab", measure())]
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            for name in ("", "exponents", "roles", "prune", "search"):
                page.goto(f"{url}/{name}")
                page.wait_for_selector(IDLE, timeout=180_000)
                time.sleep(5)  # let the first load's work finish
                rows.append((f"tab on /{name}", measure()))
            browser.close()
        print(f"server CPU while idle, % of one core over {args.seconds:g} s (goal <= 2 %):")
        for name, pct in rows:
            print(f"  {name:<18} {pct:6.2f} %")
        print(f"RESULT idle_cpu_percent_with_tab {max(p for n, p in rows[1:]):.2f} <=2")


if __name__ == "__main__":
    main()
