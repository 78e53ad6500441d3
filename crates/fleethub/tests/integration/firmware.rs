//! The firmware store end to end: uploads (no-op, conflict, cut, bad digest or signature),
//! signing, per-device URLs, every Range form ESP-IDF sends, resuming after a cut, and delete.

use crate::harness::{eventually, run_cli, TestHub, DEADLINE};
use base64::Engine;
use reqwest::header::{CONTENT_RANGE, ETAG, RANGE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// A deterministic image of `len` bytes, different per `seed`.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `POST /v1/firmware?{query}` with `bytes` as the body, as iothubowner.
pub async fn upload(hub: &TestHub, query: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let resp = hub
        .http
        .post(format!("{}/v1/firmware?{query}", hub.base))
        .header("authorization", hub.token("iothubowner"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A device URL for `id`, as the operator mints it.
pub async fn mint(hub: &TestHub, id: &str, device: &str, extra: &str) -> Value {
    let r = hub
        .call(
            Method::POST,
            &format!("/v1/firmware/{id}/url?deviceId={device}{extra}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn get(hub: &TestHub, url: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = hub.http.get(url);
    if let Some(range) = range {
        req = req.header(RANGE, range);
    }
    req.send().await.unwrap()
}

fn error_code(body: &Value) -> u64 {
    body["errorCode"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn uploads_are_content_addressed_signed_and_immutable() {
    let hub = TestHub::start().await;
    let img = image(70_000, 1);
    let sha = fleethub_core::firmware::sha256_hex(&img);
    let (status, first) = upload(
        &hub,
        "version=2.1.0&model=esp32-s3&notes=first",
        img.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["id"], sha.as_str());
    assert_eq!(first["size"], 70_000);
    assert_eq!(first["models"], json!(["esp32-s3"]));
    assert_eq!(first["signedBy"], "hub");

    // The signature verifies against the published key over the manifest the hub shows.
    let key = hub.call(Method::GET, "/v1/firmware/key", None).await;
    assert_eq!(key.status, StatusCode::OK, "{}", key.body);
    let pem = key.body["publicKeyPem"].as_str().unwrap();
    let manifest = first["manifest"].as_str().unwrap();
    assert!(manifest.contains(&format!("sha256={sha}\n")), "{manifest}");
    let key = fleethub_sim::FirmwareKey::from_pem(pem).unwrap();
    assert!(key.verifies(manifest.as_bytes(), first["signature"].as_str().unwrap()));

    // Same version, same bytes: the stored record, 200, nothing new.
    let (status, again) = upload(
        &hub,
        "version=2.1.0&model=esp32-s3&notes=other",
        img.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first);

    // Same version and model, other bytes: 409 saying so.
    let (status, conflict) = upload(&hub, "version=2.1.0&model=esp32-s3", image(100, 2)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(error_code(&conflict), 409020);
    let message = conflict["message"].as_str().unwrap();
    assert!(
        message.contains("already stored with other bytes"),
        "{message}"
    );
    // Same bytes as another version: 409 too (content-addressed, immutable).
    let (status, renamed) = upload(&hub, "version=2.2.0&model=esp32-s3", img.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{renamed}");
    assert!(renamed["message"]
        .as_str()
        .unwrap()
        .contains("already stored as version 2.1.0"));
    // The same version for another model is another artifact.
    let (status, other_model) = upload(&hub, "version=2.1.0&model=esp32-c3", image(100, 3)).await;
    assert_eq!(status, StatusCode::CREATED, "{other_model}");

    let list = hub.call(Method::GET, "/v1/firmware", None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 2, "{}", list.body);
    let ambiguous = hub.call(Method::GET, "/v1/firmware/2.1.0", None).await;
    assert_eq!(
        ambiguous.status,
        StatusCode::BAD_REQUEST,
        "{}",
        ambiguous.body
    );
    let shown = hub
        .call(Method::GET, &format!("/v1/firmware/{sha}"), None)
        .await;
    assert_eq!(shown.body["notes"], "first");

    // Reading needs registryRead; uploading needs registryWrite.
    let read_only = hub.token("registryRead");
    let denied = hub
        .http
        .post(format!("{}/v1/firmware?version=9.0.0&model=x", hub.base))
        .header("authorization", read_only)
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let hub = TestHub::start_in(dir).await;
    let tmp_files = || {
        std::fs::read_dir(data.join("firmware/tmp"))
            .unwrap()
            .count()
    };
    let blobs = || {
        std::fs::read_dir(data.join("firmware/blobs"))
            .unwrap()
            .count()
    };
    let img = image(5000, 4);

    let wrong = "0".repeat(64);
    let (status, body) = upload(
        &hub,
        &format!("version=1.0.0&model=m&sha256={wrong}"),
        img.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), 400040);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not the declared"),
        "{body}"
    );

    let (status, body) = upload(&hub, "version=1.0.0&model=m&signature=MEUCIQ", img.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{body}"
    );

    for (query, what) in [
        ("model=m", "needs its version"),
        ("version=1.0.0", "needs the models"),
        ("version=banana&model=m", "not a semantic version"),
        ("version=1.0.0&model=a%2Cb%3D", "model 'b='"),
        ("version=1.0.0&model=m&sha256=xyz", "not 64 hex digits"),
    ] {
        let (status, body) = upload(&hub, query, img.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(what),
            "{query}: {body}"
        );
    }
    let (status, body) = upload(&hub, "version=1.0.0&model=m", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A connection cut halfway through the body: nothing is stored, the temporary file goes.
    let connector = tokio_rustls::TlsConnector::from(hub.tls.clone());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", hub.running.https_addr.port()))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "POST /v1/firmware?version=3.0.0&model=m HTTP/1.1\r\nhost: localhost\r\n\
         authorization: {}\r\ncontent-length: 1000000\r\n\r\n",
        hub.token("iothubowner")
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&image(300_000, 5)).await.unwrap();
    tls.flush().await.unwrap();
    eventually("the cut upload's file to exist", || async {
        (tmp_files() == 1).then_some(())
    })
    .await;
    drop(tls);
    eventually("the cut upload's file to be removed", || async {
        (tmp_files() == 0).then_some(())
    })
    .await;
    let list = hub.call(Method::GET, "/v1/firmware", None).await;
    assert_eq!(list.body, json!([]));
    assert_eq!(blobs(), 0);
}

#[tokio::test]
async fn an_offline_signature_made_with_the_operators_key_is_verified_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key_file = dir.path().join("operator.key");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let hub = TestHub::start_with(|cfg| cfg.firmware_signing_key = Some(key_file.clone())).await;
    let published = hub.call(Method::GET, "/v1/firmware/key", None).await;
    assert_eq!(
        published.body["publicKeyPem"].as_str().unwrap().trim(),
        key.public_key_pem().trim(),
        "the hub publishes the operator's key"
    );

    let img = image(4096, 6);
    let manifest = fleethub_core::firmware::Manifest::new(
        "1.2.3",
        &["esp32".to_string()],
        img.len() as u64,
        &fleethub_core::firmware::sha256_hex(&img),
    )
    .unwrap();
    let sig = rcgen::SigningKey::sign(&key, manifest.canonical().as_bytes()).unwrap();
    let sig = base64::engine::general_purpose::STANDARD.encode(sig);
    let sig_q = sig
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (status, body) = upload(
        &hub,
        &format!("version=1.2.3&model=esp32&signature={sig_q}"),
        img.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["signedBy"], "operator");
    assert_eq!(body["signature"], sig.as_str());

    // The same signature over another version's manifest does not verify.
    let (status, body) = upload(
        &hub,
        &format!("version=1.2.4&model=esp32&signature={sig_q}"),
        image(10, 7),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn downloads_answer_every_range_form_esp_https_ota_sends() {
    every_range_form(&TestHub::start().await).await;
}

#[tokio::test]
async fn an_image_streamed_from_disk_answers_every_range_form_too() {
    // No image cache: every download reads the file (what an image too large to hold gets).
    every_range_form(&TestHub::start_with(|cfg| cfg.firmware_cache_mb = 0).await).await;
}

#[tokio::test]
async fn an_image_damaged_on_disk_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let hub = TestHub::start_in(dir).await;
    hub.create_device("dev-1").await;
    let img = image(100_000, 4);
    let (_, art) = upload(&hub, "version=1.0.0&model=esp32", img.clone()).await;
    let id = art["id"].as_str().unwrap().to_string();
    let mut damaged = img.clone();
    damaged[70_000] ^= 0x40;
    std::fs::write(data.join("firmware/blobs").join(&id), &damaged).unwrap();
    let minted = mint(&hub, &id, "dev-1", "").await;
    let url = minted["url"].as_str().unwrap();
    for range in [None, Some("bytes=0-0")] {
        let resp = get(&hub, url, range).await;
        assert_eq!(
            resp.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{range:?}"
        );
        let body: Value = resp.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("damaged on disk"), "{body}");
        assert!(message.contains("upload the image again"), "{body}");
    }
    // Put right on disk, it is served (a refused image is not held).
    std::fs::write(data.join("firmware/blobs").join(&id), &img).unwrap();
    let whole = get(&hub, url, None).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.bytes().await.unwrap().as_ref() == img.as_slice());
}

/// HEAD, the whole image, every Range form a device sends, 416, malformed ranges, and the bytes
/// counted for the device.
async fn every_range_form(hub: &TestHub) {
    hub.create_device("dev-1").await;
    let img = image(100_000, 8);
    let (_, art) = upload(hub, "version=1.0.0&model=esp32", img.clone()).await;
    let id = art["id"].as_str().unwrap().to_string();
    let minted = mint(hub, &id, "dev-1", "").await;
    let url = minted["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&hub.base), "{url}");
    assert_eq!(minted["desiredFirmware"]["sha256"], id.as_str());
    assert_eq!(minted["desiredFirmware"]["signature"], art["signature"]);
    assert_eq!(minted["desiredFirmware"]["models"], json!(["esp32"]));

    // HEAD: the length, no body.
    let head = hub.http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(head.headers()[ETAG], format!("\"{id}\"").as_str());
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    assert!(head.bytes().await.unwrap().is_empty());

    // The whole image.
    let whole = get(hub, &url, None).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), img.as_slice());

    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=99000-99999", 99_000, 99_999),
        ("bytes=99000-100000", 99_000, 99_999),
        ("bytes=99000-", 99_000, 99_999),
        ("bytes=-16", 99_984, 99_999),
    ] {
        let resp = get(hub, &url, Some(range)).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            resp.headers()[CONTENT_RANGE],
            format!("bytes {start}-{end}/100000").as_str(),
            "{range}"
        );
        assert_eq!(resp.headers()[ETAG], format!("\"{id}\"").as_str());
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.as_ref(), &img[start..=end], "{range}");
    }

    let past = get(hub, &url, Some("bytes=100000-")).await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.headers()[CONTENT_RANGE], "bytes */100000");
    let body: Value = past.json().await.unwrap();
    assert_eq!(error_code(&body), 416000, "{body}");

    for bad in ["bytes=5-1", "bytes=x-", "octets"] {
        let resp = get(hub, &url, Some(bad)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(error_code(&body), 400041, "{bad}: {body}");
    }

    // Bytes served are counted for the device.
    let shown = hub
        .call(Method::GET, &format!("/v1/firmware/{id}"), None)
        .await;
    let downloads = shown.body["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 1, "{}", shown.body);
    assert_eq!(downloads[0]["deviceId"], "dev-1");
    let expected = 100_000 + 1 + 1000 + 1000 * 3 + 16;
    assert_eq!(downloads[0]["bytesServed"], expected, "{}", shown.body);
    let metrics = hub
        .http
        .get(format!("{}/metrics", hub.base))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(&format!("fleethub_firmware_bytes_served_total {expected}")),
        "{text}"
    );
}

#[tokio::test]
async fn a_download_cut_short_resumes_with_an_open_ended_range() {
    let hub = TestHub::start().await;
    hub.create_device("dev-1").await;
    let img = image(1_000_000, 9);
    let (_, art) = upload(&hub, "version=1.0.0&model=esp32", img.clone()).await;
    let minted = mint(&hub, art["id"].as_str().unwrap(), "dev-1", "").await;
    let url = minted["url"].as_str().unwrap();

    let mut resp = get(&hub, url, None).await;
    let mut got = Vec::new();
    while got.len() < 200_000 {
        got.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    drop(resp); // the link drops
    let resumed = get(&hub, url, Some(&format!("bytes={}-", got.len()))).await;
    assert_eq!(resumed.status(), StatusCode::PARTIAL_CONTENT);
    got.extend_from_slice(&resumed.bytes().await.unwrap());
    assert_eq!(got.len(), img.len());
    assert!(got == img, "the resumed image is the image");
}

#[tokio::test]
async fn altered_expired_foreign_and_deleted_urls_are_refused() {
    let hub = TestHub::start().await;
    let key1 = hub.create_device("dev-1").await;
    hub.create_device("dev-2").await;
    let img = image(1000, 10);
    let (_, art) = upload(&hub, "version=1.0.0&model=esp32", img.clone()).await;
    let id = art["id"].as_str().unwrap().to_string();
    let url = mint(&hub, &id, "dev-1", "").await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let forbidden = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(error_code(&body), 403200, "{body}");
        body["message"].as_str().unwrap().to_string()
    };

    // Another device's id put into dev-1's URL.
    let moved = url.replace("deviceId=dev-1", "deviceId=dev-2");
    assert!(forbidden(get(&hub, &moved, None).await)
        .await
        .contains("altered"));
    // A longer expiry.
    let stretched = url.replace("&se=", "&se=9");
    assert!(forbidden(get(&hub, &stretched, None).await)
        .await
        .contains("altered"));
    // No signature at all.
    let bare = url.split("&sig=").next().unwrap().to_string();
    assert!(forbidden(get(&hub, &bare, None).await)
        .await
        .contains("deviceId, se and sig"));
    // dev-2 presenting its own token with dev-1's URL.
    let key2 = hub.call(Method::GET, "/devices/dev-2", None).await.body["authentication"]
        ["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_string();
    let host = format!("localhost:{}/devices/dev-2", hub.running.https_addr.port());
    let token2 =
        fleethub_core::sas::generate_token(&host, &key2, None, crate::harness::unix_now() + 600)
            .unwrap();
    let foreign = hub
        .http
        .get(&url)
        .header("authorization", token2)
        .send()
        .await
        .unwrap();
    assert!(forbidden(foreign)
        .await
        .contains("belongs to device 'dev-1'"));
    // dev-1's own token is fine.
    let host = format!("localhost:{}/devices/dev-1", hub.running.https_addr.port());
    let token1 =
        fleethub_core::sas::generate_token(&host, &key1, None, crate::harness::unix_now() + 600)
            .unwrap();
    let own = hub
        .http
        .get(&url)
        .header("authorization", token1)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);

    // An expired URL: minted for one second, used after it.
    let short = mint(&hub, &id, "dev-1", "&expiresInSeconds=1").await;
    let short_url = short["url"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let message = eventually("the short URL to expire", || {
        let (hub, url) = (&hub, short_url.clone());
        async move {
            let resp = get(hub, &url, None).await;
            (resp.status() == StatusCode::FORBIDDEN).then_some(resp)
        }
    })
    .await;
    assert!(started.elapsed() < DEADLINE);
    assert!(forbidden(message).await.contains("expired"));

    // Minting refuses unknown devices and silly lifetimes.
    let r = hub
        .call(
            Method::POST,
            &format!("/v1/firmware/{id}/url?deviceId=ghost"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = hub
        .call(
            Method::POST,
            &format!("/v1/firmware/{id}/url?deviceId=dev-1&expiresInSeconds=0"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Deleted: the URL names nothing any more.
    let r = hub
        .call(Method::DELETE, &format!("/v1/firmware/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let gone = get(&hub, &url, None).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let body: Value = gone.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("was deleted"),
        "{body}"
    );
}

#[tokio::test]
async fn an_artifact_a_twin_still_wants_cannot_be_deleted() {
    let hub = TestHub::start().await;
    hub.create_device("dev-1").await;
    let (_, art) = upload(&hub, "version=1.0.0&model=esp32", image(1000, 11)).await;
    let id = art["id"].as_str().unwrap().to_string();
    let minted = mint(&hub, &id, "dev-1", "").await;
    let patch = json!({"properties": {"desired": {"firmware": minted["desiredFirmware"]}}});
    let r = hub.call(Method::PATCH, "/twins/dev-1", Some(patch)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let refused = hub
        .call(Method::DELETE, &format!("/v1/firmware/{id}"), None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(error_code(&refused.body), 409021);
    assert!(
        refused.body["message"].as_str().unwrap().contains("dev-1"),
        "{}",
        refused.body
    );
    let still = hub
        .call(Method::GET, &format!("/v1/firmware/{id}"), None)
        .await;
    assert_eq!(still.status, StatusCode::OK);

    let clear = json!({"properties": {"desired": {"firmware": null}}});
    hub.call(Method::PATCH, "/twins/dev-1", Some(clear)).await;
    let r = hub
        .call(Method::DELETE, &format!("/v1/firmware/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = hub
        .call(Method::GET, &format!("/v1/firmware/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_firmware_command_uploads_lists_shows_and_deletes() {
    let hub = TestHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aq-sensor-2.1.0.bin");
    let img = image(300_000, 12);
    std::fs::write(&file, &img).unwrap();
    let sha = fleethub_core::firmware::sha256_hex(&img);
    let path = file.to_str().unwrap();

    // The hub's flags before the verb, `fleethub firmware --hub … --ca … upload …`, ...
    let (ok, out, err) = run_cli(
        &hub,
        &["firmware"],
        &[
            "upload",
            path,
            "--version",
            "2.1.0",
            "--model",
            "esp32-s3",
            "--notes",
            "from CI",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains(&sha), "{out}");
    assert!(out.contains("300000"), "{out}");
    assert!(out.contains("signature"), "{out}");

    // ... or after it, `fleethub firmware list --json --hub … --ca …`: the same answer.
    let (ok, out, err) = run_cli(&hub, &["firmware", "list", "--json"], &[]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["sha256"], sha.as_str());
    assert_eq!(listed[0]["notes"], "from CI");
    let (ok, before, err) = run_cli(&hub, &["firmware"], &["list", "--json"]).await;
    assert!(ok, "{err}");
    assert_eq!(before, out);
    let (ok, out, _) = run_cli(&hub, &["firmware", "list"], &[]).await;
    assert!(ok);
    assert!(out.lines().nth(1).unwrap().starts_with("2.1.0"), "{out}");

    let (ok, out, _) = run_cli(&hub, &["firmware", "key"], &[]).await;
    assert!(ok);
    assert!(out.starts_with("-----BEGIN PUBLIC KEY-----"), "{out}");

    let (ok, _, err) = run_cli(&hub, &["firmware"], &["delete", "9.9.9"]).await;
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    let (ok, out, err) = run_cli(&hub, &["firmware", "delete", &sha], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted"), "{out}");
    let (ok, out, _) = run_cli(&hub, &["firmware", "list", "--json"], &[]).await;
    assert!(ok);
    assert_eq!(out.trim(), "[]");
}
