"""What survives a restart of the hub: acknowledged writes, and device sessions."""

import queue
import signal

import pytest
from azure.iot.hub.models import Twin, TwinProperties

from waiting import wait_until, within


def test_acknowledged_twin_patches_survive_sigkill(registry, new_id, restart_hub):
    devices = {}
    for n in range(50):
        device_id = new_id("durable")
        devices[device_id] = registry.create_device_with_sas(device_id, None, None, "enabled")
        registry.update_twin(device_id, Twin(tags={"n": n}, properties=TwinProperties(desired={"n": n})), "*")
    # the last update_twin above has just returned 200: crash now
    hub = restart_hub(signal.SIGKILL)

    from azure.iot.hub import IoTHubRegistryManager

    after = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
    lost = []
    for n, (device_id, created) in enumerate(devices.items()):
        twin = after.get_twin(device_id)
        if twin.properties.desired.get("n") != n or (twin.tags or {}).get("n") != n:
            lost.append((device_id, twin.tags, twin.properties.desired))
        keys = after.get_device(device_id).authentication.symmetric_key
        assert keys.primary_key == created.authentication.symmetric_key.primary_key
    assert not lost, f"{len(lost)} of 50 acknowledged patches lost, e.g. {lost[:3]}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["crash", "graceful"])
def test_device_sdk_session_survives_restart(registry, sas_device, device_clients, restart_hub, sig):
    """The SDK reconnects with clean_session=0 and never re-subscribes: the hub must remember."""
    device_id, key = sas_device()
    client = device_clients(device_id, key)
    within(30, client.connect)
    patches = queue.Queue()
    within(30, setattr, client, "on_twin_desired_properties_patch_received", patches.put)
    states = []
    client.on_connection_state_change = lambda: states.append(client.connected)
    version = registry.get_twin(device_id).properties.desired["$version"]

    restart_hub(sig)
    wait_until(lambda: False in states, timeout=30, message="the SDK to notice the hub went away")
    wait_until(lambda: client.connected, timeout=60, message="the SDK to reconnect")
    # On reconnect the SDK (ensure_desired_properties) GETs the twin and hands the handler the
    # whole desired document as an artificial patch. Take it first, so that the patch below can
    # only arrive over the subscription the hub kept.
    resync = patches.get(timeout=15)
    assert resync["$version"] == version, f"the reconnect twin GET returned {resync}"

    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"after_restart": True})), "*")
    try:
        patch = patches.get(timeout=15)
    except queue.Empty:
        raise AssertionError("desired patch not delivered after reconnect: subscriptions not kept") from None
    assert patch.get("after_restart") is True, patch
    assert patch["$version"] == version + 1, patch


def test_c2d_message_queued_before_restart_is_delivered_after(hub, sas_device, device_clients, restart_hub):
    device_id, key = sas_device()
    response = hub.rest("POST", f"/v1/devices/{device_id}/messages", json={"body": "survive", "properties": {}})
    assert response.status_code == 200, response.text
    restart_hub(signal.SIGKILL)

    client = device_clients(device_id, key)
    within(30, client.connect)
    received = queue.Queue()
    within(30, setattr, client, "on_message_received", received.put)
    assert received.get(timeout=15).data == b"survive"
