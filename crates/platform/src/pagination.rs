//! Pages of a listing: the `page` / `page_size` / `cursor` query, the `meta` of
//! the answer, and the SQL that fetches one page and, when it cannot be told
//! from the page, a bounded count.
//!
//! Lists are ordered newest first by `(created_at, id)`. A page starts either at
//! an offset (`page`, as the contract has it) or right after a keyset cursor
//! (`cursor`, see [`crate::cursor`]): a cursor page costs what the page costs at
//! any depth and stays stable while rows are inserted in front of it.
//!
//! Counts: a numbered page tells `total_count` exactly when the filter matches
//! at most [`EXACT_COUNT_LIMIT`] rows, or when the page itself is the last one;
//! otherwise it counts no further than that limit (a bounded subquery, so the
//! count costs at most that many index entries however large the table) and
//! answers a lower bound with `total_count_exact: false`. Cursor pages carry no
//! count at all.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::cursor::{Cursor, CursorText};
use crate::db::{Database, DbError, Row, SqlParam};
use crate::error::ApiError;
use crate::validation::Int;

/// A numbered page tells its total exactly up to this many matching rows; past
/// it, `total_count` is a lower bound (`total_count_exact: false`).
pub const EXACT_COUNT_LIMIT: u64 = 1000;

/// A page number: SQL BIGINT counts pages like everything else.
pub type PageNumber = Int<1, { i64::MAX }>;

/// At most 100 rows per page.
pub type PageSize = Int<1, 100>;

/// The page parameters every list endpoint takes.
#[derive(Debug, Clone, Default, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, default 1; not together with `cursor`
    #[param(inline)]
    pub page: Option<PageNumber>,
    /// Page size, default 10
    #[param(inline)]
    pub page_size: Option<PageSize>,
    /// Keyset paging: the `meta.next_cursor` of the page before (same filters).
    /// The page then carries `next_cursor` but no counts.
    #[param(inline)]
    pub cursor: Option<CursorText>,
}

/// Page number and size as the contract has them (page >= 1, page_size 1..=100,
/// defaults 1 and 10), or a cursor to go on from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub page_size: u64,
    /// The `cursor` parameter; read against its list by [`PageRequest::bind`].
    pub cursor: Option<CursorText>,
}

impl From<PageQuery> for PageRequest {
    fn from(query: PageQuery) -> Self {
        // Both are positive by their types.
        Self {
            page: query.page.map_or(1, |p| p.get().unsigned_abs()),
            page_size: query.page_size.map_or(10, |s| s.get().unsigned_abs()),
            cursor: query.cursor,
        }
    }
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Page number (from 1).
    Page(u64),
    /// Right after this row.
    After(Cursor<i64>),
}

/// A page request read against one list: its scope (name and filters, which
/// cursors are bound to), its size, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub scope: String,
    pub size: u64,
    pub start: Start,
}

impl PageRequest {
    /// Binds the request to the list named by `scope` (its name and filters),
    /// reading the cursor, if any, against it.
    ///
    /// # Errors
    /// 400 naming `cursor` when it is not a cursor of this list and filter.
    pub fn bind(&self, scope: String) -> Result<Page, ApiError> {
        let start = match &self.cursor {
            Some(text) => Start::After(Cursor::from_param(text, &scope)?),
            None => Start::Page(self.page),
        };
        Ok(Page {
            scope,
            size: self.page_size,
            start,
        })
    }

    /// Rows to skip; capped at the largest SQL BIGINT so an absurd page number
    /// is just an empty page, not a database error.
    pub fn offset(&self) -> u64 {
        offset(self.page, self.page_size)
    }
}

fn offset(page: u64, size: u64) -> u64 {
    (page - 1).saturating_mul(size).min(i64::MAX as u64)
}

