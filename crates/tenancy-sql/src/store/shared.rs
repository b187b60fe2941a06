//! The store code both databases share, written once: [`sql_store!`]
//! implements the store traits for a store type, and [`Dialect`] is what
//! that store says about its database.
//!
//! The SQL is written once too: placeholders are `$1`, `$2`, … (sqlx's
//! SQLite driver reads `$n` as `?n`), casts are `CAST(… AS …)`, and
//! booleans are `true`/`false`, which both databases understand.

use std::future::Future;

use tenancy_core::{StoreError, TenantId, TenantInfo};

/// What differs between the databases: the schema, and the statements that
/// write. On PostgreSQL each write also announces its change (`pg_notify`
/// in the same statement); on SQLite the schema's triggers do that.
///
/// The statements take the same binds and return the same columns on
/// both databases, so the Rust around them is shared.
pub(super) trait Dialect {
    /// The store's own schema, idempotent, run by `migrate` in one
    /// transaction opened with [`Dialect::BEGIN`].
    const MIGRATION: &'static str;
    /// The job queue's tables (`crate::jobs`), run after [`Dialect::MIGRATION`].
    const JOBS: &'static str;
    /// The usage tables (`crate::usage`), run after [`Dialect::JOBS`].
    const USAGE: &'static str;
    /// Columns added since the first release, for databases made before
    /// them: each statement is run, and a column that exists already
    /// ("duplicate column") is fine.
    const ADDED_COLUMNS: &'static [&'static str];
    /// Opens the migration's transaction.
    const BEGIN: &'static str;
    /// Inserts a tenant: `$1`..`$10` are its columns in `tenant_columns!`
    /// order.
    const CREATE: &'static str;
    /// Applies a `TenantUpdate` to tenant `$1`: slug `$2`, name `$3` and
    /// metadata `$6` when not NULL, plan `$5` when `$4`, `updated_at` `$7`,
    /// `trial_ends_at` `$9` when `$8`.
    /// Returns the updated row (no row: no such tenant).
    const UPDATE: &'static str;
    /// Moves tenant `$1` to status `$2` (reason `$3`, at `$4`) if its
    /// status is one of `$5`..`$8`. Returns the updated row.
    const SET_STATUS: &'static str;
    /// Deletes tenant `$1` (its config and domains go with it). Returns
    /// its slug.
    const DELETE: &'static str;
    /// Sets config key `$2` of tenant `$1` to `$3`.
    const SET_CONFIG: &'static str;
    /// Deletes config key `$2` of tenant `$1`. Returns the tenant id.
    const DELETE_CONFIG: &'static str;
    /// Run before [`Dialect::ADD_DOMAIN`], in one transaction, when the new
    /// domain is primary: takes the primary mark from the other domains of
    /// tenant `$1`. `None` when `ADD_DOMAIN` does that itself.
    const DEMOTE_PRIMARY: Option<&'static str>;
    /// Inserts a domain: `$1`..`$7` are its columns in `domain_columns!`
    /// order.
    const ADD_DOMAIN: &'static str;
    /// Marks domain `$1` verified at `$2`, keeping the first verification
    /// time. Returns the row; no row when it does not exist or (see
    /// [`Dialect::VERIFY_SKIPS_VERIFIED`]) was verified already.
    const VERIFY_DOMAIN: &'static str;
    /// Whether [`Dialect::VERIFY_DOMAIN`] leaves a verified domain alone
    /// (and returns no row for it), so that its row is read again.
    const VERIFY_SKIPS_VERIFIED: bool;
    /// Removes domain `$1`. Returns the removed row.
    const REMOVE_DOMAIN: &'static str;

    /// Claims the oldest ready pending member no other writer holds and
    /// inserts `tenant` under the member's id (`tenant.id` is ignored).
    /// Returns that id and the member's migration version; `None` when no
    /// member is free. A taken slug fails and the member stays.
    fn claim(
        &self,
        tenant: &TenantInfo,
    ) -> impl Future<Output = Result<Option<(TenantId, Option<i64>)>, StoreError>> + Send;
}

