// SPDX-License-Identifier: GPL-2.0-only
//! Applying a command read by `command.rs` to a table: chains created, renamed and deleted,
//! rules appended, inserted, replaced and deleted, policies set, as iptables does.


use super::command::{read_command, Command};
use super::rule::parse_rule;
use super::rule::UNMODELLED_TARGETS;
use super::{Chain, Policy, Ruleset, Table, TableKind, Target, BUILTIN_CHAINS};
use seng_core::Family;
use crate::tokenize::Word;

pub(super) fn declare_chain(table: &mut Table, name: &str, policy: Option<&str>) -> Result<(), String> {
    let builtin = table.kind.has_builtin(name);
    match (builtin, policy) {
        (true, Some("DROP")) if table.kind == TableKind::Nat => Err(nat_drop()),
        (true, Some("ACCEPT")) | (true, Some("DROP")) => {
            let policy = if policy == Some("ACCEPT") { Policy::Accept } else { Policy::Drop };
            if let Some(chain) = table.chain_mut(name) {
                chain.policy = Some(policy);
            }
            Ok(())
        }
        (true, other) => Err(format!("built-in chain {name} needs the policy ACCEPT or DROP, found {:?}", other.unwrap_or(""))),
        (false, Some("-")) => new_chain(table, name),
        (false, other) => Err(format!(
            "{name:?} is not a built-in chain of the {} table ({}), so it takes \"-\" instead of the policy {:?}",
            table.kind.name(),
            table.kind.builtin_list(),
            other.unwrap_or("")
        )),
    }
}

/// iptables' own refusal of DROP in the nat table.
pub(super) fn nat_drop() -> String {
    "the nat table is not intended for filtering; iptables inhibits DROP there".into()
}

pub(super) fn check_chain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 28 || name.starts_with('-') || name.starts_with('!') || name.chars().any(|c| c.is_whitespace()) {
        return Err(format!("invalid chain name {name:?} (1-28 characters, no blanks, not starting with - or !)"));
    }
    if UNMODELLED_TARGETS.contains(&name)
        || ["ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "QUEUE", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "CT", "NOTRACK", "MARK", "CONNMARK"]
            .contains(&name)
        || BUILTIN_CHAINS.contains(&name)
    {
        return Err(format!("chain name {name:?} is a target name"));
    }
    Ok(())
}

fn new_chain(table: &mut Table, name: &str) -> Result<(), String> {
    check_chain_name(name)?;
    if table.chain(name).is_some() {
        return Err(format!("chain {name:?} already exists"));
    }
    // libiptc keeps user chains sorted by name; listing and saving show them in that order.
    let at = table.chains.iter().position(|c| c.policy.is_none() && c.name.as_str() > name).unwrap_or(table.chains.len());
    table.chains.insert(at, Chain { name: name.into(), policy: None, rules: Vec::new() });
    Ok(())
}

fn chain_mut<'t>(table: &'t mut Table, name: &str) -> Result<&'t mut Chain, String> {
    let command = table.command();
    let kind = table.kind.name();
    table.chain_mut(name).ok_or_else(|| format!("{command} has no chain {name:?} in the {kind} table (create it with -N first)"))
}

/// Runs one typed iptables command (the words after `iptables`) on the ruleset.
pub(super) fn run_typed(ruleset: &mut Ruleset, family: Family, words: &[Word], line: usize) -> Result<(), String> {
    let (kind, command, options) = read_command(words, false)?;
    let table = ruleset.table_mut(family, kind);
    table.declared = true;
    apply(table, command, &options, line)
}

/// Runs one line of an iptables-save block on `table`.
pub(super) fn run_restore_line(table: &mut Table, words: &[Word], line: usize) -> Result<(), String> {
    let (_, command, options) = read_command(words, true)?;
    apply(table, command, &options, line)
}

