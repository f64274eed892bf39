//! The embedding guide tells one story, and the code it shows is the code
//! that runs: every `rust` block in `docs/embedding.md` is cut verbatim
//! from an example that `http_upgrades` upgrades under load, the drain
//! contract it states is the one in the `handoff::drain` docs, every
//! relative link in README.md and docs/ resolves, and both say how a
//! library user depends on the crate.
//!
//! Reproduce: `cargo test -p handoff --test embedding_docs`.

use std::path::{Path, PathBuf};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The fenced blocks of `markdown` whose info string is `lang`.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let (mut blocks, mut current): (Vec<String>, Option<Vec<&str>>) = (Vec::new(), None);
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.trim() == lang => current = Some(Vec::new()),
            (Some(lines), Some("")) => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Lines without their indentation: a block cut from inside a function is
/// shown dedented.
fn trimmed(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

#[test]
fn every_rust_block_of_the_guide_is_cut_from_an_example() {
    let guide = read("docs/embedding.md");
    let examples = [
        "handoff/examples/http_server.rs",
        "handoff/examples/http_server_tokio.rs",
    ]
    .map(read);
    let blocks = fenced_blocks(&guide, "rust");
    assert!(blocks.len() >= 6, "found {} rust blocks", blocks.len());
    for block in blocks {
        let wanted = trimmed(&block);
        let found = examples.iter().any(|example| {
            trimmed(example)
                .windows(wanted.len())
                .any(|window| window == wanted.as_slice())
        });
        assert!(
            found,
            "docs/embedding.md shows code that no example contains:\n{block}"
        );
    }
}

/// The contract section of `handoff/src/drain.rs`'s module docs, as the
/// guide renders it (intra-doc links as code, its heading one level down).
fn contract_of_the_drain_module() -> String {
    let source = read("handoff/src/drain.rs");
    let docs: Vec<&str> = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect();
    let start = docs
        .iter()
        .position(|l| *l == "# The drain contract")
        .unwrap()
        + 2;
    let end = docs.iter().position(|l| *l == "# Example").unwrap() - 1;
    let mut text = docs[start..end].join("\n");
    text = text.replace(
        "# When a client may resend",
        "#### When a client may resend",
    );
    // [`Drain::drain`] and [`Drainable::drain`](crate::...) → `Drain::drain`
    while let Some(at) = text.find("[`") {
        let close = at + text[at..].find("`]").expect("closing `]");
        let mut end = close + 2;
        if text[end..].starts_with("(crate::") {
            end += text[end..].find(')').expect("closing )") + 1;
        }
        text.replace_range(close + 1..end, "");
        text.replace_range(at..at + 1, "");
    }
    text
}

#[test]
fn the_guide_states_the_drain_contract_of_the_drain_module() {
    let guide = read("docs/embedding.md");
    let contract = contract_of_the_drain_module();
    assert!(
        guide.contains(&contract),
        "docs/embedding.md must state the contract of handoff/src/drain.rs word for word:\n{contract}"
    );
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut files = vec![repo_file("README.md")];
    for entry in std::fs::read_dir(repo_file("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (_, rest) in text
            .match_indices("](")
            .map(|(at, _)| ((), &text[at + 2..]))
        {
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if !file.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
}

#[test]
fn library_users_are_told_to_turn_the_supervisor_binary_off() {
    let version = env!("CARGO_PKG_VERSION");
    let minor = version.rsplit_once('.').unwrap().0;
    let line = format!("handoff = {{ version = \"{minor}\", default-features = false }}");
    for doc in ["README.md", "docs/embedding.md"] {
        assert!(read(doc).contains(&line), "{doc} does not say `{line}`");
    }
}
