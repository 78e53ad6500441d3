//! `fleethub query`: runs a query against a hub over REST and prints the results as JSON.

use crate::simulate::target::{HubArgs, HubTarget};
use anyhow::Result;

/// `fleethub query` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The query, e.g. "SELECT * FROM devices WHERE tags.city = 'boston'".
    pub query: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Items per request (x-ms-max-item-count, 1 to 1000).
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
    /// Stop after this many items [default: every page].
    #[arg(long)]
    pub limit: Option<usize>,
    /// One compact JSON document per line instead of a pretty array.
    #[arg(long)]
    pub lines: bool,
}

/// Runs the query, following continuation tokens, and prints the items.
pub async fn run(args: QueryArgs) -> Result<()> {
    let target = HubTarget::resolve(&args.hub, false).await?;
    let mut items = Vec::new();
    let mut continuation: Option<String> = None;
    let mut count = 0usize;
    let limit = args.limit.unwrap_or(usize::MAX);
    loop {
        let page = target
            .rest
            .query_page(&args.query, Some(args.page_size), continuation.as_deref())
            .await?;
        for item in page.items.into_iter().take(limit - count) {
            count += 1;
            if args.lines {
                println!("{item}");
            } else {
                items.push(item);
            }
        }
        continuation = page.continuation;
        if continuation.is_none() || count >= limit {
            break;
        }
    }
    if !args.lines {
        println!("{}", serde_json::to_string_pretty(&items)?);
    }
    target.close();
    Ok(())
}
