#!/usr/bin/env python3
"""fabricd's status page in headless Chromium (Debian's chromium and chromium-driver, driven
by selenium): what the page shows, read from its DOM, and a screenshot.

    python tests/e2e/browser.py URL SCREENSHOT UNTIL [TIMEOUT]

loads URL (signed in with $FABRIC_PAGE_TOKEN when set), re-reads the page every 0.25 s until the Python expression UNTIL holds of its
state `s` (page_state() below), saves SCREENSHOT and prints the state as JSON: what a test
does from another network namespace (`ip netns exec NODE python browser.py ...`), where the
page's server is reachable and the test process is not. Exits 1, printing the last state,
when UNTIL does not hold within TIMEOUT seconds (default 60).
"""
import json
import os
import shutil
import sys
import time

# What the page shows, as plain data: the DOM contract of launcher/status/status_page.html.
PAGE_STATE_SCRIPT = """
const text = (root, selector) => { const e = root.querySelector(selector); return e ? e.textContent.trim() : null; };
const rows = (selector, cells) => [...document.querySelectorAll(selector)].map(row => {
  const out = {};
  for (const cell of cells) out[cell] = text(row, 'td.' + cell);
  return out;
});
return {
  login: !!document.querySelector('form#login') && getComputedStyle(document.querySelector('form#login')).display !== 'none',
  error: text(document, '#error'),
  updated: text(document, '#updated'),
  jobs: rows('table#jobs tr.job', ['id', 'name', 'owner', 'state', 'restarts', 'step', 'steps-per-second',
                                   'samples-per-second', 'loss']),
  nodes: rows('table#nodes tr.node', ['name', 'address', 'slots', 'heartbeat-age', 'jobs']),
  details: [...document.querySelectorAll('section.job-detail')].map(section => ({
    id: section.dataset.jobId,
    straggler: text(section, '.straggler'),
    ranks: [...section.querySelectorAll('table.ranks tr.rank')].map(row => ({
      rank: row.dataset.rank, node: text(row, 'td.node'), step: text(row, 'td.step'), lag: text(row, 'td.lag'),
      straggler: row.classList.contains('straggler-row')})),
    restarts: [...section.querySelectorAll('ul.restarts li:not(.none)')].map(li => li.textContent.trim()),
    plots: Object.fromEntries([...section.querySelectorAll('svg.plot')].map(svg => {
      const line = svg.querySelector('.line');
      return [svg.dataset.series, line ? Number(line.getAttribute('data-points')) : 0];
    })),
  })),
};
"""


def chromium_driver():
    """A headless Chromium of Debian's packages; SkipTest-worthy RuntimeError when they are missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not binary or not os.path.exists(driver):
        raise RuntimeError("chromium and chromium-driver are not installed (scripts/bootstrap installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def page_state(driver):
    return driver.execute_script(PAGE_STATE_SCRIPT)


def watch(driver, url, until, timeout, what="the page", token=None):
    """Loads url (signed in with `token` when given) and returns its first state for which
    until(state) holds; AssertionError after timeout."""
    driver.get(url)
    if token:  # what the login form does: the token in the tab's sessionStorage
        driver.execute_script("sessionStorage.setItem('fabricd-token', arguments[0])", token)
        driver.get(url)
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = page_state(driver)
        if until(state):
            return state
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; the page showed {json.dumps(state)}")


def main(argv):
    url, screenshot, until = argv[1], argv[2], argv[3]
    timeout = float(argv[4]) if len(argv) > 4 else 60
    driver = chromium_driver()
    try:
        try:
            state = watch(driver, url, lambda s: eval(until, {}, {"s": s}), timeout,  # the test's own expression
                          token=os.environ.get("FABRIC_PAGE_TOKEN"))
            status = 0
        except AssertionError as error:
            print(error, file=sys.stderr)
            state, status = page_state(driver), 1
        driver.save_screenshot(screenshot)
        print(json.dumps(state))
        return status
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
