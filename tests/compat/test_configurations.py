"""Configurations (automatic device management) with the unmodified service SDK
(azure-iot-hub 2.7.0): IoTHubConfigurationManager. Metrics are checked against what the devices'
twins really hold, read through the registry manager and a real device client."""

import uuid

import pytest
from azure.iot.hub import IoTHubConfigurationManager
from azure.iot.hub.models import (
    Configuration,
    ConfigurationContent,
    ConfigurationMetrics,
    ConfigurationQueriesTestInput,
    Twin,
)
from msrest.exceptions import HttpOperationError

from waiting import wait_until, within


@pytest.fixture
def configurations(hub):
    return IoTHubConfigurationManager.from_connection_string(hub.owner_connection_string)


def new_config_id():
    return f"cfg-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fleet(registry, sas_device):
    """Three devices tagged with a fresh environment name: two 'prod' of it, one 'dev'."""
    env = f"env-{uuid.uuid4().hex[:8]}"
    devices = []
    for stage in ["prod", "prod", "dev"]:
        device_id, key = sas_device()
        twin = registry.get_twin(device_id)
        registry.update_twin(device_id, Twin(tags={"env": env, "stage": stage}), twin.etag)
        devices.append((device_id, key, stage))
    return env, devices


def interval_config(config_id, env, priority=10, interval=60):
    return Configuration(
        id=config_id,
        schema_version="1.0",
        labels={"purpose": "telemetry"},
        content=ConfigurationContent(
            device_content={"properties.desired.config.telemetryIntervalSeconds": interval}
        ),
        target_condition=f"tags.env = '{env}' AND tags.stage = 'prod'",
        priority=priority,
        metrics=ConfigurationMetrics(
            queries={
                "nonCompliant": "SELECT deviceId FROM devices WHERE "
                "SEMVER(properties.reported.firmware.current_version) < '1.9.0' "
                f"AND tags.env = '{env}'"
            }
        ),
    )


def interval_of(registry, device_id):
    desired = registry.get_twin(device_id).properties.desired
    return desired.get("config", {}).get("telemetryIntervalSeconds")


def test_create_get_list_and_metrics_match_the_twins(configurations, registry, fleet, device_clients):
    env, devices = fleet
    config_id = new_config_id()
    created = configurations.create_configuration(interval_config(config_id, env))
    assert created.id == config_id
    assert created.priority == 10
    assert created.etag
    assert created.labels == {"purpose": "telemetry"}
    prod = [d for d, _, stage in devices if stage == "prod"]
    dev = [d for d, _, stage in devices if stage == "dev"]
    wait_until(lambda: all(interval_of(registry, d) == 60 for d in prod), message="prod twins configured")
    assert interval_of(registry, dev[0]) is None

    # One prod device reports old firmware: the custom metric counts it.
    device_id, key, _ = devices[0]
    client = device_clients(device_id, key)
    within(20, client.connect)
    within(20, client.patch_twin_reported_properties, {"firmware": {"current_version": "1.8.2"}})
    # The device itself sees the configured setting.
    desired = within(20, client.get_twin)["desired"]
    assert desired["config"]["telemetryIntervalSeconds"] == 60

    fetched = configurations.get_configuration(config_id)
    assert fetched.system_metrics.results["targetedCount"] == 2
    assert fetched.system_metrics.results["appliedCount"] == 2
    assert fetched.metrics.results["nonCompliant"] == 1, "read-your-writes after the report"
    assert fetched.content.device_content == {"properties.desired.config.telemetryIntervalSeconds": 60}
    assert "configurations.[[" in fetched.system_metrics.queries["appliedCount"]

    listed = configurations.get_configurations()
    assert config_id in [c.id for c in listed]
    assert len(configurations.get_configurations(1)) == 1

    # The twins carry the status at their root, and the query language reads it.
    from azure.iot.hub.models import QuerySpecification

    query = f"SELECT * FROM devices WHERE configurations.[[{config_id}]].status = 'Applied'"
    result = registry.query_iot_hub(QuerySpecification(query=query))
    assert sorted(t.device_id for t in result.items) == sorted(prod)
    configurations.delete_configuration(config_id)


