//! The rewriter: parse, scope every tenant-table reference, print.
//!
//! The walk is explicit over the statement structure (queries, set
//! operations, selects, FROM items, joins, DML): every variant it does not
//! know is refused. Expressions are walked with sqlparser's visitor only to
//! find nested subqueries, which are then rewritten by the same explicit walk.

use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, ConflictTarget, Delete, DoUpdate, Expr,
    FromTable, Ident, Insert, Join, JoinConstraint, JoinOperator, ObjectName, OnConflict,
    OnConflictAction, OnInsert, Query, Select, SelectItem, SetExpr, SqliteOnConflict, Statement,
    TableAlias, TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind, Value,
    Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::dialect::{GenericDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::names::{ident_eq, idents, normalise};
use crate::{Dialect, Refusal, Rewritten, TenantTables, params};

type R<T = ()> = Result<T, Refusal>;

/// Functions that read or write tables named in strings, or change the
/// session's tenant setting: refused wherever they appear.
const DENIED_FUNCTIONS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "cursor_to_xml",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_send_query",
    "lo_import",
    "lo_export",
    "pg_read_file",
    "pg_read_binary_file",
    "set_config",
];

/// Parse `sql`, scope it for `tables`, print it.
pub(crate) fn rewrite(tables: &TenantTables, sql: &str, dialect: Dialect) -> R<Rewritten> {
    let mut statements = parse_as(dialect, sql).map_err(|e| Refusal::Parse {
        dialect: dialect.as_str(),
        message: e.to_string(),
    })?;
    let mut stmt = match statements.len() {
        0 => return Err(Refusal::Empty),
        1 => statements
            .pop()
            .ok_or_else(|| Refusal::Internal("statement vanished".into()))?,
        count => return Err(Refusal::MultipleStatements { count }),
    };
    let param = params::tenant_param(&mut stmt, dialect)?;
    let mut rewriter = Rewriter {
        tables,
        dialect,
        param: param.text,
        used: false,
        ctes: Vec::new(),
        depth: 0,
    };
    rewriter.statement(&mut stmt)?;
    // sqlparser's printer does not round-trip a few odd inputs (`0 .id`
    // prints as `0.id`; a keyword taken as a bare column name, `= not`,
    // prints unquoted). The output is parsed again, and refused unless it
    // reads back as one statement: what the database runs is what was
    // scoped (fail closed). A cache hit does not pay for it.
    let printed = stmt.to_string();
    match parse_as(dialect, &printed) {
        Ok(again) if again.len() == 1 => {}
        Ok(again) => {
            return Err(Refusal::DoesNotReadBack(format!(
                "it prints as {} statements",
                again.len()
            )));
        }
        Err(e) => return Err(Refusal::DoesNotReadBack(e.to_string())),
    }
    Ok(Rewritten {
        sql: Arc::from(printed),
        tenant_param: rewriter.used.then_some(param.index),
    })
}

/// Parser nesting limit (sqlparser's default is 50). Lower, so that the
/// printer, the visitor and the rewriter, which recurse without a guard, stay
/// well inside a 2 MiB thread stack even in debug builds.
const RECURSION_LIMIT: usize = 30;
/// Nested queries (subqueries, CTEs, set-operation arms) the rewriter accepts.
const MAX_QUERY_DEPTH: usize = 24;

/// `sql`'s statements in `dialect`.
fn parse_as(dialect: Dialect, sql: &str) -> Result<Vec<Statement>, sqlparser::parser::ParserError> {
    match dialect {
        Dialect::Postgres => parse(&PostgreSqlDialect {}, sql),
        Dialect::Sqlite => parse(&SQLiteDialect {}, sql),
    }
}

fn parse(
    dialect: &dyn sqlparser::dialect::Dialect,
    sql: &str,
) -> Result<Vec<Statement>, sqlparser::parser::ParserError> {
    Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)?
        .parse_statements()
}

/// A table alias must be an identifier that can qualify a column: not empty
/// and not a string literal (sqlparser accepts `FROM t ''`).
fn check_alias(alias: &Ident) -> R {
    if alias.value.is_empty() || matches!(alias.quote_style, Some('\'')) {
        return Err(unsupported(
            format!("the table alias {alias}"),
            "use a plain or double-quoted identifier as alias",
        ));
    }
    Ok(())
}

