// SPDX-License-Identifier: GPL-2.0-only
//! Reading one iptables command: the command word and its positional arguments (`-A CHAIN`,
//! `-I CHAIN N`, `-P CHAIN POLICY`, …) apart from the rule options that follow, without
//! changing any table; `apply.rs` applies what is read.

use super::TableKind;
use crate::tokenize::Word;

/// The command of a line and its positional arguments.
pub(super) enum Command {
    Append(String),
    Insert(String, usize),
    Delete(String, Option<usize>),
    Replace(String, usize),
    NewChain(String),
    DeleteChain(Option<String>),
    Flush(Option<String>),
    Policy(String, String),
    Rename(String, String),
    Zero,
}

fn number(word: Option<&Word>) -> Option<usize> {
    word.and_then(|w| w.text.parse().ok()).filter(|n| *n > 0)
}

/// Reads one iptables command (the words after `iptables`, or a restore line): its table
/// (`-t`, filter by default), the command and the words of its rule options.
pub(super) fn read_command(words: &[Word], restore: bool) -> Result<(TableKind, Command, Vec<&Word>), String> {
    let mut table = TableKind::Filter;
    let mut command: Option<Command> = None;
    let mut options: Vec<&Word> = Vec::new();
    let mut i = 0;
    let positional = |i: usize| words.get(i).filter(|w| !w.text.starts_with('-') || w.text.len() == 1);
    while let Some(word) = words.get(i) {
        i += 1;
        let found = match word.text.as_str() {
            "-t" | "--table" => {
                let name = words.get(i).map(|w| w.text.as_str()).unwrap_or("");
                i += 1;
                if restore {
                    return Err("-t cannot be used in an iptables-save block; the block's *TABLE line names it".into());
                }
                table = TableKind::of_name(name)
                    .ok_or_else(|| format!("table {name:?} is not modelled; seng-sim simulates the raw, mangle, nat and filter tables"))?;
                None
            }
            "-w" | "--wait" => {
                if words.get(i).is_some_and(|w| w.text.parse::<u32>().is_ok()) {
                    i += 1;
                }
                None
            }
            "-W" | "--wait-interval" => {
                i += 1;
                None
            }
            "-A" | "--append" | "-I" | "--insert" | "-D" | "--delete" | "-R" | "--replace" | "-N" | "--new-chain" | "-P"
            | "--policy" | "-E" | "--rename-chain" => {
                let Some(chain) = positional(i) else {
                    return Err(format!("{} needs a chain name", word.text));
                };
                let chain = chain.text.clone();
                i += 1;
                Some(match word.text.as_str() {
                    "-A" | "--append" => Command::Append(chain),
                    "-I" | "--insert" => {
                        let at = number(words.get(i));
                        if at.is_some() {
                            i += 1;
                        }
                        Command::Insert(chain, at.unwrap_or(1))
                    }
                    "-D" | "--delete" => {
                        let at = number(words.get(i));
                        if at.is_some() {
                            i += 1;
                        }
                        Command::Delete(chain, at)
                    }
                    "-R" | "--replace" => {
                        let at = number(words.get(i)).ok_or("-R needs a rule number after the chain")?;
                        i += 1;
                        Command::Replace(chain, at)
                    }
                    "-N" | "--new-chain" => Command::NewChain(chain),
                    "-P" | "--policy" => {
                        let policy = positional(i).ok_or("-P needs a policy after the chain")?.text.clone();
                        i += 1;
                        Command::Policy(chain, policy)
                    }
                    _ => {
                        let new = positional(i).ok_or("-E needs the new chain name")?.text.clone();
                        i += 1;
                        Command::Rename(chain, new)
                    }
                })
            }
            "-F" | "--flush" | "-X" | "--delete-chain" | "-Z" | "--zero" => {
                let chain = positional(i).map(|w| w.text.clone());
                if chain.is_some() {
                    i += 1;
                }
                Some(match word.text.as_str() {
                    "-F" | "--flush" => Command::Flush(chain),
                    "-X" | "--delete-chain" => Command::DeleteChain(chain),
                    _ => Command::Zero,
                })
            }
            "-L" | "--list" | "-S" | "--list-rules" | "-C" | "--check" => {
                return Err(format!("{} does not change the table; a rules file holds only commands that do", word.text));
            }
            _ => {
                options.push(word);
                None
            }
        };
        if let Some(c) = found {
            if command.is_some() {
                return Err(format!("{} is a second command on one line", word.text));
            }
            command = Some(c);
        }
    }
    let Some(command) = command else {
        return Err(if restore {
            "expected a command such as -A CHAIN".into()
        } else {
            "no command (-A, -I, -D, -R, -N, -X, -F, -P, -E or -Z)".into()
        });
    };
    let rule_command = matches!(command, Command::Append(_) | Command::Insert(..) | Command::Replace(..) | Command::Delete(_, None));
    if !rule_command && !options.is_empty() {
        return Err(format!("unexpected {:?} for this command", options[0].text));
    }
    Ok((table, command, options))
}
