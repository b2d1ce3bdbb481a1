//! A straightforward reference implementation of RFC 6962 §2.1 (MTH), §2.1.1 (PATH) and §2.1.2
//! (PROOF / SUBPROOF), written as the RFC states them: recursion over the list of leaves, with
//! its own SHA-256 calls, sharing nothing with the crate under test but the `Hash` type.

#![allow(dead_code)]

use openexec_log::Hash;
use sha2::{Digest, Sha256};

pub fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// MTH({d(0)}) = SHA-256(0x00 || d(0)).
pub fn ref_leaf(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// "k be the largest power of two smaller than n (i.e., k < n <= 2k)".
pub fn k_for(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH over leaf hashes (the leaves already hashed with `ref_leaf`):
/// MTH({}) = SHA-256(); MTH({d(0)}) = leaf hash; MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = k_for(n);
            sha256(&[&[0x01], &mth(&leaves[..k]), &mth(&leaves[k..])])
        }
    }
}

/// PATH(m, D[n]):
/// PATH(0, {d(0)}) = {}
/// PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k
/// PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k
pub fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n == 1 {
        assert_eq!(m, 0);
        return vec![];
    }
    let k = k_for(n);
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true), 0 < m < n.
pub fn proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    subproof(m, leaves, true)
}

/// SUBPROOF(m, D[m], true) = {}
/// SUBPROOF(m, D[m], false) = {MTH(D[m])}
/// SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])        if m <= k
/// SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) if m > k
pub fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { vec![] } else { vec![mth(leaves)] };
    }
    let k = k_for(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], b);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(mth(&leaves[..k]));
        p
    }
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn h(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}
