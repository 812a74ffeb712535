//! Which of the fields that framing and connection rules read a head carries, noted
//! once as its fields are read (both sides' HTTP/1.1 parsers): a rule about a field
//! that is absent then costs no look-up in the header map (each one hashes the name).

use http::{header, HeaderName};

/// A set of the fields below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen(u8);

impl Seen {
    pub const CONNECTION: Seen = Seen(1);
    pub const TE: Seen = Seen(2);
    pub const TRANSFER_ENCODING: Seen = Seen(4);
    pub const CONTENT_LENGTH: Seen = Seen(8);
    pub const EXPECT: Seen = Seen(16);

    /// Notes `name` when it is one of the set's fields.
    pub fn note(&mut self, name: &HeaderName) {
        let field = if *name == header::CONNECTION {
            Seen::CONNECTION
        } else if *name == header::TE {
            Seen::TE
        } else if *name == header::TRANSFER_ENCODING {
            Seen::TRANSFER_ENCODING
        } else if *name == header::CONTENT_LENGTH {
            Seen::CONTENT_LENGTH
        } else if *name == header::EXPECT {
            Seen::EXPECT
        } else {
            return;
        };
        self.0 |= field.0;
    }

    pub fn has(self, field: Seen) -> bool {
        self.0 & field.0 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_is_noted_whatever_its_case_and_others_are_not() {
        let mut seen = Seen::default();
        for name in ["Connection", "TE", "x-connection", "content-type", "Content-Length"] {
            seen.note(&HeaderName::from_bytes(name.as_bytes()).unwrap());
        }
        assert!(seen.has(Seen::CONNECTION) && seen.has(Seen::TE) && seen.has(Seen::CONTENT_LENGTH));
        assert!(!seen.has(Seen::TRANSFER_ENCODING) && !seen.has(Seen::EXPECT));
    }
}
