//! The `search` filter of the user list: a case-insensitive, literal substring
//! of name or email, answered from an index on both backends.
//!
//! PostgreSQL: `LOWER(column) LIKE '%term%'` over trigram GIN indexes on those
//! expressions (see the `search` migration). The statement is planned for each
//! term ([`platform::pagination::Filter::planned_per_value`]): a selective term
//! is read off the trigram indexes, a common one by walking the list index and
//! filtering until the page is full; a generic plan would do one of the two
//! for every term.
//!
//! SQLite: a term of [`MIN_INDEXED_CHARS`] or more characters is first looked
//! up in the FTS5 trigram index `users_search`, then held to the same LIKE rule,
//! so both backends answer alike. Shorter terms have no trigram and use the
//! LIKE filter alone, walking the list index newest first until the page is
//! full (and the count stops at its bound): a short term that matches rarely
//! reads far into the table, which is why it is documented, not hidden.

use platform::db::Database;
use platform::pagination::Filter;

/// Terms shorter than this have no trigram to look up.
pub const MIN_INDEXED_CHARS: usize = 3;

const LIKE_EITHER: &str = r"(LOWER(name) LIKE ? ESCAPE '\' OR LOWER(email) LIKE ? ESCAPE '\')";

const FTS_CANDIDATES: &str = "id IN (SELECT rowid FROM users_search WHERE users_search MATCH ?)";

/// The values a search binds, made once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pattern: String,
    phrase: Option<String>,
}

impl Search {
    /// The search for `term` (trimmed, non-empty).
    pub fn new(term: &str) -> Self {
        Self {
            pattern: like_pattern(term),
            phrase: (term.chars().count() >= MIN_INDEXED_CHARS).then(|| fts_phrase(term)),
        }
    }

    /// Adds the search's conditions to `filter`.
    pub fn apply<'a>(&'a self, db: &Database, filter: Filter<'a>) -> Filter<'a> {
        let filter = match (db, &self.phrase) {
            (Database::Sqlite(_), Some(phrase)) => filter.and(FTS_CANDIDATES, phrase),
            _ => filter,
        };
        filter.and(LIKE_EITHER, &self.pattern).planned_per_value()
    }
}

/// `%term%` for `LOWER(column) LIKE`, with `%`, `_` and `\` escaped so they match
/// themselves. The term is lowered in Rust, so it is Unicode-aware; SQLite's
/// LOWER() folds ASCII only, so on SQLite non-ASCII capitals in stored names match
/// only their exact case.
fn like_pattern(term: &str) -> String {
    let escaped = term
        .to_lowercase()
        .replace('\\', r"\\")
        .replace('%', r"\%")
        .replace('_', r"\_");
    format!("%{escaped}%")
}

/// An FTS5 query matching `term` as one phrase: with the trigram tokenizer, any
/// row holding it as a substring (case-insensitively, Unicode-aware, so a
/// superset of what the LIKE rule then keeps). Quotes are doubled, and nothing
/// else in a quoted phrase is syntax.
fn fts_phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_in_a_search_term_match_themselves() {
        assert_eq!(like_pattern(r"50%_off\"), r"%50\%\_off\\%");
        assert_eq!(like_pattern("ÄBC"), "%äbc%");
    }

    #[test]
    fn only_terms_with_a_trigram_use_the_fts_index() {
        assert_eq!(Search::new("ab").phrase, None);
        assert_eq!(Search::new("é\"b").phrase.as_deref(), Some("\"é\"\"b\""));
    }
}
