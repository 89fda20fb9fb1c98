//! The network threads' idle poll (`network`, docs/server.md "Idle polling"), seen from
//! outside: requests over either transport make the threads poll when it is configured, and
//! serverStatus reports it. serverStatus is read in process, so that reading it is no request.

use bson::doc;
use cairn_server::{ClientInfo, EmbeddedNode, NodeConfig};
use std::time::Duration;

async fn start(idle_poll_micros: u64) -> EmbeddedNode {
    EmbeddedNode::start(
        NodeConfig {
            port: 0,
            idle_poll_micros,
            ..NodeConfig::default()
        },
        true,
    )
    .await
    .unwrap()
}

/// serverStatus.cairn.network: (idlePollMicros, idlePolledMicros).
fn idle_poll_status(node: &EmbeddedNode) -> (i64, i64) {
    let status = node.node.run_command(
        &ClientInfo::default(),
        doc! {"serverStatus": 1, "$db": "admin"},
    );
    let network = status
        .get_document("cairn")
        .and_then(|cairn| cairn.get_document("network"))
        .unwrap_or_else(|_| panic!("serverStatus has cairn.network: {status}"));
    (
        network.get_i64("idlePollMicros").unwrap(),
        network.get_i64("idlePolledMicros").unwrap(),
    )
}

/// For a node without an idle poll and one with: sends pings through a client of the node's
/// address (`connect`), then checks that the network threads polled only where configured and
/// that serverStatus reports the setting. Pings run inline on the network thread, so only
/// their arrival starts the poll.
async fn pings_poll_only_when_configured<C>(
    connect: impl AsyncFn(std::net::SocketAddr) -> C,
    ping: impl AsyncFn(&C),
) {
    for idle_poll_micros in [0, 5_000] {
        let node = start(idle_poll_micros).await;
        let client = connect(node.address).await;
        for _ in 0..20 {
            ping(&client).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (setting, polled) = idle_poll_status(&node);
        assert_eq!(setting, idle_poll_micros as i64);
        if idle_poll_micros == 0 {
            assert_eq!(polled, 0, "no idle poll configured, none done");
        } else {
            assert!(polled > 0, "the network threads polled after the requests");
        }
        drop(client);
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_make_the_threads_poll_only_when_configured() {
    pings_poll_only_when_configured(
        async |address| {
            cairn_driver::Client::connect(&format!("cairn://{address}"))
                .await
                .unwrap()
        },
        async |client| {
            client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await
                .unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_protocol_requests_make_the_threads_poll_only_when_configured() {
    pings_poll_only_when_configured(
        async |address| {
            mongodb::Client::with_uri_str(format!("mongodb://{address}/?directConnection=true"))
                .await
                .unwrap()
        },
        async |client| {
            client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await
                .unwrap();
        },
    )
    .await;
}
