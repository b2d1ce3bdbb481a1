//! I-JSON parsing and JCS edge cases.

use openexec_core::json::{
    canonicalize, jcs_sha256, parse_ijson, sha256_hex, JsonError, DEFAULT_MAX_DEPTH,
    MAX_SAFE_INTEGER, MAX_SUPPORTED_DEPTH,
};
use serde_json::{json, Value};

fn jcs(v: &Value) -> String {
    String::from_utf8(canonicalize(v)).unwrap()
}

fn jcs_of(text: &str) -> String {
    jcs(&parse_ijson(text.as_bytes(), 64).unwrap())
}

fn err(text: &[u8]) -> JsonError {
    parse_ijson(text, DEFAULT_MAX_DEPTH).unwrap_err()
}

#[test]
fn jcs_numbers() {
    assert_eq!(jcs(&json!(-0.0)), "0");
    assert_eq!(jcs_of("-0"), "0");
    assert_eq!(jcs_of("-0.0"), "0");
    assert_eq!(jcs(&json!(1e21)), "1e+21");
    assert_eq!(jcs_of("1e21"), "1e+21");
    assert_eq!(jcs(&json!(1e20)), "100000000000000000000");
    assert_eq!(jcs(&json!(1e-7)), "1e-7");
    assert_eq!(jcs(&json!(1e-6)), "0.000001");
    assert_eq!(jcs(&json!(5e-324)), "5e-324");
    assert_eq!(jcs_of("5e-324"), "5e-324");
    assert_eq!(
        jcs(&json!(1.7976931348623157e308)),
        "1.7976931348623157e+308"
    );
    assert_eq!(jcs_of("1.7976931348623157e308"), "1.7976931348623157e+308");
    assert_eq!(jcs(&json!(0.1 + 0.2)), "0.30000000000000004");
    assert_eq!(jcs(&json!(123456789012.5)), "123456789012.5");
    assert_eq!(jcs_of("1.0"), "1");
    assert_eq!(jcs_of("1.0e30"), "1e+30");
    assert_eq!(jcs_of("9007199254740991"), "9007199254740991");
    assert_eq!(jcs_of("-9007199254740991"), "-9007199254740991");
    assert_eq!(jcs_of("4.50"), "4.5");
    assert_eq!(jcs_of("2e-3"), "0.002");
    assert_eq!(jcs_of("0.000001"), "0.000001");
    assert_eq!(jcs_of("333333333.33333329"), "333333333.3333333");
    // RFC 8785 Appendix B samples (as reparsed doubles)
    assert_eq!(jcs_of("1e+23"), "1e+23");
    assert_eq!(jcs_of("9007199254740992.0"), "9007199254740992");
    assert_eq!(jcs(&json!(2.9514790517935283e20)), "295147905179352830000");
    assert_eq!(jcs_of("2.9514790517935283e20"), "295147905179352830000");
    assert_eq!(jcs(&json!(4.0e-7)), "4e-7");
    assert_eq!(jcs(&json!(-1.5e-7)), "-1.5e-7");
}

#[test]
fn jcs_strings_and_keys() {
    // UTF-16 code unit order: "e" < "é" (U+00E9) < "😀" (D83D…) < U+FFFF
    let v = json!({"\u{ffff}": 4, "😀": 3, "é": 1, "e": 2});
    assert_eq!(jcs(&v), "{\"e\":2,\"é\":1,\"😀\":3,\"\u{ffff}\":4}");
    // control characters: short escapes, others \u00xx lowercase
    let v = json!("\u{1f}\u{0}\u{8}\u{9}\u{a}\u{c}\u{d}\u{b}\"\\");
    assert_eq!(jcs(&v), "\"\\u001f\\u0000\\b\\t\\n\\f\\r\\u000b\\\"\\\\\"");
    // DEL, '/', U+2028, U+2029 and non-ASCII are written as themselves
    let v = json!("\u{7f}/\u{2028}\u{2029}é😀");
    assert_eq!(jcs(&v), "\"\u{7f}/\u{2028}\u{2029}é😀\"");
    // an escaped solidus in the input is written plain
    assert_eq!(jcs_of("\"\\/\""), "\"/\"");
    // RFC 8785 §3.2.3 sorting example
    let v = parse_ijson(
        "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}".as_bytes(),
        64,
    )
    .unwrap();
    let keys: Vec<String> = {
        let out = jcs(&v);
        let back: serde_json::Map<String, Value> = serde_json::from_str(&out).unwrap();
        // serde_json's map is not ordered like JCS, so read the order from the text instead
        let mut order: Vec<(usize, String)> = back
            .keys()
            .map(|k| {
                (
                    out.find(&format!("\"{}\":", k.replace('\r', "\\r")))
                        .unwrap(),
                    k.clone(),
                )
            })
            .collect();
        order.sort();
        order.into_iter().map(|(_, k)| k).collect()
    };
    assert_eq!(keys, vec!["\r", "1", "\u{80}", "ö", "€", "😀", "\u{fb33}"]);
}

