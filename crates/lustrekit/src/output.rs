//! Printing results as text or JSON, and errors with stable exit codes.

use std::process::ExitCode;

use serde::Serialize;
use share::ShareError;

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Exit codes scripts can rely on: 2 bad input, 3 not found, 4 conflict or busy, 1 anything
/// else.
fn exit_code(code: &str) -> u8 {
    match code {
        "invalid_argument" | "config" => 2,
        "not_found" => 3,
        "conflict"
        | "busy"
        | "access_conflict"
        | "shrink_below_usage"
        | "project_ids_in_use"
        | "project_ids_exhausted" => 4,
        _ => 1,
    }
}

pub fn report_error(error: &anyhow::Error, json: bool) -> ExitCode {
    // A tree operation with some failed paths has printed its full report already.
    if error.is::<crate::hsm_cmd::PartialFailure>() {
        if !json {
            eprintln!("error: {error:#}");
        }
        return ExitCode::from(1);
    }
    let code = error
        .downcast_ref::<ShareError>()
        .map(ShareError::code)
        .unwrap_or("error");
    let message = format!("{error:#}");
    if json {
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        println!("{body}");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(exit_code(code))
}

/// `1.5 GiB`: binary units up to PiB.
pub fn human_bytes(bytes: u64) -> String {
    scaled(bytes, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

/// [`human_bytes`] up to TiB, as the `hsm` reports print it.
pub fn human_bytes_tib(bytes: u64) -> String {
    scaled(bytes, &["B", "KiB", "MiB", "GiB", "TiB"])
}

fn scaled(bytes: u64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
