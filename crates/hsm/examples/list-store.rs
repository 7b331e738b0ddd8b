//! The listing floor of an import: lists a store (or a prefix of it) the way
//! `HsmEngine::import` does, with nothing else, and prints how many objects it saw and how
//! long it took. `scripts/bench-hsm-import.sh` sets import rates against it.
//!
//!   cargo run --release -p hsm --example list-store -- <store spec> [prefix]

use std::time::Instant;

use futures::StreamExt;
use hsm::store::{ArchiveStore, RetryPolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args
        .next()
        .ok_or("usage: list-store <store spec> [prefix]")?;
    let prefix = args.next();
    let store = ArchiveStore::open(&spec, &RetryPolicy::default())?;
    let segs: Vec<&str> = prefix
        .as_deref()
        .map(|p| p.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let key = store.key_for(&segs);
    let started = Instant::now();
    // The local store keeps directories and metadata in a sidecar tree, which import lists
    // too; cloud stores have none.
    let mut sidecars = 0u64;
    let mut listing = store.list_sidecars((!key.as_ref().is_empty()).then_some(&key));
    while let Some(k) = listing.next().await {
        k?;
        sidecars += 1;
    }
    let mut objects = 0u64;
    let mut listing = store.list(Some(&key));
    while let Some(m) = listing.next().await {
        m?;
        objects += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(r#"{{"objects":{objects},"sidecars":{sidecars},"secs":{secs}}}"#);
    Ok(())
}
