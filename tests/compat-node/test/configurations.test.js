'use strict';
// Configurations (automatic device management) with azure-iothub's Registry, unmodified, against
// FleetHub: create, get, list, update with the etag (and a stale one: 412), delete, a duplicate
// create (409), applyConfigurationContentOnDevice, and the twins and metrics that follow. Registry
// has no testQueries; the SDK's own generated REST client (dist/pl, the one its DigitalTwinClient
// and IoTHubRegistryManager are built on) has, and sends it here, as it ships.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, IoTHubTokenCredentials } = require('azure-iothub');
const { IotHubGatewayServiceAPIs } = require('azure-iothub/dist/pl/iotHubGatewayServiceAPIs');
const { deadline, connectionString, hostName, newId, eventually } = require('../lib/support');

const registry = Registry.fromConnectionString(connectionString);

// Three devices tagged with a fresh environment name: two 'prod' of it, one 'dev'.
async function fleet() {
  const env = newId('env');
  const devices = [];
  for (const stage of ['prod', 'prod', 'dev']) {
    const id = newId('cfgdev');
    await registry.create({ deviceId: id });
    const twin = (await registry.getTwin(id)).responseBody;
    await registry.updateTwin(id, { tags: { env, stage } }, twin.etag);
    devices.push({ id, stage });
  }
  return {
    env,
    prod: devices.filter((d) => d.stage === 'prod').map((d) => d.id),
    dev: devices.filter((d) => d.stage === 'dev').map((d) => d.id),
  };
}

function intervalConfig(id, env, { priority = 10, interval = 60 } = {}) {
  return {
    id,
    labels: { purpose: 'telemetry' },
    content: { deviceContent: { 'properties.desired.config.telemetryIntervalSeconds': interval } },
    targetCondition: `tags.env = '${env}' AND tags.stage = 'prod'`,
    priority,
    metrics: {
      queries: {
        nonCompliant:
          "SELECT deviceId FROM devices WHERE SEMVER(properties.reported.firmware.current_version) < '1.9.0' " +
          `AND tags.env = '${env}'`,
      },
    },
  };
}

async function intervalOf(deviceId) {
  const desired = (await registry.getTwin(deviceId)).responseBody.properties.desired;
  return desired.config ? desired.config.telemetryIntervalSeconds : undefined;
}

async function allHave(ids, interval) {
  const intervals = await Promise.all(ids.map(intervalOf));
  return intervals.every((i) => i === interval);
}

// The HTTP status an SDK call was refused with.
function status(error) {
  return error.response && error.response.statusCode;
}

test('create, get, list: the targeted twins are configured and carry the status', deadline, async () => {
  const { env, prod, dev } = await fleet();
  const id = newId('cfg');
  const created = (await registry.addConfiguration(intervalConfig(id, env))).responseBody;
  assert.equal(created.id, id);
  assert.equal(created.priority, 10);
  assert.equal(created.schemaVersion, '1.0', 'the SDK fills in schemaVersion');
  assert.deepEqual(created.labels, { purpose: 'telemetry' });
  assert.ok(created.etag);

  await eventually('the prod twins to be configured', () => allHave(prod, 60));
  assert.equal(await intervalOf(dev[0]), undefined, 'the dev twin is not targeted');

  const got = (await registry.getConfiguration(id)).responseBody;
  assert.equal(got.systemMetrics.results.targetedCount, 2);
  assert.equal(got.systemMetrics.results.appliedCount, 2);
  assert.equal(got.metrics.results.nonCompliant, 0, 'no device has reported old firmware');
  assert.deepEqual(got.content.deviceContent, { 'properties.desired.config.telemetryIntervalSeconds': 60 });
  assert.equal(got.etag, created.etag);

  const listed = (await registry.getConfigurations()).responseBody;
  assert.ok(listed.some((c) => c.id === id), 'the new configuration is listed');

  // Each twin a query returns carries `configurations` at its root, as a twin read does.
  const query = registry.createQuery(`SELECT * FROM devices WHERE configurations.[[${id}]].status = 'Applied'`, 10);
  const page = await query.nextAsTwin();
  assert.deepEqual(page.result.map((t) => t.deviceId).sort(), [...prod].sort());
  for (const twin of page.result) {
    assert.equal(twin.configurations[id].status, 'Applied', JSON.stringify(twin.configurations));
  }
  const read = (await registry.getTwin(prod[0])).responseBody;
  assert.equal(read.configurations[id].status, 'Applied');

  await registry.removeConfiguration(id);
  await eventually('the settings to go with the configuration', async () => (await intervalOf(prod[0])) === undefined);
});

