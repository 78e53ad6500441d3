'use strict';
// azure-iot-device with azure-iot-device-mqtt (MQTT over TLS on 8883), unmodified, against FleetHub,
// driven from the service side by azure-iothub.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { connectionString, caPem, newId, deviceConnectionString, eventually } = require('../lib/support');

const registry = Registry.fromConnectionString(connectionString);

async function onlineDevice(t) {
  const id = newId('dev');
  const created = await registry.create({ deviceId: id });
  const key = created.responseBody.authentication.symmetricKey.primaryKey;
  const client = Client.fromConnectionString(deviceConnectionString(id, key), Mqtt);
  client.setOptions({ ca: caPem });
  await client.open();
  t.after(() => client.close());
  return { id, client };
}

test('telemetry is accepted', async (t) => {
  const { client } = await onlineDevice(t);
  const message = new Message(JSON.stringify({ pm25: 12 }));
  message.properties.add('kind', 'air');
  await client.sendEvent(message);
});

test('reported properties round trip and desired changes arrive', async (t) => {
  const { id, client } = await onlineDevice(t);
  const twin = await client.getTwin();
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ firmware: { version: '1.0.0' } }, (e) => (e ? reject(e) : resolve())));
  await eventually('reported firmware on the service side', async () => {
    const serviceTwin = (await registry.getTwin(id)).responseBody;
    return serviceTwin.properties.reported.firmware?.version === '1.0.0';
  });
  const desired = new Promise((resolve) => {
    twin.on('properties.desired', (delta) => {
      if (delta.interval === 60) resolve(delta);
    });
  });
  await registry.updateTwin(id, { properties: { desired: { interval: 60 } } }, '*');
  const delta = await desired;
  assert.equal(typeof delta.$version, 'number');
});

test('a direct method from the service SDK reaches the device and returns its answer', async (t) => {
  const { id, client } = await onlineDevice(t);
  client.onDeviceMethod('reboot', (request, response) => {
    response.send(200, { delay: request.payload.delay }, () => {});
  });
  const service = ServiceClient.fromConnectionString(connectionString);
  const answer = await eventually('the method subscription', async () => {
    try {
      return await service.invokeDeviceMethod(id, { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 10 });
    } catch (e) {
      if (e.name === 'DeviceNotOnlineError' || /not online/i.test(e.message)) return undefined;
      throw e;
    }
  });
  assert.equal(answer.result.status, 200);
  assert.deepEqual(answer.result.payload, { delay: 3 });
});
