//! Jobs v2 through the REST routes: IoT Hub's shapes and error codes.

use crate::support::TestApi;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn twin_job(id: &str) -> Value {
    json!({
        "jobId": id,
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "etag": "*", "properties": { "desired": { "fw": "2.0" } } },
        "maxExecutionTimeInSeconds": 60,
    })
}

/// Polls the job until `done` accepts it (or fails after ten seconds).
async fn wait_for(api: &TestApi, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = api
            .owner(Method::GET, &format!("/jobs/v2/{id}"), None)
            .await
            .json();
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never got there: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_twin_job_is_created_runs_and_reports_statistics() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    api.create_device("dev2").await;
    let reply = api
        .owner(
            Method::PUT,
            "/jobs/v2/job1?api-version=2021-04-12",
            Some(twin_job("job1")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let created = reply.json();
    assert_eq!(created["jobId"], "job1");
    assert_eq!(created["type"], "scheduleUpdateTwin");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["maxExecutionTimeInSeconds"], 60);
    assert_eq!(created["updateTwin"]["properties"]["desired"]["fw"], "2.0");
    assert!(created["createdTime"].is_string() && created["startTime"].is_string());

    let job = wait_for(&api, "job1", |j| j["status"] == "completed").await;
    let stats = &job["deviceJobStatistics"];
    assert_eq!(stats["deviceCount"], 2);
    assert_eq!(stats["succeededCount"], 2);
    assert_eq!(stats["failedCount"], 0);
    assert_eq!(stats["pendingCount"], 0);
    assert!(job["endTime"].is_string());
    let twin = api.owner(Method::GET, "/twins/dev2", None).await.json();
    assert_eq!(twin["properties"]["desired"]["fw"], "2.0");
}

#[tokio::test]
async fn bad_jobs_answer_iot_hub_errors() {
    let api = TestApi::start().await;
    let api = &api;
    let put = |id: &str, body: Value| {
        let uri = format!("/jobs/v2/{id}");
        async move { api.owner(Method::PUT, &uri, Some(body)).await }
    };
    let ok = put("dup", twin_job("dup")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    put("dup", twin_job("dup"))
        .await
        .assert_error(409, 409003, "JobAlreadyExists");

    let mut unknown = twin_job("t1");
    unknown["type"] = json!("export");
    put("t1", unknown)
        .await
        .assert_error(400, 400030, "JobInvalid");

    let mut etag = twin_job("t2");
    etag["updateTwin"]["etag"] = json!("AAAAAAAAAAE=");
    put("t2", etag)
        .await
        .assert_error(400, 400030, "JobInvalid");

    put("bad_id", twin_job("bad_id"))
        .await
        .assert_error(400, 400030, "JobInvalid");

    let method = json!({ "type": "scheduleDeviceMethod", "queryCondition": "*", "cloudToDeviceMethod": { "payload": 1 } });
    put("m1", method)
        .await
        .assert_error(400, 400005, "ArgumentNull");

    let mut key = twin_job("t3");
    key["updateTwin"]["properties"]["desired"] = json!({ "a b": 1 });
    put("t3", key)
        .await
        .assert_error(400, 400021, "InvalidTwinKey");

    api.owner(Method::GET, "/jobs/v2/nope", None)
        .await
        .assert_error(404, 404002, "JobNotFound");
    api.owner(Method::POST, "/jobs/v2/nope/cancel", None)
        .await
        .assert_error(404, 404002, "JobNotFound");
}

#[tokio::test]
async fn the_job_query_answers_an_object_with_items_and_a_token() {
    let api = TestApi::start().await;
    for id in ["q1", "q2", "q3"] {
        let mut body = twin_job(id);
        body["startTime"] = json!("2099-01-01T00:00:00Z");
        let r = api
            .owner(Method::PUT, &format!("/jobs/v2/{id}"), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let page = api
        .owner(
            Method::GET,
            "/jobs/v2/query?jobType=scheduleUpdateTwin&jobStatus=scheduled&pageSize=2",
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let page = page.json();
    assert_eq!(page["type"], "jobResponse");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["status"], "scheduled");
    let token = page["continuationToken"].as_str().unwrap().to_string();
    let rest = api
        .owner(
            Method::GET,
            &format!("/jobs/v2/query?pageSize=2&continuationToken={token}"),
            None,
        )
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["jobId"], "q3");
    assert!(rest["continuationToken"].is_null());

    api.owner(Method::GET, "/jobs/v2/query?jobStatus=asleep", None)
        .await
        .assert_error(400, 400004, "ArgumentInvalid");
    api.owner(Method::GET, "/jobs/v2/query?pageSize=many", None)
        .await
        .assert_error(400, 400004, "ArgumentInvalid");
}

#[tokio::test]
async fn cancel_answers_the_cancelled_job() {
    let api = TestApi::start().await;
    let mut body = twin_job("c1");
    body["startTime"] = json!("2099-01-01T00:00:00Z");
    api.owner(Method::PUT, "/jobs/v2/c1", Some(body)).await;
    let reply = api.owner(Method::POST, "/jobs/v2/c1/cancel", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = reply.json();
    assert_eq!(job["status"], "cancelled");
    assert!(job["endTime"].is_string());
}

#[tokio::test]
async fn job_routes_need_a_service_token() {
    let api = TestApi::start().await;
    let reply = api
        .call(Method::PUT, "/jobs/v2/x", None, Some(twin_job("x")), &[])
        .await;
    assert_eq!(reply.status.as_u16(), 401, "{}", reply.text);
    let token = api.token("registryRead");
    let reply = api
        .call(
            Method::PUT,
            "/jobs/v2/x",
            Some(&token),
            Some(twin_job("x")),
            &[],
        )
        .await;
    assert_eq!(reply.status.as_u16(), 401, "{}", reply.text);
}
