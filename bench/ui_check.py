"""Browser check of the MLflow UI as a new user meets it: run a small grid, `unlearn-grid tables`, serve it
with `unlearn-grid ui`, open the address `ui` prints in a fresh headless Chromium and assert from the
rendered page that it is the runs table with the grid's runs; write screenshots.

    make ui-check          # = .venv/bin/python bench/ui_check.py --out unlearn-grid/ui-check   (~3 min on 2 cores)

Needs Chromium (Debian: `apt-get install chromium`), which the project's setup does not install: without
it this script fails (exit 2) and says so; it is not part of `make test`. Everything runs on 127.0.0.1
in a temporary folder; the processes it starts are stopped by their process group.
Pages are read with `chromium --headless --dump-dom`, fresh profile each time (no local storage: the
UI's own default workflow type applies, as in a browser that never opened MLflow).
"""
import argparse
import asyncio
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import yaml

BIN = Path(sys.executable).parent
GRID = {"name": "ui-check", "datasets": "digits", "archs": "small_cnn", "forget_classes": [3], "seeds": [0],
        "train": {"epochs": 3, "lr": 0.05, "batch_size": 64},
        "methods": {"trw": {"epochs": 1, "lam": [0, 10]}, "ft": {"epochs": 1}}}
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium():
    for name in CHROMIUM:
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("error: no Chromium on PATH (looked for %s); install it (Debian: apt-get install chromium) "
             "to run the browser check" % ", ".join(CHROMIUM))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """A fresh headless Chromium (its own profile: no local storage, as a browser that never opened
    MLflow) driven over the DevTools protocol with aiohttp's websocket client (aiohttp comes with MLflow)."""

    def __init__(self, executable, folder, name):
        self.executable, self.profile = executable, folder / f"profile-{name}"

    async def __aenter__(self):
        port = free_port()
        self.process = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--window-size=1600,1000", f"--remote-debugging-port={port}",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.session = aiohttp.ClientSession()
        for _ in range(150):
            try:
                targets = await (await self.session.get(f"http://127.0.0.1:{port}/json/list")).json()
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError("Chromium's DevTools endpoint did not answer")
        page = next(t for t in targets if t["type"] == "page")
        self.socket = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.last_id = 0
        return self

    async def __aexit__(self, *error):
        await self.socket.close()
        await self.session.close()
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(20)

    async def call(self, method, **params):
        self.last_id += 1
        await self.socket.send_json({"id": self.last_id, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json()
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def js(self, expression):
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return reply["result"].get("value")

    async def text(self):
        return await self.js("document.body ? document.body.innerText : ''") or ""

    async def open(self, url, ready, timeout_s=90):
        """Navigate and wait until the page's text contains `ready`; returns (title, text)."""
        await self.call("Page.navigate", url=url)
        return await self.wait_for(ready, timeout_s)

    async def wait_for(self, needle, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while needle not in await self.text() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)    # let the table finish rendering
        return await self.js("document.title"), await self.text()

    async def expand(self, run_name_prefix):
        """Click the expand button beside the first run whose name starts with the prefix."""
        return await self.js(f"""(() => {{
            const link = [...document.querySelectorAll('a')].find(a => a.innerText.startsWith({run_name_prefix!r}));
            const button = link && link.closest('[role=gridcell]').querySelector('button');
            if (!button) return false;
            button.click();
            return true;
        }})()""")

    async def screenshot(self, path):
        reply = await self.call("Page.captureScreenshot", format="png")
        Path(path).write_bytes(base64.b64decode(reply["data"]))


def check(condition, message, failures):
    print(("  ok    " if condition else "  FAIL  ") + message)
    if not condition:
        failures.append(message)


TRIAL = r"unlearn/{method}(?:\(\S*?\))?/digits/small_cnn/f3/s0u0"   # the Original row has no params


async def look(executable, address, folder, out, failures):
    """What a fresh browser shows at the printed address, with the unlearn parent expanded, and for
    README's search; the experiment's plain address for comparison."""
    async with Browser(executable, folder, "runs") as browser:
        title, text = await browser.open(address, "matching runs")
        print(f"page title: {title!r}; text: {text[:400]!r}")
        await browser.screenshot(out / "runs.png")
        check(title.startswith("Runs - "), f"the printed address opens the Runs tab (title {title!r})", failures)
        for stage in ("original", "retrain", "unlearn"):
            check(re.search(rf"\b{stage} \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\b", text) is not None,
                  f"the runs table shows the parent run of stage {stage}", failures)
        check(re.search(r"^report$", text, flags=re.M) is not None, "the runs table shows the report run", failures)
        check(re.search(TRIAL.format(method="trw"), text) is None, "trials are collapsed under their parents", failures)
        check("Token Usage" not in text and "Tool calls" not in text, "no GenAI overview (token usage, tool calls)",
              failures)
        check(await browser.expand("unlearn 20"), "the unlearn parent has an expand button", failures)
        _, text = await browser.wait_for("unlearn/ft(")
        await browser.screenshot(out / "runs_expanded.png")
        shown = sorted(set(re.findall(TRIAL.format(method=r"\w+"), text)))
        print(f"expanded unlearn parent shows: {shown}")
        check(len(shown) == 4, "expanding it lists its 4 trials by name (Original row, TRW λ 0 and 10, FT)", failures)
    search = "tags.method = 'trw' and tags.forget_classes = '3'"
    async with Browser(executable, folder, "search") as browser:
        await browser.open(address + "&searchFilter=" + urllib.request.quote(search), "matching runs")
        await browser.expand("unlearn 20")     # matching trials come with their parent, collapsed
        _, text = await browser.wait_for("unlearn/trw(")
        await browser.screenshot(out / "search_trw.png")
        shown = sorted(set(re.findall(TRIAL.format(method=r"\w+"), text)))
        print(f"search {search!r} shows: {shown}")
        check(len(shown) == 2 and all(name.startswith("unlearn/trw(") for name in shown),
              f"searching {search} lists exactly the 2 TRW runs", failures)
    async with Browser(executable, folder, "plain") as browser:
        plain = address.split("/runs?")[0]
        title, _ = await browser.open(plain, "Experiments")
        await browser.screenshot(out / "plain.png")
        print(f"the experiment's plain address {plain} opens: {title!r} (MLflow's own default; not asserted)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="unlearn-grid/ui-check", help="folder for the screenshots")
    args = parser.parse_args()
    browser = chromium()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ui-check-"))
    tracking_uri, cli = f"sqlite:///{folder / 'mlflow.db'}", str(BIN / "unlearn-grid")
    (folder / "grid.yaml").write_text(yaml.safe_dump(GRID))
    started = time.perf_counter()
    subprocess.run([cli, "run", str(folder / "grid.yaml"), "--tracking-uri", tracking_uri,
                    "--storage", str(folder / "storage")], check=True, cwd=folder)
    subprocess.run([cli, "tables", GRID["name"], "--tracking-uri", tracking_uri, "--out", str(folder / "tables")],
                   check=True, cwd=folder)
    print(f"grid and tables in {time.perf_counter() - started:.0f} s")
    port = free_port()
    log_path = folder / "ui.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([cli, "ui", GRID["name"], "--tracking-uri", tracking_uri, "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
    failures = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"error: unlearn-grid ui did not serve: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
        printed = log_path.read_text()
        address = re.search(r"runs of experiment 'ui-check': (\S+)", printed)
        check(address is not None, "`unlearn-grid ui` printed the experiment's runs address", failures)
        if address is None:
            return 1
        address = address.group(1)
        print(f"address printed by `unlearn-grid ui`: {address}")
        asyncio.run(look(browser, address, folder, out, failures))
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"screenshots in {out}: runs.png, runs_expanded.png, search_trw.png, plain.png")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("UI check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
