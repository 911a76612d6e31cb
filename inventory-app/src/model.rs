//! What a movie is, and the rules its fields obey.

use serde::Serialize;

use crate::error::ApiError;

/// Longest title, in characters (the column is `VARCHAR(255)`).
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;

/// A stored movie, as the API returns it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Movie {
    pub id: i64,
    pub title: String,
    pub description: String,
}

/// A title that passed [`title`]: trimmed, non-empty, at most 255 characters.
pub type Title = String;

/// Validates a title; the stored title is the trimmed one.
pub fn title(raw: &str) -> Result<Title, ApiError> {
    let title = raw.trim();
    if title.is_empty() {
        return Err(ApiError::Invalid("title must not be empty".into()));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::Invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    no_nul("title", title)?;
    Ok(title.to_owned())
}

/// Validates a description, kept as given.
pub fn description(raw: String) -> Result<String, ApiError> {
    if raw.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::Invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    no_nul("description", &raw)?;
    Ok(raw)
}

/// PostgreSQL text cannot hold U+0000; reject it here rather than fail in the database.
pub fn no_nul(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::Invalid(format!(
            "{field} must not contain the NUL character"
        )));
    }
    Ok(())
}

/// Parses a movie id from the path: a positive integer that fits the `BIGINT` column.
pub fn movie_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(ApiError::InvalidId(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters() {
        assert_eq!(title("  Alien  ").unwrap(), "Alien");
        assert!(title("   ").is_err());
        assert!(title(&"é".repeat(MAX_TITLE_CHARS)).is_ok());
        assert!(title(&"é".repeat(MAX_TITLE_CHARS + 1)).is_err());
        assert!(title("a\0b").is_err());
    }

    #[test]
    fn ids_are_positive_bigints() {
        assert_eq!(movie_id("42").unwrap(), 42);
        for bad in ["0", "-1", "abc", "1.5", "", "9223372036854775808", "+"] {
            assert!(movie_id(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
