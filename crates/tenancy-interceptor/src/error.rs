//! Why a statement was refused.

/// The interceptor refused to rewrite a statement.
///
/// Every variant names what was refused and what to do instead. A refused
/// statement must not be executed: the interceptor never hands back SQL it
/// could not prove to be scoped to the current tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The text is not valid SQL for the dialect (or nests deeper than the
    /// parser allows).
    #[error(
        "refused: the statement does not parse as {dialect} SQL ({message}); fix the syntax or run it outside the tenant-scoped path"
    )]
    Parse {
        /// The dialect that was used.
        dialect: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The text holds no statement.
    #[error("refused: the input holds no SQL statement; pass exactly one statement")]
    Empty,
    /// The text holds more than one statement.
    #[error("refused: the input holds {count} statements; pass exactly one statement per call")]
    MultipleStatements {
        /// How many statements were found.
        count: usize,
    },
    /// DDL, TRUNCATE, COPY or a similar statement names a tenant table.
    #[error(
        "refused: {kind} on tenant table `{table}` cannot be scoped to one tenant; run schema changes and bulk operations through migrations, not the tenant-scoped path"
    )]
    TenantTableStatement {
        /// The kind of statement, e.g. `TRUNCATE`.
        kind: String,
        /// The tenant table it names.
        table: String,
    },
    /// A statement kind the interceptor does not handle.
    #[error(
        "refused: {kind} statements are not handled by the query interceptor; only SELECT, INSERT, UPDATE, DELETE and EXPLAIN are scoped"
    )]
    UnsupportedStatement {
        /// The kind of statement.
        kind: String,
    },
    /// A construct inside an otherwise supported statement that the rewriter
    /// cannot scope safely.
    #[error("refused: {construct} is not supported by the query interceptor; {hint}")]
    Unsupported {
        /// What was found.
        construct: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// The statement sets or inserts the tenant column itself.
    #[error(
        "refused: the statement writes the tenant column `{column}` of `{table}`; the interceptor fills it, remove it from the statement"
    )]
    TenantColumnWritten {
        /// The tenant table.
        table: String,
        /// The tenant column.
        column: String,
    },
    /// An INSERT into a tenant table without a column list.
    #[error(
        "refused: INSERT into tenant table `{table}` without a column list; name the columns explicitly so the tenant column can be added"
    )]
    InsertWithoutColumns {
        /// The tenant table.
        table: String,
    },
    /// EXPLAIN ANALYZE would execute a write.
    #[error(
        "refused: EXPLAIN ANALYZE of a data-modifying statement executes it; use EXPLAIN without ANALYZE"
    )]
    ExplainAnalyzeWrite,
    /// The statement's bind parameters cannot be numbered safely.
    #[error("refused: {0}")]
    Placeholders(String),
    /// The rewritten statement does not parse back: the input used a form
    /// the SQL printer cannot write out faithfully (a keyword such as
    /// `not` as a bare column name, `0 .id`).
    #[error(
        "refused: the statement does not read back after scoping ({0}); quote identifiers that are SQL keywords (\"not\") and write it plainly"
    )]
    DoesNotReadBack(String),
    /// The rewriter hit a state it should never reach; treated as a refusal.
    #[error("refused: internal rewriter error ({0}); please report this statement")]
    Internal(String),
}
