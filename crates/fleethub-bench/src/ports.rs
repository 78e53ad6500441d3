//! Ports for the reference servers a benchmark starts beside the hub.

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_loopback_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
