"""The unmodified device SDK (azure-iot-device 2.14.0) over MQTT/TLS on 8883."""

import base64
import datetime
import json
import queue
import time
import uuid

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse, X509
from azure.iot.device.exceptions import ClientError
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from waiting import wait_until, within


def connected_client(device_clients, device_id, key):
    client = device_clients(device_id, key)
    within(30, client.connect)
    return client


def body_text(item):
    encoding = (item.get("bodyEncoding") or "").lower()
    if encoding.startswith("base64"):
        return base64.b64decode(item["body"]).decode()
    body = item["body"]
    return body if isinstance(body, str) else json.dumps(body)


# ---- telemetry ------------------------------------------------------------------------------


def test_send_message_is_stored_with_properties(sas_device, device_clients, telemetry):
    device_id, key = sas_device()
    client = connected_client(device_clients, device_id, key)
    message_id = f"mid-{uuid.uuid4()}"
    message = Message(json.dumps({"temp": 21.5}), message_id=message_id, content_type="application/json",
                      content_encoding="utf-8")
    message.custom_properties["alert"] = "high temp"
    message.custom_properties["a/b"] = "x&y=z"
    within(30, client.send_message, message)

    [item] = telemetry.wait_for(device_id, message_id)
    assert item["deviceId"] == device_id
    assert json.loads(body_text(item)) == {"temp": 21.5}
    assert item["properties"].get("alert") == "high temp", item
    assert item["properties"].get("a/b") == "x&y=z", item
    assert "application/json" in json.dumps(item), f"content type not recorded: {item}"
    assert item.get("enqueuedTime")


def test_same_message_id_is_stored_once(sas_device, device_clients, telemetry):
    device_id, key = sas_device()
    client = connected_client(device_clients, device_id, key)
    duplicate = f"dup-{uuid.uuid4()}"
    within(30, client.send_message, Message("first", message_id=duplicate))
    within(30, client.send_message, Message("again", message_id=duplicate))
    sentinel = f"sentinel-{uuid.uuid4()}"
    within(30, client.send_message, Message("after", message_id=sentinel))

    telemetry.wait_for(device_id, sentinel)  # everything sent before it has been processed
    stored = [i for i in telemetry(device_id) if i.get("messageId") == duplicate]
    assert len(stored) == 1, stored


# ---- twin -----------------------------------------------------------------------------------


def test_reported_properties_reach_the_service(registry, sas_device, device_clients):
    device_id, key = sas_device()
    client = connected_client(device_clients, device_id, key)
    within(30, client.patch_twin_reported_properties, {"firmware": {"current": "1.0.0"}, "battery": 87})

    reported = registry.get_twin(device_id).properties.reported
    assert reported["firmware"] == {"current": "1.0.0"}
    assert reported["battery"] == 87
    assert reported["$version"] >= 2

    within(30, client.patch_twin_reported_properties, {"battery": None})
    reported = registry.get_twin(device_id).properties.reported
    assert "battery" not in reported and reported["firmware"] == {"current": "1.0.0"}


def test_device_get_twin(registry, sas_device, device_clients):
    device_id, key = sas_device()
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"interval": 30})), "*")
    client = connected_client(device_clients, device_id, key)
    within(30, client.patch_twin_reported_properties, {"state": "ready"})

    twin = within(30, client.get_twin)
    assert twin["desired"]["interval"] == 30
    assert twin["desired"]["$version"] == 2
    assert twin["reported"]["state"] == "ready"
    assert "$version" in twin["reported"]


def test_desired_patch_reaches_the_handler(registry, sas_device, device_clients):
    device_id, key = sas_device()
    client = connected_client(device_clients, device_id, key)
    patches = queue.Queue()
    within(30, setattr, client, "on_twin_desired_properties_patch_received", patches.put)

    twin = registry.get_twin(device_id)
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"temp": 25})), twin.etag)
    patch = patches.get(timeout=15)
    assert patch["temp"] == 25
    assert patch["$version"] == twin.properties.desired["$version"] + 1

    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"temp": 26})), "*")
    patch = patches.get(timeout=15)
    assert patch["temp"] == 26 and patch["$version"] == twin.properties.desired["$version"] + 2


