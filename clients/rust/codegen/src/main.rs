//! Regenerates `clients/rust/src/gen` from a FileDescriptorSet built by buf.
//!
//! Usage: `runwire-codegen <descriptor-set.binpb> <out-dir>`.
//!
//! buf compiles the protos with its own compiler, so no protoc is needed; this
//! binary feeds the descriptors to prost-build (messages), tonic-prost-build
//! (client and server stubs) and pbjson-build (proto3 JSON via serde), then
//! pretty-prints every file with prettyplease so the output is byte-for-byte
//! deterministic for the pinned crate versions, whatever rustfmt is installed.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::FileDescriptorSet;

/// The protobuf package this client is generated for.
const PACKAGE: &str = "runwire.v1";

/// google.protobuf.Timestamp maps to the client's own type: pbjson-types
/// prints `+00:00` where proto3 JSON requires `Z` (see `src/wkt.rs`).
const TIMESTAMP_PATH: &str = "crate::wkt::Timestamp";

/// Every other well-known type (Duration, Struct) comes from pbjson-types,
/// whose JSON mapping is the proto3 one.
const WKT_PATH: &str = "::pbjson_types";

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [fds_path, out_dir] = args.as_slice() else {
        return Err("usage: runwire-codegen <descriptor-set.binpb> <out-dir>".into());
    };
    let fds_bytes = fs::read(fds_path)?;
    let fds = FileDescriptorSet::decode(fds_bytes.as_slice())?;

    // Generate into a scratch directory next to the output, then replace the
    // output whole, so files of removed packages cannot linger.
    let scratch = out_dir.with_extension("tmp");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    fs::create_dir_all(&scratch)?;

    generate_messages_and_services(fds, &scratch)?;
    generate_serde(&fds_bytes, &scratch)?;

    let mut names = Vec::new();
    for entry in fs::read_dir(&scratch)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !name.starts_with(&format!("{PACKAGE}.")) {
            return Err(format!("unexpected generated file {name}: only {PACKAGE} is generated").into());
        }
        pretty_print(&path)?;
        names.push(name);
    }
    names.sort();

    if out_dir.exists() {
        fs::remove_dir_all(out_dir)?;
    }
    fs::rename(&scratch, out_dir)?;
    for name in names {
        println!("generated {}", out_dir.join(name).display());
    }
    Ok(())
}

fn generate_messages_and_services(fds: FileDescriptorSet, out: &Path) -> Result<(), Box<dyn Error>> {
    let mut config = prost_build::Config::new();
    config.format(false);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // Server methods a test double leaves out answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // "Compile" the well-known types means "don't map them to
        // prost-types": the extern paths below map them instead.
        .compile_well_known_types(true)
        .out_dir(out)
        .extern_path(".google.protobuf.Timestamp", TIMESTAMP_PATH)
        .extern_path(".google.protobuf", WKT_PATH)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

fn generate_serde(fds_bytes: &[u8], out: &Path) -> Result<(), Box<dyn Error>> {
    pbjson_build::Builder::new()
        .register_descriptors(fds_bytes)?
        .out_dir(out)
        .extern_path(".google.protobuf.Timestamp", TIMESTAMP_PATH)
        .extern_path(".google.protobuf", WKT_PATH)
        .build(&[format!(".{PACKAGE}")])?;
    let path = out.join(format!("{PACKAGE}.serde.rs"));
    fs::write(&path, patch_serde(&fs::read_to_string(&path)?)?)?;
    Ok(())
}

/// Makes pbjson's (0.9) JSON mapping read and write what proto3 JSON allows
/// and every other runwire client does, with no option for it upstream:
///
/// - an enum number this client does not name (a newer server's value) is
///   written as that number instead of failing the whole event, and read
///   from JSON as a number instead of being refused
///   (`crate::json::OpenEnum`);
/// - `null` for a singular field reads as the field's default (pbjson
///   refused it for scalars, enums and repeated fields).
///
/// Each patch must match: a pbjson that generates otherwise fails here
/// instead of silently dropping the fix.
fn patch_serde(source: &str) -> Result<String, Box<dyn Error>> {
    let patches: [(&str, &str, &str); 4] = [
        (
            "an unnamed enum number is written as the number",
            r#"let v = ([\w:]+)::try_from\(self\.(\w+)\)\s*\.map_err\(\|_\|\s*serde::ser::Error::custom\(\s*format!\("Invalid variant \{\}", self\.\w+\),?\s*\)\)\?;\s*struct_ser\.serialize_field\("(\w+)", &v\)\?;"#,
            r#"match $1::try_from(self.$2) { Ok(v) => struct_ser.serialize_field("$3", &v)?, Err(_) => struct_ser.serialize_field("$3", &self.$2)? }"#,
        ),
        (
            "an enum is read by name or by any number, null as the default",
            r"(\w+__) =\s*Some\(\s*map_\.next_value::<([\w:]+)>\(\)\? as i32,?\s*\)\s*;",
            r"$1 = map_.next_value::<::std::option::Option<crate::json::OpenEnum<$2>>>()?.map(|v| v.0);",
        ),
        (
            "a number or bytes field reads null as the default",
            r"(\w+__) =\s*Some\(\s*map_\s*\.next_value::<(::pbjson::private::\w+Deserialize<_>)>\(\)\?\s*\.0,?\s*\)\s*;",
            r"$1 = map_.next_value::<::std::option::Option<$2>>()?.map(|v| v.0);",
        ),
        (
            "any other singular or repeated field reads null as the default",
            r"(\w+__) =\s*Some\(\s*map_\.next_value\(\)\?\s*\)\s*;",
            r"$1 = map_.next_value::<::std::option::Option<_>>()?;",
        ),
    ];
    let mut text = source.to_owned();
    for (what, pattern, replacement) in patches {
        let re = regex::Regex::new(pattern)?;
        if !re.is_match(&text) {
            return Err(format!("pbjson output changed: no match for the patch {what:?}").into());
        }
        text = re.replace_all(&text, replacement).into_owned();
    }
    Ok(text)
}

/// Re-prints a generated file with prettyplease, behind a header that says
/// where it came from.
fn pretty_print(path: &Path) -> Result<(), Box<dyn Error>> {
    let source = fs::read_to_string(path)?;
    let file =
        syn::parse_file(&source).map_err(|e| format!("{}: generated code does not parse: {e}", path.display()))?;
    let body = prettyplease::unparse(&file);
    let header = "// @generated by clients/rust/codegen from protos/runwire/v1 (`make -C clients/rust gen`).\n\
                  // Never edit: change the protos and regenerate.\n";
    fs::write(path, format!("{header}{body}"))?;
    Ok(())
}
