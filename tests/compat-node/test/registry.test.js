'use strict';
// azure-iothub's Registry and JobClient, unmodified, against FleetHub's REST API.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, JobClient } = require('azure-iothub');
const { deadline, connectionString, newId, eventually } = require('../lib/support');

const registry = Registry.fromConnectionString(connectionString);

test('create, get and delete a device', deadline, async () => {
  const id = newId('crud');
  const created = await registry.create({ deviceId: id });
  assert.equal(created.responseBody.deviceId, id);
  assert.ok(created.responseBody.authentication.symmetricKey.primaryKey);
  const got = await registry.get(id);
  assert.equal(got.responseBody.status, 'enabled');
  await registry.delete(id);
  await assert.rejects(registry.get(id), { name: 'DeviceNotFoundError' });
});

test('Registry.list sends a trailing slash and sees the devices', deadline, async () => {
  const id = newId('list');
  await registry.create({ deviceId: id });
  const listed = await registry.list();
  assert.ok(listed.responseBody.some((d) => d.deviceId === id), 'created device is listed');
});

test('errors arrive as the SDK error classes', deadline, async () => {
  const id = newId('dup');
  await registry.create({ deviceId: id });
  await assert.rejects(registry.create({ deviceId: id }), { name: 'DeviceAlreadyExistsError' });
  await assert.rejects(registry.get(newId('missing')), { name: 'DeviceNotFoundError' });
});

test('a status-only update keeps the device keys', deadline, async () => {
  const id = newId('status');
  const created = await registry.create({ deviceId: id });
  const keys = created.responseBody.authentication.symmetricKey;
  const updated = await registry.update({ deviceId: id, status: 'disabled' });
  assert.equal(updated.responseBody.status, 'disabled');
  const got = await registry.get(id);
  assert.deepEqual(got.responseBody.authentication.symmetricKey, keys);
});

test('bulk add, update and remove with the Node import modes', deadline, async () => {
  const ids = [newId('bulk'), newId('bulk')];
  const added = await registry.addDevices(ids.map((deviceId) => ({ deviceId })));
  assert.equal(added.responseBody.isSuccessful, true, JSON.stringify(added.responseBody));
  // updateDevices sends importMode "Update" (or "UpdateIfMatchETag" without forceUpdate).
  const devices = await Promise.all(ids.map((id) => registry.get(id).then((r) => r.responseBody)));
  const disable = devices.map((d) => ({ deviceId: d.deviceId, etag: d.etag, status: 'disabled' }));
  const updated = await registry.updateDevices(disable, false);
  assert.equal(updated.responseBody.isSuccessful, true, JSON.stringify(updated.responseBody));
  for (const id of ids) {
    assert.equal((await registry.get(id)).responseBody.status, 'disabled');
  }
  const forced = await registry.updateDevices(ids.map((deviceId) => ({ deviceId, status: 'enabled' })), true);
  assert.equal(forced.responseBody.isSuccessful, true, JSON.stringify(forced.responseBody));
  // removeDevices sends "Delete" (forced) or "DeleteIfMatchETag".
  const current = await registry.get(ids[0]);
  const removed = await registry.removeDevices([{ deviceId: ids[0], etag: current.responseBody.etag }], false);
  assert.equal(removed.responseBody.isSuccessful, true, JSON.stringify(removed.responseBody));
  const forcedRemove = await registry.removeDevices([{ deviceId: ids[1] }], true);
  assert.equal(forcedRemove.responseBody.isSuccessful, true, JSON.stringify(forcedRemove.responseBody));
  for (const id of ids) {
    await assert.rejects(registry.get(id), { name: 'DeviceNotFoundError' });
  }
});

test('twin tags and desired properties, and a query over them', deadline, async () => {
  const id = newId('twin');
  await registry.create({ deviceId: id });
  const twin = (await registry.getTwin(id)).responseBody;
  const patch = { tags: { city: 'boston' }, properties: { desired: { interval: 30 } } };
  const updated = (await registry.updateTwin(id, patch, twin.etag)).responseBody;
  assert.equal(updated.tags.city, 'boston');
  assert.equal(updated.properties.desired.interval, 30);
  const query = registry.createQuery(`SELECT * FROM devices WHERE deviceId = '${id}'`, 10);
  const page = await query.nextAsTwin();
  assert.equal(page.result.length, 1);
  assert.equal(page.result[0].tags.city, 'boston');
});

// Query.next() takes its argument over the token it keeps, even when the argument is undefined
// (azure-iothub 1.16.6, query.js), so `await query.next()` fetches the first page again forever:
// a promise caller passes `query.continuationToken` itself. (nextAsTwin() falls back correctly.)
test('a device query pages by the continuation header', deadline, async () => {
  const tag = newId('page');
  const ids = [0, 1, 2, 3, 4].map(() => newId('pg'));
  const added = await registry.addDevices(ids.map((deviceId) => ({ deviceId, tags: { batch: tag } })));
  assert.equal(added.responseBody.isSuccessful, true, JSON.stringify(added.responseBody));
  const query = registry.createQuery(`SELECT * FROM devices WHERE tags.batch = '${tag}'`, 2);
  const seen = [];
  let pages = 0;
  while (query.hasMoreResults && pages < 10) {
    const page = await query.next(query.continuationToken);
    pages += 1;
    seen.push(...page.result.map((t) => t.deviceId));
  }
  assert.deepEqual(seen.sort(), ids.sort());
  assert.equal(pages, 3, '5 devices, 2 a page, no empty last page');
});

test('jobs: schedule a twin update and page through the job query', deadline, async () => {
  const jobs = JobClient.fromConnectionString(connectionString);
  const id = newId('job');
  await registry.create({ deviceId: id });
  const jobIds = [newId('j1'), newId('j2'), newId('j3')];
  for (const jobId of jobIds) {
    const patch = { etag: '*', properties: { desired: { fromJob: jobId } } };
    await jobs.scheduleTwinUpdate(jobId, `deviceId = '${id}'`, patch, new Date(), 60);
  }
  await eventually('the last job to complete', async () => {
    // getJob resolves { jobStatus, response }, not { result } like the registry's calls.
    const { jobStatus } = await jobs.getJob(jobIds[2]);
    return jobStatus.status === 'completed';
  });
  const twin = (await registry.getTwin(id)).responseBody;
  assert.ok(jobIds.includes(twin.properties.desired.fromJob));
  // The SDK pages jobs by the x-ms-continuation response header.
  const query = jobs.createQuery('scheduleUpdateTwin', undefined, 1);
  const seen = new Set();
  let pages = 0;
  while (query.hasMoreResults && pages < 1000) {
    const page = await query.next(query.continuationToken);
    pages += 1;
    // The body is IoT Hub's QueryResult {type, items, continuationToken}; the SDK hands it over as is.
    for (const job of page.result.items) seen.add(job.jobId);
  }
  for (const jobId of jobIds) {
    assert.ok(seen.has(jobId), `job ${jobId} is in the paged query (${pages} pages)`);
  }
  assert.ok(pages >= 3, `one job per page: ${pages} pages`);
});