# ---- direct methods -------------------------------------------------------------------------


def test_method_request_and_response(registry, sas_device, device_clients):
    device_id, key = sas_device()
    client = connected_client(device_clients, device_id, key)
    requests_seen = queue.Queue()

    def on_method(request):
        requests_seen.put(request)
        status = 200 if request.name == "getConfig" else 404
        client.send_method_response(MethodResponse.create_from_method_request(request, status, {"interval": 30}))

    within(30, setattr, client, "on_method_request_received", on_method)
    result = registry.invoke_device_method(
        device_id, CloudToDeviceMethod(method_name="getConfig", payload="full", response_timeout_in_seconds=15)
    )
    assert (result.status, result.payload) == (200, {"interval": 30})
    request = requests_seen.get(timeout=1)
    assert request.name == "getConfig" and request.payload == "full"

    result = registry.invoke_device_method(
        device_id, CloudToDeviceMethod(method_name="unknown method", payload=None, response_timeout_in_seconds=15)
    )
    assert result.status == 404
    assert requests_seen.get(timeout=1).name == "unknown method"


# ---- cloud-to-device messages ---------------------------------------------------------------


def send_c2d(hub, device_id, body, properties, message_id=None):
    payload = {"body": body, "properties": properties}
    if message_id:
        payload["messageId"] = message_id
    response = hub.rest("POST", f"/v1/devices/{device_id}/messages", json=payload)
    assert response.status_code == 200, f"POST /v1/devices/{device_id}/messages: {response.status_code} {response.text}"
    return response.json()["messageId"]


def test_c2d_message_reaches_the_handler(hub, sas_device, device_clients):
    device_id, key = sas_device()
    client = connected_client(device_clients, device_id, key)
    received = queue.Queue()
    within(30, setattr, client, "on_message_received", received.put)

    message_id = send_c2d(hub, device_id, "turn on", {"color": "red blue", "a/b": "x&y"}, f"c2d-{uuid.uuid4()}")
    message = received.get(timeout=15)
    assert message.data == b"turn on"
    assert message.message_id == message_id
    assert message.custom_properties.get("color") == "red blue", message.custom_properties
    assert message.custom_properties.get("a/b") == "x&y", message.custom_properties


def test_c2d_message_to_offline_device_is_delivered_on_connect(hub, sas_device, device_clients):
    device_id, key = sas_device()
    message_id = send_c2d(hub, device_id, "queued while offline", {"k": "v"})
    client = connected_client(device_clients, device_id, key)
    received = queue.Queue()
    within(30, setattr, client, "on_message_received", received.put)
    message = received.get(timeout=15)
    assert (message.data, message.message_id) == (b"queued while offline", message_id)


# ---- authentication -------------------------------------------------------------------------


def assert_connect_refused(client, within_seconds=15):
    started = time.monotonic()
    with pytest.raises(ClientError):
        within(within_seconds + 5, client.connect)
    assert time.monotonic() - started < within_seconds, "refusal took too long (retried?)"


def test_disabled_device_cannot_connect(registry, sas_device, device_clients):
    device_id, key = sas_device()
    device = registry.get_device(device_id)
    keys = device.authentication.symmetric_key
    registry.update_device_with_sas(device_id, device.etag, keys.primary_key, keys.secondary_key, "disabled")
    assert_connect_refused(device_clients(device_id, key))


def test_wrong_key_cannot_connect(sas_device, device_clients):
    from iothub_sas import random_key

    device_id, _ = sas_device()
    assert_connect_refused(device_clients(device_id, random_key()))


def test_secondary_key_connects(registry, sas_device, device_clients):
    device_id, _ = sas_device()
    secondary = registry.get_device(device_id).authentication.symmetric_key.secondary_key
    connected_client(device_clients, device_id, secondary)
    wait_until(lambda: registry.get_device(device_id).connection_state == "Connected",
               message="the device to show as Connected")


