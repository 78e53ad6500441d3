//! A hub over a temporary store behind the router, and a small client for calling it.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use fleethub_api::{router, ApiState};
use fleethub_hub::{Hub, HubConfig};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tempfile::TempDir;
use tower::ServiceExt;

/// A running API with its hub; the store lives as long as this does.
pub struct TestApi {
    pub app: Router,
    pub hub: Hub,
    /// The dashboard's state (sign-in links).
    pub dashboard: Arc<fleethub_api::dashboard::Dashboard>,
    _dir: TempDir,
}

/// What came back.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON (panics with the text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an IoT Hub-style error: status, numeric code in the body, name in the header.
    pub fn assert_error(&self, status: u16, code: u32, name: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let body = self.json();
        assert_eq!(body["errorCode"], code, "body: {}", self.text);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {}",
            self.text
        );
        assert_eq!(self.header("iothub-errorcode"), Some(name));
    }
}

impl TestApi {
    /// A fresh hub over an empty store in a temporary directory, behind the full router.
    pub async fn start() -> TestApi {
        Self::start_with_clock(Arc::new(fleethub_core::SystemClock)).await
    }

    /// Like [`TestApi::start`], on the given clock.
    pub async fn start_with_clock(clock: Arc<dyn fleethub_core::Clock>) -> TestApi {
        Self::start_with(clock, |_| HubConfig::default()).await
    }

    /// Like [`TestApi::start_with_clock`], with a firmware store in the temporary directory.
    pub async fn start_with_firmware(clock: Arc<dyn fleethub_core::Clock>) -> TestApi {
        Self::start_with(clock, |dir| HubConfig {
            firmware: Some(fleethub_hub::FirmwareConfig::in_data_dir(dir)),
            ..HubConfig::default()
        })
        .await
    }

    /// A hub configured by `config` (given the temporary data directory) on `clock`.
    async fn start_with(
        clock: Arc<dyn fleethub_core::Clock>,
        config: impl FnOnce(&std::path::Path) -> HubConfig,
    ) -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        let store = fleethub_store::Store::open(fleethub_store::StoreConfig::new(
            dir.path().join("hub.db"),
        ))
        .unwrap();
        let hub = Hub::open(store, clock, config(dir.path())).await.unwrap();
        let gateway =
            fleethub_mqtt::Gateway::new(hub.clone(), fleethub_mqtt::GatewayConfig::default());
        let dashboard = Arc::new(fleethub_api::dashboard::Dashboard::default());
        let app = router(ApiState {
            hub: hub.clone(),
            gateway,
            dashboard: dashboard.clone(),
        });
        TestApi {
            app,
            hub,
            dashboard,
            _dir: dir,
        }
    }

    /// Serves the router on a real listener (WebSocket upgrades need one); returns its address
    /// and the server task.
    pub async fn serve(&self) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.app.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, server)
    }

    /// A token for `policy` valid for an hour, as the service SDK builds it.
    pub fn token(&self, policy: &str) -> String {
        self.token_expiring(policy, now_unix() + 3600)
    }

    /// A token for `policy` with the given expiry (Unix seconds).
    pub fn token_expiring(&self, policy: &str, expiry: u64) -> String {
        let p = self.hub.policy(policy).expect("policy exists");
        fleethub_core::sas::generate_token("localhost", &p.primary_key, Some(policy), expiry)
            .unwrap()
    }

    /// Calls the API as `iothubowner`.
    pub async fn owner(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let token = self.token("iothubowner");
        self.call(method, uri, Some(&token), body, &[]).await
    }

    /// Calls the API with everything spelled out.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, uri, token, body, headers).await
    }

    /// Calls the API with a body sent as is.
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: String,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/json");
        }
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Creates a SAS device with generated keys; returns its registry entry.
    pub async fn create_device(&self, id: &str) -> Value {
        let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
        let reply = self
            .owner(
                Method::PUT,
                &format!("/devices/{encoded}?api-version=2021-04-12"),
                Some(sas_device(id)),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()
    }
}

/// The body `create_device_with_sas` sends with no keys given.
pub fn sas_device(id: &str) -> Value {
    serde_json::json!({
        "deviceId": id,
        "status": "enabled",
        "authentication": { "symmetricKey": {}, "type": "sas" },
        "capabilities": { "iotEdge": false },
    })
}

/// Seconds since the Unix epoch, for token expiries.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
