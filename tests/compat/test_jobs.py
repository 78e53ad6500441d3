"""Jobs v2 with the unmodified service SDK (azure-iot-hub 2.7.0): IoTHubJobManager."""

import datetime
import uuid

import pytest
from azure.iot.hub import IoTHubJobManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from waiting import wait_until


@pytest.fixture
def jobs(hub):
    return IoTHubJobManager.from_connection_string(hub.owner_connection_string)


def new_job_id():
    return f"job-{uuid.uuid4().hex[:12]}"


def later(days=365):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


def twin_request(job_id, condition, start=None, desired=None):
    return JobRequest(
        job_id=job_id,
        type="scheduleUpdateTwin",
        update_twin=Twin(etag="*", properties=TwinProperties(desired=desired or {"fw": "3.0"})),
        query_condition=condition,
        start_time=start or datetime.datetime.now(datetime.timezone.utc),
        max_execution_time_in_seconds=60,
    )


def test_create_and_get_a_scheduled_twin_job(jobs):
    job_id = new_job_id()
    created = jobs.create_scheduled_job(job_id, twin_request(job_id, "*", start=later()))
    assert created.job_id == job_id
    assert created.type == "scheduleUpdateTwin"
    assert created.status == "scheduled"
    fetched = jobs.get_scheduled_job(job_id)
    assert fetched.job_id == job_id
    assert fetched.status == "scheduled"
    assert fetched.query_condition == "*"
    assert fetched.max_execution_time_in_seconds == 60
    assert fetched.device_job_statistics.device_count == 0


def test_cancel_a_scheduled_job(jobs):
    job_id = new_job_id()
    jobs.create_scheduled_job(job_id, twin_request(job_id, "*", start=later()))
    cancelled = jobs.cancel_scheduled_job(job_id)
    assert cancelled.status == "cancelled"
    assert jobs.get_scheduled_job(job_id).status == "cancelled"


def test_query_scheduled_jobs_returns_a_query_result(jobs):
    job_id = new_job_id()
    jobs.create_scheduled_job(job_id, twin_request(job_id, "*", start=later()))
    result = jobs.query_scheduled_jobs("scheduleUpdateTwin", "scheduled")
    ids = [item["jobId"] for item in result.items]
    assert job_id in ids
    assert all(item["status"] == "scheduled" for item in result.items)


def test_a_duplicate_job_id_is_409(jobs):
    job_id = new_job_id()
    jobs.create_scheduled_job(job_id, twin_request(job_id, "*", start=later()))
    with pytest.raises(HttpOperationError) as excinfo:
        jobs.create_scheduled_job(job_id, twin_request(job_id, "*", start=later()))
    assert excinfo.value.response.status_code == 409
    assert excinfo.value.response.json()["errorCode"] == 409003


def test_unknown_job_is_404(jobs):
    with pytest.raises(HttpOperationError) as excinfo:
        jobs.get_scheduled_job(new_job_id())
    assert excinfo.value.response.status_code == 404


def test_an_invalid_query_condition_is_refused_with_the_parsers_message(jobs):
    job_id = new_job_id()
    with pytest.raises(HttpOperationError) as excinfo:
        jobs.create_scheduled_job(job_id, twin_request(job_id, "tags.x = = 1"))
    assert excinfo.value.response.status_code == 400
    body = excinfo.value.response.json()
    assert body["errorCode"] == 400020, body


def test_a_twin_job_updates_the_targeted_devices(jobs, registry, sas_device):
    targeted = [sas_device()[0], sas_device()[0]]
    untouched = sas_device()[0]
    job_id = new_job_id()
    condition = "deviceId IN [" + ", ".join(f"'{d}'" for d in targeted) + "]"
    jobs.create_scheduled_job(job_id, twin_request(job_id, condition, desired={"fw": "3.1"}))
    job = wait_until(
        lambda: (lambda j: j if j.status == "completed" else None)(jobs.get_scheduled_job(job_id)),
        message="the job to complete",
    )
    assert job.device_job_statistics.device_count == 2
    assert job.device_job_statistics.succeeded_count == 2
    for device_id in targeted:
        assert registry.get_twin(device_id).properties.desired["fw"] == "3.1"
    assert "fw" not in registry.get_twin(untouched).properties.desired


def test_a_method_job_fails_offline_devices(jobs, sas_device):
    device_id = sas_device()[0]
    job_id = new_job_id()
    request = JobRequest(
        job_id=job_id,
        type="scheduleDeviceMethod",
        cloud_to_device_method=CloudToDeviceMethod(
            method_name="reboot", payload={}, response_timeout_in_seconds=5,
            connect_timeout_in_seconds=0,
        ),
        query_condition=f"deviceId IN ['{device_id}']",
        start_time=datetime.datetime.now(datetime.timezone.utc),
        max_execution_time_in_seconds=60,
    )
    jobs.create_scheduled_job(job_id, request)
    job = wait_until(
        lambda: (lambda j: j if j.status == "completed" else None)(jobs.get_scheduled_job(job_id)),
        message="the job to complete",
    )
    assert job.device_job_statistics.failed_count == 1
    assert job.device_job_statistics.succeeded_count == 0
