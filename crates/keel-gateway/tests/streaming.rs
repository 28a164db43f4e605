//! Streaming through the gateway with bounded memory.

mod support;

use keel_core::ByteSize;
use support::{App, client, gateway};

/// 1 GiB each way through the gateway, in this one process (upstream, gateway and client):
/// resident memory grows by a small fraction of that, so nothing buffers a whole body. Alone in
/// its test binary, so no other test's allocations count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    const SIZE: usize = 1024 * 1024 * 1024;
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| c.max_body = ByteSize::gib(2)).await;
    let before = support::rss();

    let mut download = client()
        .get(format!("http://{gw}/download/{SIZE}"))
        .send()
        .await
        .unwrap();
    let mut received = 0;
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, SIZE);

    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = futures_util::stream::iter(
        (0..SIZE / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let uploaded = client()
        .post(format!("http://{gw}/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.text().await.unwrap(), SIZE.to_string());

    let grown = support::rss().saturating_sub(before);
    eprintln!("RSS grew by {} MiB", grown >> 20);
    assert!(grown < 48 * 1024 * 1024, "RSS grew by {} MiB", grown >> 20);
}