/// Implements the store traits of `tenancy_core` (and `new`, `pool`,
/// `migrate`) for `$store`, a struct with one field `pool: sqlx::Pool<$db>`
/// that implements [`Dialect`].
macro_rules! sql_store {
    ($store:ident, $db:ty) => {
        /// A query on this store's database.
        type Query = ::sqlx::query::Query<'static, $db, <$db as ::sqlx::Database>::Arguments>;

        impl $store {
            #[doc = concat!(
                        "Uses an existing pool (call [`", stringify!($store), "::migrate`] once)."
                    )]
            pub fn new(pool: ::sqlx::Pool<$db>) -> Self {
                Self { pool }
            }

            /// The pool.
            pub fn pool(&self) -> &::sqlx::Pool<$db> {
                &self.pool
            }

            /// Creates the store's tables if missing.
            pub async fn migrate(&self) -> Result<(), ::tenancy_core::StoreError> {
                use $crate::store::shared::Dialect;
                use $crate::store::unavailable;
                let mut tx = self
                    .pool
                    .begin_with(<Self as Dialect>::BEGIN)
                    .await
                    .map_err(unavailable)?;
                ::sqlx::raw_sql(<Self as Dialect>::MIGRATION)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                ::sqlx::raw_sql(<Self as Dialect>::JOBS)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                for added in <Self as Dialect>::ADDED_COLUMNS {
                    if let Err(e) = ::sqlx::raw_sql(::sqlx::AssertSqlSafe(*added))
                        .execute(&mut *tx)
                        .await
                    {
                        if !e.to_string().contains("duplicate column") {
                            return Err(unavailable(e));
                        }
                    }
                }
                ::sqlx::raw_sql(<Self as Dialect>::USAGE)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)
            }

            /// [`new`](Self::new), then [`migrate`](Self::migrate).
            async fn migrated(pool: ::sqlx::Pool<$db>) -> Result<Self, ::tenancy_core::StoreError> {
                let store = Self::new(pool);
                store.migrate().await?;
                Ok(store)
            }

            /// The row of type `R` that `sql` returns for `key` (its `$1`),
            /// as a `T`.
            async fn row<R, T>(
                &self,
                sql: &'static str,
                key: &str,
            ) -> Result<Option<T>, ::tenancy_core::StoreError>
            where
                R: for<'r> ::sqlx::FromRow<'r, <$db as ::sqlx::Database>::Row> + Send + Unpin,
                T: TryFrom<R, Error = ::tenancy_core::StoreError>,
            {
                ::sqlx::query_as::<_, R>(sql)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?
                    .map(T::try_from)
                    .transpose()
            }

            /// Binds the columns of `t`, under the id `id`, in
            /// `tenant_columns!` order.
            fn bind_tenant(query: Query, id: &str, t: &::tenancy_core::TenantInfo) -> Query {
                query
                    .bind(id)
                    .bind(t.slug.as_str())
                    .bind(&t.name)
                    .bind(t.status.as_str())
                    .bind(&t.status_reason)
                    .bind(&t.plan)
                    .bind(::sqlx::types::Json(&t.metadata))
                    .bind(t.created_at)
                    .bind(t.updated_at)
                    .bind(t.trial_ends_at)
            }

            /// Binds the columns of `d` in `domain_columns!` order.
            fn bind_domain(query: Query, d: &::tenancy_core::TenantDomain) -> Query {
                query
                    .bind(d.domain.as_str())
                    .bind(d.tenant_id.as_str())
                    .bind(d.primary)
                    .bind(d.status.as_str())
                    .bind(&d.token)
                    .bind(d.created_at)
                    .bind(d.verified_at)
            }
        }

        $crate::store::shared::tenant_store!($store);
        $crate::store::shared::config_store!($store);
        $crate::store::shared::domain_store!($store);
        $crate::store::shared::audit_store!($store);
        $crate::store::shared::impersonation_store!($store);
        $crate::store::shared::pending_store!($store);
    };
}
pub(super) use sql_store;

