//! Real parts for the integration tests: a moto server for IAM/STS, a proxy in front of it that can
//! deny AssumeRole, throttle, page or slow down, HTTP receivers for sinks, and the real binary.
#![allow(dead_code)]

pub mod bulk_proxy;
pub mod cli;
pub mod cloudtrail;
pub mod hec;
pub mod lifecycle;
pub mod moto;
pub mod oomnitza;
pub mod opensearch;
pub mod proxy;
pub mod receiver;
pub mod schema;
pub mod sekoia;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
