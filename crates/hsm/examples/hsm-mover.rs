//! A tiny mover process: `hsm-mover <archive|release|restore|state> <store-spec> <root> <path>`.
//! Env `HSM_RATE` caps bytes per second (so tests can SIGKILL it mid-copy).
//! Prints the JSON report; exits 1 on error.

use std::path::PathBuf;
use std::sync::Arc;

use hsm::{ArchiveStore, EngineConfig, HsmEngine};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: hsm-mover <archive|release|restore|state> <store-spec> <root> <path>");
        std::process::exit(2);
    }
    let cfg = EngineConfig {
        root: PathBuf::from(&args[3]),
        part_size: 1 << 20,
        rate_limit_bytes_per_sec: std::env::var("HSM_RATE").ok().and_then(|r| r.parse().ok()),
        ..EngineConfig::default()
    };
    let run = async {
        let backend = backend::local::LocalBackend::open(&cfg.root).await?;
        let store = ArchiveStore::open(&args[2], &cfg.retry)?;
        hsm::engine::ignore_lease_break_signal();
        let engine = HsmEngine::new(store, Arc::new(backend), cfg.clone());
        let path = PathBuf::from(&args[4]);
        let out = match args[1].as_str() {
            "archive" => serde_json::to_string(&engine.archive(&path).await?),
            "release" => serde_json::to_string(&engine.release(&path).await?),
            "restore" => serde_json::to_string(&engine.restore(&path).await?),
            "state" => serde_json::to_string(&engine.state(&path).await?),
            other => return Err(hsm::HsmError::Unsupported(format!("unknown op {other}"))),
        };
        Ok::<_, hsm::HsmError>(out.unwrap_or_default())
    };
    match run.await {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("hsm-mover: {e}");
            std::process::exit(1);
        }
    }
}
