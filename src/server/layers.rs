//! The layers' import rules, checked on the source: dependencies run one way, ports → session →
//! streams → core, and a lower layer never names a higher one. See ARCHITECTURE.md, "Layers".

use std::path::Path;

/// What each layer's files must not name, as paths from `crate::server`.
const RULES: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "session",
            "ports",
            "streams",
            "dispatch",
            "auth_pool",
            "api",
        ],
    ),
    (
        "cluster",
        &["session", "ports", "streams", "dispatch", "auth_pool"],
    ),
    ("streams", &["session", "ports", "dispatch", "auth_pool"]),
    ("session", &["ports", "dispatch"]),
];

/// The source without comments, with every path into the broker written from `crate::server`
/// (`super::` in a layer's `mod.rs`, `super::super::` in its other files), and
/// `crate::api` as `crate::server::api` so one rule covers both.
fn normalized(source: &str, is_mod: bool) -> String {
    let code: Vec<&str> = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect();
    let code = code.join("\n").replace("crate::api", "crate::server::api");
    if is_mod {
        code.replace("super::", "crate::server::")
    } else {
        code.replace("super::super::", "crate::server::")
    }
}

/// The modules of `crate::server` that `code` names, in paths (`crate::server::x::..`) and in
/// groups (`crate::server::{x, y::..}`).
fn named_modules(code: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::server::") {
        let rest = &code[at + "crate::server::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    named.push(name.to_string());
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            named.push(rest[..end].to_string());
        }
    }
    named
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a layer's directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let mut broken = Vec::new();
    for (layer, forbidden) in RULES {
        let files = rust_files(&server.join(layer));
        assert!(!files.is_empty(), "layer {layer} has no files");
        for file in files {
            let source = std::fs::read_to_string(&file).expect("a source file");
            let is_mod = file.parent() == Some(&server.join(layer))
                && file.file_name().is_some_and(|n| n == "mod.rs");
            for name in named_modules(&normalized(&source, is_mod)) {
                if forbidden.contains(&name.as_str()) {
                    broken.push(format!("{} names server::{name}", file.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layers:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_paths_groups_and_super() {
    let grouped = "use crate::server::{\n    ShardId,\n    session::Conn,\n};";
    assert_eq!(
        named_modules(&normalized(grouped, false)),
        ["ShardId", "session"]
    );
    let from_mod = "use super::streams::Partition; // super::ports in a comment";
    assert_eq!(named_modules(&normalized(from_mod, true)), ["streams"]);
    let nested = "use super::super::ports::conn;\nuse super::interest::LocalSub;";
    assert_eq!(named_modules(&normalized(nested, false)), ["ports"]);
    let api = "fn f(_: crate::api::StreamConfig) {}";
    assert_eq!(named_modules(&normalized(api, false)), ["api"]);
}
