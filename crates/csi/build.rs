//! Compiles `proto/csi.proto` with protox (pure Rust, no `protoc`) and tonic-prost-build.
//!
//! Every message with a field marked `[(csi_secret) = true]` gets its derived `Debug` replaced
//! by a generated one that prints `<redacted>` for those fields, so a secret cannot reach a log
//! through `{:?}`. The set of messages is read from the proto's own options, not kept by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use prost_reflect::{DescriptorPool, MessageDescriptor, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_file("csi.proto")?;
    let pool = compiler.descriptor_pool();

    let secret_messages = secret_messages(&pool)?;
    let mut builder = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true);
    for message in secret_messages.keys() {
        builder = builder.skip_debug([format!(".{message}")]);
    }
    builder.compile_fds(compiler.file_descriptor_set())?;

    std::fs::write(
        out_dir.join("csi_redacted_debug.rs"),
        redacted_debug(&secret_messages),
    )?;
    std::fs::write(
        out_dir.join("csi_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    compile_plugin_registration()?;
    Ok(())
}

/// The kubelet's plugin registration API (`pluginregistration`), for self-registration
/// without node-driver-registrar (src/registration.rs).
fn compile_plugin_registration() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.open_file("pluginregistration.proto")?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// One Rust field of a message: its name and whether it holds secrets.
struct RustField {
    name: String,
    secret: bool,
}

/// Messages by full name, each with its Rust fields.
type SecretMessages = BTreeMap<String, (MessageDescriptor, Vec<RustField>)>;

/// Full names (`csi.v1.CreateVolumeRequest`) of the messages with a `csi_secret` field, each
/// with its Rust fields in declaration order (oneofs collapse into one field).
fn secret_messages(pool: &DescriptorPool) -> Result<SecretMessages, Box<dyn std::error::Error>> {
    let ext = pool
        .get_extension_by_name("csi.v1.csi_secret")
        .ok_or("csi.proto does not declare the csi_secret extension")?;
    let mut found = BTreeMap::new();
    for message in pool.all_messages() {
        if !message.package_name().starts_with("csi.") || message.is_map_entry() {
            continue;
        }
        let is_secret = |field: &prost_reflect::FieldDescriptor| {
            let options = field.options();
            options.has_extension(&ext)
                && matches!(options.get_extension(&ext).as_ref(), Value::Bool(true))
        };
        if !message.fields().any(|f| is_secret(&f)) {
            continue;
        }
        let mut fields: Vec<RustField> = Vec::new();
        for field in message.fields() {
            match field.containing_oneof() {
                Some(oneof) => {
                    if !fields.iter().any(|f| f.name == oneof.name()) {
                        fields.push(RustField {
                            name: oneof.name().to_string(),
                            secret: false,
                        });
                    }
                }
                None => {
                    // The spec only marks maps as secret; `len()` below relies on that, so a
                    // secret of another kind fails the build instead of leaking.
                    if is_secret(&field) && !field.is_map() {
                        return Err(format!(
                            "{}: csi_secret on a non-map field",
                            field.full_name()
                        )
                        .into());
                    }
                    fields.push(RustField {
                        name: field.name().to_string(),
                        secret: is_secret(&field),
                    });
                }
            }
        }
        found.insert(message.full_name().to_string(), (message.clone(), fields));
    }
    if found.is_empty() {
        return Err("no csi_secret fields found: is the option set in csi.proto?".into());
    }
    Ok(found)
}

fn rust_ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &["type", "match", "ref", "move", "self", "async", "await"];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

fn redacted_debug(messages: &SecretMessages) -> String {
    let mut out = String::from(
        "// @generated by build.rs: Debug for the messages that carry csi_secret fields.\n\n\
         /// The names of the messages whose secrets are redacted, for tests.\n\
         pub const REDACTED_MESSAGES: &[&str] = &[\n",
    );
    for name in messages.keys() {
        let _ = writeln!(out, "    {name:?},");
    }
    out.push_str("];\n\n");
    for (message, fields) in messages.values() {
        let rust_name = message.name();
        let _ = writeln!(
            out,
            "impl ::core::fmt::Debug for {rust_name} {{\n    \
             fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{\n        \
             f.debug_struct({rust_name:?})"
        );
        for field in fields {
            let ident = rust_ident(&field.name);
            if field.secret {
                let _ = writeln!(
                    out,
                    "            .field({:?}, &crate::grpc::Redacted(self.{ident}.len()))",
                    field.name
                );
            } else {
                let _ = writeln!(out, "            .field({:?}, &self.{ident})", field.name);
            }
        }
        out.push_str("            .finish()\n    }\n}\n\n");
    }
    out
}