/// [`sql_store!`]'s `TenantStore`.
macro_rules! tenant_store {
    ($store:ident) => {
        #[::async_trait::async_trait]
        impl ::tenancy_core::TenantStore for $store {
            async fn get(
                &self,
                id: &::tenancy_core::TenantId,
            ) -> Result<Option<::tenancy_core::TenantInfo>, ::tenancy_core::StoreError> {
                self.row::<$crate::store::TenantRow, _>(
                    $crate::store::select!(tenant_columns, "tenancy_tenants", "WHERE id = $1"),
                    id.as_str(),
                )
                .await
            }

            async fn get_by_slug(
                &self,
                slug: &str,
            ) -> Result<Option<::tenancy_core::TenantInfo>, ::tenancy_core::StoreError> {
                self.row::<$crate::store::TenantRow, _>(
                    $crate::store::select!(tenant_columns, "tenancy_tenants", "WHERE slug = $1"),
                    slug,
                )
                .await
            }

            async fn list(
                &self,
                query: ::tenancy_core::ListQuery,
            ) -> Result<::tenancy_core::TenantPage, ::tenancy_core::StoreError> {
                use ::tenancy_core::ListQuery;
                use $crate::store::unavailable;
                // A status filter decides on its own; the search is a LIKE on
                // the lower-cased slug and name, or the exact id.
                let all = query.include_inactive || query.status.is_some();
                let status = query.status.map(|s| s.as_str());
                let pattern = query.like_pattern();
                let total: i64 = ::sqlx::query_scalar(
                    "SELECT count(*) FROM tenancy_tenants WHERE ($1 OR status = 'active') \
                     AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR lower(slug) LIKE $3 ESCAPE '\\' \
                     OR lower(name) LIKE $3 ESCAPE '\\' OR id = $4)",
                )
                .bind(all)
                .bind(status)
                .bind(&pattern)
                .bind(&query.search)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
                const ROWS: &str = $crate::store::select!(
                    tenant_columns,
                    "tenancy_tenants",
                    "WHERE ($1 OR status = 'active') \
                     AND (CAST($4 AS TEXT) IS NULL OR status = $4) \
                     AND (CAST($5 AS TEXT) IS NULL OR lower(slug) LIKE $5 ESCAPE '\\' \
                     OR lower(name) LIKE $5 ESCAPE '\\' OR id = $6) \
                     ORDER BY created_at, id LIMIT $2 OFFSET $3"
                );
                let rows = ::sqlx::query_as::<_, $crate::store::TenantRow>(ROWS)
                    .bind(all)
                    .bind(i64::try_from(query.limit.min(ListQuery::MAX_LIMIT)).unwrap_or(i64::MAX))
                    .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
                    .bind(status)
                    .bind(&pattern)
                    .bind(&query.search)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(::tenancy_core::TenantPage {
                    items: rows
                        .into_iter()
                        .map(::tenancy_core::TenantInfo::try_from)
                        .collect::<Result<_, _>>()?,
                    total: u64::try_from(total).unwrap_or(0),
                })
            }

            async fn create(
                &self,
                tenant: ::tenancy_core::NewTenant,
            ) -> Result<::tenancy_core::TenantInfo, ::tenancy_core::StoreError> {
                let t = tenant.into_info(::chrono::Utc::now());
                let query = ::sqlx::query(<Self as $crate::store::shared::Dialect>::CREATE);
                Self::bind_tenant(query, t.id.as_str(), &t)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        $crate::store::map_err(e, Some(t.slug.as_str()), Some(t.id.as_str()))
                    })?;
                Ok(t)
            }

            async fn update(
                &self,
                id: &::tenancy_core::TenantId,
                update: ::tenancy_core::TenantUpdate,
            ) -> Result<::tenancy_core::TenantInfo, ::tenancy_core::StoreError> {
                // `TenantUpdate::apply_to`, in SQL: only the given fields change.
                let slug = update.slug.as_ref().map(|s| s.as_str());
                ::sqlx::query_as::<_, $crate::store::TenantRow>(
                    <Self as $crate::store::shared::Dialect>::UPDATE,
                )
                .bind(id.as_str())
                .bind(slug)
                .bind(&update.name)
                .bind(update.plan.is_some())
                .bind(update.plan.as_ref().and_then(Option::as_deref))
                .bind(update.metadata.as_ref().map(::sqlx::types::Json))
                .bind(::chrono::Utc::now())
                .bind(update.trial_ends_at.is_some())
                .bind(update.trial_ends_at.flatten())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| $crate::store::map_err(e, slug, Some(id.as_str())))?
                .ok_or_else(|| ::tenancy_core::StoreError::NotFound(id.to_string()))?
                .try_into()
            }

            async fn set_status(
                &self,
                id: &::tenancy_core::TenantId,
                status: ::tenancy_core::TenantStatus,
                reason: Option<&str>,
            ) -> Result<::tenancy_core::TenantInfo, ::tenancy_core::StoreError> {
                use ::tenancy_core::StoreError;
                let [a, b, c, d] = $crate::store::allowed_sources(status);
                let row = ::sqlx::query_as::<_, $crate::store::TenantRow>(
                    <Self as $crate::store::shared::Dialect>::SET_STATUS,
                )
                .bind(id.as_str())
                .bind(status.as_str())
                .bind(reason)
                .bind(::chrono::Utc::now())
                .bind(a)
                .bind(b)
                .bind(c)
                .bind(d)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::unavailable)?;
                if let Some(row) = row {
                    return row.try_into();
                }
                // Nothing changed (nor was announced): say why.
                match self.get(id).await? {
                    None => Err(StoreError::NotFound(id.to_string())),
                    Some(current) => Err(StoreError::InvalidTransition {
                        id: id.to_string(),
                        from: current.status,
                        to: status,
                    }),
                }
            }

            async fn delete(
                &self,
                id: &::tenancy_core::TenantId,
            ) -> Result<bool, ::tenancy_core::StoreError> {
                let slug: Option<String> =
                    ::sqlx::query_scalar(<Self as $crate::store::shared::Dialect>::DELETE)
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::unavailable)?;
                Ok(slug.is_some())
            }

            async fn check(&self) -> Result<(), ::tenancy_core::StoreError> {
                ::sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err($crate::store::unavailable)
            }
        }
    };
}
pub(super) use tenant_store;

