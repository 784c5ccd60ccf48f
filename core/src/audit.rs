//! The audit trail's hash chain and its resident tags.
//!
//! Each entry's hash covers its predecessor's hash, its position `(chain, seq)` and every field,
//! so an edited, deleted, inserted or moved entry breaks the chain at that point. The chain has
//! no secret (anyone can recompute it), which is why the service also MACs chain heads with a
//! keystore-held key at checkpoints: rewriting the whole chain is then detected too.

use sha2::{Digest, Sha256};

use crate::encoding::labelled;

/// The fields of one entry, in hashing order.
pub struct AuditFields<'a> {
    pub at_ms: i64,
    pub actor: &'a str,
    pub request_id: &'a str,
    pub operation: &'a str,
    pub namespace: &'a str,
    pub target: &'a str,
    pub resident_tag: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

/// `SHA-256("zkvault:v1:audit" || prev || lp(chain) || u64be(seq) || i64be(at) || lp(field)...)`
pub fn entry_hash(prev: &[u8; 32], chain: &str, seq: u64, f: &AuditFields) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"zkvault:v1:audit");
    h.update(prev);
    h.update(labelled("", &[chain.as_bytes()]));
    h.update(seq.to_be_bytes());
    h.update(f.at_ms.to_be_bytes());
    h.update(labelled(
        "",
        &[
            f.actor.as_bytes(),
            f.request_id.as_bytes(),
            f.operation.as_bytes(),
            f.namespace.as_bytes(),
            f.target.as_bytes(),
            f.resident_tag.as_bytes(),
            f.outcome.as_bytes(),
            f.detail.as_bytes(),
        ],
    ));
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(outcome: &'a str) -> AuditFields<'a> {
        AuditFields {
            at_ms: 1,
            actor: "a",
            request_id: "r",
            operation: "record.get",
            namespace: "ns",
            target: "x",
            resident_tag: "t",
            outcome,
            detail: "",
        }
    }

    #[test]
    fn every_input_changes_the_hash() {
        let base = entry_hash(&[0; 32], "c", 1, &fields("ok"));
        assert_ne!(base, entry_hash(&[1; 32], "c", 1, &fields("ok")));
        assert_ne!(base, entry_hash(&[0; 32], "d", 1, &fields("ok")));
        assert_ne!(base, entry_hash(&[0; 32], "c", 2, &fields("ok")));
        assert_ne!(base, entry_hash(&[0; 32], "c", 1, &fields("denied")));
        // Field boundaries are length-prefixed: moving a byte between fields changes the hash.
        let a = AuditFields {
            actor: "ab",
            request_id: "",
            ..fields("ok")
        };
        let b = AuditFields {
            actor: "a",
            request_id: "b",
            ..fields("ok")
        };
        assert_ne!(
            entry_hash(&[0; 32], "c", 1, &a),
            entry_hash(&[0; 32], "c", 1, &b)
        );
    }
}