fn unsupported(construct: impl Into<String>, hint: &'static str) -> Refusal {
    Refusal::Unsupported {
        construct: construct.into(),
        hint,
    }
}

fn parse_template(sql: &str) -> Option<Query> {
    let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    match stmts.pop()? {
        Statement::Query(q) => Some(*q),
        _ => None,
    }
}

/// Stand-in for a subquery while the expression visitor walks around it.
static PLACEHOLDER: LazyLock<Option<Query>> = LazyLock::new(|| parse_template("SELECT 1"));
/// `(SELECT * FROM <table> WHERE <pred>)` for leaves that need wrapping.
static WRAP: LazyLock<Option<Query>> = LazyLock::new(|| parse_template("SELECT * FROM t"));
/// `SELECT src.*, <tenant> FROM (<source>) AS src` for INSERT … <set operation>.
static INSERT_WRAP: LazyLock<Option<Query>> = LazyLock::new(|| {
    parse_template("SELECT __tenancy_src.*, NULL FROM (SELECT 1) AS __tenancy_src")
});

fn template(t: &LazyLock<Option<Query>>) -> R<Query> {
    Option::as_ref(t)
        .cloned()
        .ok_or_else(|| Refusal::Internal("template did not parse".into()))
}

/// A tenant table in a FROM clause whose predicate is not placed yet.
struct Leaf<'a> {
    factor: &'a mut TableFactor,
    pred: Expr,
}

struct Rewriter<'c> {
    tables: &'c TenantTables,
    dialect: Dialect,
    /// The tenant placeholder text, e.g. `$3`.
    param: String,
    /// Whether any tenant predicate or value was added.
    used: bool,
    /// CTE names in scope, normalised.
    ctes: Vec<String>,
    /// Current query nesting.
    depth: usize,
}

/// Join `preds` onto `target` with AND, keeping the original's precedence.
fn and_into(target: &mut Option<Expr>, preds: Vec<Expr>) {
    if preds.is_empty() {
        return;
    }
    let mut acc = target.take().map(nest);
    for p in preds {
        acc = Some(match acc {
            Some(a) => and(a, p),
            None => p,
        });
    }
    *target = acc;
}

fn and(left: Expr, right: Expr) -> Expr {
    Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    }
}

