"""A bare MQTT 3.1.1 client (paho-mqtt 1.x) speaking IoT Hub's topics, as firmware does."""

import json
import queue
import ssl
import uuid

import paho.mqtt.client as mqtt
import pytest

from iothub_sas import random_key, sas_token
from waiting import wait_until

USERNAME = "{host}/{device_id}/?api-version=2021-04-12"


class PlainDevice:
    """A paho client whose events land in queues the test can wait on."""

    def __init__(self, hub, device_id, key):
        self.connacks, self.disconnects, self.messages, self.acks = (queue.Queue() for _ in range(4))
        self.client = mqtt.Client(client_id=device_id, clean_session=False, protocol=mqtt.MQTTv311)
        token = sas_token(f"{hub.host_name}/devices/{device_id}", key, sig_safe="")  # as the device SDK signs
        self.client.username_pw_set(USERNAME.format(host=hub.host_name, device_id=device_id), token)
        self.client.tls_set(ca_certs=hub.ca_path, tls_version=ssl.PROTOCOL_TLSv1_2)
        self.client.on_connect = lambda c, u, flags, rc: self.connacks.put(rc)
        self.client.on_disconnect = lambda c, u, rc: self.disconnects.put(rc)
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.on_publish = lambda c, u, mid: self.acks.put(mid)

    def connect(self, port):
        self.client.connect("localhost", port, keepalive=60)
        self.client.loop_start()
        return self.connacks.get(timeout=15)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def plain_device(hub, device_id, key, closers):
    device = PlainDevice(hub, device_id, key)
    closers.append(device)
    return device



@pytest.fixture
def closers():
    devices = []
    yield devices
    for device in devices:
        try:
            device.close()
        except Exception:
            pass


def test_twin_get_before_subscribing_is_answered(hub, sas_device, closers):
    device_id, key = sas_device()
    device = plain_device(hub, device_id, key, closers)
    assert device.connect(hub.ready["mqttPort"]) == 0
    rid = uuid.uuid4().hex
    device.client.publish(f"$iothub/twin/GET/?$rid={rid}", b" ", qos=1)
    topic, payload = device.messages.get(timeout=15)
    assert topic.startswith("$iothub/twin/res/200/"), topic
    assert f"$rid={rid}" in topic, topic
    twin = json.loads(payload)
    assert twin["desired"]["$version"] == 1 and "$version" in twin["reported"], twin


def test_reported_patch_is_acknowledged_with_version(hub, registry, sas_device, closers):
    device_id, key = sas_device()
    device = plain_device(hub, device_id, key, closers)
    assert device.connect(hub.ready["mqttPort"]) == 0
    device.client.subscribe("$iothub/twin/res/#", qos=1)
    device.client.publish("$iothub/twin/PATCH/properties/reported/?$rid=7", json.dumps({"fw": "2.0"}), qos=1)
    topic, _ = device.messages.get(timeout=15)
    assert topic.startswith("$iothub/twin/res/204/") and "$rid=7" in topic and "$version=2" in topic, topic
    assert registry.get_twin(device_id).properties.reported["fw"] == "2.0"


def test_publishing_as_another_device_closes_the_connection(hub, sas_device, telemetry, closers):
    device_id, key = sas_device()
    victim_id, _ = sas_device()
    device = plain_device(hub, device_id, key, closers)
    assert device.connect(hub.ready["mqttPort"]) == 0
    device.client.reconnect_delay_set(min_delay=60, max_delay=60)  # observe the close, not a reconnect
    device.client.publish(f"devices/{victim_id}/messages/events/%24.mid=forged", b"spoofed", qos=1)
    rc = device.disconnects.get(timeout=15)
    assert rc != 0, "the hub should drop the connection, not the client"
    assert telemetry(victim_id) == []


def test_forged_token_is_refused_at_connack(hub, sas_device, closers):
    device_id, _ = sas_device()
    device = plain_device(hub, device_id, random_key(), closers)
    device.client.reconnect_delay_set(min_delay=60, max_delay=60)
    rc = device.connect(hub.ready["mqttPort"])
    assert rc in (4, 5), f"CONNACK return code {rc}"


def test_telemetry_from_plain_client_is_stored(hub, sas_device, telemetry, closers):
    device_id, key = sas_device()
    device = plain_device(hub, device_id, key, closers)
    assert device.connect(hub.ready["mqttPort"]) == 0
    info = device.client.publish(
        f"devices/{device_id}/messages/events/%24.mid=plain-1&%24.ct=text%2Fplain&site=lab%201", b"hello", qos=1
    )
    wait_until(lambda: info.is_published(), message="PUBACK for the telemetry")
    [item] = telemetry.wait_for(device_id, "plain-1")
    assert item["properties"].get("site") == "lab 1", item
