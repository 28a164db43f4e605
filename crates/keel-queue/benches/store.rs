//! The queue without HTTP: how many jobs per second the SQLite store adds in bulk and
//! processes, by direct store calls (fetch a batch, complete it, a few loops at once) and by an
//! in-process worker (`Queues::worker`) running a no-op handler. Run with
//! `cargo bench -p keel-queue --bench store -- [jobs] [concurrency]` (defaults 50000, 100).

mod throughput;

use keel_core::Clock;
use keel_queue::{Durability, SqliteStore};
use throughput::{add_all, arg, process_direct, process_in_process};

fn open(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(&dir.path().join(name), Durability::Normal, Clock::system())
        .expect("the store opens")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (jobs, concurrency) = (arg(0, 50_000), arg(1, 100));
    let dir = tempfile::tempdir().expect("a temporary directory");

    let store = open(&dir, "direct.db");
    println!("add         {:>9.0} jobs/s", add_all(&store, jobs).await);
    let rate = process_direct(&store, jobs, concurrency).await;
    println!("direct      {rate:>9.0} jobs/s");

    let store = open(&dir, "worker.db");
    add_all(&store, jobs).await;
    let rate = process_in_process(store, jobs, concurrency).await;
    println!("in-process  {rate:>9.0} jobs/s");
}
