"""`query_iot_hub` of the unmodified service SDK against POST /devices/query."""

import uuid

import pytest
from azure.iot.hub.models import QuerySpecification, Twin
from msrest.exceptions import HttpOperationError


@pytest.fixture
def tagged_fleet(registry, sas_device):
    """Five devices tagged with one fresh batch id; floors 0..4, firmware by floor."""
    batch = uuid.uuid4().hex[:12]
    versions = ["2.9.1", "2.10.0", "1.0.0", "2.9.1", "2.10.0"]
    ids = []
    for floor in range(5):
        device_id, _ = sas_device()
        twin = registry.get_twin(device_id)
        patch = Twin(tags={"batch": batch, "floor": floor, "fw": versions[floor]})
        registry.update_twin(device_id, patch, twin.etag)
        ids.append(device_id)
    return batch, ids


def test_query_by_tag_returns_twins(registry, tagged_fleet):
    batch, ids = tagged_fleet
    spec = QuerySpecification(query=f"SELECT * FROM devices WHERE tags.batch = '{batch}'")
    result = registry.query_iot_hub(spec)
    assert result.type == "twin"
    assert sorted(t.device_id for t in result.items) == sorted(ids)
    assert all(t.tags["batch"] == batch for t in result.items)
    assert result.continuation_token is None


def test_query_pages_with_continuation_tokens(registry, tagged_fleet):
    batch, ids = tagged_fleet
    spec = QuerySpecification(query=f"SELECT * FROM devices WHERE tags.batch = '{batch}'")
    seen, token, pages = [], None, 0
    while True:
        result = registry.query_iot_hub(spec, token, 2)
        assert len(result.items) <= 2
        seen.extend(t.device_id for t in result.items)
        pages += 1
        token = result.continuation_token
        if not token:
            break
    assert pages == 3
    assert sorted(seen) == sorted(ids)


def test_semver_condition_orders_versions_numerically(registry, tagged_fleet):
    batch, ids = tagged_fleet
    text = (
        f"SELECT * FROM devices WHERE tags.batch = '{batch}' "
        "AND SEMVER(tags.fw) < '2.10.0'"
    )
    result = registry.query_iot_hub(QuerySpecification(query=text))
    assert sorted(t.device_id for t in result.items) == sorted([ids[0], ids[2], ids[3]])


def test_an_invalid_query_is_a_400_with_the_position(registry):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE"))
    response = excinfo.value.response
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == 400020
    assert "line 1, column" in body["message"]
