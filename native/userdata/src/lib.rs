//! user_data normalization and SHA-256 for the inputs whose answer is certain, without Python.
//!
//! The rules are `consumer/conversion/userdata.py`'s; this is a compiled copy of them for the
//! common cases. Wherever its answer could differ from the Python rule's (a character outside the
//! settled Latin blocks, a phone number the metadata shortcut cannot read, a country name not in
//! the table) it answers `Outcome::Defer` and the Python rule decides. The data the rules read
//! (genders, states, countries, placeholder postcodes, phone metadata) comes from Python at
//! construction (`Tables`), so it has one source. `tests/test_userdata_native.py` holds every
//! answer given here to the Python rule's.

use regex_lite::Regex;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// How many rules there are: `Rule as usize` is below it.
pub const RULES: usize = 10;

/// The normalizers of `userdata.py` this crate has a copy of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Email,
    Maid,
    ExternalId,
    Name,
    Gender,
    City,
    State,
    Zip,
    Country,
    Phone,
}

const _: () = assert!(Rule::Phone as usize + 1 == RULES);

impl Rule {
    /// The rule for a name of `hashing.NATIVE_RULES`.
    pub fn from_name(name: &str) -> Option<Rule> {
        Some(match name {
            "email" => Rule::Email,
            "maid" => Rule::Maid,
            "external_id" => Rule::ExternalId,
            "name" => Rule::Name,
            "gender" => Rule::Gender,
            "city" => Rule::City,
            "state" => Rule::State,
            "zip" => Rule::Zip,
            "country" => Rule::Country,
            "phone" => Rule::Phone,
            _ => return None,
        })
    }
}

/// What one raw text becomes: `hashing._digester`'s answers, plus `Defer`.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 64 lowercase hex characters: the value's digest, or the value itself if already hashed.
    Digest(String),
    /// Left out, and why (a `values.DropReason`).
    Omitted(&'static str),
    /// Empty or whitespace: nothing to send and nothing to report.
    Empty,
    /// Not certain here: the Python rule decides.
    Defer,
}

/// What libphonenumber's metadata says of one country calling code, as the shortcut needs it.
pub struct PhoneCountry {
    /// `national_prefix_for_parsing`, anchored at the start.
    national_prefix: Option<Regex>,
    /// Bit n set: a national number of n digits is possible there.
    possible_lengths: u32,
}

impl PhoneCountry {
    pub fn new(national_prefix: Option<&str>, possible_lengths: u32) -> Result<Self, String> {
        let national_prefix = match national_prefix {
            Some(pattern) => Some(
                Regex::new(&format!("^(?:{pattern})")).map_err(|e| format!("{pattern}: {e}"))?,
            ),
            None => None,
        };
        Ok(PhoneCountry {
            national_prefix,
            possible_lengths,
        })
    }
}

/// The data the rules read, each from its one source in Python.
#[derive(Default)]
pub struct Tables {
    pub genders: HashMap<String, String>,
    pub no_gender: HashSet<String>,
    pub states: HashMap<String, String>,
    pub countries: HashMap<String, String>,
    pub no_postcode: HashSet<String>,
    pub phone_countries: HashMap<u32, PhoneCountry>,
    /// The mapping's default phone country is one of the North American numbering plan's.
    pub default_phone_is_nanp: bool,
}

/// `str.isspace()`: what Python's `strip()` removes and its `\s` matches.
pub fn is_py_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}'
        | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// `str.strip()`.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

/// Latin letters and signs, combining diacritics and Latin Extended Additional: characters
/// whose composition, case and class have not changed for decades, so Python's Unicode tables
/// and this crate's agree on them. Any other character defers to Python.
fn is_settled(c: char) -> bool {
    matches!(c as u32, 0..=0x24F | 0x300..=0x36F | 0x1E00..=0x1EFF)
}

/// `str.isalnum()` on a settled character.
fn is_py_alnum(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric()
    } else {
        // Combining marks are alphabetic to Rust (U+0345) but never alphanumeric to Python.
        !matches!(c as u32, 0x300..=0x36F) && c.is_alphanumeric()
    }
}

