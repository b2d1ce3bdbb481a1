//! Who may call ClawShield: the configured identities (SPEC §9). Each token belongs to exactly
//! one identity of one kind — an agent (with its tenant and, optionally, the human it acts
//! `on_behalf_of`), an approver (with its tenant, groups and optional Ed25519 key), or an admin.
//! Only SHA-256 hashes of tokens are configured; a presented token is hashed and compared with
//! every configured hash in constant time, so neither the clear token nor timing tells anything.
//!
//! The identities file (TOML, `CLAWSHIELD_IDENTITIES`):
//!
//! ```toml
//! [[agent]]
//! id = "agent-1"
//! tenant = "acme"
//! token_sha256 = "<64 hex: SHA-256 of the token>"
//! on_behalf_of = "erin"          # optional: this human may never approve its proposals
//!
//! [[approver]]
//! id = "alice"
//! tenant = "acme"
//! groups = ["finance"]
//! token_sha256 = "…"
//! public_key = "<base64 raw key, or PEM>"   # optional; relative file paths are allowed too
//!
//! [[admin]]
//! id = "root"
//! token_sha256 = "…"
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use openexec_core::keys::{key_id, verifying_key_b64, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The kind of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Approver,
    Admin,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Approver => "approver",
            Kind::Admin => "admin",
        }
    }
}

/// One configured identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub kind: Kind,
    /// The tenant of an agent or approver (admins have none).
    pub tenant: Option<String>,
    /// An approver's groups.
    pub groups: Vec<String>,
    /// An approver's vote key.
    pub key: Option<VerifyingKey>,
    /// The human an agent acts for.
    pub on_behalf_of: Option<String>,
    token_hash: [u8; 32],
}

/// Every configured identity.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    all: Vec<Identity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agent: Vec<Entry>,
    #[serde(default)]
    approver: Vec<Entry>,
    #[serde(default)]
    admin: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    tenant: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    token_sha256: String,
    public_key: Option<String>,
    on_behalf_of: Option<String>,
}

/// The SHA-256 of a token, as the identities file gives it (lower-case hex).
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{s}' must be 1 to 128 characters of A-Z a-z 0-9 - _ . @"
        ))
    }
}

