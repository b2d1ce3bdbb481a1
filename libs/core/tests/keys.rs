//! Key parsing, formatting, signing.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use openexec_core::keys::*;

fn sk(n: u8) -> SigningKey {
    signing_key_from_seed([n; 32])
}

#[test]
fn key_id_is_sha256_prefix() {
    let pk = sk(1).verifying_key();
    let full = openexec_core::json::sha256_hex(pk.as_bytes());
    assert_eq!(key_id(&pk), &full[..16]);
    assert_eq!(key_id(&pk).len(), 16);
    assert_ne!(key_id(&pk), key_id(&sk(2).verifying_key()));
}

#[test]
fn pem_round_trips() {
    let k = sk(7);
    let pk = k.verifying_key();
    let spem = signing_key_to_pem(&k);
    let ppem = verifying_key_to_pem(&pk);
    assert!(spem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(spem.ends_with("-----END PRIVATE KEY-----\n"));
    assert!(ppem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(parse_signing_key(&spem).unwrap().to_bytes(), k.to_bytes());
    assert_eq!(parse_verifying_key(&ppem).unwrap(), pk);
    // a private key PEM also yields its public key
    assert_eq!(parse_verifying_key(&spem).unwrap(), pk);
    // what ed25519-dalek itself writes (PKCS#8 v2 with the public key) reads too
    let dalek_pem = k
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    assert_eq!(
        parse_signing_key(&dalek_pem).unwrap().to_bytes(),
        k.to_bytes()
    );
    let dalek_pub = pk
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::CRLF)
        .unwrap();
    assert_eq!(parse_verifying_key(&dalek_pub).unwrap(), pk);
    assert_eq!(dalek_pub.replace("\r\n", "\n"), ppem);
}

#[test]
fn pem_from_environment_shapes() {
    let k = sk(9);
    let pk = k.verifying_key();
    let ppem = verifying_key_to_pem(&pk);
    let spem = signing_key_to_pem(&k);
    let escaped = ppem.replace('\n', "\\n");
    assert_eq!(parse_verifying_key(&escaped).unwrap(), pk);
    assert_eq!(
        parse_signing_key(&spem.replace('\n', "\\n"))
            .unwrap()
            .to_bytes(),
        k.to_bytes()
    );
    assert_eq!(
        parse_verifying_key(&format!("  \n{ppem}\n\n ")).unwrap(),
        pk
    );
    assert_eq!(parse_verifying_key(&format!("\"{escaped}\"")).unwrap(), pk);
    assert_eq!(
        parse_verifying_key(&ppem.replace('\n', "\r\n")).unwrap(),
        pk
    );
    // the body on the BEGIN line's line, no newlines at all
    let one_line = ppem.replace('\n', "");
    assert_eq!(parse_verifying_key(&one_line).unwrap(), pk);
}

#[test]
fn raw_base64() {
    let k = sk(3);
    let pk = k.verifying_key();
    let b64 = verifying_key_b64(&pk);
    assert_eq!(b64.len(), 44);
    assert!(b64.ends_with('='));
    assert_eq!(parse_verifying_key(&b64).unwrap(), pk);
    assert_eq!(
        parse_verifying_key(&STANDARD_NO_PAD.encode(pk.as_bytes())).unwrap(),
        pk
    );
    assert_eq!(parse_verifying_key(&format!(" {b64}\n")).unwrap(), pk);
    // signing keys: 32-byte seed, 64-byte seed ‖ public
    assert_eq!(
        parse_signing_key(&STANDARD.encode(k.to_bytes()))
            .unwrap()
            .to_bytes(),
        k.to_bytes()
    );
    assert_eq!(
        parse_signing_key(&STANDARD.encode(k.to_keypair_bytes()))
            .unwrap()
            .to_bytes(),
        k.to_bytes()
    );
    let mut bad_pair = k.to_keypair_bytes();
    bad_pair[40] ^= 1;
    assert!(matches!(
        parse_signing_key(&STANDARD.encode(bad_pair)),
        Err(KeyError::KeypairMismatch)
    ));
}

#[test]
fn several_keys() {
    let a = sk(1).verifying_key();
    let b = sk(2).verifying_key();
    let c = sk(3).verifying_key();
    let pems = format!("{}{}", verifying_key_to_pem(&a), verifying_key_to_pem(&b));
    assert_eq!(parse_verifying_keys(&pems).unwrap(), vec![a, b]);
    assert_eq!(
        parse_verifying_keys(&pems.replace('\n', "\\n")).unwrap(),
        vec![a, b]
    );
    let raws = format!(
        "{}, {}\n{}",
        verifying_key_b64(&a),
        verifying_key_b64(&b),
        verifying_key_b64(&c)
    );
    assert_eq!(parse_verifying_keys(&raws).unwrap(), vec![a, b, c]);
    assert_eq!(
        parse_verifying_keys(&format!("{},", verifying_key_b64(&a))).unwrap(),
        vec![a]
    );
    assert!(matches!(parse_verifying_keys("  "), Err(KeyError::Empty)));
    // one key expected, two given
    assert!(matches!(
        parse_verifying_key(&pems),
        Err(KeyError::NotOne(2))
    ));
}

#[test]
fn bad_keys_are_named() {
    let e = parse_verifying_key("").unwrap_err();
    assert!(matches!(e, KeyError::Empty));
    let e = parse_verifying_key("not base64 !!").unwrap_err();
    assert!(e.to_string().contains("base64"), "{e}");
    let e = parse_verifying_key(&STANDARD.encode([1u8; 31])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "raw key is 31 bytes after base64 decoding; expected 32 (a raw Ed25519 public key)"
    );
    let e = parse_signing_key(&STANDARD.encode([1u8; 33])).unwrap_err();
    assert!(e.to_string().contains("33 bytes"), "{e}");
    let e = parse_signing_key(&verifying_key_to_pem(&sk(1).verifying_key())).unwrap_err();
    assert!(matches!(e, KeyError::NotPrivate));
    let e =
        parse_verifying_key("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n")
            .unwrap_err();
    assert!(e.to_string().contains("RSA PUBLIC KEY"), "{e}");
    let e = parse_verifying_key("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err();
    assert!(e.to_string().contains("END PUBLIC KEY"), "{e}");
    let e = parse_verifying_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
        .unwrap_err();
    assert!(matches!(e, KeyError::InvalidPublicKey(_)), "{e}");
    let e = parse_verifying_key("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----")
        .unwrap_err();
    assert!(matches!(e, KeyError::Pem(_)), "{e}");
    // an RSA SPKI is not Ed25519
    let rsa_spki = "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==";
    let e = parse_verifying_key(&format!(
        "-----BEGIN PUBLIC KEY-----\n{rsa_spki}\n-----END PUBLIC KEY-----\n"
    ))
    .unwrap_err();
    assert!(matches!(e, KeyError::InvalidPublicKey(_)), "{e}");
}

#[test]
fn signatures() {
    let k = sk(5);
    let pk = k.verifying_key();
    let sig = sign_b64(&k, b"hello");
    assert_eq!(sig.len(), 88);
    assert!(verify_b64(&pk, b"hello", &sig));
    assert!(verify_b64(&pk, b"hello", sig.trim_end_matches('=')));
    assert!(!verify_b64(&pk, b"hello!", &sig));
    assert!(!verify_b64(&sk(6).verifying_key(), b"hello", &sig));
    assert!(!verify_b64(&pk, b"hello", ""));
    assert!(!verify_b64(&pk, b"hello", "!!!"));
    assert!(!verify_b64(&pk, b"hello", &STANDARD.encode([0u8; 63])));
    assert!(!verify_b64(&pk, b"hello", &STANDARD.encode([0u8; 64])));
    // deterministic
    assert_eq!(sig, sign_b64(&k, b"hello"));
}
