//! `lustrekit`: one binary, thin front-ends over the share service, the CSI driver and the
//! HSM mover. Nothing here knows Lustre commands.
//!
//! Must never: hold logic a second front-end would need (that belongs in a library crate).

mod bench;
mod csi_cmd;
mod demo;
mod hsm_cmd;
mod namespace_tenants;
mod operator_cmd;
mod output;
mod pcc_cmd;
mod pvc_annotations;
mod share_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lustrekit",
    version,
    about = "Lustre shares, CSI volumes and HSM tiering"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "LUSTREKIT_CONFIG",
        default_value = "/etc/lustrekit/lustrekit.toml"
    )]
    config: PathBuf,
    /// Print machine-readable JSON (the schema in docs/json-schema.md) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Log verbosity (RUST_LOG syntax), e.g. `info` or `share=debug`.
    #[arg(long, global = true, env = "LUSTREKIT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage shares: the same lifecycle Manila and operators use.
    Share(share_cmd::ShareArgs),
    /// Serve the CSI driver (spec v1.12) on a unix socket.
    Csi(csi_cmd::CsiArgs),
    /// Tier files to object storage: archive, release, restore, import, export, policies.
    Hsm(hsm_cmd::HsmArgs),
    /// Persistent Client Cache upkeep: `pcc purge` keeps a cache below its high watermark.
    Pcc(pcc_cmd::PccArgs),
    /// Run the Kubernetes operator (LustreFileSystem), or print its CRDs.
    Operator(operator_cmd::OperatorArgs),
    /// Run the whole share lifecycle on the embedded local backend, with a report.
    Demo(demo::DemoArgs),
    /// Measurements behind the benchmark figures.
    #[command(hide = true)]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Share(args) => share_cmd::run(&cli.config, json, args).await,
            Command::Csi(args) => csi_cmd::run(args, &cli.config).await,
            Command::Hsm(args) => hsm_cmd::run(args, &cli.config, json).await,
            Command::Pcc(args) => pcc_cmd::run(args, &cli.config, json).await,
            Command::Operator(args) => operator_cmd::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    // A blocking thread stuck in a hung filesystem (its call timed out and was given up)
    // must not keep the process from exiting: wait a little for the rest, then go.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::report_error(&e, json),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument and option of every command, hidden ones too, says what it is.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = super::Cli::command();
        cmd.build();
        walk(&cmd, "lustrekit", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
