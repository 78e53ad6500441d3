'use strict';
// What every Node compatibility test needs: the hub's owner connection string and CA (from the
// environment the pytest wrapper sets), fresh device ids, waiting on a condition, and the deadline
// every test is given.
const fs = require('node:fs');
const crypto = require('node:crypto');

// `test(name, deadline, fn)`: a test fails by name after this long instead of hanging the run
// (node 18 has no --test-timeout). It must still close what it opened, or its file's process
// never exits.
const deadline = { timeout: 30000 };

const connectionString = process.env.FLEETHUB_CONNECTION_STRING;
if (!connectionString) {
  throw new Error('FLEETHUB_CONNECTION_STRING is not set: run this suite through tests/compat/test_node_sdk.py');
}
const caPem = fs.readFileSync(process.env.FLEETHUB_CA_FILE, 'utf8');

function hostName() {
  return /HostName=([^;]+)/.exec(connectionString)[1];
}

function newId(kind) {
  return `node-${kind}-${crypto.randomBytes(4).toString('hex')}`;
}

function deviceConnectionString(deviceId, key) {
  return `HostName=${hostName()};DeviceId=${deviceId};SharedAccessKey=${key}`;
}

async function eventually(what, check, deadlineMs = 15000) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

module.exports = { deadline, connectionString, caPem, hostName, newId, deviceConnectionString, eventually };
