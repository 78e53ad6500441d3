"""A real `fleethub serve` (ephemeral ports), a simulated fleet of 20 devices sending telemetry,
and Debian's chromium driven headless through chromedriver, for the dashboard's browser tests.

Set FLEETHUB_BIN to test another binary than target/release/fleethub; screenshots go to
docs/screenshots/ (BROWSER_SCREENSHOTS=DIR to put them elsewhere).
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "compat"))
from iothub_sas import parse_connection_string, sas_token  # noqa: E402
from waiting import wait_until  # noqa: E402

DEVICES = 20
SCREENSHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", REPO / "docs" / "screenshots"))


def _binary():
    binary = Path(os.environ.get("FLEETHUB_BIN", REPO / "target" / "release" / "fleethub"))
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: run `cargo build --release -p fleethub` (scripts/test.sh does)")
    return binary


class Hub:
    """The hub process, its simulated fleet, and REST calls with the owner's SAS token."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.ready_path = workdir / "ready.json"
        self.processes = []

    def start(self):
        log = open(self.workdir / "hub.log", "wb")
        self.processes.append(subprocess.Popen(
            [str(_binary()), "serve", "--data-dir", str(self.workdir / "data"), "--mqtt-port", "0",
             "--https-port", "0", "--ready-file", str(self.ready_path)],
            stdout=log, stderr=log, cwd=self.workdir))
        self.ready = wait_until(self._read_ready, timeout=60, message="the hub's ready file")
        self.base_url = self.ready["dashboardUrl"].rstrip("/")
        sim_log = open(self.workdir / "simulate.log", "wb")
        self.processes.append(subprocess.Popen(
            [str(_binary()), "simulate", "--ready-file", str(self.ready_path), "--devices", str(DEVICES),
             "--register", "--tags", "product=aq", "--telemetry-interval", "1", "--firmware", "1.4.2"],
            stdout=sim_log, stderr=sim_log, cwd=self.workdir))
        wait_until(lambda: self.rest("GET", "/statistics/service").json()["connectedDeviceCount"] == DEVICES,
                   timeout=60, message=f"{DEVICES} simulated devices connected")

    def _read_ready(self):
        if self.processes[0].poll() is not None:
            pytest.fail(f"fleethub serve exited:\n{(self.workdir / 'hub.log').read_text(errors='replace')}")
        try:
            return json.loads(self.ready_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self):
        for p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    @property
    def ca(self):
        return str(self.ready["caFile"])

    def rest(self, method, path, **kwargs):
        cs = parse_connection_string(self.ready["ownerConnectionString"])
        token = sas_token(cs["HostName"], cs["SharedAccessKey"], policy=cs["SharedAccessKeyName"])
        return requests.request(method, self.base_url + path, headers={"Authorization": token},
                                params={"api-version": "2021-04-12"}, verify=self.ca, timeout=30, **kwargs)

    def policy_key(self, name):
        """A policy's primary key, read from the store (the hub prints only the owner's)."""
        db = sqlite3.connect(f"file:{self.workdir / 'data' / 'fleethub.db'}?mode=ro", uri=True)
        try:
            (text,) = db.execute("SELECT value FROM settings WHERE key = 'auth.policies'").fetchone()
        finally:
            db.close()
        return next(p["primaryKey"] for p in json.loads(text) if p["keyName"] == name)

    def cli(self, *args):
        """Runs `fleethub <args> --ready-file …` against this hub; returns its stdout."""
        done = subprocess.run([str(_binary()), *args, "--ready-file", str(self.ready_path)],
                              capture_output=True, text=True, timeout=60, cwd=self.workdir)
        assert done.returncode == 0, f"fleethub {' '.join(args)}: {done.stderr}"
        return done.stdout

    def owner_key(self):
        return parse_connection_string(self.ready["ownerConnectionString"])["SharedAccessKey"]


@pytest.fixture(scope="session")
def hub():
    workdir = Path(tempfile.mkdtemp(prefix="fleethub-browser-"))
    h = Hub(workdir)
    try:
        h.start()
        yield h
    finally:
        h.stop()
        if os.environ.get("FLEETHUB_KEEP_DATA"):
            print(f"hub data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _chromium(width, height, phone=False):
    options = webdriver.ChromeOptions()
    if phone:
        # A window cannot be narrower than 500 px; emulation gives a real phone's viewport.
        options.add_experimental_option(
            "mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}})
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}",
                # The hub's certificate chains to its own generated CA, which this throwaway
                # browser profile does not know; the connection is still TLS.
                "--ignore-certificate-errors"):
        options.add_argument(arg)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    browser.implicitly_wait(0)
    return browser


@pytest.fixture(scope="session")
def browser():
    b = _chromium(1280, 900)
    yield b
    b.quit()


@pytest.fixture()
def phone():
    b = _chromium(390, 844, phone=True)
    yield b
    b.quit()


@pytest.fixture(scope="session")
def shots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(browser, name):
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    return save
