//! The CSI driver on its own, with the same flags as `lustrekit csi`, for running the driver
//! (and csi-sanity) before or without the full binary:
//! `cargo run -p csi --example csi-driver -- --mode all --endpoint unix:///tmp/csi.sock --config lustrekit.toml`

use std::io::IsTerminal;

use clap::Parser;

#[derive(Parser)]
#[command(name = "csi-driver", about = "lustrekit CSI driver")]
struct Cli {
    #[command(flatten)]
    csi: csi::CsiArgs,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = csi::run(Cli::parse().csi).await {
        eprintln!("csi-driver: {e}");
        std::process::exit(1);
    }
}