/// Applies a command read from line `line`, with its rule options, to `table`.
fn apply(table: &mut Table, command: Command, options: &[&Word], line: usize) -> Result<(), String> {
    let family = table.family;
    let kind = table.kind;
    match command {
        Command::Append(chain) => {
            let rules = parse_rule(options, family, kind, &chain, line)?;
            chain_mut(table, &chain)?.rules.extend(rules);
        }
        Command::Insert(chain, at) => {
            let rules = parse_rule(options, family, kind, &chain, line)?;
            let c = chain_mut(table, &chain)?;
            if at > c.rules.len() + 1 {
                return Err(format!("index of insertion too big: chain {chain} has {} rules", c.rules.len()));
            }
            for (k, rule) in rules.into_iter().enumerate() {
                c.rules.insert(at - 1 + k, rule);
            }
        }
        Command::Replace(chain, at) => {
            let mut rules = parse_rule(options, family, kind, &chain, line)?;
            if rules.len() != 1 {
                return Err("-R takes one rule; a list of addresses makes several".into());
            }
            let c = chain_mut(table, &chain)?;
            let slot = c.rules.get_mut(at - 1).ok_or_else(|| format!("chain {chain} has no rule {at}"))?;
            *slot = rules.remove(0);
        }
        Command::Delete(chain, Some(at)) => {
            let c = chain_mut(table, &chain)?;
            if at > c.rules.len() {
                return Err(format!("chain {chain} has no rule {at}"));
            }
            c.rules.remove(at - 1);
        }
        Command::Delete(chain, None) => {
            for rule in parse_rule(options, family, kind, &chain, line)? {
                let c = chain_mut(table, &chain)?;
                let text = rule.save(&chain);
                let at = c
                    .rules
                    .iter()
                    .position(|r| r.save(&chain) == text)
                    .ok_or_else(|| format!("no rule {text:?} to delete (bad rule: does a matching rule exist in that chain?)"))?;
                c.rules.remove(at);
            }
        }
        Command::NewChain(chain) => new_chain(table, &chain)?,
        Command::DeleteChain(chain) => {
            let names: Vec<String> = match chain {
                Some(name) => vec![name],
                None => table.chains.iter().filter(|c| c.policy.is_none()).map(|c| c.name.clone()).collect(),
            };
            for name in names {
                let c = chain_mut(table, &name)?;
                if c.policy.is_some() {
                    return Err(format!("cannot delete built-in chain {name}"));
                }
                if !c.rules.is_empty() {
                    return Err(format!("cannot delete chain {name}: it is not empty (flush it with -F first)"));
                }
                if table.references(&name) > 0 {
                    return Err(format!("cannot delete chain {name}: rules still jump to it"));
                }
                table.chains.retain(|c| c.name != name);
            }
        }
        Command::Flush(Some(chain)) => chain_mut(table, &chain)?.rules.clear(),
        Command::Flush(None) => table.chains.iter_mut().for_each(|c| c.rules.clear()),
        Command::Policy(chain, policy) => {
            let c = chain_mut(table, &chain)?;
            if c.policy.is_none() {
                return Err(format!("{chain} is a user chain; only built-in chains have a policy"));
            }
            c.policy = Some(match policy.as_str() {
                "DROP" if kind == TableKind::Nat => return Err(nat_drop()),
                "ACCEPT" => Policy::Accept,
                "DROP" => Policy::Drop,
                other => return Err(format!("bad policy {other:?}: a policy is ACCEPT or DROP")),
            });
        }
        Command::Rename(old, new) => {
            check_chain_name(&new)?;
            if table.chain(&new).is_some() {
                return Err(format!("chain {new:?} already exists"));
            }
            let c = chain_mut(table, &old)?;
            if c.policy.is_some() {
                return Err(format!("cannot rename built-in chain {old}"));
            }
            let mut moved = table.chains.remove(table.chains.iter().position(|c| c.name == old).unwrap_or_default());
            for rule in table.chains.iter_mut().flat_map(|c| c.rules.iter_mut()).chain(moved.rules.iter_mut()) {
                match &mut rule.target {
                    Target::Jump(t) | Target::Goto(t) if *t == old => *t = new.clone(),
                    _ => {}
                }
            }
            moved.name = new.clone();
            table.chains.push(moved);
            let builtins = kind.hooks().len();
            table.chains[builtins..].sort_by(|a, b| a.name.cmp(&b.name));
        }
        Command::Zero => {}
    }
    Ok(())
}

