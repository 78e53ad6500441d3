//! `fleethub query`: runs a query against a hub over REST, following continuation pages, and
//! prints a table, a JSON array (`--json`) or one JSON document per line (`--lines`).

use super::{Common, Output};
use anyhow::Result;
use fleethub_client::HubClient;
use serde_json::Value;

/// `fleethub query` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  fleethub query \"SELECT deviceId, properties.reported.firmware.current_version FROM devices WHERE tags.city = 'boston'\"
  fleethub query \"SELECT properties.reported.firmware.current_version AS v, COUNT() AS n FROM devices GROUP BY properties.reported.firmware.current_version\" --json
  fleethub query \"SELECT * FROM devices.jobs WHERE jobId = 'reboot-1'\" --lines | jq .status")]
pub struct QueryArgs {
    /// The query, e.g. "SELECT * FROM devices WHERE tags.city = 'boston'".
    pub query: String,
    #[command(flatten)]
    pub common: Common,
    /// Items per request (x-ms-max-item-count, 1 to 1000).
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
    /// Stop after this many items [default: every page].
    #[arg(long)]
    pub limit: Option<usize>,
    /// One compact JSON document per line, printed as each page arrives.
    #[arg(long, conflicts_with = "json")]
    pub lines: bool,
}

/// Runs the query and prints the items.
pub async fn run(args: QueryArgs) -> Result<()> {
    let common = args.common.clone();
    common.with_hub(|rest, out| query(rest, args, out)).await
}

async fn query(rest: HubClient, args: QueryArgs, out: Output) -> Result<()> {
    let mut items = Vec::new();
    pages(&rest, &args.query, args.page_size, args.limit, |item| {
        if args.lines {
            println!("{item}");
        } else {
            items.push(item);
        }
    })
    .await?;
    if args.lines {
        return Ok(());
    }
    out.print(&Value::Array(items), |v| {
        super::table::documents(v.as_array().map_or(&[][..], Vec::as_slice))
    })
}

/// Every item of the query, up to `limit`, in pages of 1,000.
pub async fn collect(rest: &HubClient, query: &str, limit: Option<usize>) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    pages(rest, query, 1000, limit, |item| items.push(item)).await?;
    Ok(items)
}

/// Follows continuation tokens, handing each item to `each`, up to `limit` items.
async fn pages(
    rest: &HubClient,
    query: &str,
    page_size: usize,
    limit: Option<usize>,
    mut each: impl FnMut(Value),
) -> Result<()> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut count = 0usize;
    let mut continuation: Option<String> = None;
    loop {
        let page = rest
            .query_page(query, Some(page_size), continuation.as_deref())
            .await?;
        for item in page.items.into_iter().take(limit - count) {
            count += 1;
            each(item);
        }
        continuation = page.continuation;
        if continuation.is_none() || count >= limit {
            return Ok(());
        }
    }
}
