//! `hsm-cli ...`: the `lustrekit hsm ...` command line on its own, for the benchmark
//! scripts and for trying the crate without the whole binary. Same flags, plus `--json`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "hsm-cli", about = "The lustrekit HSM data mover")]
struct Cli {
    /// Print one JSON report on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    hsm: hsm::cli::HsmArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUSTREKIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match hsm::cli::run(cli.hsm, cli.json).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