impl Identities {
    /// Read and check the identities file; every error names the file and the identity.
    pub fn load(path: &Path) -> anyhow::Result<Identities> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the identities file {}: {e}", path.display())
        })?;
        Identities::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| anyhow::anyhow!("identities file {}: {e}", path.display()))
    }

    /// Parse an identities file's text (`dir`: where relative key file paths start).
    pub fn parse(text: &str, dir: &Path) -> Result<Identities, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        let mut ids = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        for (kind, entries) in [
            (Kind::Agent, f.agent),
            (Kind::Approver, f.approver),
            (Kind::Admin, f.admin),
        ] {
            for e in entries {
                let who = format!("{} '{}'", kind.as_str(), e.id);
                check_name("id", &e.id).map_err(|m| format!("{who}: {m}"))?;
                if !ids.insert(e.id.clone()) {
                    return Err(format!("id '{}' is given twice", e.id));
                }
                let h = hex::decode(e.token_sha256.trim())
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| {
                        format!(
                            "{who}: token_sha256 must be 64 hex digits (the SHA-256 of the token)"
                        )
                    })?;
                if !hashes.insert(h) {
                    return Err(format!(
                        "{who}: token_sha256 is already another identity's: a token belongs to exactly one identity"
                    ));
                }
                let tenant = match (kind, e.tenant) {
                    (Kind::Admin, Some(_)) => return Err(format!("{who}: an admin has no tenant")),
                    (Kind::Admin, None) => None,
                    (_, None) => return Err(format!("{who}: 'tenant' is required")),
                    (_, Some(t)) => {
                        openexec_core::request::check_tenant(&t)
                            .map_err(|m| format!("{who}: {m}"))?;
                        Some(t)
                    }
                };
                if kind != Kind::Approver && !e.groups.is_empty() {
                    return Err(format!("{who}: only approvers have groups"));
                }
                for g in &e.groups {
                    check_name("group", g).map_err(|m| format!("{who}: {m}"))?;
                }
                if kind != Kind::Approver && e.public_key.is_some() {
                    return Err(format!("{who}: only approvers have a public_key"));
                }
                if kind != Kind::Agent && e.on_behalf_of.is_some() {
                    return Err(format!("{who}: only agents act on_behalf_of someone"));
                }
                if let Some(h) = &e.on_behalf_of {
                    check_name("on_behalf_of", h).map_err(|m| format!("{who}: {m}"))?;
                }
                let key = match e.public_key {
                    None => None,
                    Some(k) => {
                        let p = dir.join(k.trim());
                        let text = if !k.contains("BEGIN") && p.is_file() {
                            std::fs::read_to_string(&p)
                                .map_err(|err| format!("{who}: {}: {err}", p.display()))?
                        } else {
                            k
                        };
                        Some(
                            openexec_core::keys::parse_verifying_key(text.trim())
                                .map_err(|err| format!("{who}: public_key: {err}"))?,
                        )
                    }
                };
                let mut groups = e.groups;
                groups.sort();
                groups.dedup();
                all.push(Identity {
                    id: e.id,
                    kind,
                    tenant,
                    groups,
                    key,
                    on_behalf_of: e.on_behalf_of,
                    token_hash: h,
                });
            }
        }
        Ok(Identities { all })
    }

    /// The identity a bearer token belongs to: every configured hash is compared (in constant
    /// time each, none skipped), so the time taken does not depend on which one matched.
    pub fn authenticate(&self, token: &str) -> Option<&Identity> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Identity> = None;
        for i in &self.all {
            let eq: bool = i.token_hash.ct_eq(&presented).into();
            if eq {
                found = Some(i);
            }
        }
        found
    }

    /// An identity by id.
    pub fn get(&self, id: &str) -> Option<&Identity> {
        self.all.iter().find(|i| i.id == id)
    }

    pub fn approvers(&self) -> impl Iterator<Item = &Identity> {
        self.all.iter().filter(|i| i.kind == Kind::Approver)
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The unsigned roster of SPEC §4: approvers holding a key, sorted by id.
    pub fn roster_entries(&self) -> Vec<serde_json::Value> {
        let mut v: Vec<&Identity> = self.approvers().filter(|a| a.key.is_some()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v.into_iter()
            .filter_map(|a| {
                let k = a.key.as_ref()?;
                Some(serde_json::json!({
                    "id": a.id,
                    "groups": a.groups,
                    "key_id": key_id(k),
                    "public_key": verifying_key_b64(k),
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extra: &str) -> String {
        format!(
            "[[agent]]\nid = \"bot\"\ntenant = \"acme\"\ntoken_sha256 = \"{}\"\non_behalf_of = \"erin\"\n\
             [[approver]]\nid = \"alice\"\ntenant = \"acme\"\ngroups = [\"finance\"]\ntoken_sha256 = \"{}\"\n{extra}",
            token_hash_hex("agent-token"),
            token_hash_hex("alice-token"),
        )
    }

    #[test]
    fn tokens_find_their_identity_only() {
        let ids = Identities::parse(&file(""), Path::new(".")).unwrap();
        assert_eq!(ids.authenticate("agent-token").unwrap().id, "bot");
        assert_eq!(
            ids.authenticate("alice-token").unwrap().kind,
            Kind::Approver
        );
        assert!(ids.authenticate("agent-token ").is_none());
        assert!(ids.authenticate("").is_none());
    }

    #[test]
    fn bad_files_are_named() {
        for (extra, says) in [
            (
                "[[admin]]\nid = \"root\"\ntoken_sha256 = \"00\"\n",
                "64 hex",
            ),
            (
                &format!(
                    "[[admin]]\nid = \"bot\"\ntoken_sha256 = \"{}\"\n",
                    token_hash_hex("x")
                ),
                "given twice",
            ),
            (
                &format!(
                    "[[admin]]\nid = \"root\"\ntoken_sha256 = \"{}\"\n",
                    token_hash_hex("alice-token")
                ),
                "exactly one identity",
            ),
            (
                &format!(
                    "[[admin]]\nid = \"root\"\ntenant = \"acme\"\ntoken_sha256 = \"{}\"\n",
                    token_hash_hex("r")
                ),
                "no tenant",
            ),
            ("colour = 1\n", "colour"),
        ] {
            let e = Identities::parse(&file(extra), Path::new(".")).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
    }
}