/// `userdata._text`: NFC, then stripped; None when a character is not settled.
fn text(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_ascii() {
        return Some(Cow::Borrowed(py_strip(raw)));
    }
    if !raw.chars().all(is_settled) {
        return None;
    }
    if is_nfc_quick(raw.chars()) == IsNormalized::Yes {
        return Some(Cow::Borrowed(py_strip(raw)));
    }
    let composed: String = raw.nfc().collect();
    // '=' and a combining long solidus compose to '≠', outside the settled blocks.
    if !composed.chars().all(is_settled) {
        return None;
    }
    Some(Cow::Owned(py_strip(&composed).to_owned()))
}

fn lower(text: &str) -> String {
    if text.is_ascii() {
        text.to_ascii_lowercase()
    } else {
        text.to_lowercase()
    }
}

/// `userdata._folded_key`: NFKD, ASCII only, lowercase letters and digits only.
fn folded_key(raw: &str) -> Option<String> {
    let keep = |c: &char| c.is_ascii_alphanumeric();
    if raw.is_ascii() {
        return Some(
            raw.chars()
                .filter(keep)
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        );
    }
    if !raw.chars().all(is_settled) {
        return None;
    }
    Some(
        raw.nfkd()
            .filter(keep)
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    )
}

/// The normalized value ('' when invalid), or the `Outcome` that stops it (`Omitted`, `Defer`).
fn normalized(rule: Rule, raw: &str, tables: &Tables) -> Result<String, Outcome> {
    const NO_VALUE: Outcome = Outcome::Omitted("no_value");
    match rule {
        Rule::Gender => {
            let key = folded_key(raw).ok_or(Outcome::Defer)?;
            if key.is_empty() || tables.no_gender.contains(&key) {
                return Err(NO_VALUE);
            }
            return Ok(tables.genders.get(&key).cloned().unwrap_or_default());
        }
        Rule::State => {
            let key = folded_key(raw).ok_or(Outcome::Defer)?;
            if let Some(code) = tables.states.get(&key) {
                return Ok(code.clone());
            }
            let is_code = key.len() == 2 && key.bytes().all(|b| b.is_ascii_alphabetic());
            return Ok(if is_code { key } else { String::new() });
        }
        _ => {}
    }
    let text = text(raw).ok_or(Outcome::Defer)?;
    Ok(match rule {
        Rule::Email => {
            let email = lower(&text);
            match email.split_once('@') {
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
                {
                    email
                }
                _ => String::new(),
            }
        }
        Rule::Maid => {
            let maid = lower(&text);
            if !maid.is_empty() && maid.bytes().all(|b| b == b'0' || b == b'-') {
                return Err(NO_VALUE); // the all-zero id of a device that opted out
            }
            maid
        }
        Rule::ExternalId => text.into_owned(),
        Rule::Name => lower(&text),
        Rule::City => lower(&text).chars().filter(|&c| is_py_alnum(c)).collect(),
        Rule::Zip => {
            if let Some(five) = us_zip(&text) {
                if five.bytes().all(|b| b == b'0') {
                    return Err(NO_VALUE);
                }
                return Ok(five.to_owned());
            }
            let postcode: String = lower(&text).chars().filter(|&c| is_py_alnum(c)).collect();
            if postcode.chars().all(|c| c == '0') || tables.no_postcode.contains(&postcode) {
                return Err(NO_VALUE);
            }
            postcode
        }
        Rule::Country => match tables.countries.get(&lower(&text)) {
            Some(code) => code.clone(),
            None => return Err(Outcome::Defer),
        },
        Rule::Phone => phone(&text, tables).ok_or(Outcome::Defer)?,
        Rule::Gender | Rule::State => unreachable!("answered above"),
    })
}

