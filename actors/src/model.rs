//! Domain newtypes, parsed once at the edge ("parse, don't validate").
//!
//! Owns the value rules every aggregate relies on: names of at most 200
//! characters, at least one of them visible, none of them control
//! characters; fees in whole won; capacities and minimum enrolments of at
//! least one. Must not know about HTTP or
//! storage; the edge turns a [`FieldError`] into a 422 naming the field.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An input field that does not parse, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The API's name for the field (camelCase).
    pub field: &'static str,
    /// What is wrong with it, for a human.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError { field, reason: reason.into() }
    }
}

/// The most characters a name or a free-text field may have.
pub const MAX_TEXT_CHARS: usize = 200;

/// Whether `c` shows nothing: whitespace, or a default-ignorable code point
/// (Unicode's DerivedCoreProperties: zero-width spaces and joiners, word
/// joiner, byte-order mark, bidi controls, variation selectors, the Hangul
/// fillers, tags).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}')
}

fn parse_text(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let trimmed = raw.trim_matches(is_invisible);
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must hold at least one visible character"));
    }
    if trimmed.chars().count() > MAX_TEXT_CHARS {
        return Err(FieldError::new(field, format!("must be at most {MAX_TEXT_CHARS} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(u64);

        impl $name {
            /// Parses an id: a positive integer.
            pub fn parse(raw: u64) -> Result<Self, FieldError> {
                if raw == 0 { Err(FieldError::new("id", "must be a positive integer")) } else { Ok($name(raw)) }
            }
            /// The number.
            pub fn get(self) -> u64 { self.0 }
            /// An id the system itself assigned (never zero).
            pub(crate) fn assigned(raw: u64) -> Self { debug_assert!(raw > 0); $name(raw) }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { self.0.fmt(f) }
        }
    };
}

id_type!(
    /// A course's id.
    CourseId
);
id_type!(
    /// An enrollment's id: the correlation key of its payment, its shipment,
    /// its notifications and its events. Dense, assigned when its saga
    /// completes; until then the saga runs under a reservation key of the
    /// same type, from a range of its own (≥ 2^48) that no enrollment id
    /// reaches.
    EnrollmentId
);

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// Parses the field: trimmed, non-empty, at most 200 characters.
            pub fn parse(raw: &str) -> Result<Self, FieldError> { parse_text($field, raw).map($name) }
            /// The text.
            pub fn as_str(&self) -> &str { &self.0 }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { self.0.fmt(f) }
        }
    };
}

text_type!(
    /// A course's name.
    CourseName,
    "name"
);
text_type!(
    /// An instructor's name: who owns a course.
    TeacherName,
    "teacher"
);
text_type!(
    /// A student's name: who owns an enrollment.
    StudentName,
    "student"
);
text_type!(
    /// A course's textbook, shipped on enrollment.
    TextBook,
    "textBook"
);

/// A fee in whole won.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fee(u64);

impl Fee {
    /// The largest fee accepted: keeps sums far from overflow and inside
    /// what JSON numbers carry exactly.
    pub const MAX: u64 = 1_000_000_000_000;

    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        match u64::try_from(raw) {
            Ok(won) if won <= Self::MAX => Ok(Fee(won)),
            Ok(_) => Err(FieldError::new("fee", format!("must be at most {}", Self::MAX))),
            Err(_) => Err(FieldError::new("fee", "must be an integer >= 0")),
        }
    }

    pub fn won(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Fee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many students a course takes (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Capacity(u32);

impl Capacity {
    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        parse_count("capacity", raw).map(Capacity)
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

/// How many students a course needs to open (at least one; default one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MinStudents(u32);

impl MinStudents {
    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        parse_count("minStudents", raw).map(MinStudents)
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MinStudents {
    fn default() -> Self {
        MinStudents(1)
    }
}

fn parse_count(field: &'static str, raw: i64) -> Result<u32, FieldError> {
    match u32::try_from(raw) {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(FieldError::new(field, "must be an integer from 1 to 1000000")),
    }
}

/// How a student pays (`card` unless said otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayMethod(String);

impl PayMethod {
    pub fn parse(raw: Option<&str>) -> Result<Self, FieldError> {
        match raw {
            None => Ok(PayMethod("card".into())),
            Some(raw) => parse_text("payMethod", raw).map(PayMethod),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An optional free-text field (`payAccount`, `addr`, `telephoneInfo`).
pub fn parse_optional(field: &'static str, raw: Option<&str>) -> Result<Option<String>, FieldError> {
    raw.map(|raw| parse_text(field, raw)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(StudentName::parse("  Kim ").unwrap().as_str(), "Kim");
        assert_eq!(StudentName::parse("   ").unwrap_err().field, "student");
        assert!(CourseName::parse(&"x".repeat(200)).is_ok());
        assert_eq!(CourseName::parse(&"x".repeat(201)).unwrap_err().field, "name");
        assert!(TeacherName::parse("a\nb").is_err());
        for invisible in
            ["", " ", "\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{3164}", " \u{200B}\t"]
        {
            assert_eq!(TeacherName::parse(invisible).unwrap_err().field, "teacher", "{invisible:?}");
        }
        assert_eq!(TeacherName::parse("\u{200B}Hong\u{FEFF}").unwrap().as_str(), "Hong");
    }

    #[test]
    fn numbers_are_range_checked() {
        assert_eq!(Fee::parse(0).unwrap().won(), 0);
        assert!(Fee::parse(-1).is_err());
        assert!(Fee::parse(Fee::MAX as i64 + 1).is_err());
        assert!(Capacity::parse(0).is_err());
        assert_eq!(Capacity::parse(40).unwrap().get(), 40);
        assert_eq!(MinStudents::parse(0).unwrap_err().field, "minStudents");
        assert_eq!(MinStudents::default().get(), 1);
        assert!(CourseId::parse(0).is_err());
        assert_eq!(PayMethod::parse(None).unwrap().as_str(), "card");
    }
}
