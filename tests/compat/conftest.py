"""Starts the real `fleethub serve` for the compatibility suite and hands tests what they need.

The device SDK hard-codes MQTT port 8883, so the hub listens there; only HTTPS is ephemeral.
Set FLEETHUB_BIN to test another binary than target/release/fleethub.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from iothub_sas import parse_connection_string, sas_token
from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
MQTT_PORT = 8883
WEBSOCKET_PORT = 443
READY_DEADLINE_SECONDS = 60
API_VERSION = "2021-04-12"


class HubProcess:
    """One `fleethub serve` process over a data directory that outlives restarts."""

    def __init__(self, binary, data_dir):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.ready_path = self.data_dir.parent / "ready.json"
        self.log_path = self.data_dir.parent / "hub.log"
        self.process = None
        # 443 when we may bind it (root, as in CI): the device SDK's WebSocket transport hard-codes
        # 443. Otherwise ephemeral on first start, then pinned so clients keep working.
        self.https_port = WEBSOCKET_PORT if _can_bind(WEBSOCKET_PORT) else 0
        self.ready = None
        self.starts = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self):
        assert self.process is None, "hub already running"
        _fail_if_port_taken(MQTT_PORT)
        if self.ready_path.exists():
            self.ready_path.unlink()
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        cmd = [
            str(self.binary), "serve",
            "--data-dir", str(self.data_dir),
            "--mqtt-port", str(MQTT_PORT),
            "--https-port", str(self.https_port),
            "--ready-file", str(self.ready_path),
        ]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=self.data_dir.parent)
        log.close()
        self._wait_ready(cmd)

    def _wait_ready(self, cmd):
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                pytest.fail(f"`{' '.join(cmd)}` exited with {code} before it was ready:\n{self.log_tail()}")
            if self.ready_path.exists():
                try:
                    self.ready = json.loads(self.ready_path.read_text())
                    break
                except ValueError:
                    pass  # caught mid-write: read again
            time.sleep(0.05)
        else:
            self.stop()
            pytest.fail(f"no ready file within {READY_DEADLINE_SECONDS} s:\n{self.log_tail()}")
        for field in ("ownerConnectionString", "caFile", "mqttPort", "httpsPort", "hostName"):
            assert field in self.ready, f"ready file lacks {field!r}: {self.ready}"
        assert self.ready["mqttPort"] == MQTT_PORT, self.ready
        self.https_port = self.ready["httpsPort"]
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca_path

    def stop(self, sig=signal.SIGINT, timeout=10):
        """Stops the hub: SIGINT (graceful) by default, SIGKILL to simulate a crash."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, sig=signal.SIGKILL):
        """Same data directory, same ports; returns once the new process is ready."""
        before = self.owner_connection_string
        self.stop(sig)
        self.start()
        assert self.owner_connection_string == before, "the owner connection string changed across a restart"

    def log_tail(self, lines=60):
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no hub log)"
        return "\n".join(text[-lines:])

    # ---- what clients need -----------------------------------------------------------------
    @property
    def owner_connection_string(self):
        return self.ready["ownerConnectionString"]

    @property
    def ca_path(self):
        return str(self.ready["caFile"])

    @property
    def ca_pem(self):
        return Path(self.ca_path).read_text()

    @property
    def host_name(self):
        return self.ready["hostName"]

    @property
    def rest_host(self):
        """HostName as the service connection string has it (host:port)."""
        return parse_connection_string(self.owner_connection_string)["HostName"]

    @property
    def base_url(self):
        return f"https://localhost:{self.https_port}"

    def owner_token(self, **kwargs):
        cs = parse_connection_string(self.owner_connection_string)
        return sas_token(cs["HostName"], cs["SharedAccessKey"], policy=cs["SharedAccessKeyName"], **kwargs)

    def rest(self, method, path, token=None, headers=None, **kwargs):
        """A REST call with the owner's SAS token (or `token`), verified against the hub's CA."""
        all_headers = {"Authorization": token if token is not None else self.owner_token()}
        all_headers.update(headers or {})
        params = kwargs.pop("params", {})
        params.setdefault("api-version", API_VERSION)
        kwargs.setdefault("timeout", 30)
        return requests.request(
            method, self.base_url + path, headers=all_headers, params=params, verify=self.ca_path, **kwargs
        )

    def device_connection_string(self, device_id, key):
        return f"HostName={self.host_name};DeviceId={device_id};SharedAccessKey={key}"


