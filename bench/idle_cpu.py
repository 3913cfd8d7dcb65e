"""CPU the app burns while a tab sits open and nobody touches it (goal: <= 2 % of a core).

Starts the app (as the README does) on the current cache, measures the server process's CPU time over
`--seconds` with no tab, then with one Chromium tab open on each page in turn (after the page has
settled), and prints the percentage of one core for each — the server's, and the browser's (every Chromium
process this bench started: the Exponents explorer and the Roles scatter compute in the page, so an idle tab
must not keep them busy either). Each figure is the median (min, max) of `--reps` windows of `--seconds`.
Usage: python bench/idle_cpu.py [--seconds 20] [--reps 3] [--entry KEY]
"""

import argparse
import os
import statistics
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


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the Playwright driver and Chromium's processes, under this bench)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def own_cpu(pids) -> float:
    total = 0.0
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
    ap.add_argument("--reps", type=int, default=3, help="measurement windows per row (median, min, max)")
    ap.add_argument("--entry", help="statistics entry key the pages open (default: the sidebar's newest)")
    args = ap.parse_args()
    with running_app() as (url, server):

        def window() -> tuple[float, float]:
            browser_pids = descendants(os.getpid()) - descendants(server.pid) - {server.pid}
            c0, b0, t0 = cpu_seconds(server.pid), own_cpu(browser_pids), time.monotonic()
            time.sleep(args.seconds)
            dt = time.monotonic() - t0
            return (100.0 * (cpu_seconds(server.pid) - c0) / dt, 100.0 * (own_cpu(browser_pids) - b0) / dt)

        def measure() -> tuple[list[float], list[float]]:
            got = [window() for _ in range(max(1, args.reps))]
            return [g[0] for g in got], [g[1] for g in got]

        rows = [("no tab", *measure())]
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            query = f"?entry={args.entry}" if args.entry else ""
            for name in ("", "exponents", "roles", "prune", "search"):
                page.goto(f"{url}/{name}{query}")
                page.wait_for_selector(IDLE, timeout=180_000)
                time.sleep(5)  # let the first load's work finish
                rows.append((f"tab on /{name}", *measure()))
            browser.close()
        fmt = lambda xs: f"{statistics.median(xs):5.2f} % ({min(xs):.2f}–{max(xs):.2f})"  # noqa: E731
        print(f"CPU while idle, % of one core, median (min–max) of {args.reps} windows of {args.seconds:g} s "
              "(goal <= 2 %): server, browser (all its processes)")
        for name, pct, bpct in rows:
            print(f"  {name:<18} server {fmt(pct)}   browser {fmt(bpct)}")
        print(f"uptime: {os.popen('uptime').read().strip()}")
        print(f"RESULT idle_cpu_percent_with_tab {max(statistics.median(p) for n, p, b in rows[1:]):.2f} <=2")
        print(f"RESULT idle_browser_cpu_percent_with_tab {max(statistics.median(b) for n, p, b in rows[1:]):.2f} <=2")

if __name__ == "__main__":
    main()