#[test]
fn jcs_nested_structure() {
    let v = parse_ijson(
        br#" { "b" : [ 1 , { "d" : true , "c" : null } ] , "a" : "x" } "#,
        64,
    )
    .unwrap();
    assert_eq!(jcs(&v), r#"{"a":"x","b":[1,{"c":null,"d":true}]}"#);
    assert_eq!(jcs(&json!([])), "[]");
    assert_eq!(jcs(&json!({})), "{}");
}

#[test]
fn sha256_known() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(jcs_sha256(&json!({})), sha256_hex(b"{}"));
}

#[test]
fn duplicate_keys() {
    assert_eq!(
        err(br#"{"a":1,"a":2}"#),
        JsonError::DuplicateKey("a".into())
    );
    assert_eq!(
        err(br#"{"x":[{"k":{"b":1,"c":2,"b":3}}]}"#),
        JsonError::DuplicateKey("b".into())
    );
    // escapes are decoded before comparing
    assert_eq!(
        err(br#"{"a":1,"\u0061":2}"#),
        JsonError::DuplicateKey("a".into())
    );
    let e = err(br#"{"a":1,"a":1}"#);
    assert_eq!(e.code(), "duplicate_key");
    assert_eq!(e.to_string(), "duplicate object key \"a\"");
    // same key in sibling objects is fine
    assert!(parse_ijson(br#"[{"a":1},{"a":2}]"#, 64).is_ok());
}

#[test]
fn invalid_text() {
    for bad in [
        &br#""\ud800""#[..],
        br#""\udc00""#,
        br#"{"\ud800":1}"#,
        br#""\ud800\u0041""#,
        b"\"\xff\"",
        b"\"\xc3\x28\"",
        b"\"\xed\xa0\x80\"", // surrogate encoded in UTF-8
        b"{\"a\":1} x",
        b"{\"a\":1}}",
        b"[1,2",
        b"",
        b"   ",
        b"{'a':1}",
        b"[1,]",
        b"01",
        b"NaN",
        b"Infinity",
        b"-",
        b"1.",
        b"\xef\xbb\xbf{}",
        b"\"tab\there\"",
        b"{\"a\" 1}",
        b"tru",
        b"[1 2]",
    ] {
        let e = parse_ijson(bad, 64).unwrap_err();
        assert_eq!(
            e.code(),
            "invalid_json",
            "{:?} gave {e:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // a valid surrogate pair is fine
    assert_eq!(parse_ijson(br#""\ud83d\ude00""#, 64).unwrap(), json!("😀"));
}

#[test]
fn number_ranges() {
    let e = err(b"12345678901234567890");
    assert_eq!(
        e,
        JsonError::NumberOutOfRange("12345678901234567890".into())
    );
    assert_eq!(e.code(), "number_out_of_range");
    assert_eq!(
        e.to_string(),
        "integer 12345678901234567890 is beyond ±(2^53-1); send it as a string"
    );
    assert_eq!(
        err(b"-9007199254740992"),
        JsonError::NumberOutOfRange("-9007199254740992".into())
    );
    assert_eq!(
        err(br#"{"a":[1,9007199254740992]}"#),
        JsonError::NumberOutOfRange("9007199254740992".into())
    );
    assert_eq!(
        err(b"123456789012345678901234567890123456789012345678901234567890"),
        JsonError::NumberOutOfRange(
            "123456789012345678901234567890123456789012345678901234567890".into()
        )
    );
    assert_eq!(
        parse_ijson(b"9007199254740991", 64).unwrap(),
        json!(MAX_SAFE_INTEGER)
    );
    assert_eq!(
        parse_ijson(b"-9007199254740991", 64).unwrap(),
        json!(-9007199254740991i64)
    );
    assert_eq!(parse_ijson(b"1e21", 64).unwrap(), json!(1e21));
    assert_eq!(parse_ijson(b"1.0", 64).unwrap(), json!(1.0));
    assert_eq!(parse_ijson(b"0.5", 64).unwrap(), json!(0.5));
    assert_eq!(parse_ijson(b"1.0e30", 64).unwrap(), json!(1.0e30));
    assert_eq!(
        parse_ijson(b"12345678901234567890.0", 64).unwrap(),
        json!(12345678901234567890.0)
    );
    // a big number inside a string is just text
    assert_eq!(
        parse_ijson(br#"{"n":"12345678901234567890"}"#, 64).unwrap(),
        json!({"n": "12345678901234567890"})
    );
    // doubles that overflow
    let e = err(b"[1e400]");
    assert_eq!(e, JsonError::NumberOutOfRange("1e400".into()));
    // malformed JSON with a big number is reported as malformed
    assert_eq!(err(b"[12345678901234567890").code(), "invalid_json");
    // but a duplicate key found while parsing wins over a big number seen in the scan
    assert_eq!(
        err(br#"{"a":12345678901234567890,"a":1}"#).code(),
        "duplicate_key"
    );
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..depth {
        s.extend_from_slice(if i % 2 == 0 { b"[" } else { b"{\"k\":" });
    }
    s.push(b'0');
    for i in (0..depth).rev() {
        s.push(if i % 2 == 0 { b']' } else { b'}' });
    }
    s
}

#[test]
fn depth_limits() {
    assert!(parse_ijson(&nested(64), 64).is_ok());
    assert_eq!(
        parse_ijson(&nested(65), 64).unwrap_err(),
        JsonError::TooDeep { limit: 64 }
    );
    assert_eq!(
        parse_ijson(&nested(65), 64).unwrap_err().to_string(),
        "JSON nesting deeper than 64"
    );
    assert_eq!(
        parse_ijson(&nested(200), 64).unwrap_err().code(),
        "too_deep"
    );
    assert_eq!(
        parse_ijson(&nested(100_000), 64).unwrap_err(),
        JsonError::TooDeep { limit: 64 }
    );
    // unterminated deep input is still too deep (checked before parsing)
    assert_eq!(
        parse_ijson(&vec![b'['; 100_000], 64).unwrap_err().code(),
        "too_deep"
    );
    // brackets inside strings do not count
    let s = format!("[\"{}\"]", "[[[[{{{{".repeat(100));
    assert!(parse_ijson(s.as_bytes(), 2).is_ok());
    let s = "[\"\\\"[[[[\"]";
    assert!(parse_ijson(s.as_bytes(), 1).is_ok());
    // scalars are depth 0
    assert!(parse_ijson(b"1", 0).is_ok());
    assert_eq!(
        parse_ijson(b"[]", 0).unwrap_err(),
        JsonError::TooDeep { limit: 0 }
    );
    // small custom limits
    assert!(parse_ijson(&nested(3), 3).is_ok());
    assert!(parse_ijson(&nested(4), 3).is_err());
    // above serde_json's own recursion limit: clamped, never misreported
    assert!(parse_ijson(&nested(MAX_SUPPORTED_DEPTH), 10_000).is_ok());
    assert_eq!(
        parse_ijson(&nested(MAX_SUPPORTED_DEPTH + 1), 10_000).unwrap_err(),
        JsonError::TooDeep {
            limit: MAX_SUPPORTED_DEPTH
        }
    );
    assert_eq!(
        parse_ijson(&nested(100_000), usize::MAX)
            .unwrap_err()
            .code(),
        "too_deep"
    );
}

#[test]
fn never_panics_on_odd_bytes() {
    let samples: Vec<Vec<u8>> = vec![
        vec![0],
        vec![0xff; 10],
        b"\"\\".to_vec(),
        b"\"\\u".to_vec(),
        b"\"\\u12".to_vec(),
        b"\"\\ud83d\\u".to_vec(),
        b"]]]]".to_vec(),
        b"}{".to_vec(),
        b"-1e".to_vec(),
        b"1e-".to_vec(),
        b"--1".to_vec(),
        b"1-1".to_vec(),
    ];
    for s in samples {
        assert!(parse_ijson(&s, 64).is_err(), "{:?}", s);
    }
}
