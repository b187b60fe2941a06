//! An independent checker of rewritten SQL, used by the property tests.
//!
//! It re-parses a rewritten statement and checks that every reference to a
//! tenant table sits under a tenant predicate (`q.tenant_id = <param>` in the
//! top-level AND chain of its WHERE or of a join's ON), that INSERTs into
//! tenant tables name the tenant column, and that UPDATE/DELETE targets are
//! filtered. It does not judge where a predicate is placed (the differential
//! tests do); it catches references that escaped filtering.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, Ident, JoinConstraint, JoinOperator, ObjectName, Query,
    Select, Statement, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind, Value, Visit,
    Visitor,
};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::names::{ident_eq, idents, normalise};
use crate::{Dialect, TenantTables};

/// Check `sql` (a rewritten statement); `Err` names the unfiltered reference.
pub fn check(sql: &str, tables: &TenantTables, dialect: Dialect) -> Result<(), String> {
    let stmts = match dialect {
        Dialect::Postgres => Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements()),
        Dialect::Sqlite => Parser::new(&SQLiteDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements()),
    }
    .map_err(|e| format!("rewritten SQL does not parse: {e}"))?;
    let mut checker = Checker {
        tables,
        dialect,
        ctes: Vec::new(),
        marks: Vec::new(),
    };
    match stmts.visit(&mut checker) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Checker<'t> {
    tables: &'t TenantTables,
    dialect: Dialect,
    ctes: Vec<String>,
    marks: Vec<usize>,
}

fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        other => out.push(other),
    }
}

impl Checker<'_> {
    fn is_tenant(&self, name: &ObjectName) -> bool {
        if !self.tables.matches(name, self.dialect) {
            return false;
        }
        match idents(name).as_deref() {
            Some([single]) => !self.ctes.iter().any(|c| ident_eq(single, c, self.dialect)),
            _ => true,
        }
    }

    fn has_pred(&self, qualifier: &[Ident], exprs: &[&Expr]) -> bool {
        exprs.iter().any(|e| {
            let mut cs = Vec::new();
            conjuncts(e, &mut cs);
            cs.iter().any(|c| match c {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => match (left.as_ref(), right.as_ref()) {
                    (Expr::CompoundIdentifier(parts), Expr::Value(v)) => {
                        matches!(v.value, Value::Placeholder(_))
                            && parts.split_last().is_some_and(|(col, q)| {
                                self.tables.is_column(col, self.dialect)
                                    && q.len() == qualifier.len()
                                    && q.iter().zip(qualifier).all(|(a, b)| a.value == b.value)
                            })
                    }
                    _ => false,
                },
                _ => false,
            })
        })
    }

    /// Tenant leaves of a FROM item with their qualifiers, and the ON
    /// expressions found along the way.
    fn leaves<'a>(
        &self,
        twj: &'a TableWithJoins,
        out: &mut Vec<(Vec<Ident>, String)>,
        ons: &mut Vec<&'a Expr>,
    ) {
        self.factor(&twj.relation, out, ons);
        for j in &twj.joins {
            self.factor(&j.relation, out, ons);
            let c = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => Some(c),
                _ => None,
            };
            if let Some(JoinConstraint::On(e)) = c {
                ons.push(e);
            }
        }
    }

    fn factor<'a>(
        &self,
        f: &'a TableFactor,
        out: &mut Vec<(Vec<Ident>, String)>,
        ons: &mut Vec<&'a Expr>,
    ) {
        match f {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } if self.is_tenant(name) => {
                let q = match alias {
                    Some(a) => vec![a.name.clone()],
                    None => idents(name)
                        .unwrap_or_default()
                        .into_iter()
                        .cloned()
                        .collect(),
                };
                out.push((q, name.to_string()));
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.leaves(table_with_joins, out, ons),
            _ => {}
        }
    }

    fn check_from(&self, from: &[TableWithJoins], selection: Option<&Expr>) -> ControlFlow<String> {
        let mut leaves = Vec::new();
        let mut exprs: Vec<&Expr> = selection.into_iter().collect();
        for twj in from {
            self.leaves(twj, &mut leaves, &mut exprs);
        }
        for (q, name) in leaves {
            if !self.has_pred(&q, &exprs) {
                return ControlFlow::Break(format!("tenant table `{name}` is not filtered"));
            }
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Checker<'_> {
    type Break = String;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
        self.marks.push(self.ctes.len());
        if let Some(w) = &q.with {
            for c in &w.cte_tables {
                self.ctes.push(normalise(&c.alias.name, self.dialect));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<String> {
        let mark = self.marks.pop().unwrap_or(0);
        self.ctes.truncate(mark);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<String> {
        self.check_from(&s.from, s.selection.as_ref())
    }

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<String> {
        match stmt {
            Statement::Update(u) => {
                let mut from: Vec<TableWithJoins> = vec![u.table.clone()];
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    &u.from
                {
                    from.extend(f.iter().cloned());
                }
                // The target is never a CTE.
                let saved = std::mem::take(&mut self.ctes);
                let r = self.check_from(&from[..1], u.selection.as_ref());
                self.ctes = saved;
                r?;
                self.check_from(&from, u.selection.as_ref())
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                let mut from = f.clone();
                let saved = std::mem::take(&mut self.ctes);
                let r = self.check_from(&from, d.selection.as_ref());
                self.ctes = saved;
                r?;
                from.extend(d.using.iter().flatten().cloned());
                self.check_from(&from, d.selection.as_ref())
            }
            Statement::Insert(i) => {
                if let TableObject::TableName(name) = &i.table
                    && self.tables.matches(name, self.dialect)
                {
                    let named = i.columns.iter().any(|c| {
                        idents(c)
                            .and_then(|p| p.last().copied())
                            .is_some_and(|c| self.tables.is_column(c, self.dialect))
                    });
                    if !named {
                        return ControlFlow::Break(format!(
                            "INSERT into `{name}` lacks the tenant column"
                        ));
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}
