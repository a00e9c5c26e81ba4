//! Program input: the items a guest reads from its input stream, each a byte string.
//!
//! On the command line an item is written `TYPE:VALUE`: `u32:7`, `u64:300000`, `hex:00ff`,
//! `str:hello`, `file:path/to/bytes`; a bare number means `u64`. Integers are little-endian,
//! the byte order every guest in this repository decodes. Reading `file:` items is the caller's
//! job (this crate does no IO): see [`ProgramInput::parse_item`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The guest's input stream, one byte string per item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProgramInput {
    /// The items, in the order the guest reads them.
    pub items: Vec<Vec<u8>>,
}

/// Why an input item cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// The item does not parse.
    #[error("input item {item:?} does not parse: {reason}")]
    Unparsable {
        /// The item as written.
        item: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// What an input item names before it becomes bytes.
pub enum InputItemSource<'a> {
    /// The item's bytes.
    Bytes(Vec<u8>),
    /// A file whose whole content is the item.
    File(&'a str),
}

impl ProgramInput {
    /// The input's size: the bytes of all its items.
    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(|item| item.len() as u64).sum()
    }

    /// Parses one `TYPE:VALUE` item. `file:` items are returned as a path for the caller to read.
    pub fn parse_item(item: &str) -> Result<InputItemSource<'_>, InputError> {
        let fail = |reason: &str| InputError::Unparsable {
            item: item.to_string(),
            reason: reason.to_string(),
        };
        let (kind, value) = match item.split_once(':') {
            Some((kind, value)) => (kind, value),
            None => ("u64", item),
        };
        let bytes = match kind {
            "u32" => value
                .parse::<u32>()
                .map_err(|e| fail(&e.to_string()))?
                .to_le_bytes()
                .to_vec(),
            "u64" => value
                .parse::<u64>()
                .map_err(|e| fail(&e.to_string()))?
                .to_le_bytes()
                .to_vec(),
            "hex" => hex_decode(value).ok_or_else(|| fail("not an even-length hex string"))?,
            "str" => value.as_bytes().to_vec(),
            "file" => return Ok(InputItemSource::File(value)),
            other => {
                return Err(fail(&format!(
                    "unknown type {other:?}; use u32, u64, hex, str or file"
                )))
            }
        };
        Ok(InputItemSource::Bytes(bytes))
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(item: &str) -> Vec<u8> {
        match ProgramInput::parse_item(item).unwrap() {
            InputItemSource::Bytes(b) => b,
            InputItemSource::File(_) => panic!("not bytes"),
        }
    }

    #[test]
    fn items_parse_to_little_endian_bytes() {
        assert_eq!(bytes("300000"), 300000u64.to_le_bytes());
        assert_eq!(bytes("u32:7"), vec![7, 0, 0, 0]);
        assert_eq!(bytes("hex:00ff"), vec![0, 255]);
        assert_eq!(bytes("str:ab"), b"ab".to_vec());
    }

    #[test]
    fn bad_items_name_the_problem() {
        let err = ProgramInput::parse_item("u32:-1").err().unwrap();
        assert!(err.to_string().contains("u32:-1"), "{err}");
        assert!(ProgramInput::parse_item("hex:abc").is_err());
        let err = ProgramInput::parse_item("float:1.0").err().unwrap();
        assert!(err.to_string().contains("unknown type"), "{err}");
    }
}