/// Wrap `e` in parentheses unless it already binds at least as tightly as
/// `AND` (PITFALLS: `a OR b` must become `(a OR b) AND …`).
fn nest(e: Expr) -> Expr {
    let tight = match &e {
        Expr::BinaryOp { op, .. } => matches!(
            op,
            BinaryOperator::And
                | BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
        ),
        // A bare identifier is nested too: keywords such as `NOT` can parse
        // as identifiers and would then bind to the appended `AND`.
        Expr::Nested(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::InList { .. }
        | Expr::InSubquery { .. }
        | Expr::Exists { .. } => true,
        _ => false,
    };
    if tight { e } else { Expr::Nested(Box::new(e)) }
}

/// Does this statement write data?
fn writes(stmt: &Statement) -> bool {
    match stmt {
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => true,
        Statement::Query(q) => query_writes(q),
        _ => true,
    }
}

fn query_writes(q: &Query) -> bool {
    let cte_writes = q
        .with
        .as_ref()
        .is_some_and(|w| w.cte_tables.iter().any(|c| query_writes(&c.query)));
    cte_writes || set_expr_writes(&q.body)
}

fn set_expr_writes(s: &SetExpr) -> bool {
    match s {
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => false,
        SetExpr::Query(q) => query_writes(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_writes(left) || set_expr_writes(right)
        }
        _ => true,
    }
}

impl Rewriter<'_> {
    fn statement(&mut self, stmt: &mut Statement) -> R {
        match stmt {
            Statement::Query(q) => self.query(q),
            Statement::Insert(i) => self.insert(i),
            Statement::Update(u) => self.update(u),
            Statement::Delete(d) => self.delete(d),
            Statement::Explain {
                analyze,
                statement,
                options,
                ..
            } => {
                let analyze = *analyze
                    || options
                        .iter()
                        .flatten()
                        .any(|o| o.name.value.eq_ignore_ascii_case("analyze"));
                if analyze && writes(statement) {
                    return Err(Refusal::ExplainAnalyzeWrite);
                }
                match statement.as_mut() {
                    Statement::Query(_)
                    | Statement::Insert(_)
                    | Statement::Update(_)
                    | Statement::Delete(_) => self.statement(statement),
                    other => Err(self.refuse_statement(other)),
                }
            }
            other => Err(self.refuse_statement(other)),
        }
    }

    fn refuse_statement(&self, stmt: &Statement) -> Refusal {
        struct Find<'t> {
            tables: &'t TenantTables,
            dialect: Dialect,
        }
        impl Visitor for Find<'_> {
            type Break = String;
            fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<String> {
                if self.tables.matches(name, self.dialect) {
                    ControlFlow::Break(name.to_string())
                } else {
                    ControlFlow::Continue(())
                }
            }
        }
        let text = stmt.to_string();
        let mut words = text.split_whitespace();
        let first = words.next().unwrap_or("").to_ascii_uppercase();
        let kind = match first.as_str() {
            "CREATE" | "ALTER" | "DROP" => {
                format!(
                    "{first} {}",
                    words.next().unwrap_or("").to_ascii_uppercase()
                )
            }
            _ => first,
        };
        let mut find = Find {
            tables: self.tables,
            dialect: self.dialect,
        };
        match stmt.visit(&mut find) {
            ControlFlow::Break(table) => Refusal::TenantTableStatement { kind, table },
            ControlFlow::Continue(()) => Refusal::UnsupportedStatement { kind },
        }
    }

    // ---- queries ------------------------------------------------------

    fn query(&mut self, q: &mut Query) -> R {
        if self.depth >= MAX_QUERY_DEPTH {
            return Err(unsupported(
                format!("nesting deeper than {MAX_QUERY_DEPTH} queries"),
                "simplify the statement",
            ));
        }
        self.depth += 1;
        let mark = self.ctes.len();
        let result = self.query_inner(q);
        self.ctes.truncate(mark);
        self.depth -= 1;
        result
    }

    fn query_inner(&mut self, q: &mut Query) -> R {
        let Query {
            with,
            body,
            order_by,
            limit_clause,
            fetch,
            locks: _,
            for_clause,
            settings,
            format_clause,
            pipe_operators,
        } = q;
        if for_clause.is_some()
            || settings.is_some()
            || format_clause.is_some()
            || !pipe_operators.is_empty()
        {
            return Err(unsupported(
                "a FOR/SETTINGS/FORMAT clause or pipe operator",
                "use plain Postgres/SQLite SELECT syntax",
            ));
        }
        if let Some(with) = with {
            for cte in &mut with.cte_tables {
                if cte.from.is_some() {
                    return Err(unsupported("CTE … FROM", "use a plain CTE"));
                }
                let name = normalise(&cte.alias.name, self.dialect);
                if with.recursive {
                    // A recursive CTE sees itself (and earlier siblings).
                    self.ctes.push(name);
                    self.query(&mut cte.query)?;
                } else {
                    // A plain CTE named like a table reads the real table.
                    self.query(&mut cte.query)?;
                    self.ctes.push(name);
                }
            }
        }
        self.set_expr(body)?;
        self.exprs(order_by)?;
        self.exprs(limit_clause)?;
        self.exprs(fetch)?;
        Ok(())
    }

    fn set_expr(&mut self, s: &mut SetExpr) -> R {
        match s {
            SetExpr::Select(sel) => self.select(sel),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left)?;
                self.set_expr(right)
            }
            SetExpr::Values(v) => self.exprs(v),
            SetExpr::Insert(stmt) | SetExpr::Update(stmt) | SetExpr::Delete(stmt) => match stmt {
                Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                    self.statement(stmt)
                }
                other => Err(self.refuse_statement(other)),
            },
            SetExpr::Table(_) => Err(unsupported(
                "the `TABLE t` shorthand",
                "write SELECT … FROM t",
            )),
            SetExpr::Merge(_) => Err(unsupported(
                "MERGE",
                "use INSERT … ON CONFLICT, UPDATE or DELETE",
            )),
        }
    }

    fn select(&mut self, sel: &mut Select) -> R {
        if sel.into.is_some() {
            return Err(unsupported("SELECT … INTO", "use INSERT … SELECT"));
        }
        if !sel.lateral_views.is_empty()
            || sel.prewhere.is_some()
            || !sel.connect_by.is_empty()
            || sel.value_table_mode.is_some()
        {
            return Err(unsupported(
                "a non-Postgres SELECT clause (LATERAL VIEW, PREWHERE, CONNECT BY, AS VALUE)",
                "use plain Postgres/SQLite SELECT syntax",
            ));
        }
        let mut from = std::mem::take(&mut sel.from);
        let result = self.select_inner(sel, &mut from);
        sel.from = from;
        result
    }

    fn select_inner(&mut self, sel: &mut Select, from: &mut [TableWithJoins]) -> R {
        // FROM is taken out, so this only finds subqueries in expressions.
        self.exprs(sel)?;
        let mut preds = Vec::new();
        for twj in from.iter_mut() {
            preds.extend(self.table_with_joins(twj)?.into_iter().map(|l| l.pred));
        }
        and_into(&mut sel.selection, preds);
        Ok(())
    }

    // ---- FROM items ---------------------------------------------------

    /// Scope one FROM item; return the leaves whose predicate belongs to the
    /// enclosing WHERE (or an enclosing outer join's ON).
    fn table_with_joins<'a>(&mut self, twj: &'a mut TableWithJoins) -> R<Vec<Leaf<'a>>> {
        let TableWithJoins { relation, joins } = twj;
        let mut leaves = self.factor(relation)?;
        for join in joins.iter_mut() {
            let Join {
                relation,
                global: _,
                join_operator,
            } = join;
            let right = self.factor(relation)?;
            match join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => {
                    self.constraint(c)?;
                    leaves.extend(right);
                }
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => {
                    self.constraint(c)?;
                    self.place_on(c, right)?;
                }
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => {
                    self.constraint(c)?;
                    let left = std::mem::replace(&mut leaves, right);
                    self.place_on(c, left)?;
                }
                JoinOperator::FullOuter(c) => {
                    // Both sides are nullable and preserved: filter the
                    // inputs themselves.
                    self.constraint(c)?;
                    for leaf in leaves.drain(..).chain(right) {
                        self.wrap(leaf)?;
                    }
                }
                other => {
                    return Err(unsupported(
                        format!("join operator `{other:?}`"),
                        "use [INNER|LEFT|RIGHT|FULL|CROSS] JOIN",
                    ));
                }
            }
        }
        Ok(leaves)
    }

    fn constraint(&mut self, c: &mut JoinConstraint) -> R {
        match c {
            JoinConstraint::On(e) => self.exprs(e),
            JoinConstraint::Using(_) | JoinConstraint::None => Ok(()),
            JoinConstraint::Natural => Err(unsupported(
                "NATURAL JOIN",
                "write the join condition with ON or USING (the tenant column would join too)",
            )),
        }
    }

    /// Filter the nullable side of an outer join in its ON clause.
    fn place_on(&mut self, c: &mut JoinConstraint, leaves: Vec<Leaf<'_>>) -> R {
        if leaves.is_empty() {
            return Ok(());
        }
        match c {
            JoinConstraint::On(e) => {
                let mut on = Some(std::mem::replace(e, Expr::Value(Value::Null.into())));
                and_into(&mut on, leaves.into_iter().map(|l| l.pred).collect());
                *e = on.ok_or_else(|| Refusal::Internal("empty ON".into()))?;
                Ok(())
            }
            _ => {
                for leaf in leaves {
                    self.wrap(leaf)?;
                }
                Ok(())
            }
        }
    }

    /// Replace a tenant table by `(SELECT * FROM t WHERE t.col = $n) AS alias`.
    fn wrap(&mut self, leaf: Leaf<'_>) -> R {
        let factor = leaf.factor;
        let TableFactor::Table { name, alias, .. } = &mut *factor else {
            return Err(Refusal::Internal("wrapping a non-table".into()));
        };
        let parts: Vec<Ident> = idents(name)
            .ok_or_else(|| Refusal::Internal("unreadable name".into()))?
            .into_iter()
            .cloned()
            .collect();
        let last = parts
            .last()
            .cloned()
            .ok_or_else(|| Refusal::Internal("empty name".into()))?;
        let outer = alias.take().unwrap_or(TableAlias {
            explicit: true,
            name: last,
            columns: Vec::new(),
            at: None,
        });
        let pred = self.pred(parts);
        let mut query = template(&WRAP)?;
        let table = std::mem::replace(
            factor,
            TableFactor::Derived {
                lateral: false,
                subquery: Box::new(template(&PLACEHOLDER)?),
                alias: Some(outer),
                sample: None,
            },
        );
        let SetExpr::Select(sel) = query.body.as_mut() else {
            return Err(Refusal::Internal("wrap template".into()));
        };
        sel.from = vec![TableWithJoins {
            relation: table,
            joins: Vec::new(),
        }];
        sel.selection = Some(pred);
        if let TableFactor::Derived { subquery, .. } = factor {
            **subquery = query;
        }
        Ok(())
    }

    fn factor<'a>(&mut self, f: &'a mut TableFactor) -> R<Vec<Leaf<'a>>> {
        if matches!(f, TableFactor::Table { .. }) {
            return Ok(match self.table(f, true)? {
                Some(pred) => vec![Leaf { factor: f, pred }],
                None => Vec::new(),
            });
        }
        match f {
            TableFactor::Derived {
                lateral: _,
                subquery,
                alias: _,
                sample,
            } => {
                if sample.is_some() {
                    return Err(unsupported("TABLESAMPLE", "remove the sample clause"));
                }
                self.query(subquery)?;
                Ok(Vec::new())
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    return Err(unsupported(
                        "an aliased parenthesised join `(a JOIN b) AS x`",
                        "drop the alias or use a subquery",
                    ));
                }
                self.table_with_joins(table_with_joins)
            }
            TableFactor::Function { name, args, .. } => {
                self.deny_table_named(name)?;
                self.exprs(args)?;
                Ok(Vec::new())
            }
            TableFactor::UNNEST { array_exprs, .. } => {
                self.exprs(array_exprs)?;
                Ok(Vec::new())
            }
            TableFactor::TableFunction { expr, .. } => {
                self.exprs(expr)?;
                Ok(Vec::new())
            }
            other => Err(unsupported(
                format!("the FROM item `{other}`"),
                "use tables, subqueries, joins or set-returning functions",
            )),
        }
    }

    fn deny_table_named(&self, name: &ObjectName) -> R {
        if self.tables.matches(name, self.dialect) {
            return Err(unsupported(
                format!("a function call named like tenant table `{name}`"),
                "rename the function",
            ));
        }
        Ok(())
    }

    /// A plain table reference: its tenant predicate, or `None` when it is a
    /// global table (or, if `cte_ok`, a CTE).
    fn table(&mut self, f: &mut TableFactor, cte_ok: bool) -> R<Option<Expr>> {
        let TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality: _,
            partitions,
            json_path,
            sample,
            index_hints,
        } = f
        else {
            return Err(unsupported(
                format!("the target `{f}`"),
                "name a table directly",
            ));
        };
        if let Some(args) = args {
            self.deny_table_named(name)?;
            self.exprs(args)?;
            return Ok(None);
        }
        if !with_hints.is_empty()
            || version.is_some()
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_hints.is_empty()
        {
            return Err(unsupported(
                format!("table hints, versions, partitions or samples on `{name}`"),
                "remove them",
            ));
        }
        if cte_ok && self.is_cte(name) {
            return Ok(None);
        }
        if !self.tables.matches(name, self.dialect) {
            return Ok(None);
        }
        let qualifier = match alias {
            Some(a) => {
                if !a.columns.is_empty() {
                    // `t AS x(a, b)` may rename the tenant column away.
                    return Err(unsupported(
                        format!("column aliases on tenant table `{name}`"),
                        "alias the columns in the select list instead",
                    ));
                }
                check_alias(&a.name)?;
                vec![a.name.clone()]
            }
            None => idents(name)
                .ok_or_else(|| unsupported(format!("the table name `{name}`"), "use a plain name"))?
                .into_iter()
                .cloned()
                .collect(),
        };
        Ok(Some(self.pred(qualifier)))
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        match idents(name).as_deref() {
            Some([single]) => self.ctes.iter().any(|c| ident_eq(single, c, self.dialect)),
            _ => false,
        }
    }

    /// `qualifier.tenant_id = $n`
    fn pred(&mut self, mut qualifier: Vec<Ident>) -> Expr {
        qualifier.push(self.tables.column_ident());
        Expr::BinaryOp {
            left: Box::new(Expr::CompoundIdentifier(qualifier)),
            op: BinaryOperator::Eq,
            right: Box::new(self.tenant_value()),
        }
    }

    fn tenant_value(&mut self) -> Expr {
        self.used = true;
        Expr::Value(Value::Placeholder(self.param.clone()).into())
    }

    // ---- expressions --------------------------------------------------

    /// Rewrite every subquery found in the expressions of `node`.
    fn exprs<V: VisitMut>(&mut self, node: &mut V) -> R {
        let mut scoper = Scoper {
            rw: self,
            stack: Vec::new(),
        };
        match node.visit(&mut scoper) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(e) => Err(e),
        }
    }

    // ---- DML -----------------------------------------------------------

    fn check_assignments(&self, assignments: &[Assignment], table: &ObjectName) -> R {
        for a in assignments {
            let names: Vec<&ObjectName> = match &a.target {
                AssignmentTarget::ColumnName(n) => vec![n],
                AssignmentTarget::Tuple(ns) => ns.iter().collect(),
            };
            for n in names {
                let last = idents(n).and_then(|p| p.last().copied());
                if last.is_none_or(|i| self.tables.is_column(i, self.dialect)) {
                    return Err(Refusal::TenantColumnWritten {
                        table: table.to_string(),
                        column: self.tables.tenant_column().to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    fn insert(&mut self, ins: &mut Insert) -> R {
        let Insert {
            insert_token: _,
            optimizer_hints,
            or,
            ignore,
            into: _,
            table,
            table_alias,
            columns,
            overwrite,
            source,
            assignments,
            partitioned,
            after_columns,
            has_table_keyword: _,
            on,
            returning,
            output,
            replace_into,
            priority,
            insert_alias,
            settings,
            format_clause,
            multi_table_insert_type,
            multi_table_into_clauses,
            multi_table_when_clauses,
            multi_table_else_clause,
        } = ins;
        if !optimizer_hints.is_empty()
            || *ignore
            || *overwrite
            || !assignments.is_empty()
            || partitioned.is_some()
            || !after_columns.is_empty()
            || output.is_some()
            || *replace_into
            || priority.is_some()
            || insert_alias.is_some()
            || settings.is_some()
            || format_clause.is_some()
            || multi_table_insert_type.is_some()
            || !multi_table_into_clauses.is_empty()
            || !multi_table_when_clauses.is_empty()
            || multi_table_else_clause.is_some()
        {
            return Err(unsupported(
                "this INSERT form (MySQL/Hive/Snowflake extensions or REPLACE INTO)",
                "use INSERT INTO t (columns) VALUES … or INSERT INTO t (columns) SELECT …",
            ));
        }
        let TableObject::TableName(name) = table else {
            return Err(unsupported(
                "INSERT INTO a table function or subquery",
                "insert into a named table",
            ));
        };
        let tenant = self.tables.matches(name, self.dialect);
        if tenant && matches!(or, Some(SqliteOnConflict::Replace)) {
            return Err(unsupported(
                "INSERT OR REPLACE into a tenant table (it may delete another tenant's conflicting row)",
                "use INSERT … ON CONFLICT (…) DO UPDATE",
            ));
        }
        if tenant {
            if columns.is_empty() {
                return Err(Refusal::InsertWithoutColumns {
                    table: name.to_string(),
                });
            }
            let writes_column = columns.iter().any(|c| {
                idents(c)
                    .and_then(|p| p.last().copied())
                    .is_none_or(|i| self.tables.is_column(i, self.dialect))
            });
            if writes_column {
                return Err(Refusal::TenantColumnWritten {
                    table: name.to_string(),
                    column: self.tables.tenant_column().to_owned(),
                });
            }
        }
        if let Some(src) = source.as_mut() {
            self.query(src)?;
        }
        if tenant
            && let Some(OnInsert::OnConflict(OnConflict {
                conflict_target: Some(ConflictTarget::Columns(cols)),
                ..
            })) = on
            && !cols.iter().any(|c| self.tables.is_column(c, self.dialect))
        {
            // Unique keys of a shared table are per tenant: `(id)` in
            // application SQL is `(tenant_id, id)` in the shared table.
            cols.insert(0, self.tables.column_ident());
        }
        match on {
            None => {}
            Some(OnInsert::DuplicateKeyUpdate(_)) => {
                return Err(unsupported(
                    "ON DUPLICATE KEY UPDATE",
                    "use ON CONFLICT (…) DO UPDATE",
                ));
            }
            Some(OnInsert::OnConflict(OnConflict {
                conflict_target: _,
                action:
                    OnConflictAction::DoUpdate(DoUpdate {
                        assignments,
                        selection,
                    }),
            })) => {
                if tenant {
                    self.check_assignments(assignments, name)?;
                }
                self.exprs(assignments)?;
                self.exprs(selection)?;
                if tenant {
                    // Only ever update the tenant's own conflicting row.
                    let qualifier = match table_alias {
                        Some(a) => {
                            check_alias(&a.alias)?;
                            vec![a.alias.clone()]
                        }
                        None => idents(name)
                            .ok_or_else(|| {
                                unsupported(format!("the table name `{name}`"), "use a plain name")
                            })?
                            .into_iter()
                            .cloned()
                            .collect(),
                    };
                    let pred = self.pred(qualifier);
                    and_into(selection, vec![pred]);
                }
            }
            Some(OnInsert::OnConflict(_)) => {}
            Some(_) => {
                return Err(unsupported(
                    "this INSERT … ON form",
                    "use ON CONFLICT (…) DO NOTHING or DO UPDATE",
                ));
            }
        }
        self.exprs(returning)?;
        if tenant {
            let Some(src) = source.as_mut() else {
                return Err(unsupported(
                    "INSERT … DEFAULT VALUES into a tenant table",
                    "name the columns and values",
                ));
            };
            columns.push(ObjectName::from(vec![self.tables.column_ident()]));
            self.add_tenant_value(src)?;
        }
        Ok(())
    }

    /// Append the tenant value to every row an INSERT source produces.
    fn add_tenant_value(&mut self, src: &mut Box<Query>) -> R {
        let value = self.tenant_value();
        match src.body.as_mut() {
            SetExpr::Values(v) => {
                for row in &mut v.rows {
                    row.content.push(value.clone());
                }
                return Ok(());
            }
            SetExpr::Select(sel) => {
                sel.projection.push(SelectItem::UnnamedExpr(value));
                return Ok(());
            }
            _ => {}
        }
        // Set operations and anything else: select from it as a subquery.
        let mut outer = template(&INSERT_WRAP)?;
        let SetExpr::Select(sel) = outer.body.as_mut() else {
            return Err(Refusal::Internal("insert template".into()));
        };
        let Some(slot) = sel.projection.get_mut(1) else {
            return Err(Refusal::Internal("insert template".into()));
        };
        *slot = SelectItem::UnnamedExpr(value);
        let Some(TableFactor::Derived { subquery, .. }) =
            sel.from.first_mut().map(|t| &mut t.relation)
        else {
            return Err(Refusal::Internal("insert template".into()));
        };
        std::mem::swap(subquery, src);
        **src = outer;
        Ok(())
    }

    fn update(&mut self, upd: &mut Update) -> R {
        let Update {
            update_token: _,
            optimizer_hints,
            table,
            assignments,
            from,
            selection,
            returning,
            output,
            or,
            order_by,
            limit,
        } = upd;
        if !optimizer_hints.is_empty()
            || output.is_some()
            || !order_by.is_empty()
            || limit.is_some()
            || !table.joins.is_empty()
        {
            return Err(unsupported(
                "UPDATE with joins in the target, ORDER BY, LIMIT or OUTPUT",
                "use UPDATE t SET … FROM … WHERE …",
            ));
        }
        let target_name = match &table.relation {
            TableFactor::Table { name, .. } => name.clone(),
            other => {
                return Err(unsupported(
                    format!("UPDATE of `{other}`"),
                    "update a named table",
                ));
            }
        };
        let target = self.table(&mut table.relation, false)?;
        if target.is_some() {
            if matches!(or, Some(SqliteOnConflict::Replace)) {
                return Err(unsupported(
                    "UPDATE OR REPLACE on a tenant table (it may delete another tenant's conflicting row)",
                    "use plain UPDATE",
                ));
            }
            self.check_assignments(assignments, &target_name)?;
        }
        self.exprs(assignments)?;
        let mut preds: Vec<Expr> = target.into_iter().collect();
        if let Some(UpdateTableFromKind::BeforeSet(items) | UpdateTableFromKind::AfterSet(items)) =
            from
        {
            for twj in items.iter_mut() {
                preds.extend(self.table_with_joins(twj)?.into_iter().map(|l| l.pred));
            }
        }
        self.exprs(selection)?;
        self.exprs(returning)?;
        and_into(selection, preds);
        Ok(())
    }

    fn delete(&mut self, del: &mut Delete) -> R {
        let Delete {
            delete_token: _,
            optimizer_hints,
            tables,
            from,
            using,
            selection,
            returning,
            output,
            order_by,
            limit,
        } = del;
        if !optimizer_hints.is_empty()
            || !tables.is_empty()
            || output.is_some()
            || !order_by.is_empty()
            || limit.is_some()
        {
            return Err(unsupported(
                "multi-table DELETE, ORDER BY, LIMIT or OUTPUT",
                "use DELETE FROM t USING … WHERE …",
            ));
        }
        let (FromTable::WithFromKeyword(items) | FromTable::WithoutKeyword(items)) = from;
        let [target] = items.as_mut_slice() else {
            return Err(unsupported(
                "DELETE from several tables",
                "delete from one table, join others with USING",
            ));
        };
        if !target.joins.is_empty() {
            return Err(unsupported(
                "DELETE with joins in the target",
                "join other tables with USING",
            ));
        }
        let mut preds: Vec<Expr> = self
            .table(&mut target.relation, false)?
            .into_iter()
            .collect();
        if let Some(items) = using {
            for twj in items.iter_mut() {
                preds.extend(self.table_with_joins(twj)?.into_iter().map(|l| l.pred));
            }
        }
        self.exprs(selection)?;
        self.exprs(returning)?;
        and_into(selection, preds);
        Ok(())
    }
}

/// Finds subqueries in expressions and rewrites each with the rewriter;
/// refuses table references and denied functions outside FROM.
struct Scoper<'r, 'c> {
    rw: &'r mut Rewriter<'c>,
    stack: Vec<Query>,
}

impl VisitorMut for Scoper<'_, '_> {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Refusal> {
        // Park the subquery so the visitor does not descend into it; it is
        // rewritten as a whole in `post_visit_query`.
        match template(&PLACEHOLDER) {
            Ok(p) => {
                self.stack.push(std::mem::replace(query, p));
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<Refusal> {
        let Some(mut original) = self.stack.pop() else {
            return ControlFlow::Break(Refusal::Internal("subquery stack".into()));
        };
        if let Err(e) = self.rw.query(&mut original) {
            return ControlFlow::Break(e);
        }
        *query = original;
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &mut ObjectName) -> ControlFlow<Refusal> {
        if self.rw.tables.matches(name, self.rw.dialect) && !self.rw.is_cte(name) {
            return ControlFlow::Break(unsupported(
                format!("a reference to tenant table `{name}` outside a FROM clause"),
                "select from the table in a subquery",
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<Refusal> {
        ControlFlow::Break(unsupported(
            format!("the table reference `{f}` inside an expression"),
            "use a subquery",
        ))
    }

    fn pre_visit_statement(&mut self, _: &mut Statement) -> ControlFlow<Refusal> {
        ControlFlow::Break(unsupported(
            "a statement inside an expression",
            "use a data-modifying CTE",
        ))
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Refusal> {
        if let Expr::Function(f) = expr
            && let Some(last) = idents(&f.name).and_then(|p| p.last().copied())
            && DENIED_FUNCTIONS
                .iter()
                .any(|d| last.value.eq_ignore_ascii_case(d))
        {
            return ControlFlow::Break(unsupported(
                format!("the function `{}`", f.name),
                "it reads tables by name or changes the session tenant",
            ));
        }
        ControlFlow::Continue(())
    }
}