/// [`sql_store!`]'s `ConfigStore`.
macro_rules! config_store {
    ($store:ident) => {
        #[::async_trait::async_trait]
        impl ::tenancy_core::ConfigStore for $store {
            async fn get_config(
                &self,
                tenant: &::tenancy_core::TenantId,
                key: &str,
            ) -> Result<Option<::serde_json::Value>, ::tenancy_core::StoreError> {
                let value: Option<::sqlx::types::Json<::serde_json::Value>> = ::sqlx::query_scalar(
                    "SELECT value FROM tenancy_config WHERE tenant_id = $1 AND key = $2",
                )
                .bind(tenant.as_str())
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::unavailable)?;
                Ok(value.map(|v| v.0))
            }

            async fn config_with_key(
                &self,
                key: &str,
            ) -> Result<
                Option<Vec<(::tenancy_core::TenantId, ::serde_json::Value)>>,
                ::tenancy_core::StoreError,
            > {
                let rows: Vec<(String, ::sqlx::types::Json<::serde_json::Value>)> =
                    ::sqlx::query_as("SELECT tenant_id, value FROM tenancy_config WHERE key = $1")
                        .bind(key)
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::unavailable)?;
                rows.into_iter()
                    .map(|(id, value)| {
                        ::tenancy_core::TenantId::new(&id)
                            .map(|id| (id, value.0))
                            .map_err(|e| {
                                ::tenancy_core::StoreError::Unavailable(format!(
                                    "tenancy_config holds a malformed tenant id: {e}"
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }

            async fn all_config(
                &self,
                tenant: &::tenancy_core::TenantId,
            ) -> Result<::tenancy_core::ConfigMap, ::tenancy_core::StoreError> {
                let rows: Vec<(String, ::sqlx::types::Json<::serde_json::Value>)> =
                    ::sqlx::query_as("SELECT key, value FROM tenancy_config WHERE tenant_id = $1")
                        .bind(tenant.as_str())
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::unavailable)?;
                Ok(rows.into_iter().map(|(k, v)| (k, v.0)).collect())
            }

            async fn set_config(
                &self,
                tenant: &::tenancy_core::TenantId,
                key: &str,
                value: ::serde_json::Value,
            ) -> Result<(), ::tenancy_core::StoreError> {
                ::tenancy_core::store::validate_config_key(key)?;
                match ::sqlx::query(<Self as $crate::store::shared::Dialect>::SET_CONFIG)
                    .bind(tenant.as_str())
                    .bind(key)
                    .bind(::sqlx::types::Json(&value))
                    .execute(&self.pool)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_database_error()
                            .is_some_and(|d| d.is_foreign_key_violation()) =>
                    {
                        Err(::tenancy_core::StoreError::NotFound(tenant.to_string()))
                    }
                    Err(e) => Err($crate::store::unavailable(e)),
                }
            }

            async fn delete_config(
                &self,
                tenant: &::tenancy_core::TenantId,
                key: &str,
            ) -> Result<bool, ::tenancy_core::StoreError> {
                let deleted: Option<String> =
                    ::sqlx::query_scalar(<Self as $crate::store::shared::Dialect>::DELETE_CONFIG)
                        .bind(tenant.as_str())
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::unavailable)?;
                Ok(deleted.is_some())
            }
        }
    };
}
pub(super) use config_store;

/// [`sql_store!`]'s `DomainStore`.
macro_rules! domain_store {
    ($store:ident) => {
        #[::async_trait::async_trait]
        impl ::tenancy_core::DomainStore for $store {
            async fn add_domain(
                &self,
                domain: ::tenancy_core::TenantDomain,
            ) -> Result<::tenancy_core::TenantDomain, ::tenancy_core::StoreError> {
                use $crate::store::shared::Dialect;
                use $crate::store::{domain_insert_error, unavailable};
                let insert =
                    Self::bind_domain(::sqlx::query(<Self as Dialect>::ADD_DOMAIN), &domain);
                match <Self as Dialect>::DEMOTE_PRIMARY.filter(|_| domain.primary) {
                    None => {
                        insert
                            .execute(&self.pool)
                            .await
                            .map_err(|e| domain_insert_error(e, &domain))?;
                    }
                    Some(demote) => {
                        let mut tx = self.pool.begin().await.map_err(unavailable)?;
                        ::sqlx::query(demote)
                            .bind(domain.tenant_id.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                        insert
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| domain_insert_error(e, &domain))?;
                        tx.commit().await.map_err(unavailable)?;
                    }
                }
                Ok(domain)
            }

            async fn get_domain(
                &self,
                domain: &str,
            ) -> Result<Option<::tenancy_core::TenantDomain>, ::tenancy_core::StoreError> {
                self.row::<$crate::store::DomainRow, _>(
                    $crate::store::select!(domain_columns, "tenancy_domains", "WHERE domain = $1"),
                    domain,
                )
                .await
            }

            async fn list_domains(
                &self,
                tenant: &::tenancy_core::TenantId,
            ) -> Result<Vec<::tenancy_core::TenantDomain>, ::tenancy_core::StoreError> {
                const SQL: &str = $crate::store::select!(
                    domain_columns,
                    "tenancy_domains",
                    "WHERE tenant_id = $1 ORDER BY is_primary DESC, domain"
                );
                ::sqlx::query_as::<_, $crate::store::DomainRow>(SQL)
                    .bind(tenant.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn verify_domain(
                &self,
                domain: &str,
            ) -> Result<Option<::tenancy_core::TenantDomain>, ::tenancy_core::StoreError> {
                let verified = ::sqlx::query_as::<_, $crate::store::DomainRow>(
                    <Self as $crate::store::shared::Dialect>::VERIFY_DOMAIN,
                )
                .bind(domain)
                .bind(::chrono::Utc::now())
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::unavailable)?;
                match verified {
                    Some(row) => row.try_into().map(Some),
                    None if <Self as $crate::store::shared::Dialect>::VERIFY_SKIPS_VERIFIED => {
                        self.get_domain(domain).await
                    }
                    None => Ok(None),
                }
            }

            async fn remove_domain(
                &self,
                domain: &str,
            ) -> Result<Option<::tenancy_core::TenantDomain>, ::tenancy_core::StoreError> {
                self.row::<$crate::store::DomainRow, _>(
                    <Self as $crate::store::shared::Dialect>::REMOVE_DOMAIN,
                    domain,
                )
                .await
            }
        }
    };
}
pub(super) use domain_store;

/// [`sql_store!`]'s `AuditStore`.
macro_rules! audit_store {
    ($store:ident) => {
        #[::async_trait::async_trait]
        impl ::tenancy_core::AuditStore for $store {
            async fn record(
                &self,
                entry: ::tenancy_core::NewAuditEntry,
            ) -> Result<::tenancy_core::AuditEntry, ::tenancy_core::StoreError> {
                const SQL: &str = concat!(
                    "INSERT INTO tenancy_audit (at, actor, action, tenant_id, before, after) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
                    $crate::store::audit_columns!()
                );
                ::sqlx::query_as::<_, $crate::store::AuditRow>(SQL)
                    .bind(::chrono::Utc::now())
                    .bind(entry.actor)
                    .bind(entry.action)
                    .bind(entry.tenant_id.map(|t| t.to_string()))
                    .bind(entry.before.map(::sqlx::types::Json))
                    .bind(entry.after.map(::sqlx::types::Json))
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?
                    .try_into()
            }

            async fn audit(
                &self,
                query: ::tenancy_core::AuditQuery,
            ) -> Result<Vec<::tenancy_core::AuditEntry>, ::tenancy_core::StoreError> {
                const SQL: &str = concat!(
                    "SELECT ",
                    $crate::store::audit_columns!(),
                    " FROM tenancy_audit \
                     WHERE (CAST($1 AS TEXT) IS NULL OR tenant_id = $1) \
                     AND (CAST($2 AS BIGINT) IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3"
                );
                ::sqlx::query_as::<_, $crate::store::AuditRow>(SQL)
                    .bind(query.tenant_id.as_ref().map(|t| t.to_string()))
                    .bind(query.before)
                    .bind(i64::from(query.effective_limit()))
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }
        }
    };
}
pub(super) use audit_store;

/// [`sql_store!`]'s `ImpersonationStore`.
macro_rules! impersonation_store {
    ($store:ident) => {
        #[::async_trait::async_trait]
        impl ::tenancy_core::impersonation::ImpersonationStore for $store {
            async fn issue(
                &self,
                grant: ::tenancy_core::impersonation::ImpersonationGrant,
            ) -> Result<(), ::tenancy_core::StoreError> {
                use $crate::store::unavailable;
                // Expired grants are of no use to anyone: drop them as we go.
                ::sqlx::query("DELETE FROM tenancy_impersonations WHERE expires_at < $1")
                    .bind(::chrono::Utc::now())
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                ::sqlx::query(
                    "INSERT INTO tenancy_impersonations \
                     (key, tenant_id, user_name, issued_by, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(grant.key)
                .bind(grant.tenant_id.to_string())
                .bind(grant.user)
                .bind(grant.issued_by)
                .bind(grant.expires_at)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(())
            }

            async fn redeem(
                &self,
                key: &str,
            ) -> Result<
                Option<::tenancy_core::impersonation::ImpersonationGrant>,
                ::tenancy_core::StoreError,
            > {
                // One statement: checks and marks it used, so a token is
                // accepted once however many instances see it at the same
                // moment.
                let row: Option<(String, String, String, ::chrono::DateTime<::chrono::Utc>)> =
                    ::sqlx::query_as(
                        "UPDATE tenancy_impersonations SET used_at = $2 \
                         WHERE key = $1 AND used_at IS NULL AND expires_at > $2 \
                         RETURNING tenant_id, user_name, issued_by, expires_at",
                    )
                    .bind(key)
                    .bind(::chrono::Utc::now())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?;
                row.map(|(tenant_id, user, issued_by, expires_at)| {
                    Ok(::tenancy_core::impersonation::ImpersonationGrant {
                        key: key.to_owned(),
                        tenant_id: tenant_id.parse().map_err(|_| {
                            ::tenancy_core::StoreError::Unavailable(
                                "corrupt impersonation row".into(),
                            )
                        })?,
                        user,
                        issued_by,
                        expires_at,
                    })
                })
                .transpose()
            }
        }
    };
}
pub(super) use impersonation_store;

/// [`sql_store!`]'s `PendingStore`.
macro_rules! pending_store {
    ($store:ident) => {
        #[::async_trait::async_trait]
        impl ::tenancy_core::PendingStore for $store {
            async fn add_pending(
                &self,
                id: &::tenancy_core::TenantId,
            ) -> Result<(), ::tenancy_core::StoreError> {
                ::sqlx::query(
                    "INSERT INTO tenancy_pending (id, ready, created_at) VALUES ($1, false, $2)",
                )
                .bind(id.as_str())
                .bind(::chrono::Utc::now())
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::map_err(e, None, Some(id.as_str())))?;
                Ok(())
            }

            async fn mark_pending_ready(
                &self,
                id: &::tenancy_core::TenantId,
                version: Option<i64>,
            ) -> Result<bool, ::tenancy_core::StoreError> {
                let done = ::sqlx::query(
                    "UPDATE tenancy_pending SET ready = true, version = $2 WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(version)
                .execute(&self.pool)
                .await
                .map_err($crate::store::unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_pending(
                &self,
            ) -> Result<Vec<::tenancy_core::PendingTenant>, ::tenancy_core::StoreError> {
                let rows: Vec<(String, bool, Option<i64>, ::chrono::DateTime<::chrono::Utc>)> =
                    ::sqlx::query_as(
                        "SELECT id, ready, version, created_at FROM tenancy_pending \
                         ORDER BY created_at, id",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?;
                $crate::store::pending_members(rows)
            }

            async fn claim_pending(
                &self,
                tenant: ::tenancy_core::NewTenant,
            ) -> Result<Option<::tenancy_core::Claimed>, ::tenancy_core::StoreError> {
                // The record as it will be stored; its id is the member's.
                let mut t = tenant.into_info(::chrono::Utc::now());
                let Some((id, version)) = $crate::store::shared::Dialect::claim(self, &t).await?
                else {
                    return Ok(None);
                };
                t.id = id;
                Ok(Some(::tenancy_core::Claimed { tenant: t, version }))
            }

            async fn remove_pending(
                &self,
                id: &::tenancy_core::TenantId,
            ) -> Result<bool, ::tenancy_core::StoreError> {
                let done = ::sqlx::query("DELETE FROM tenancy_pending WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::unavailable)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
pub(super) use pending_store;
