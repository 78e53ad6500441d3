//! Path normalization before routing: IoT Hub answers `GET /devices/` (what the Node SDK's
//! `Registry.list` sends) as it answers `GET /devices`, so every route accepts a trailing slash.

use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Uri};

/// Drops trailing slashes from the request path (`/devices/` → `/devices`, `/` stays), keeping
/// the query string, so one route serves both spellings.
pub fn trim_trailing_slash(mut request: Request) -> Request {
    if let Some(uri) = trimmed(request.uri()) {
        *request.uri_mut() = uri;
    }
    request
}

/// The URI with its path's trailing slashes removed, or None when there is nothing to trim.
fn trimmed(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.is_empty() {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trim(uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        trimmed(&uri).unwrap_or(uri).to_string()
    }

    #[test]
    fn trailing_slashes_go_and_the_query_stays() {
        assert_eq!(
            trim("/devices/?api-version=2021-04-12"),
            "/devices?api-version=2021-04-12"
        );
        assert_eq!(trim("/twins/d1//"), "/twins/d1");
        assert_eq!(trim("/devices"), "/devices");
        assert_eq!(trim("/"), "/");
        assert_eq!(
            trim("//"),
            "//",
            "a path of only slashes is left to the router"
        );
        assert_eq!(
            trim("https://localhost/devices/?top=5"),
            "https://localhost/devices?top=5"
        );
    }
}
