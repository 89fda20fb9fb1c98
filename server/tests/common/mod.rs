//! Helpers for the server's end-to-end tests.
#![allow(dead_code)]

use cairn_server::{EmbeddedNode, NodeConfig};

/// A node on a free loopback port with a temporary dbpath, and a driver client for it.
pub async fn start() -> (EmbeddedNode, cairn_driver::Client) {
    let config = NodeConfig {
        port: 0,
        ..NodeConfig::default()
    };
    let node = EmbeddedNode::start(config, true)
        .await
        .expect("node starts");
    let client = cairn_driver::Client::connect(&format!("cairn://{}", node.address))
        .await
        .expect("client connects");
    (node, client)
}