def test_update_with_etag_retargets_and_a_stale_etag_is_412(configurations, registry, fleet):
    env, devices = fleet
    config_id = new_config_id()
    created = configurations.create_configuration(interval_config(config_id, env))
    dev = [d for d, _, stage in devices if stage == "dev"][0]
    created.target_condition = f"tags.env = '{env}'"
    updated = configurations.update_configuration(created, created.etag)
    assert updated.etag != created.etag
    assert updated.target_condition == f"tags.env = '{env}'"
    wait_until(lambda: interval_of(registry, dev) == 60, message="the dev device joins the target")
    wait_until(
        lambda: configurations.get_configuration(config_id).system_metrics.results["appliedCount"] == 3,
        message="appliedCount 3",
    )

    with pytest.raises(HttpOperationError) as excinfo:
        configurations.update_configuration(created, created.etag)
    assert excinfo.value.response.status_code == 412
    assert excinfo.value.response.json()["errorCode"] == 412001

    # Content is immutable.
    changed = configurations.get_configuration(config_id)
    changed.content = ConfigurationContent(device_content={"properties.desired.config.telemetryIntervalSeconds": 5})
    with pytest.raises(HttpOperationError) as excinfo:
        configurations.update_configuration(changed, changed.etag)
    assert excinfo.value.response.status_code == 400

    # Delete with the etag: every device loses the setting.
    configurations.delete_configuration(config_id, updated.etag)
    wait_until(
        lambda: all(interval_of(registry, d) is None for d, _, _ in devices),
        message="settings removed after delete",
    )
    with pytest.raises(HttpOperationError) as excinfo:
        configurations.get_configuration(config_id)
    assert excinfo.value.response.status_code == 404


def test_a_higher_priority_wins_and_its_deletion_hands_back(configurations, registry, fleet):
    env, devices = fleet
    low, high = new_config_id(), new_config_id()
    configurations.create_configuration(interval_config(low, env, priority=1, interval=60))
    configurations.create_configuration(interval_config(high, env, priority=5, interval=15))
    prod = [d for d, _, stage in devices if stage == "prod"]
    wait_until(lambda: all(interval_of(registry, d) == 15 for d in prod), message="the higher priority wins")
    wait_until(
        lambda: configurations.get_configuration(low).system_metrics.results["appliedCount"] == 0,
        message="the lower one is only targeted",
    )
    assert configurations.get_configuration(low).system_metrics.results["targetedCount"] == 2
    configurations.delete_configuration(high)
    wait_until(lambda: all(interval_of(registry, d) == 60 for d in prod), message="the next one applies")
    configurations.delete_configuration(low)


def test_a_taken_id_is_409_and_bad_input_is_400(configurations, fleet):
    env, _ = fleet
    config_id = new_config_id()
    configurations.create_configuration(interval_config(config_id, env))
    with pytest.raises(HttpOperationError) as excinfo:
        configurations.create_configuration(interval_config(config_id, env))
    assert excinfo.value.response.status_code == 409

    bad = interval_config(new_config_id(), env)
    bad.content = ConfigurationContent(device_content={"properties.reported.x": 1})
    with pytest.raises(HttpOperationError) as excinfo:
        configurations.create_configuration(bad)
    assert excinfo.value.response.status_code == 400
    assert "properties.desired." in excinfo.value.response.json()["Message"]

    bad = interval_config(new_config_id(), env)
    bad.target_condition = "tags.env = "
    with pytest.raises(HttpOperationError) as excinfo:
        configurations.create_configuration(bad)
    assert excinfo.value.response.status_code == 400
    assert "line 1, column" in excinfo.value.response.json()["Message"]
    configurations.delete_configuration(config_id)


def test_test_queries_reports_errors_with_their_position(configurations):
    result = configurations.test_configuration_queries(
        ConfigurationQueriesTestInput(
            target_condition="tags.env = 'prod' AND",
            custom_metric_queries={
                "good": "SELECT deviceId FROM devices WHERE properties.reported.x = 1",
                "bad": "SELECT deviceId FROM devices WHERE (",
            },
        )
    )
    assert "column" in result.target_condition_error
    assert result.custom_metric_query_errors.get("bad")
    assert "good" not in (result.custom_metric_query_errors or {})


def test_apply_configuration_content_sets_desired_properties(configurations, registry, sas_device):
    device_id, _ = sas_device()
    configurations.apply_configuration_on_edge_device(
        device_id,
        ConfigurationContent(device_content={"properties.desired.mode": "eco"}),
    )
    assert registry.get_twin(device_id).properties.desired["mode"] == "eco"
