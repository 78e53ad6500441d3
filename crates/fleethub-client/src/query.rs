//! `POST /devices/query` with IoT Hub's paging headers.

use crate::{ClientError, HubClient, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One page of query results.
#[derive(Debug, Clone)]
pub struct QueryPage {
    pub items: Vec<Value>,
    /// `x-ms-item-type`, e.g. `DeviceTwin` or `JobResponse`.
    pub item_type: String,
    /// The next page's `x-ms-continuation` token; `None` on the last page.
    pub continuation: Option<String>,
}

impl HubClient {
    /// One page of `POST /devices/query`: at most `page_size` items (`x-ms-max-item-count`)
    /// after `continuation`.
    pub async fn query_page(
        &self,
        query: &str,
        page_size: Option<usize>,
        continuation: Option<&str>,
    ) -> Result<QueryPage, ClientError> {
        let size = page_size.map(|n| n.to_string());
        let mut headers = Vec::new();
        if let Some(c) = continuation {
            headers.push(("x-ms-continuation", c));
        }
        if let Some(n) = &size {
            headers.push(("x-ms-max-item-count", n.as_str()));
        }
        let token = self.token()?;
        let body = json!({ "query": query });
        let Reply {
            status,
            headers,
            body,
        } = self
            .call_as(
                Method::POST,
                "/devices/query",
                Some(&body),
                &headers,
                Some(&token),
            )
            .await?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if status == StatusCode::NOT_FOUND && body.is_null() {
            return Err(ClientError::Unexpected {
                what: "POST /devices/query".into(),
                detail:
                    "this hub does not answer queries (is it an IoT Hub without query support?)"
                        .into(),
            });
        }
        let continuation = header("x-ms-continuation");
        let item_type = header("x-ms-item-type").unwrap_or_default();
        let rows = Reply {
            status,
            headers,
            body,
        }
        .ok(&format!("query \"{query}\""))?;
        Ok(QueryPage {
            items: rows.as_array().cloned().unwrap_or_default(),
            item_type,
            continuation,
        })
    }

    /// Every item a query selects, following continuation tokens, `page_size` per request.
    pub async fn query_all(
        &self,
        query: &str,
        page_size: usize,
    ) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .query_page(query, Some(page_size), continuation.as_deref())
                .await?;
            items.extend(page.items);
            continuation = page.continuation;
            if continuation.is_none() {
                return Ok(items);
            }
        }
    }

    /// The device ids a query selects (its rows' `deviceId`), every page.
    pub async fn query_ids(&self, query: &str) -> Result<Vec<String>, ClientError> {
        let rows = self.query_all(query, 1000).await?;
        Ok(rows
            .iter()
            .filter_map(|row| row["deviceId"].as_str().map(str::to_string))
            .collect())
    }
}