def _can_bind(port):
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _fail_if_port_taken(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} is already in use: stop the other MQTT broker or hub first")


def _hub_binary():
    binary = Path(os.environ.get("FLEETHUB_BIN", REPO / "target" / "release" / "fleethub"))
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: run `cargo build --release -p fleethub` (scripts/test.sh does)")
    return binary


@pytest.fixture(scope="session")
def hub():
    """The running hub, shared by the whole session."""
    workdir = Path(tempfile.mkdtemp(prefix="fleethub-compat-"))
    process = HubProcess(_hub_binary(), workdir / "data")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        if os.environ.get("FLEETHUB_KEEP_DATA"):
            print(f"hub data and log kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def restart_hub(hub):
    """Restarts the shared hub over the same data directory and ports: `restart_hub(sig)`."""

    def restart(sig=signal.SIGKILL):
        hub.restart(sig)
        return hub

    yield restart
    if hub.process is None:  # a failed restart must not take the rest of the session with it
        hub.start()


@pytest.fixture
def registry(hub):
    from azure.iot.hub import IoTHubRegistryManager

    return IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)


@pytest.fixture
def new_id(request):
    """Unique device ids named after the test: `new_id()` / `new_id("x509")`."""

    def make(kind="dev"):
        test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name[5:25]).strip("-")
        return f"{kind}-{test}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def sas_device(registry, new_id):
    """Creates a SAS device with hub-generated keys: returns (device_id, primary_key)."""

    def make(status="enabled"):
        device_id = new_id()
        device = registry.create_device_with_sas(device_id, None, None, status)
        return device_id, device.authentication.symmetric_key.primary_key

    return make


@pytest.fixture
def device_clients(hub):
    """A factory of device SDK clients that are shut down when the test ends."""
    from azure.iot.device import IoTHubDeviceClient

    clients = []

    def make(device_id, key, **kwargs):
        kwargs.setdefault("server_verification_cert", hub.ca_pem)
        kwargs.setdefault("connection_retry_interval", 1)
        client = IoTHubDeviceClient.create_from_connection_string(
            hub.device_connection_string(device_id, key), **kwargs
        )
        clients.append(client)
        return client

    def adopt(client):
        clients.append(client)
        return client

    make.adopt = adopt
    yield make
    for client in clients:
        try:
            client.shutdown()
        except Exception:
            pass


@pytest.fixture
def telemetry(hub):
    """Stored telemetry of one device, read through `GET /v1/telemetry`."""

    def items(device_id):
        response = hub.rest("GET", "/v1/telemetry", params={"deviceId": device_id, "limit": 1000})
        assert response.status_code == 200, f"GET /v1/telemetry: {response.status_code} {response.text}"
        return response.json()["items"]

    items.wait_for = lambda device_id, message_id, timeout=15: wait_until(
        lambda: [i for i in items(device_id) if i.get("messageId") == message_id],
        timeout=timeout,
        message=f"telemetry {message_id!r} of {device_id} to be stored",
    )
    return items


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the end of the hub's log to every failure: it usually says why."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        process = getattr(item, "funcargs", {}).get("hub")
        if isinstance(process, HubProcess):
            report.sections.append(("fleethub log (last lines)", process.log_tail()))



_FILE_ORDER = ["test_service_sdk.py", "test_device_sdk.py", "test_plain_mqtt.py", "test_durability.py"]


def pytest_collection_modifyitems(items):
    """Restarting tests last: a hub that fails to come back cannot take other tests with it."""

    def rank(item):
        name = Path(str(item.fspath)).name
        return _FILE_ORDER.index(name) if name in _FILE_ORDER else len(_FILE_ORDER)

    items.sort(key=rank)  # stable: keeps the order within a file