/// Pagination metadata of a list response. Numbered pages carry `page` and the
/// counts; cursor pages (`?cursor=`) only `page_size` and `next_cursor`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct PageMeta {
    /// The page number (numbered pages only)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub page: Option<u64>,
    pub page_size: u64,
    /// Pages of `page_size` for `total_count` rows (numbered pages only); a
    /// lower bound like it when `total_count_exact` is false
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub total_pages: Option<u64>,
    /// Rows the filters match (numbered pages only): exact when they match at
    /// most 1000 rows or this is the last page, otherwise a lower bound
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub total_count: Option<u64>,
    /// Whether `total_count` is exact (numbered pages only); false means the
    /// filters match more rows than were counted
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub total_count_exact: Option<bool>,
    /// Pass as `cursor` (with the same filters) to get the next page; absent on
    /// the last page
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

impl PageMeta {
    /// The meta of a numbered page whose filters match `total` rows (`exact`)
    /// or at least that many.
    pub fn numbered(page: u64, size: u64, total: u64, exact: bool) -> Self {
        Self {
            page: Some(page),
            page_size: size,
            total_pages: Some(total.div_ceil(size)),
            total_count: Some(total),
            total_count_exact: Some(exact),
            next_cursor: None,
        }
    }
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
    custom_plan: bool,
}

impl<'a> Filter<'a> {
    /// Starts with a condition that always applies (e.g. `deleted_at IS NULL`).
    pub fn new(always: &str) -> Self {
        Self {
            conditions: vec![always.to_owned()],
            params: Vec::new(),
            custom_plan: false,
        }
    }

    /// Adds `condition`; every `?` in it binds `value`.
    #[must_use]
    pub fn and(mut self, condition: &str, value: &'a dyn SqlParam) -> Self {
        self.params.push(value);
        let placeholder = format!("${}", self.params.len());
        self.conditions.push(condition.replace('?', &placeholder));
        self
    }

    /// Plans the statements for their actual values each time (see
    /// [`Connection::query_planned`](crate::db::Connection::query_planned)): for conditions whose best plan depends on
    /// the value, such as a substring search that is selective or not.
    #[must_use]
    pub fn planned_per_value(mut self) -> Self {
        self.custom_plan = true;
        self
    }

