//! `corral completions SHELL` and `corral man`: generated from the clap definitions, so they
//! never drift from the commands (clap_complete, clap_mangen).

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// Prints the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "corral", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Prints `corral(1)` as roff to standard output: the page clap_mangen makes for the
/// command, then a section per subcommand with its options.
pub fn man_page() -> anyhow::Result<ExitCode> {
    let command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        writeln!(
            out,
            ".SH \"CORRAL {}\"",
            roff_text(&sub.get_name().to_uppercase())
        )?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", roff_text(&about.to_string()))?;
        }
        let mut nested: Vec<&clap::Command> = vec![sub];
        nested.extend(sub.get_subcommands());
        for command in nested {
            if !std::ptr::eq(command, sub) {
                writeln!(
                    out,
                    ".SS \"corral {} {}\"",
                    sub.get_name(),
                    command.get_name()
                )?;
                if let Some(about) = command.get_about() {
                    writeln!(out, "{}", roff_text(&about.to_string()))?;
                }
            }
            for argument in command
                .get_arguments()
                .filter(|argument| !argument.is_hide_set())
            {
                let name = match (argument.get_long(), argument.get_short()) {
                    (Some(long), Some(short)) => format!("\\-{short}, \\-\\-{long}"),
                    (Some(long), None) => format!("\\-\\-{long}"),
                    (None, Some(short)) => format!("\\-{short}"),
                    (None, None) => format!("<{}>", argument.get_id()),
                };
                writeln!(out, ".TP\n\\fB{name}\\fR")?;
                if let Some(help) = argument.get_help() {
                    writeln!(out, "{}", roff_text(&help.to_string()))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Text safe in a roff line: backslashes and hyphens escaped, no leading control dot.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    match escaped.strip_prefix(['.', '\'']) {
        Some(_) => format!("\\&{escaped}"),
        None => escaped,
    }
}
