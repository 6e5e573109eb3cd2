//! The help as operators read it: every command and subcommand of `romana` has a one-line
//! description of its own (walked over clap's command tree, so a command added without one, or a
//! doc comment that lands on the wrong command, fails here).

use clap::CommandFactory;

use crate::Cli;

/// Every problem of `cmd`'s subcommands, recursively: a missing or multi-line description, or
/// one equal to a sibling's.
fn problems(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let here = format!("{path} {}", sub.get_name());
        match sub.get_about().map(|a| a.to_string()) {
            None => out.push(format!("{here}: no description")),
            Some(a) if a.trim().is_empty() => out.push(format!("{here}: empty description")),
            Some(a) if a.contains('\n') => {
                out.push(format!("{here}: description of more than one line: {a:?}"))
            }
            Some(a) => {
                if let Some((other, _)) = seen.iter().find(|(_, b)| *b == a) {
                    out.push(format!("{here}: the same description as {other}: {a:?}"));
                }
                seen.push((here.clone(), a));
            }
        }
        problems(sub, &here, out);
    }
}

#[test]
fn every_command_has_its_own_one_line_description() {
    let mut out = Vec::new();
    problems(&Cli::command(), "romana", &mut out);
    assert!(out.is_empty(), "{}", out.join("\n"));
}

#[test]
fn the_commands_the_issue_named_say_what_they_are() {
    let cli = Cli::command();
    let about = |name: &str| {
        cli.find_subcommand(name).and_then(|c| c.get_about()).map(|a| a.to_string()).unwrap_or_default()
    };
    assert_eq!(about("endpoint"), "Endpoints (pods, VMs) as policies see them");
    assert!(about("policy").starts_with("Romana policies"), "{}", about("policy"));
}

/// The options every command takes (endpoint, credentials, login) are on every command's help:
/// each says what it is.
#[test]
fn the_global_options_say_what_they_are() {
    let cli = Cli::command();
    let bare: Vec<&str> = cli
        .get_arguments()
        .filter(|a| a.is_global_set() && a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
        .map(|a| a.get_id().as_str())
        .collect();
    assert!(bare.is_empty(), "global options without a description: {bare:?}");
    assert!(cli.get_arguments().filter(|a| a.is_global_set()).count() >= 8, "the walk saw the options");
}

/// The checker itself finds each kind of problem (made-up trees).
#[test]
fn the_walk_finds_what_it_must() {
    let tree = clap::Command::new("x")
        .subcommand(clap::Command::new("a").about("Same."))
        .subcommand(clap::Command::new("b").about("Same."))
        .subcommand(clap::Command::new("c").subcommand(clap::Command::new("d").about("Two\nlines")));
    let mut out = Vec::new();
    problems(&tree, "x", &mut out);
    assert_eq!(
        out,
        [
            "x b: the same description as x a: \"Same.\"",
            "x c: no description",
            "x c d: description of more than one line: \"Two\\nlines\"",
        ]
    );
}
