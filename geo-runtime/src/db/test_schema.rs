//! The PostgreSQL schemas `testing` gives each test: created on an admin connection, and
//! dropped after terminating the test's own connections (which carry the schema's name as their
//! application name).

use sqlx::postgres::PgPool;

use super::dialect::quote;
use crate::error::DbError;

/// `CREATE SCHEMA <schema>`.
pub(crate) async fn create(admin: &PgPool, schema: &str) -> Result<(), DbError> {
    let sql = format!("CREATE SCHEMA {}", quote(schema));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(admin)
        .await?;
    Ok(())
}

/// Ends the connections named `schema`, then drops the schema with everything in it.
pub(crate) async fn drop(admin: &PgPool, schema: &str) -> Result<(), DbError> {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(schema)
    .execute(admin)
    .await?;
    let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(schema));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(admin)
        .await?;
    Ok(())
}
