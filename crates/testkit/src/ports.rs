//! Free loopback ports for processes a test starts with a port of their own choosing.

use std::net::TcpListener;

/// A port free on 127.0.0.1 when asked (another process may take it before the test uses it;
/// rare enough on loopback for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the loopback interface gives out a port")
}

/// The first of `count` consecutive ports free on 127.0.0.1 (`refbus up`'s adapters take the
/// ports after the first).
pub fn free_ports(count: u16) -> u16 {
    loop {
        let base = free_port();
        if base > u16::MAX - count {
            continue;
        }
        if (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return base;
        }
    }
}
