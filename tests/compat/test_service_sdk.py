"""The unmodified service SDK (azure-iot-hub 2.7.0) against the hub's REST API."""

import pytest
from azure.iot.hub.models import (
    AuthenticationMechanism,
    CloudToDeviceMethod,
    ExportImportDevice,
    SymmetricKey,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

from iothub_sas import random_key
from waiting import wait_until, within


def http_error(excinfo):
    """(status, parsed body) of an HttpOperationError."""
    response = excinfo.value.response
    try:
        body = response.json()
    except ValueError:
        body = {"unparsed": response.text}
    return response.status_code, body


def assert_error(excinfo, status, error_code=None):
    got_status, body = http_error(excinfo)
    assert got_status == status, f"expected {status}, got {got_status}: {body}"
    assert isinstance(body.get("errorCode"), int), f"no numeric errorCode in {body}"
    assert body.get("message"), f"no message in {body}"
    if error_code is not None:
        assert body["errorCode"] == error_code, body
    return body


# ---- registry -------------------------------------------------------------------------------


def test_create_device_with_sas_generates_keys(registry, new_id):
    device_id = new_id()
    device = registry.create_device_with_sas(device_id, None, None, "enabled")
    assert device.device_id == device_id
    assert device.status == "enabled"
    assert device.authentication.type == "sas"
    keys = device.authentication.symmetric_key
    assert keys.primary_key and keys.secondary_key and keys.primary_key != keys.secondary_key
    assert device.etag

    fetched = registry.get_device(device_id)
    assert fetched.device_id == device_id
    assert fetched.authentication.symmetric_key.primary_key == keys.primary_key
    assert fetched.connection_state == "Disconnected"


def test_create_device_with_given_keys_keeps_them(registry, new_id):
    device_id, primary, secondary = new_id(), random_key(), random_key()
    device = registry.create_device_with_sas(device_id, primary, secondary, "enabled")
    assert device.authentication.symmetric_key.primary_key == primary
    assert device.authentication.symmetric_key.secondary_key == secondary


def test_creating_an_existing_device_is_a_conflict(registry, sas_device):
    device_id, _ = sas_device()
    with pytest.raises(HttpOperationError) as excinfo:
        registry.create_device_with_sas(device_id, None, None, "enabled")
    assert_error(excinfo, 409, 409001)


def test_get_unknown_device_is_404001(registry, new_id):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_device(new_id("missing"))
    assert_error(excinfo, 404, 404001)


def test_get_devices_honours_max_number(registry, sas_device):
    ids = {sas_device()[0] for _ in range(3)}
    assert len(registry.get_devices(max_number_of_devices=2)) == 2
    listed = {d.device_id for d in registry.get_devices(max_number_of_devices=1000)}
    assert ids <= listed


def test_update_device_with_sas_uses_etag(registry, sas_device):
    device_id, _ = sas_device()
    device = registry.get_device(device_id)
    keys = device.authentication.symmetric_key
    updated = registry.update_device_with_sas(
        device_id, device.etag, keys.primary_key, keys.secondary_key, "disabled", status_reason="maintenance"
    )
    assert updated.status == "disabled"
    assert updated.etag != device.etag
    assert registry.get_device(device_id).status == "disabled"

    with pytest.raises(HttpOperationError) as excinfo:  # the etag is now stale
        registry.update_device_with_sas(device_id, device.etag, keys.primary_key, keys.secondary_key, "enabled")
    assert_error(excinfo, 412)
    assert registry.get_device(device_id).status == "disabled"


def test_create_device_with_x509_thumbprints(registry, new_id):
    device_id = new_id("x509")
    primary, secondary = "A" * 40, "0123456789ABCDEF0123456789ABCDEF01234567"
    device = registry.create_device_with_x509(device_id, primary, secondary, "enabled")
    assert device.authentication.type == "selfSigned"
    fetched = registry.get_device(device_id).authentication.x509_thumbprint
    assert (fetched.primary_thumbprint.upper(), fetched.secondary_thumbprint.upper()) == (primary, secondary)


def test_delete_device_with_star_etag(registry, sas_device):
    device_id, _ = sas_device()
    registry.delete_device(device_id, etag="*")
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_device(device_id)
    assert_error(excinfo, 404, 404001)
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_twin(device_id)
    assert_error(excinfo, 404)


def test_device_registry_statistics_count_enabled_and_disabled(registry, sas_device):
    before = registry.get_device_registry_statistics()
    sas_device("enabled")
    sas_device("disabled")
    after = registry.get_device_registry_statistics()
    assert after.total_device_count == before.total_device_count + 2
    assert after.enabled_device_count == before.enabled_device_count + 1
    assert after.disabled_device_count == before.disabled_device_count + 1


def test_service_statistics_count_connected_devices(registry, sas_device, device_clients):
    device_id, key = sas_device()
    before = registry.get_service_statistics().connected_device_count
    client = device_clients(device_id, key)
    within(30, client.connect)
    wait_until(
        lambda: registry.get_service_statistics().connected_device_count == before + 1,
        message=f"connectedDeviceCount to rise from {before}",
    )
    assert registry.get_device(device_id).connection_state == "Connected"
    within(30, client.disconnect)
    wait_until(
        lambda: registry.get_service_statistics().connected_device_count == before,
        message=f"connectedDeviceCount to fall back to {before}",
    )


def sas_import(device_id, mode="create"):
    return ExportImportDevice(
        id=device_id,
        import_mode=mode,
        status="enabled",
        authentication=AuthenticationMechanism(
            type="sas", symmetric_key=SymmetricKey(primary_key=random_key(), secondary_key=random_key())
        ),
    )


def test_bulk_create_devices(registry, new_id):
    ids = [new_id("bulk") for _ in range(5)]
    result = registry.bulk_create_or_update_devices([sas_import(i) for i in ids])
    assert result.is_successful is True, [(e.device_id, e.error_code, e.error_status) for e in result.errors or []]
    assert not result.errors
    for device_id in ids:
        assert registry.get_device(device_id).status == "enabled"


def test_bulk_with_a_bad_id_reports_the_error(registry, new_id):
    good, bad = new_id("bulk"), "bad id/with spaces"
    result = registry.bulk_create_or_update_devices([sas_import(good), sas_import(bad)])
    assert result.is_successful is False
    assert result.errors, "a failed bulk operation must list its errors"
    failed = {e.device_id for e in result.errors}
    assert bad in failed and good not in failed, [(e.device_id, e.error_code, e.error_status) for e in result.errors]
    assert all(e.error_code for e in result.errors)


# ---- twins ----------------------------------------------------------------------------------


def test_get_twin_of_new_device(registry, sas_device):
    device_id, _ = sas_device()
    twin = registry.get_twin(device_id)
    assert twin.device_id == device_id
    assert twin.etag
    assert twin.status == "enabled"
    assert twin.authentication_type == "sas"
    desired, reported = twin.properties.desired, twin.properties.reported
    assert desired.get("$version") == 1 and reported.get("$version") == 1, (desired, reported)


def test_update_twin_tags_and_desired_with_etag(registry, sas_device):
    device_id, _ = sas_device()
    twin = registry.get_twin(device_id)
    patch = Twin(tags={"site": "lab", "floor": 3}, properties=TwinProperties(desired={"temp": 21, "mode": {"eco": True}}))
    updated = registry.update_twin(device_id, patch, twin.etag)
    assert updated.tags == {"site": "lab", "floor": 3}
    assert updated.properties.desired["temp"] == 21
    assert updated.properties.desired["mode"] == {"eco": True}
    assert updated.properties.desired["$version"] == twin.properties.desired["$version"] + 1
    assert updated.etag != twin.etag

    # merge patch: null deletes, other keys stay
    merged = registry.update_twin(
        device_id, Twin(tags={"floor": None}, properties=TwinProperties(desired={"mode": {"eco": None}})), updated.etag
    )
    assert merged.tags == {"site": "lab"}
    assert merged.properties.desired["temp"] == 21
    assert "eco" not in merged.properties.desired.get("mode", {})

    with pytest.raises(HttpOperationError) as excinfo:
        registry.update_twin(device_id, Twin(tags={"site": "x"}), twin.etag)  # stale etag
    assert_error(excinfo, 412)
    assert registry.get_twin(device_id).tags == {"site": "lab"}


def test_replace_twin_replaces_tags_and_desired(registry, sas_device):
    device_id, _ = sas_device()
    registry.update_twin(device_id, Twin(tags={"a": 1}, properties=TwinProperties(desired={"x": 1})), "*")
    twin = registry.get_twin(device_id)
    replaced = registry.replace_twin(
        device_id, Twin(tags={"b": 2}, properties=TwinProperties(desired={"y": 2})), twin.etag
    )
    assert replaced.tags == {"b": 2}
    desired = {k: v for k, v in replaced.properties.desired.items() if not k.startswith("$")}
    assert desired == {"y": 2}
    fetched = registry.get_twin(device_id)
    assert fetched.tags == {"b": 2}
    assert "x" not in fetched.properties.desired and fetched.properties.desired["y"] == 2


# ---- direct methods -------------------------------------------------------------------------


def test_invoke_device_method_on_connected_device(registry, sas_device, device_clients):
    from azure.iot.device import MethodResponse

    device_id, key = sas_device()
    client = device_clients(device_id, key)
    seen = []

    def on_method(request):
        seen.append((request.name, request.payload))
        response = MethodResponse.create_from_method_request(request, 201, {"echo": request.payload, "ok": True})
        client.send_method_response(response)

    within(30, client.connect)
    within(30, setattr, client, "on_method_request_received", on_method)  # subscribes

    result = registry.invoke_device_method(
        device_id,
        CloudToDeviceMethod(method_name="reboot", payload={"delay": 3}, response_timeout_in_seconds=15),
    )
    assert result.status == 201
    assert result.payload == {"echo": {"delay": 3}, "ok": True}
    assert seen == [("reboot", {"delay": 3})]


def test_invoke_device_method_offline_is_404103(registry, sas_device):
    device_id, _ = sas_device()
    with pytest.raises(HttpOperationError) as excinfo:
        registry.invoke_device_method(
            device_id, CloudToDeviceMethod(method_name="reboot", payload=None, response_timeout_in_seconds=5)
        )
    assert_error(excinfo, 404, 404103)


# ---- error shapes on the wire (requests, no SDK) --------------------------------------------


def assert_iothub_error(response, status):
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    body = response.json()
    assert isinstance(body.get("errorCode"), int) and body["errorCode"] // 1000 == status, body
    assert body.get("message"), body
    assert response.headers.get("iothub-errorcode"), dict(response.headers)
    return body


def test_wrong_etag_is_412(hub, sas_device):
    device_id, _ = sas_device()
    response = hub.rest("PATCH", f"/twins/{device_id}", json={"tags": {"a": 1}}, headers={"If-Match": '"not-the-etag"'})
    assert_iothub_error(response, 412)
    response = hub.rest("GET", f"/twins/{device_id}")
    assert response.status_code == 200 and not response.json().get("tags"), response.text


def test_bad_token_is_401(hub, sas_device):
    from iothub_sas import sas_token

    device_id, _ = sas_device()
    forged = sas_token(hub.rest_host, random_key(), policy="iothubowner")
    assert_iothub_error(hub.rest("GET", f"/devices/{device_id}", token=forged), 401)
    expired = hub.owner_token(expiry=1_000_000_000)
    assert_iothub_error(hub.rest("GET", f"/devices/{device_id}", token=expired), 401)
    assert_iothub_error(hub.rest("GET", f"/devices/{device_id}", token=""), 401)
    assert hub.rest("GET", f"/devices/{device_id}").status_code == 200