/// `userdata._US_ZIP` (`(\d{5})(?:[-\s]?\d{4})?`, whole text): the five digits.
fn us_zip(text: &str) -> Option<&str> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let five = text.get(..5).filter(|s| s.len() == 5 && digits(s))?;
    let rest = &text[5..];
    let four = match rest.chars().next() {
        None => return Some(five),
        Some(c) if c == '-' || is_py_space(c) => &rest[c.len_utf8()..],
        Some(_) => rest,
    };
    (four.len() == 4 && digits(four)).then_some(five)
}

/// `userdata.normalize_phone`'s shortcuts; None where it would ask the full parser.
fn phone(text: &str, tables: &Tables) -> Option<String> {
    if !text.is_ascii() {
        return None;
    }
    if tables.default_phone_is_nanp {
        if let Some(digits) = nanp_digits(text) {
            return Some(digits);
        }
    }
    let international;
    let text = match text.strip_prefix("00") {
        Some(rest) => {
            international = format!("+{rest}");
            international.as_str()
        }
        None => text,
    };
    let body = text.strip_prefix('+')?; // national forms go to the parser
    let plain = |c: char| c.is_ascii_digit() || is_py_space(c) || "().-/".contains(c);
    if body.is_empty() || !body.chars().all(plain) {
        return None;
    }
    let digits: String = text
        .replacen("(0)", "", 1) // '+44 (0)20 …': the trunk 0 is not dialled
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    international_digits(digits, tables)
}

/// `userdata._nanp_digits`.
fn nanp_digits(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b'+') && bytes.get(1) != Some(&b'1') {
        return None;
    }
    let mut digits: String = text
        .chars()
        .filter(|&c| !(is_py_space(c) || "().-".contains(c)))
        .collect();
    if digits.starts_with("+1") {
        digits.remove(0);
    } else if digits.starts_with('+') {
        return None;
    }
    let d = digits.as_bytes();
    if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if d.len() == 10 && d[0] > b'1' {
        return Some(format!("1{digits}"));
    }
    if d.len() == 11 && d[0] == b'1' && d[1] > b'1' {
        return Some(digits);
    }
    None
}

/// `userdata.international_digits` on the digits after '+'.
fn international_digits(digits: String, tables: &Tables) -> Option<String> {
    let d = digits.as_bytes();
    if d.len() <= 2 || d[0] == b'0' {
        return None;
    }
    let (width, country) = (1..=3).find_map(|width| {
        let code: u32 = digits[..width].parse().ok()?;
        tables.phone_countries.get(&code).map(|c| (width, c))
    })?;
    let national = &digits[width..];
    if !(2..=17).contains(&national.len()) || national.starts_with('0') {
        return None;
    }
    if let Some(prefix) = &country.national_prefix {
        if prefix.is_match(national) {
            return None;
        }
    }
    if country.possible_lengths & (1 << national.len()) == 0 {
        return None;
    }
    Some(digits)
}

