//! Bearer tokens: their roles, their text, and their hash.
//!
//! An API token is `hive_<r>_<64 hex digits>`: `<r>` names its role (so a
//! leaked token is recognisable), the digits are 256 random bits. The
//! coordinator stores only its SHA-256. An attempt token, which an agent
//! gets for its own attempt, is `hive_t_<attempt id, 32 hex><MAC, 64 hex>`:
//! the coordinator checks the MAC and stores nothing.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// What a token may do. The coordinator maps every RPC to the roles it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including token management.
    Admin,
    /// Submit, and read and cancel its own swarms.
    Submitter,
    /// Every read, nothing that changes state.
    Viewer,
    /// The worker RPCs, for its own registration and attempts.
    Worker,
    /// The metrics endpoints only.
    Metrics,
    /// An agent's token for its own running attempt: locks, nothing else.
    Agent,
}

impl Role {
    /// Roles an operator can give a named token (agents get attempt tokens).
    pub const NAMED: [Role; 5] = [Role::Admin, Role::Submitter, Role::Viewer, Role::Worker, Role::Metrics];

    /// The role's name, as stored and as `--role` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Submitter => "submitter",
            Role::Viewer => "viewer",
            Role::Worker => "worker",
            Role::Metrics => "metrics",
            Role::Agent => "agent",
        }
    }

    /// The token prefix of this role (`hive_a_` for admin).
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Admin => "hive_a_",
            Role::Submitter => "hive_s_",
            Role::Viewer => "hive_v_",
            Role::Worker => "hive_w_",
            Role::Metrics => "hive_m_",
            Role::Agent => "hive_t_",
        }
    }

    fn from_prefix(token: &str) -> Option<Role> {
        [Role::Admin, Role::Submitter, Role::Viewer, Role::Worker, Role::Metrics, Role::Agent]
            .into_iter()
            .find(|role| token.starts_with(role.prefix()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::NAMED.into_iter().find(|role| role.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = Role::NAMED.iter().map(|role| role.as_str()).collect();
            format!("`{text}` is not a role (one of: {})", names.join(", "))
        })
    }
}

/// Hex digits of a named token's secret (256 bits).
const SECRET_HEX: usize = 64;
/// Hex digits of an attempt id in an attempt token.
const ATTEMPT_HEX: usize = 32;

/// Why a presented token cannot be a Hive token; says nothing about which tokens exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// No known `hive_<r>_` prefix.
    #[error("the token does not start with a Hive role prefix (hive_a_, hive_s_, hive_v_, hive_w_, hive_m_, hive_t_)")]
    Prefix,
    /// Wrong length or characters after the prefix.
    #[error("the token is malformed: {0}")]
    Body(&'static str),
}

/// A token as presented, checked for form only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// A named token of this role.
    Named(Role),
    /// An attempt token: the attempt id (hex) and its MAC (hex).
    Attempt {
        /// The attempt's id, 32 lowercase hex digits.
        attempt_hex: &'a str,
        /// HMAC-SHA256 of the attempt id's bytes, 64 lowercase hex digits.
        mac_hex: &'a str,
    },
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a token's form and tells its kind.
///
/// # Errors
/// An unknown prefix, or a body of the wrong length or alphabet.
pub fn parse(token: &str) -> Result<Presented<'_>, TokenFormatError> {
    let role = Role::from_prefix(token).ok_or(TokenFormatError::Prefix)?;
    let body = &token[role.prefix().len()..];
    if !is_lower_hex(body) {
        return Err(TokenFormatError::Body("only lowercase hex digits may follow the prefix"));
    }
    if role == Role::Agent {
        if body.len() != ATTEMPT_HEX + SECRET_HEX {
            return Err(TokenFormatError::Body("an attempt token has 96 hex digits after hive_t_"));
        }
        let (attempt_hex, mac_hex) = body.split_at(ATTEMPT_HEX);
        return Ok(Presented::Attempt { attempt_hex, mac_hex });
    }
    if body.len() != SECRET_HEX {
        return Err(TokenFormatError::Body("a token has 64 hex digits after its prefix"));
    }
    Ok(Presented::Named(role))
}

/// Makes a fresh named token for `role` (256 random bits from the OS-seeded CSPRNG).
///
/// # Panics
/// For [`Role::Agent`]: attempt tokens are made by the coordinator from the attempt id.
pub fn generate(role: Role) -> String {
    assert!(role != Role::Agent, "attempt tokens are derived, not generated");
    let secret: [u8; SECRET_HEX / 2] = rand::random();
    format!("{}{}", role.prefix(), hex(&secret))
}

/// The attempt token text for `attempt_hex` and its MAC.
pub fn attempt_token(attempt_hex: &str, mac: &[u8]) -> String {
    format!("{}{attempt_hex}{}", Role::Agent.prefix(), hex(mac))
}

/// SHA-256 of the token text: what the coordinator stores and looks up.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// Bytes of lowercase or uppercase hex; `None` for odd length or a non-hex digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn generated_tokens_parse_as_their_role() {
        for role in Role::NAMED {
            let token = generate(role);
            assert!(token.starts_with(role.prefix()));
            assert_eq!(parse(&token), Ok(Presented::Named(role)));
            assert_ne!(generate(role), token, "tokens are random");
        }
    }

    #[test]
    fn attempt_tokens_split_into_attempt_and_mac() {
        let attempt = "0123456789abcdef0123456789abcdef";
        let token = attempt_token(attempt, &[7; 32]);
        let Ok(Presented::Attempt { attempt_hex, mac_hex }) = parse(&token) else { panic!("{token}") };
        assert_eq!(attempt_hex, attempt);
        assert_eq!(unhex(mac_hex), Some(vec![7; 32]));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        assert_eq!(parse("secret"), Err(TokenFormatError::Prefix));
        assert!(matches!(parse("hive_a_123"), Err(TokenFormatError::Body(_))));
        assert!(matches!(parse(&format!("hive_a_{}", "G".repeat(64))), Err(TokenFormatError::Body(_))));
        assert!(matches!(parse(&format!("hive_t_{}", "a".repeat(64))), Err(TokenFormatError::Body(_))));
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in Role::NAMED {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("agent".parse::<Role>().is_err(), "attempt tokens are not named");
        assert!("root".parse::<Role>().unwrap_err().contains("one of: admin"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parsing_any_text_never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn parsing_prefixed_noise_never_panics(prefix in "hive_[asvwmtx]_", body in "[0-9a-fA-Z_é]{0,120}") {
            let token = format!("{prefix}{body}");
            if let Ok(Presented::Attempt { attempt_hex, mac_hex }) = parse(&token) {
                prop_assert_eq!(attempt_hex.len() + mac_hex.len(), 96);
            }
        }

        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        }
    }
}
