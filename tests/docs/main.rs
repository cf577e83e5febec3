//! The reference pages generated from the code, checked so they cannot drift: the pass reference
//! from the pass registry, the command reference from the command-line definitions. Regenerate
//! with `MDEPLOY_WRITE_DOCS=1 cargo test --test docs`.

#[path = "../common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::{stderr, stdout};

/// Runs mdeploy with a fixed help width, whatever the terminal.
fn mdeploy(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mdeploy"))
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .unwrap()
}
use serde_json::Value;

/// Compares a generated page with the checked-in one, or writes it when asked.
fn check_page(relative: &str, generated: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if std::env::var_os("MDEPLOY_WRITE_DOCS").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "{relative} is out of date: regenerate it with MDEPLOY_WRITE_DOCS=1 cargo test --test docs"
    );
}

#[test]
fn the_pass_reference_is_generated_from_the_registry() {
    let o = mdeploy(&["optimize", "--list-passes", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let passes: Vec<Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(passes.len() >= 30);
    let mut page = String::from(
        "# Pass reference\n\n<!-- generated from the pass registry by `MDEPLOY_WRITE_DOCS=1 cargo \
         test --test docs`; do not edit -->\n\n`mdeploy optimize` runs these passes in this order \
         (`-O1`: cleanup and fold passes; `-O2`, the default: all) until none changes anything. \
         `cleanup` passes leave results bit-identical, `fold` passes up to the evaluator's float \
         rounding, `fusion` passes change floats by reassociation only. See \
         [optimize.md](optimize.md).\n\n| pass | kind | what it does |\n|---|---|---|\n",
    );
    for p in &passes {
        let _ = writeln!(
            page,
            "| `{}` | {} | {} |",
            p["name"].as_str().unwrap(),
            p["kind"].as_str().unwrap(),
            p["details"].as_str().unwrap().replace('|', "\\|")
        );
    }
    check_page("docs/passes.md", &page);
}

/// The subcommands `mdeploy --help` lists.
fn subcommands() -> Vec<String> {
    let o = mdeploy(&["--help"]);
    let text = stdout(&o);
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_command_reference_is_generated_from_the_definitions_and_every_command_has_examples() {
    let commands = subcommands();
    assert!(commands.len() >= 10, "{commands:?}");
    let mut page = String::from(
        "# Command reference\n\n<!-- generated from the command-line definitions by \
         `MDEPLOY_WRITE_DOCS=1 cargo test --test docs`; do not edit -->\n\nEvery command prints \
         data (or with `--json` one JSON document) on stdout and notes on stderr. Exit codes: 0 \
         success, 1 a check failed (verification, accuracy target, signature), 2 bad input or \
         usage (the error names the file, node, op or key; `hint:` lines say the likely fix), 3 \
         internal error. The user guide is [guide.md](guide.md).\n\n",
    );
    let o = mdeploy(&["--help"]);
    let _ = writeln!(page, "## mdeploy\n\n```text\n{}```\n", stdout(&o));
    for c in &commands {
        let o = mdeploy(&[c, "--help"]);
        assert!(o.status.success(), "{c}: {}", stderr(&o));
        let help = stdout(&o);
        assert!(
            help.contains("Examples:"),
            "`mdeploy {c} --help` has no examples"
        );
        let _ = writeln!(page, "## mdeploy {c}\n\n```text\n{help}```\n");
    }
    check_page("docs/commands.md", &page);
}

#[test]
fn shells_get_completions_and_the_man_page_covers_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let o = mdeploy(&["completions", shell]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("optimize"), "{shell}");
    }
    let o = mdeploy(&["manpage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let man = stdout(&o);
    assert!(
        man.starts_with(".ie") || man.contains(".TH mdeploy"),
        "{}",
        &man[..200.min(man.len())]
    );
    for c in subcommands() {
        assert!(
            man.contains(&format!(".TH mdeploy-{c}")),
            "no man page for {c}"
        );
    }
}