test('update with the etag retargets; a stale etag is 412; delete removes it', deadline, async () => {
  const { env, prod, dev } = await fleet();
  const id = newId('cfg');
  const created = (await registry.addConfiguration(intervalConfig(id, env))).responseBody;
  const stale = { ...created };

  const retarget = { ...created, targetCondition: `tags.env = '${env}'` };
  const updated = (await registry.updateConfiguration(retarget)).responseBody;
  assert.notEqual(updated.etag, created.etag);
  assert.equal(updated.targetCondition, `tags.env = '${env}'`);
  await eventually('the dev twin to join the target', () => allHave([...prod, ...dev], 60));
  await eventually('appliedCount 3', async () => {
    const got = (await registry.getConfiguration(id)).responseBody;
    return got.systemMetrics.results.appliedCount === 3;
  });

  // The etag the configuration had before the update no longer matches.
  const refused = await registry.updateConfiguration({ ...stale, priority: 20 }).then(
    () => assert.fail('an update with a stale etag was accepted'),
    (e) => e,
  );
  assert.equal(refused.name, 'InvalidEtagError');
  assert.equal(status(refused), 412);
  assert.equal(JSON.parse(refused.responseBody).errorCode, 412001);
  assert.equal((await registry.getConfiguration(id)).responseBody.priority, 10, 'nothing was written');

  // forceUpdate sends If-Match: *.
  const forced = (await registry.updateConfiguration({ ...stale, priority: 20 }, true)).responseBody;
  assert.equal(forced.priority, 20);

  await registry.removeConfiguration(id);
  await eventually('every twin to lose the setting', async () => {
    const intervals = await Promise.all([...prod, ...dev].map(intervalOf));
    return intervals.every((i) => i === undefined);
  });
  const gone = await registry.getConfiguration(id).then(
    () => assert.fail('a deleted configuration was found'),
    (e) => e,
  );
  assert.equal(status(gone), 404);
});

test('a taken id is 409 and content outside properties.desired is 400', deadline, async () => {
  const { env } = await fleet();
  const id = newId('cfg');
  await registry.addConfiguration(intervalConfig(id, env));
  const taken = await registry.addConfiguration(intervalConfig(id, env)).then(
    () => assert.fail('a second configuration with the same id was created'),
    (e) => e,
  );
  assert.equal(taken.name, 'DeviceAlreadyExistsError', 'the SDK names every 409 so');
  assert.equal(status(taken), 409);
  assert.match(taken.message, new RegExp(id));

  const bad = intervalConfig(newId('cfg'), env);
  bad.content = { deviceContent: { 'properties.reported.x': 1 } };
  const refused = await registry.addConfiguration(bad).then(
    () => assert.fail('content under properties.reported was accepted'),
    (e) => e,
  );
  assert.equal(refused.name, 'ArgumentError');
  assert.match(refused.message, /properties\.desired\./);
  await registry.removeConfiguration(id);
});

test('testQueries reports each error with its position', deadline, async () => {
  const client = new IotHubGatewayServiceAPIs(new IoTHubTokenCredentials(connectionString), {
    baseUri: `https://${hostName()}`,
  });
  const result = await client.configuration.testQueries({
    targetCondition: "tags.env = 'prod' AND",
    customMetricQueries: {
      good: 'SELECT deviceId FROM devices WHERE properties.reported.x = 1',
      bad: 'SELECT deviceId FROM devices WHERE (',
    },
  });
  assert.match(result.targetConditionError, /column/);
  assert.ok(result.customMetricQueryErrors.bad, JSON.stringify(result));
  assert.equal(result.customMetricQueryErrors.good, undefined);

  const fine = await client.configuration.testQueries({ targetCondition: "tags.env = 'prod'" });
  assert.ok(!fine.targetConditionError, JSON.stringify(fine));
});

test('applyConfigurationContentOnDevice sets the desired properties', deadline, async () => {
  const id = newId('apply');
  await registry.create({ deviceId: id });
  await registry.applyConfigurationContentOnDevice(id, {
    deviceContent: { 'properties.desired.mode': 'eco' },
  });
  const twin = (await registry.getTwin(id)).responseBody;
  assert.equal(twin.properties.desired.mode, 'eco');
});
