'use strict';
// azure-iot-device with azure-iot-device-mqtt (MQTT over TLS on 8883), unmodified, against FleetHub,
// driven from the service side by azure-iothub.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { deadline, connectionString, caPem, newId, deviceConnectionString, eventually } = require('../lib/support');

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

test('telemetry is accepted', deadline, async (t) => {
  const { client } = await onlineDevice(t);
  const message = new Message(JSON.stringify({ pm25: 12 }));
  message.properties.add('kind', 'air');
  await client.sendEvent(message);
});

test('reported properties round trip and desired changes arrive', deadline, async (t) => {
  const { id, client } = await onlineDevice(t);
  const twin = await client.getTwin();
  // The first listener makes the SDK subscribe to desired patches in the background, with no way
  // to wait for the SUBACK; a patch committed before the hub has the subscription is not pushed
  // (as on IoT Hub). So listen before the reported round trip: the SUBSCRIBE goes out before the
  // reported PUBLISH, and the hub handles one connection's packets in order.
  const desired = new Promise((resolve) => {
    twin.on('properties.desired', (delta) => {
      if (delta.interval === 60) resolve(delta);
    });
  });
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ firmware: { version: '1.0.0' } }, (e) => (e ? reject(e) : resolve())));
  await eventually('reported firmware on the service side', async () => {
    const serviceTwin = (await registry.getTwin(id)).responseBody;
    return serviceTwin.properties.reported.firmware?.version === '1.0.0';
  });
  await registry.updateTwin(id, { properties: { desired: { interval: 60 } } }, '*');
  const delta = await desired;
  assert.equal(typeof delta.$version, 'number');
});

test('a direct method from the service SDK reaches the device and returns its answer', deadline, async (t) => {
  const { id, client } = await onlineDevice(t);
  client.onDeviceMethod('reboot', (request, response) => {
    response.send(200, { delay: request.payload.delay }, () => {});
  });
  const service = ServiceClient.fromConnectionString(connectionString);
  const answer = await eventually('the method subscription', async () => {
    try {
      return await service.invokeDeviceMethod(id, { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 10 });
    } catch (e) {
      // onDeviceMethod subscribes in the background, so the first call may find the device not
      // yet listening: 404 DeviceNotOnline (404103), which this SDK turns into a bare
      // Error('Not found') with the hub's body in responseBody.
      if (e.response?.statusCode === 404 && /DeviceNotOnline/.test(e.responseBody)) return undefined;
      throw e;
    }
  });
  assert.equal(answer.result.status, 200);
  assert.deepEqual(answer.result.payload, { delay: 3 });
});