    async fn query(
        &self,
        db: &Database,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<Vec<Row>, DbError> {
        let mut connection = db.connection().await?;
        if self.custom_plan {
            connection.query_planned(sql, params).await
        } else {
            connection.query(sql, params).await
        }
    }
}

/// One page of `SELECT columns FROM table WHERE filter`, newest first by
/// `(created_at, id)` (both among `columns`), and its meta (see the module
/// documentation for the counts).
///
/// # Errors
/// See [`DbError`].
#[tracing::instrument(level = "debug", skip_all, fields(table = %table, start = ?page.start))]
pub async fn fetch_page(
    db: &Database,
    columns: &str,
    table: &str,
    filter: Filter<'_>,
    page: &Page,
) -> Result<(Vec<Row>, PageMeta), DbError> {
    let where_clause = filter.conditions.join(" AND ");
    // One row more than the page: whether it comes says whether there is a next page.
    let limit = i64::try_from(page.size + 1).unwrap_or(i64::MAX);
    let mut params = filter.params.clone();
    let (after_at, after_id, skip);
    let tail = match page.start {
        Start::After(cursor) => {
            (after_at, after_id) = (cursor.at, cursor.id);
            params.extend([&after_at as &dyn SqlParam, &after_id, &limit]);
            let n = params.len();
            format!(
                "AND (created_at, id) < (${}, ${}) ORDER BY created_at DESC, id DESC LIMIT ${n}",
                n - 2,
                n - 1
            )
        }
        Start::Page(number) => {
            skip = i64::try_from(offset(number, page.size)).unwrap_or(i64::MAX);
            params.extend([&limit as &dyn SqlParam, &skip]);
            let n = params.len();
            format!(
                "ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${n}",
                n - 1
            )
        }
    };
    let sql = format!("SELECT {columns} FROM {table} WHERE {where_clause} {tail}");
    let mut rows = filter.query(db, &sql, &params).await?;
    let has_more = rows.len() as u64 > page.size;
    rows.truncate(page.size as usize);
    let next_cursor = match rows.last() {
        Some(last) if has_more => Some(cursor_of(last)?.encode(&page.scope)),
        _ => None,
    };
    let mut meta = match page.start {
        Start::After(_) => PageMeta {
            page_size: page.size,
            ..PageMeta::default()
        },
        Start::Page(number) => {
            let seen = offset(number, page.size) + rows.len() as u64;
            let (total, exact) = if !has_more && (!rows.is_empty() || number == 1) {
                (seen, true)
            } else {
                lower_bound(
                    bounded_count(db, table, &where_clause, &filter).await?,
                    seen,
                    has_more,
                )
            };
            PageMeta::numbered(number, page.size, total, exact)
        }
    };
    meta.next_cursor = next_cursor;
    Ok((rows, meta))
}

/// The total a numbered page reports from a bounded count: exact up to the
/// limit, else at least the count and at least the rows up to this page (and one
/// more when another page follows).
fn lower_bound(counted: u64, seen: u64, has_more: bool) -> (u64, bool) {
    if counted <= EXACT_COUNT_LIMIT {
        (counted, true)
    } else {
        (counted.max(seen + u64::from(has_more)), false)
    }
}

/// How many rows the filter matches, counting no further than one past
/// [`EXACT_COUNT_LIMIT`].
async fn bounded_count(
    db: &Database,
    table: &str,
    where_clause: &str,
    filter: &Filter<'_>,
) -> Result<u64, DbError> {
    let bound = (EXACT_COUNT_LIMIT + 1) as i64;
    let mut params = filter.params.clone();
    params.push(&bound);
    let sql = format!(
        "SELECT COUNT(*) AS total FROM (SELECT 1 FROM {table} WHERE {where_clause} LIMIT ${}) AS bounded",
        params.len()
    );
    let rows = filter.query(db, &sql, &params).await?;
    let total: i64 = match rows.first() {
        Some(row) => row.get("total")?,
        None => 0,
    };
    Ok(u64::try_from(total).unwrap_or(0))
}

/// The position right after `row`, from its `created_at` and `id`.
fn cursor_of(row: &Row) -> Result<Cursor<i64>, DbError> {
    Ok(Cursor {
        at: row.get("created_at")?,
        id: row.get("id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(page: u64, size: u64) -> PageRequest {
        PageRequest {
            page,
            page_size: size,
            cursor: None,
        }
    }

    #[test]
    fn meta_rounds_total_pages_up_and_offset_saturates() {
        assert_eq!(PageMeta::numbered(3, 10, 21, true).total_pages, Some(3));
        assert_eq!(PageMeta::numbered(1, 10, 0, true).total_pages, Some(0));
        assert_eq!(request(3, 10).offset(), 20);
        assert_eq!(request(u64::MAX, 100).offset(), i64::MAX as u64);
    }

    #[test]
    fn a_cursor_is_read_against_the_list_it_is_bound_to() {
        let cursor = Cursor {
            at: crate::db::now(),
            id: 7,
        }
        .encode("users|a");
        let bound = PageRequest {
            cursor: Some(CursorText::parse(&cursor).unwrap()),
            ..request(1, 5)
        };
        let page = bound.bind("users|a".to_owned()).unwrap();
        assert!(matches!(page.start, Start::After(c) if c.id == 7));
        assert!(bound.bind("users|b".to_owned()).is_err());
        assert_eq!(
            request(4, 5).bind("x".to_owned()).unwrap().start,
            Start::Page(4)
        );
    }

    #[test]
    fn a_count_past_the_limit_is_a_lower_bound() {
        assert_eq!(
            lower_bound(EXACT_COUNT_LIMIT, 10, true),
            (EXACT_COUNT_LIMIT, true)
        );
        let past = EXACT_COUNT_LIMIT + 1;
        assert_eq!(lower_bound(past, 10, true), (past, false));
        assert_eq!(lower_bound(past, 5000, true), (5001, false));
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
