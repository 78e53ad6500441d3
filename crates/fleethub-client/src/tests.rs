use super::*;
use serde_json::json;

#[test]
fn a_hub_error_carries_iot_hubs_code_and_message() {
    let body = json!({"errorCode": 404001, "message": "device 'd1' is not registered"});
    let err = Reply {
        status: StatusCode::NOT_FOUND,
        headers: HeaderMap::new(),
        body,
    }
    .ok("GET /twins/d1")
    .unwrap_err();
    assert_eq!(err.error_code(), Some(404001));
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(
        err.to_string(),
        "GET /twins/d1: HTTP 404 device 'd1' is not registered"
    );
    let bare = ClientError::from_reply("x", StatusCode::BAD_GATEWAY, &json!({"Message": "m"}));
    assert_eq!(
        (bare.error_code(), bare.to_string()),
        (None, "x: HTTP 502 m".to_string())
    );
}

#[test]
fn credentials_need_a_policy_name_and_key() {
    let conn = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=a2V5").unwrap();
    assert!(Credentials::from_connection_string(&conn).is_err());
    let conn =
        ConnectionString::parse("HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5")
            .unwrap();
    let token = Credentials::from_connection_string(&conn)
        .unwrap()
        .token(60)
        .unwrap();
    assert!(token.starts_with("SharedAccessSignature ") && token.contains("skn=iothubowner"));
}

#[test]
fn bulk_results_and_method_answers_read_iot_hubs_shapes() {
    let r: BulkResult = serde_json::from_value(
        json!({"isSuccessful": false, "errors": [{"deviceId": "d"}], "warnings": []}),
    )
    .unwrap();
    assert!(!r.is_successful && r.errors.len() == 1);
    let call = MethodCall {
        method_name: "reboot".into(),
        payload: json!({}),
        response_timeout_in_seconds: 30,
        connect_timeout_in_seconds: 0,
    };
    assert_eq!(
        serde_json::to_value(call).unwrap(),
        json!({"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 30})
    );
}
