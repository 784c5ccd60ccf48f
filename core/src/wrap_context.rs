//! The associated data that binds a wrapped master to its place in the hierarchy.

use crate::encoding::labelled;

/// Which kind of namespace key a keystore is wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    DerivationMaster,
    IndexKey,
    /// A chain head of the audit trail, "wrapped" as a MAC at a checkpoint.
    AuditCheckpoint,
    /// The deployment's integrity key (one, version 1, in namespace `""`).
    IntegrityKey,
    /// A signer's P-256 private scalar, sealed by a keystore that cannot hold it on a token
    /// (namespace = the signer's name).
    SigningKey,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::DerivationMaster => "dm",
            KeyKind::IndexKey => "ik",
            KeyKind::AuditCheckpoint => "audit",
            KeyKind::IntegrityKey => "integrity",
            KeyKind::SigningKey => "sig",
        }
    }
}

/// `(namespace, kind, version)`: a wrapped key moved to another namespace, kind or version fails
/// to unwrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapContext {
    pub namespace: String,
    pub kind: KeyKind,
    pub version: u32,
}

impl WrapContext {
    pub fn new(namespace: &str, kind: KeyKind, version: u32) -> Self {
        WrapContext {
            namespace: namespace.to_owned(),
            kind,
            version,
        }
    }

    /// `"zkvault:v1:key-wrap" || lp(ns) || lp(kind) || u32be(version)`
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = labelled(
            "zkvault:v1:key-wrap",
            &[self.namespace.as_bytes(), self.kind.as_str().as_bytes()],
        );
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_differs_by_every_field() {
        let base = WrapContext::new("ns", KeyKind::DerivationMaster, 1).aad();
        assert_ne!(
            base,
            WrapContext::new("ns2", KeyKind::DerivationMaster, 1).aad()
        );
        assert_ne!(base, WrapContext::new("ns", KeyKind::IndexKey, 1).aad());
        assert_ne!(
            base,
            WrapContext::new("ns", KeyKind::DerivationMaster, 2).aad()
        );
    }
}
