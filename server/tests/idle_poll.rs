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

/// Whether the network threads polled after the requests so far (with the poll configured,
/// they must; without, they must not), and that serverStatus reports the setting.
async fn check(idle_poll_micros: u64, node: &EmbeddedNode) {
    let (setting, polled) = idle_poll_status(node);
    assert_eq!(setting, idle_poll_micros as i64);
    if idle_poll_micros == 0 {
        assert_eq!(polled, 0, "no idle poll configured, none done");
    } else {
        assert!(polled > 0, "the network threads polled after the requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_make_the_threads_poll_only_when_configured() {
    for idle_poll_micros in [0, 5_000] {
        let node = start(idle_poll_micros).await;
        let client = cairn_driver::Client::connect(&format!("cairn://{}", node.address))
            .await
            .unwrap();
        // Pings run inline on the network thread: only their arrival starts the poll.
        for _ in 0..20 {
            client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        check(idle_poll_micros, &node).await;
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_protocol_requests_make_the_threads_poll_only_when_configured() {
    for idle_poll_micros in [0, 5_000] {
        let node = start(idle_poll_micros).await;
        let client = mongodb::Client::with_uri_str(format!(
            "mongodb://{}/?directConnection=true",
            node.address
        ))
        .await
        .unwrap();
        for _ in 0..20 {
            client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        check(idle_poll_micros, &node).await;
        drop(client);
        node.stop().await.unwrap();
    }
}
