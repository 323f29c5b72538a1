//! Names that end up in paths and on screens: products, channels, artifacts, platforms.
//!
//! A [`Name`] is 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]` and does not start with
//! a dot. That rules out path separators, `..`, hidden files, control characters and
//! anything a shell or a file system could read twice, so a name from a signed manifest
//! can be joined to a directory without further escaping.

use std::fmt;

use crate::limits::MAX_NAME_LEN;

/// A validated name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The string is empty.
    #[error("name is empty")]
    Empty,
    /// The string is longer than [`MAX_NAME_LEN`].
    #[error("name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    /// The string starts with a dot.
    #[error("name starts with a dot")]
    LeadingDot,
    /// The string holds a character outside `[A-Za-z0-9._-]`.
    #[error("name holds {0:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar(char),
}

impl Name {
    /// Validates `s` as a name.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::BadChar(c));
        }
        Ok(Name(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Name::new(s)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("driver-2.4.1_x64.bin", Ok(())),
            ("a", Ok(())),
            (&long, Ok(())),
            ("a..b", Ok(())),
            ("", Err(NameError::Empty)),
            (&too_long, Err(NameError::TooLong)),
            (".hidden", Err(NameError::LeadingDot)),
            ("..", Err(NameError::LeadingDot)),
            ("a/b", Err(NameError::BadChar('/'))),
            ("a\\b", Err(NameError::BadChar('\\'))),
            ("a b", Err(NameError::BadChar(' '))),
            ("a\0", Err(NameError::BadChar('\0'))),
            ("café", Err(NameError::BadChar('é'))),
            ("a:b", Err(NameError::BadChar(':'))),
        ];
        for (input, want) in cases {
            assert_eq!(Name::new(input).map(|_| ()), *want, "input {input:?}");
        }
    }
}
