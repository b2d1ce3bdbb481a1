use super::{b64_decode, b64_encode, check_controls, NoteError};
use crate::Hash;

/// The note body of a C2SP `tlog-checkpoint`:
///
/// ```text
/// <origin>
/// <tree size>
/// <base64 root hash>
/// [extension lines]
/// ```
///
/// tlog-checkpoint: "The note text is a sequence of at least three non-empty lines, separated by
/// newlines (U+000A)." The body, like every note text, ends with a newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// "The first line is the origin, a unique identifier for the log identity which issued the
    /// checkpoint. The origin MUST be non-empty".
    pub origin: String,
    /// "the ASCII decimal representation of the number of leaves in the tree, with no leading
    /// zeroes (unless the tree is empty, in which case the tree size is `0`)."
    pub size: u64,
    /// "the base64 encoding of the root of the RFC 6962 Merkle hash tree at the specified tree
    /// size."
    pub root: Hash,
    /// "Any following lines are extension lines, opaque and OPTIONAL. Extension lines, if any,
    /// MUST be non-empty." Each without its newline.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines, checking that `origin` can be a line of a note
    /// (non-empty, no newline or other control character).
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, NoteError> {
        let origin = origin.into();
        check_line(&origin, "origin")?;
        Ok(Checkpoint {
            origin,
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The note body: each line followed by a newline.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            b64_encode(&self.root)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Read a note body (the text before the signatures, final newline included).
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        let bad = |why: String| NoteError::MalformedCheckpoint(why);
        let Some(content) = text.strip_suffix('\n') else {
            return Err(bad("the body must end with a newline".into()));
        };
        check_controls(text).map_err(|e| bad(e.to_string()))?;
        let lines: Vec<&str> = content.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(format!(
                "expected at least 3 lines (origin, size, root hash), got {}",
                lines.len()
            )));
        }
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                return Err(bad(format!("line {} is empty", i + 1)));
            }
        }
        let size = parse_size(lines[1]).ok_or_else(|| {
            bad(format!(
                "tree size {:?} is not a decimal number without leading zeroes that fits 64 bits",
                lines[1]
            ))
        })?;
        let root: Hash = b64_decode(lines[2])
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "root hash {:?} is not the standard base64 of 32 bytes",
                    lines[2]
                ))
            })?;
        Ok(Checkpoint {
            origin: lines[0].to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|l| l.to_string()).collect(),
        })
    }
}

fn check_line(line: &str, what: &str) -> Result<(), NoteError> {
    if line.is_empty() || line.bytes().any(|b| b < 0x20) {
        return Err(NoteError::MalformedCheckpoint(format!(
            "the {what} must be a non-empty line without control characters, got {line:?}"
        )));
    }
    Ok(())
}

/// Digits only, no leading zero unless the size is 0, and no more than `u64::MAX`.
fn parse_size(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("20852163"), Some(20852163));
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "18446744073709551616",
            "1e3",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
