//! Bind parameters: find the statement's own, choose the tenant's.

use std::ops::ControlFlow;

use sqlparser::ast::{Statement, Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut};

use crate::{Dialect, Refusal};

/// Highest parameter number accepted (Postgres' own limit).
const MAX_PARAM: usize = 65_535;

/// The tenant's bind parameter.
pub(crate) struct TenantParam {
    /// 1-based index.
    pub index: usize,
    /// Its text in the statement, e.g. `$3` or `?3`.
    pub text: String,
}

struct Collect {
    found: Vec<(String, (u64, u64))>,
}

impl Visitor for Collect {
    type Break = ();
    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<()> {
        if let Value::Placeholder(p) = &value.value {
            let start = value.span.start;
            self.found.push((p.clone(), (start.line, start.column)));
        }
        ControlFlow::Continue(())
    }
}

struct Renumber<'a> {
    numbers: &'a [usize],
    next: usize,
}

impl VisitorMut for Renumber<'_> {
    type Break = ();
    fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        if let Value::Placeholder(p) = &mut value.value {
            let Some(n) = self.numbers.get(self.next) else {
                return ControlFlow::Break(());
            };
            *p = format!("?{n}");
            self.next += 1;
        }
        ControlFlow::Continue(())
    }
}

fn number(text: &str, prefix: char) -> Option<usize> {
    let digits = text.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| (1..=MAX_PARAM).contains(n))
}

/// The highest number among the placeholders `found`, each of which must
/// be `prefix` and a number; one that is not is refused: "placeholder `…`
/// {problem}".
fn highest(found: &[(String, (u64, u64))], prefix: char, problem: &str) -> Result<usize, Refusal> {
    let mut max = 0;
    for (p, _) in found {
        let n = number(p, prefix)
            .ok_or_else(|| Refusal::Placeholders(format!("placeholder `{p}` {problem}")))?;
        max = max.max(n);
    }
    Ok(max)
}

/// Inspect the statement's placeholders, renumber anonymous SQLite `?` in
/// textual order, and choose the next free number for the tenant.
pub(crate) fn tenant_param(stmt: &mut Statement, dialect: Dialect) -> Result<TenantParam, Refusal> {
    let mut collect = Collect { found: Vec::new() };
    let _ = Visit::visit(&*stmt, &mut collect);
    let found = collect.found;
    let (prefix, max) = match dialect {
        Dialect::Postgres => {
            let problem = "is not a Postgres positional parameter; use $1, $2, …";
            ('$', highest(&found, '$', problem)?)
        }
        Dialect::Sqlite => {
            let anonymous = found.iter().filter(|(p, _)| p == "?").count();
            if anonymous > 0 && anonymous < found.len() {
                return Err(Refusal::Placeholders(
                    "anonymous `?` mixed with other placeholders cannot be numbered safely; use only `?` or only `?N`".into(),
                ));
            }
            if anonymous > 0 {
                renumber(stmt, &found)?;
                ('?', anonymous)
            } else {
                let problem = "is not supported on SQLite; use `?` or `?N`";
                ('?', highest(&found, '?', problem)?)
            }
        }
    };
    let index = max + 1;
    if index > MAX_PARAM {
        return Err(Refusal::Placeholders("too many bind parameters".into()));
    }
    Ok(TenantParam {
        index,
        text: format!("{prefix}{index}"),
    })
}

/// Number anonymous `?` as SQLite does: 1, 2, … in textual order.
fn renumber(stmt: &mut Statement, found: &[(String, (u64, u64))]) -> Result<(), Refusal> {
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by_key(|&i| found[i].1);
    let positions_known = found.iter().all(|(_, pos)| pos.0 > 0)
        && order.windows(2).all(|w| found[w[0]].1 != found[w[1]].1);
    if !positions_known {
        return Err(Refusal::Placeholders(
            "cannot tell the textual order of anonymous `?` parameters; use `?N`".into(),
        ));
    }
    let mut numbers = vec![0; found.len()];
    for (rank, &i) in order.iter().enumerate() {
        numbers[i] = rank + 1;
    }
    let mut renumber = Renumber {
        numbers: &numbers,
        next: 0,
    };
    match VisitMut::visit(stmt, &mut renumber) {
        ControlFlow::Continue(()) if renumber.next == numbers.len() => Ok(()),
        _ => Err(Refusal::Internal("placeholder renumbering".into())),
    }
}