pub fn sha256_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = Vec::with_capacity(64);
    for byte in digest.iter() {
        out.extend([HEX[(byte >> 4) as usize], HEX[(byte & 15) as usize]]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `hashing._digester` for one rule: the digest of a raw text, or why there is none.
pub fn digest(rule: Rule, raw: &str, tables: &Tables) -> Outcome {
    let stripped = py_strip(raw);
    if stripped.len() == 64 && stripped.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Outcome::Digest(stripped.to_ascii_lowercase()); // already hashed: never twice
    }
    if stripped.is_empty() {
        return Outcome::Empty;
    }
    match normalized(rule, raw, tables) {
        Err(outcome) => outcome,
        Ok(value) if value.is_empty() => Outcome::Omitted("invalid"),
        Ok(value) => Outcome::Digest(sha256_hex(&value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        let mut tables = Tables {
            default_phone_is_nanp: true,
            ..Tables::default()
        };
        tables.genders.insert("female".into(), "f".into());
        tables.no_gender.insert("unknown".into());
        tables.states.insert("newjersey".into(), "nj".into());
        tables.countries.insert("germany".into(), "de".into());
        tables.no_postcode.insert("na".into());
        let everywhere = (2..=17).fold(0, |mask, n| mask | 1 << n);
        for code in [1, 33, 44, 49] {
            let prefix = (code == 44).then_some("0");
            let country = PhoneCountry::new(prefix, everywhere).unwrap();
            tables.phone_countries.insert(code, country);
        }
        tables
    }

    fn normal(rule: Rule, raw: &str) -> Result<String, Outcome> {
        normalized(rule, raw, &tables())
    }

    #[test]
    fn sha256_of_known_text() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn strip_removes_what_python_strips() {
        assert_eq!(py_strip("\u{1c}\u{a0} a b\u{3000}\u{2028}"), "a b");
    }

    #[test]
    fn hashed_values_pass_lowercased_and_empty_values_are_empty() {
        let hashed = "A".repeat(64);
        assert_eq!(
            digest(Rule::Email, &format!(" {hashed} "), &tables()),
            Outcome::Digest("a".repeat(64))
        );
        assert_eq!(digest(Rule::Name, " \t", &tables()), Outcome::Empty);
    }

    #[test]
    fn text_rules() {
        assert_eq!(
            normal(Rule::Email, " Ana@Example.COM "),
            Ok("ana@example.com".into())
        );
        assert_eq!(normal(Rule::Email, "a@b@c"), Ok(String::new()));
        assert_eq!(normal(Rule::Name, "E\u{301}MILE"), Ok("émile".into()));
        assert_eq!(
            normal(Rule::City, "Saint-Étienne 2"),
            Ok("saintétienne2".into())
        );
        assert_eq!(
            normal(Rule::Maid, "0000-00"),
            Err(Outcome::Omitted("no_value"))
        );
        assert_eq!(normal(Rule::Name, "Ωmega"), Err(Outcome::Defer));
        assert_eq!(normal(Rule::Name, "a=\u{338}"), Err(Outcome::Defer)); // composes to '≠'
    }

    #[test]
    fn table_rules() {
        assert_eq!(normal(Rule::Gender, "Female"), Ok("f".into()));
        assert_eq!(normal(Rule::Gender, "?"), Err(Outcome::Omitted("no_value")));
        assert_eq!(normal(Rule::State, "New Jersey"), Ok("nj".into()));
        assert_eq!(normal(Rule::State, "N.Y."), Ok("ny".into()));
        assert_eq!(normal(Rule::Country, " GERMANY"), Ok("de".into()));
        assert_eq!(normal(Rule::Country, "Deutschland"), Err(Outcome::Defer));
    }

    #[test]
    fn postcodes() {
        assert_eq!(normal(Rule::Zip, "94105-1234"), Ok("94105".into()));
        assert_eq!(normal(Rule::Zip, "94105\u{a0}1234"), Ok("94105".into()));
        assert_eq!(normal(Rule::Zip, "SW1A 1AA"), Ok("sw1a1aa".into()));
        assert_eq!(
            normal(Rule::Zip, "00000"),
            Err(Outcome::Omitted("no_value"))
        );
        assert_eq!(normal(Rule::Zip, "N/A"), Err(Outcome::Omitted("no_value")));
    }

    #[test]
    fn phones() {
        assert_eq!(
            normal(Rule::Phone, "(415) 555-0100"),
            Ok("14155550100".into())
        );
        assert_eq!(
            normal(Rule::Phone, "+1 415 555 0100"),
            Ok("14155550100".into())
        );
        assert_eq!(
            normal(Rule::Phone, "0049 89 1234567"),
            Ok("49891234567".into())
        );
        assert_eq!(
            normal(Rule::Phone, "+44 (0)20 7946 0123"),
            Ok("442079460123".into())
        );
        // A national prefix after the country code, a national form: the parser decides.
        assert_eq!(
            normal(Rule::Phone, "+44 020 7946 0123"),
            Err(Outcome::Defer)
        );
        assert_eq!(normal(Rule::Phone, "020 7946 0123"), Err(Outcome::Defer));
        assert_eq!(normal(Rule::Phone, "+999 1234"), Err(Outcome::Defer));
    }
}
