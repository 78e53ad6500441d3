"""The Node.js SDK suite (tests/compat-node) against the same hub: one case per node test file.

Each file runs as `node --test` with the hub's owner connection string and CA in its environment.
Every node test has its own deadline (lib/support.js), so a stuck test fails by name; a file whose
process does not exit (a client left open) is killed here at FILE_DEADLINE_SECONDS.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "compat-node"
FILES = sorted(p.name for p in (SUITE / "test").glob("*.test.js"))
# The azure-iothub service SDK builds https://{HostName}/… and knows no other port.
NODE_SERVICE_PORT = 443
# `--test-reporter` arrived in node 18.15 (and 19.6); Debian bookworm has 18.19 and later.
OLDEST_NODE = (18, 15)
FILE_DEADLINE_SECONDS = 180


def _node_or_skip():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/test.sh installs Debian's nodejs and npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major, minor = (int(n) for n in re.match(r"v(\d+)\.(\d+)", version).groups())
    if (major, minor) < OLDEST_NODE or major == 19 and minor < 6:
        pytest.skip(f"node {version} lacks --test-reporter: the suite needs 18.15+ or 19.6+")
    if not (SUITE / "node_modules").is_dir():
        pytest.skip(f"{SUITE / 'node_modules'} is missing: run `npm ci` there (scripts/test.sh does)")
    return node


def test_the_node_suite_is_found():
    # An empty glob would parametrize test_node_sdk into one skip, and the suite would go unnoticed.
    assert FILES, f"no test/*.test.js in {SUITE}"


@pytest.mark.parametrize("test_file", FILES)
def test_node_sdk(hub, test_file):
    node = _node_or_skip()
    if hub.https_port != NODE_SERVICE_PORT:
        pytest.skip(
            f"the hub's HTTPS is on {hub.https_port}, and the Node service SDK only uses "
            f"{NODE_SERVICE_PORT}: run as root, or grant the hub cap_net_bind_service"
        )
    env = dict(
        os.environ,
        FLEETHUB_CONNECTION_STRING=hub.owner_connection_string,
        FLEETHUB_CA_FILE=hub.ca_path,
        NODE_EXTRA_CA_CERTS=hub.ca_path,
    )
    cmd = [node, "--test", "--test-reporter=spec", f"test/{test_file}"]
    # Output to a file, and a process group of its own: node --test runs the file in a child
    # process, which would keep a pipe open after its parent is killed.
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(cmd, cwd=SUITE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=FILE_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        out.seek(0)
        output = out.read().decode(errors="replace")
    if code is None:
        pytest.fail(
            f"`node {' '.join(cmd[1:])}` did not exit within {FILE_DEADLINE_SECONDS} s: a test left a client "
            f"open, or hangs past its own deadline. Output so far:\n{output}",
            pytrace=False,
        )
    if code != 0:
        pytest.fail(f"`node {' '.join(cmd[1:])}` exited with {code}:\n{output}", pytrace=False)
    print(output)
