//! Pages of a listing: the `page` / `page_size` query, the `meta` of the answer,
//! and the SQL that fetches one page and its total.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::db::{Database, DbError, Row, SqlParam};
use crate::validation::Int;

/// A page number: SQL BIGINT counts pages like everything else.
pub type PageNumber = Int<1, { i64::MAX }>;

/// At most 100 rows per page.
pub type PageSize = Int<1, 100>;

/// The page parameters every list endpoint takes.
#[derive(Debug, Clone, Default, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, default 1
    #[param(inline)]
    pub page: Option<PageNumber>,
    /// Page size, default 10
    #[param(inline)]
    pub page_size: Option<PageSize>,
}

/// Page number and size as the contract has them: page >= 1, page_size 1..=100,
/// defaults 1 and 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub page_size: u64,
}

impl From<PageQuery> for PageRequest {
    fn from(query: PageQuery) -> Self {
        // Both are positive by their types.
        Self {
            page: query.page.map_or(1, |p| p.get().unsigned_abs()),
            page_size: query.page_size.map_or(10, |s| s.get().unsigned_abs()),
        }
    }
}

impl PageRequest {
    /// Rows to skip; capped at the largest SQL BIGINT so an absurd page number
    /// is just an empty page, not a database error.
    pub fn offset(&self) -> u64 {
        (self.page - 1)
            .saturating_mul(self.page_size)
            .min(i64::MAX as u64)
    }

    pub fn meta(&self, total_count: u64) -> PageMeta {
        PageMeta {
            page: self.page,
            page_size: self.page_size,
            total_pages: total_count.div_ceil(self.page_size),
            total_count,
        }
    }
}

/// Pagination metadata of a list response.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
pub struct PageMeta {
    pub page: u64,
    pub page_size: u64,
    pub total_pages: u64,
    pub total_count: u64,
}

/// Metadata of a keyset page: lists that go on from a cursor instead of a page
/// number, so a page stays stable while rows are added in front of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct CursorMeta {
    pub page_size: u64,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// The `WHERE` clause of a listing whose filters are optional: each condition is
/// added with its value, and its `?` becomes the next `$n` placeholder.
pub struct Filter<'a> {
    conditions: Vec<String>,
    params: Vec<&'a dyn SqlParam>,
}

impl<'a> Filter<'a> {
    /// Starts with a condition that always applies (e.g. `deleted_at IS NULL`).
    pub fn new(always: &str) -> Self {
        Self {
            conditions: vec![always.to_owned()],
            params: Vec::new(),
        }
    }

    #[must_use]
    pub fn and(mut self, condition: &str, value: &'a dyn SqlParam) -> Self {
        self.params.push(value);
        let placeholder = format!("${}", self.params.len());
        self.conditions.push(condition.replace('?', &placeholder));
        self
    }
}

/// One page of `SELECT columns FROM table WHERE filter ORDER BY order_by`, and the
/// number of rows the filter matches. The count costs a second statement only
/// when the page cannot tell it (a full page, or an empty page past the first).
///
/// # Errors
/// See [`DbError`].
#[tracing::instrument(level = "debug", skip_all, fields(table = %table, page = page.page))]
pub async fn fetch_page(
    db: &Database,
    columns: &str,
    table: &str,
    filter: Filter<'_>,
    order_by: &str,
    page: &PageRequest,
) -> Result<(Vec<Row>, u64), DbError> {
    let where_clause = filter.conditions.join(" AND ");
    // Both fit: page_size is at most 100 and the offset is capped at i64::MAX.
    let limit = i64::try_from(page.page_size).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.offset()).unwrap_or(i64::MAX);
    let mut params = filter.params.clone();
    params.extend([&limit as &dyn SqlParam, &offset]);
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE {where_clause} ORDER BY {order_by} LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len()
    );
    let rows = db.query(&sql, &params).await?;
    let fetched = rows.len() as u64;
    if fetched > 0 && fetched < page.page_size {
        return Ok((rows, page.offset() + fetched));
    }
    if fetched == 0 && page.offset() == 0 {
        return Ok((rows, 0));
    }
    let count = format!("SELECT COUNT(*) AS total FROM {table} WHERE {where_clause}");
    let total: i64 = db.query_one(&count, &filter.params).await?.get("total")?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_rounds_total_pages_up_and_offset_saturates() {
        let page = PageRequest {
            page: 3,
            page_size: 10,
        };
        assert_eq!(page.meta(21).total_pages, 3);
        assert_eq!(page.meta(0).total_pages, 0);
        assert_eq!(page.offset(), 20);
        let huge = PageRequest {
            page: u64::MAX,
            page_size: 100,
        };
        assert_eq!(huge.offset(), i64::MAX as u64);
    }

    #[derive(Debug, Deserialize, Validate)]
    struct NoFilter {}

    #[test]
    fn non_numeric_page_is_named() {
        let err = crate::query::ListQuery::<NoFilter>::from_query("page=abc").unwrap_err();
        match err {
            crate::ApiError::Validation { details, .. } => assert_eq!(details[0].field, "page"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