def make_certificate(tmp_path, common_name, issuer=None, ca=False):
    """(cert path, key path, SHA-1 thumbprint, (cert, key)) of a fresh P-256 certificate, signed by
    `issuer` (a (cert, key) pair) or by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{common_name}.pem", tmp_path / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path), cert.fingerprint(hashes.SHA1()).hex().upper(), (cert, key)


def self_signed_certificate(tmp_path, common_name):
    """(cert path, key path, SHA-1 thumbprint as uppercase hex) of a fresh self-signed cert."""
    return make_certificate(tmp_path, common_name)[:3]


def x509_client(hub, device_clients, device_id, cert_path, key_path):
    client = IoTHubDeviceClient.create_from_x509_certificate(
        X509(cert_path, key_path), hostname="localhost", device_id=device_id,
        server_verification_cert=hub.ca_pem, connection_retry_interval=1,
    )
    return device_clients.adopt(client)


def test_x509_device_connects(hub, registry, new_id, tmp_path, device_clients):
    device_id = new_id("x509")
    cert_path, key_path, thumbprint = self_signed_certificate(tmp_path, device_id)
    registry.create_device_with_x509(device_id, thumbprint, None, "enabled")

    client = x509_client(hub, device_clients, device_id, cert_path, key_path)
    within(30, client.connect)
    within(30, client.patch_twin_reported_properties, {"auth": "x509"})
    twin = registry.get_twin(device_id)
    assert twin.properties.reported["auth"] == "x509"
    assert twin.authentication_type == "selfSigned"


def test_x509_device_with_unregistered_certificate_is_refused(hub, registry, new_id, tmp_path, device_clients):
    device_id = new_id("x509")
    _, _, thumbprint = self_signed_certificate(tmp_path, device_id)
    registry.create_device_with_x509(device_id, thumbprint, None, "enabled")
    other_cert, other_key, _ = self_signed_certificate(tmp_path, device_id + "-other")
    assert_connect_refused(x509_client(hub, device_clients, device_id, other_cert, other_key))


def upload_ca(hub, tmp_path, name):
    """Creates a CA, uploads it through PUT /certificates/{name}, returns its (cert, key)."""
    cert_path, _, _, ca = make_certificate(tmp_path, name, ca=True)
    with open(cert_path) as f:
        r = hub.rest("PUT", f"/certificates/{name}", json={"properties": {"certificate": f.read()}})
    assert r.status_code == 200, r.text
    return ca


def test_certificate_authority_device_connects_with_a_chained_certificate(hub, registry, new_id, tmp_path, device_clients):
    ca = upload_ca(hub, tmp_path, new_id("ca"))
    device_id = new_id("x509ca")
    cert_path, key_path, _, _ = make_certificate(tmp_path, device_id, issuer=ca)
    registry.create_device_with_certificate_authority(device_id, "enabled")

    client = x509_client(hub, device_clients, device_id, cert_path, key_path)
    within(30, client.connect)
    within(30, client.patch_twin_reported_properties, {"auth": "ca"})
    twin = registry.get_twin(device_id)
    assert twin.properties.reported["auth"] == "ca"
    assert twin.authentication_type == "certificateAuthority"


def test_certificate_authority_device_is_refused_with_a_foreign_chain(hub, registry, new_id, tmp_path, device_clients):
    upload_ca(hub, tmp_path, new_id("ca"))
    foreign_ca = make_certificate(tmp_path, new_id("foreign-ca"), ca=True)[3]
    device_id = new_id("x509ca")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    foreign_cert, foreign_key, _, _ = make_certificate(tmp_path, device_id, issuer=foreign_ca)
    assert_connect_refused(x509_client(hub, device_clients, device_id, foreign_cert, foreign_key))


def test_websocket_transport_on_443(hub, registry, sas_device, device_clients):
    if hub.https_port != 443:
        pytest.skip("the SDK's WebSocket transport hard-codes port 443, which this user may not bind")
    device_id, key = sas_device()
    client = IoTHubDeviceClient.create_from_connection_string(
        hub.device_connection_string(device_id, key), server_verification_cert=hub.ca_pem,
        websockets=True, connection_retry_interval=1,
    )
    client = device_clients.adopt(client)
    within(30, client.connect)
    within(30, client.patch_twin_reported_properties, {"transport": "websocket"})
    assert registry.get_twin(device_id).properties.reported["transport"] == "websocket"
    assert client.get_twin()["reported"]["transport"] == "websocket"
