#![allow(non_snake_case)]
//! Review 9: attacks on partner and device trust (DESIGN.md "Partner and device trust (v1)",
//! threat model section 8). Tests named FINDING_... assert the correct behaviour and failed
//! against the code as reviewed (they pass since the fixes); held_... record attacks that held.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::app::{backup, execute_sql, query_strings, restore, TestApp};
use support::db::TestDb;
use support::trust::Trust;

/// Certificates this review needs beyond pki.py's scenario (argument: seconds the short-lived
/// certificates live).
const GEN_PY: &str = r#"import base64, datetime, hashlib, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
SEC = datetime.timedelta(seconds=1)
def nm(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def pem(c): return c.public_bytes(serialization.Encoding.PEM).decode()
def kpem(k): return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
def ku(**on):
    f = dict.fromkeys(["digital_signature","content_commitment","key_encipherment","data_encipherment","key_agreement","key_cert_sign","crl_sign","encipher_only","decipher_only"], False); f.update(on); return x509.KeyUsage(**f)
def cert(subject, pub, issuer_name, issuer_key, nb, na, ca, serial=None):
    b = (x509.CertificateBuilder().subject_name(nm(subject)).issuer_name(nm(issuer_name)).public_key(pub)
         .serial_number(serial or x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(ku(key_cert_sign=True, crl_sign=True) if ca else ku(key_agreement=True, digital_signature=True), critical=True))
    return b.sign(issuer_key, hashes.SHA256())
def crl(issuer_name, key, serials, this_update):
    b = x509.CertificateRevocationListBuilder().issuer_name(nm(issuer_name)).last_update(this_update).next_update(this_update + 7*DAY).add_extension(x509.CRLNumber(int(this_update.timestamp())), critical=False)
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(this_update - 60*SEC).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
def fp(c): return hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
short = int(sys.argv[1]) if len(sys.argv) > 1 else 8
out = {}
# A: root + intermediate; leaf with serial 4242; a root CRL revoking serial 4242 (wrong issuer).
rk, ik, lk = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
r = cert("r9 root A", rk.public_key(), "r9 root A", rk, NOW-DAY, NOW+3650*DAY, True)
i = cert("r9 inter A", ik.public_key(), "r9 root A", rk, NOW-DAY, NOW+365*DAY, True, serial=777)
l = cert("r9 leaf A", lk.public_key(), "r9 inter A", ik, NOW-DAY, NOW+300*DAY, False, serial=4242)
ls = cert("r9 leaf short", ec.generate_private_key(ec.SECP256R1()).public_key(), "r9 inter A", ik, NOW-DAY, NOW+short*SEC, False)
out["a"] = {"anchors": pem(r)+pem(i), "leaf": pem(l)+pem(i), "leaf_key": kpem(lk), "root_crl_4242": crl("r9 root A", rk, [4242], NOW-300*SEC),
            "short_leaf": pem(ls)+pem(i)}
# B: intermediate expiring soon, leaf valid for long.
rk2, ik2 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
r2 = cert("r9 root B", rk2.public_key(), "r9 root B", rk2, NOW-DAY, NOW+3650*DAY, True)
i2 = cert("r9 inter B", ik2.public_key(), "r9 root B", rk2, NOW-DAY, NOW+short*SEC, True)
l2 = cert("r9 leaf B", ec.generate_private_key(ec.SECP256R1()).public_key(), "r9 inter B", ik2, NOW-DAY, NOW+300*DAY, False)
out["b"] = {"anchors": pem(r2)+pem(i2), "leaf": pem(l2)+pem(i2)}
# C: root expiring soon, intermediate and leaf long.
rk3, ik3 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
r3 = cert("r9 root C", rk3.public_key(), "r9 root C", rk3, NOW-DAY, NOW+short*SEC, True)
i3 = cert("r9 inter C", ik3.public_key(), "r9 root C", rk3, NOW-DAY, NOW+365*DAY, True)
l3 = cert("r9 leaf C", ec.generate_private_key(ec.SECP256R1()).public_key(), "r9 inter C", ik3, NOW-DAY, NOW+300*DAY, False)
out["c"] = {"anchors": pem(r3)+pem(i3), "leaf": pem(l3)+pem(i3)}
# D: an intermediate re-issued (same name, same key, new serial); a leaf; new CRL revoking it, old CRL empty.
rk4, ik4 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
r4 = cert("r9 root D", rk4.public_key(), "r9 root D", rk4, NOW-DAY, NOW+3650*DAY, True)
i4a = cert("r9 inter D", ik4.public_key(), "r9 root D", rk4, NOW-DAY, NOW+365*DAY, True)
i4b = cert("r9 inter D", ik4.public_key(), "r9 root D", rk4, NOW-DAY, NOW+730*DAY, True)
l4 = cert("r9 leaf D", ec.generate_private_key(ec.SECP256R1()).public_key(), "r9 inter D", ik4, NOW-DAY, NOW+300*DAY, False)
out["d"] = {"root": pem(r4), "ia": pem(i4a), "ib": pem(i4b), "fa": fp(i4a), "fb": fp(i4b), "leaf": pem(l4)+pem(i4a),
            "crl_new": crl("r9 inter D", ik4, [l4.serial_number], NOW-300*SEC), "crl_old": crl("r9 inter D", ik4, [], NOW-3600*SEC)}
print(json.dumps(out))
"#;

fn gen(short_secs: u64) -> Option<Value> {
    let short = short_secs.to_string();
    support::python::run_json("review 9 certificates", &["-c", GEN_PY, &short], b"")
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

async fn refresh(app: &TestApp) {
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || vault.trust().refresh().unwrap())
        .await
        .unwrap();
}

const RES: &str = "resident-r9-0001";

async fn put_record(t: &Trust, name: &str, resident: &str, body: &[u8]) {
    let r = t.app.put("rp", name, resident, body).await;
    assert!(r.status().is_success(), "{}", r.status());
}

async fn put_text(t: &Trust, path: &str, body: String) -> (StatusCode, Value) {
    t.send_text(Method::PUT, path, &t.admin, body).await
}

// ---------------------------------------------------------------------------------------------
// Database writer
// ---------------------------------------------------------------------------------------------

/// FINDING: the keystore remembers that version 2 of a partner was revoked, but the snapshot
/// takes "the newest row present" as current. A database writer who deletes the revoked
/// newest row makes the superseded, never-revoked version 1 current again: shares go out
/// encrypted to a key the partner replaced, with no error and no log.
async fn FINDING_deleting_the_revoked_newest_version_revives_the_superseded_one(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{\"a\":1}").await;
    t.register("AUTH", "ida-1", "ec").await;
    t.register("AUTH", "ida-1", "ec2").await;
    let (status, _) = t.revoke("AUTH", "ida-1", "key_compromise", None).await;
    assert_eq!(status, 200);
    t.share_refused("card", RES, "AUTH/ida-1", 409, "partner_untrusted")
        .await;
    execute_sql(
        t.app.db.url(),
        "DELETE FROM trust_partners WHERE partner_id = 'ida-1' AND version = 2",
    );
    refresh(&t.app).await;
    let s = t.share("card", RES, "AUTH/ida-1").await;
    assert_ne!(
        s.status,
        200,
        "after the database writer deleted the revoked v2, the share went to superseded v1: {}",
        &s.body[..s.body.len().min(80)]
    );
}

/// FINDING: the same through an edit: a newest row that fails its MAC is "left out", so the
/// older version silently becomes the one shares use (the partner view shows it `active`).
async fn FINDING_a_forged_newest_row_falls_back_to_the_superseded_version(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{\"a\":1}").await;
    t.register("AUTH", "ida-1", "ec").await;
    let v2 = t.register("AUTH", "ida-1", "ec2").await;
    execute_sql(
        t.app.db.url(),
        "UPDATE trust_partners SET key_desc = 'EC P-256 ' WHERE partner_id = 'ida-1' AND version = 2",
    );
    refresh(&t.app).await;
    let s = t.share("card", RES, "AUTH/ida-1").await;
    if s.status == 200 {
        let (_, header) = t.decrypt(&s.body, "ec");
        panic!(
            "share encrypted to superseded v1 ({}), not refused; v2 was {}",
            header["kid"], v2["thumbprint"]
        );
    }
}

/// held: rows restored from before the revocation are served as revoked (keystore ledger);
/// re-registering the certificate under the same id is refused.
async fn held_restored_partner_rows_do_not_unrevoke(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{\"a\":1}").await;
    t.register("AUTH", "ida-1", "ec").await;
    backup(t.app.db.url(), "before", &["trust_partners"]);
    assert_eq!(t.revoke("AUTH", "ida-1", "cessation", None).await.0, 200);
    restore(t.app.db.url(), "before", &["trust_partners"]);
    refresh(&t.app).await;
    t.share_refused("card", RES, "AUTH/ida-1", 409, "partner_untrusted")
        .await;
    let (_, view) = t.partner("AUTH", "ida-1").await;
    assert_eq!(view["versions"][0]["state"], "revoked", "{view}");
    // A restart sees the same.
    let app2 = t.app.reopen();
    let _ = app2;
    let (status, body) = t
        .register_chain("AUTH", "ida-1", &t.text("partners.ec.chain"))
        .await;
    assert!(status == 400 || status == 409, "{status} {body}");
}

/// FINDING: CRL revocations live only in the database: restoring the trust_crls table from a
/// backup taken before a CRL import (an older, authentic row; or deleting the row) lifts the
/// CRL's revocations — the partner is shareable again. The refusal of stale CRLs at upload
/// (`crl_stale`) and "a restored backup cannot un-revoke" are bypassed with one restore.
async fn FINDING_restoring_an_older_crl_row_lifts_its_revocations(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{\"a\":1}").await;
    t.register("AUTH", "p-rev", "revoked").await;
    assert_eq!(t.put_crl("AUTH", t.text("crl_old")).await.0, 200);
    backup(t.app.db.url(), "old", &["trust_crls"]);
    assert_eq!(t.put_crl("AUTH", t.text("crl")).await.0, 200);
    t.share_refused("card", RES, "AUTH/p-rev", 409, "partner_untrusted")
        .await;
    restore(t.app.db.url(), "old", &["trust_crls"]);
    refresh(&t.app).await;
    let s = t.share("card", RES, "AUTH/p-rev").await;
    assert_eq!(
        s.status, 409,
        "a restored older CRL row un-revoked a certificate the newer CRL revoked"
    );
}

/// held: forged or inserted partner rows (bad MAC, swapped thumbprint or chain) are left out.
async fn held_forged_partner_rows_are_refused(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{\"a\":1}").await;
    t.register("AUTH", "ida-1", "ec").await;
    t.register("AUTH", "ida-2", "rsa3072").await;
    // ida-2's row copied under a new id (MAC binds the id), ida-1's chain swapped for ida-2's.
    let cols = "domain, version, chain, thumbprint, key_desc, not_before, not_after, created_at, revoked_reason, revoked_at, mac";
    execute_sql(
        t.app.db.url(),
        &format!("INSERT INTO trust_partners (partner_id, {cols}) SELECT 'evil', {cols} FROM trust_partners WHERE partner_id = 'ida-2'"),
    );
    execute_sql(
        t.app.db.url(),
        "UPDATE trust_partners SET chain = (SELECT chain FROM trust_partners WHERE partner_id = 'ida-2'), \
         thumbprint = (SELECT thumbprint FROM trust_partners WHERE partner_id = 'ida-2') WHERE partner_id = 'ida-1'",
    );
    refresh(&t.app).await;
    t.share_refused("card", RES, "AUTH/evil", 404, "unknown_partner")
        .await;
    let s = t.share("card", RES, "AUTH/ida-1").await;
    assert_ne!(s.status, 200, "a swapped chain was used");
}

/// Was FINDING: a database writer deleted the receipts and the exposure report under-counted
/// without any sign, while the audit trail still held the three `trust.share` entries. The
/// report now counts the trail too and says when the two disagree.
async fn held_deleted_share_receipts_are_flagged_by_the_audit_trail(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    for i in 0..3 {
        let r = format!("resident-r9-{i:04}");
        put_record(&t, "card", &r, b"{}").await;
        t.share_ok("card", &r, "AUTH/ida-1").await;
    }
    assert_eq!(t.exposure("AUTH", "ida-1", None).await["shares"], 3);
    execute_sql(t.app.db.url(), "DELETE FROM share_receipts");
    assert_eq!(t.audit(Some("trust.share")).await.len(), 3);
    let (status, body) = t
        .app
        .call(
            Method::GET,
            "/v1/trust/AUTH/partners/ida-1/exposure",
            &t.auditor,
            None,
        )
        .await;
    // Receipts are plain rows (threat model): the report cannot stop their deletion, but the
    // hash-chained trail still counts the shares, and the report says the two disagree.
    assert_eq!(status, 200);
    assert_eq!(body["consistent"], false, "{body}");
    assert_eq!(body["versions"][0]["audited_shares"], 3, "{body}");
    assert_eq!(body["versions"][0]["audited_residents"], 3, "{body}");
}

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// held (for the wrong reason): once a root of the anchors expires, shares to its partners
/// are refused — but only because `lenient_anchors` empties the whole domain (see the FINDING
/// below). Were it fixed as its comment intends, the expired root would be handed to webpki as
/// a trust anchor, and webpki never checks a trust anchor's validity: this test guards that.
async fn held_an_expired_root_anchor_refuses_its_partners(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let Some(g) = gen(6) else { return };
    put_record(&t, "card", RES, b"{}").await;
    let (status, body) = put_text(&t, "/v1/trust/DEVICE/anchors", s(&g["c"]["anchors"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        t.register_chain("DEVICE", "dev-c", &s(&g["c"]["leaf"]))
            .await
            .0,
        201
    );
    assert_eq!(t.share("card", RES, "DEVICE/dev-c").await.status, 200);
    tokio::time::sleep(Duration::from_secs(8)).await;
    refresh(&t.app).await;
    let s = t.share("card", RES, "DEVICE/dev-c").await;
    assert_eq!(s.status, 409, "shared through an expired root anchor");
}

/// FINDING: `lenient_anchors` (src/vault/trust/mod.rs) is meant to keep "the rest of the
/// bundle" when one anchor expired since its upload, but it calls `pki::anchors(pem,
/// i64::MIN / 2)`, where every certificate is `not_yet_valid`, so it always answers the empty
/// set: one expiring root (or intermediate) in a domain's bundle silently untrusts every
/// partner of the domain, including those under roots that are still valid.
async fn FINDING_one_expired_anchor_untrusts_the_whole_domain(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let Some(g) = gen(6) else { return };
    put_record(&t, "card", RES, b"{}").await;
    let bundle = s(&g["a"]["anchors"]) + &s(&g["c"]["anchors"]);
    let (status, body) = put_text(&t, "/v1/trust/DEVICE/anchors", bundle).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        t.register_chain("DEVICE", "dev-a", &s(&g["a"]["leaf"]))
            .await
            .0,
        201
    );
    assert_eq!(t.share("card", RES, "DEVICE/dev-a").await.status, 200);
    tokio::time::sleep(Duration::from_secs(8)).await;
    refresh(&t.app).await;
    let s = t.share("card", RES, "DEVICE/dev-a").await;
    assert_eq!(
        s.status, 200,
        "a partner under a valid root is refused once another root of the bundle expired: {}",
        s.body
    );
}

/// held: an intermediate of the anchors that expires after the upload makes the partner
/// untrusted at the next share.
async fn held_an_expired_intermediate_anchor_refuses_shares(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let Some(g) = gen(6) else { return };
    put_record(&t, "card", RES, b"{}").await;
    assert_eq!(
        put_text(&t, "/v1/trust/DEVICE/anchors", s(&g["b"]["anchors"]))
            .await
            .0,
        200
    );
    assert_eq!(
        t.register_chain("DEVICE", "dev-b", &s(&g["b"]["leaf"]))
            .await
            .0,
        201
    );
    assert_eq!(t.share("card", RES, "DEVICE/dev-b").await.status, 200);
    tokio::time::sleep(Duration::from_secs(8)).await;
    refresh(&t.app).await;
    t.share_refused("card", RES, "DEVICE/dev-b", 409, "partner_untrusted")
        .await;
}

/// held: a partner certificate that expires after registration is refused at share time, and
/// the gauge goes negative.
async fn held_a_leaf_expired_after_registration_is_untrusted(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let Some(g) = gen(5) else { return };
    put_record(&t, "card", RES, b"{}").await;
    assert_eq!(
        put_text(&t, "/v1/trust/DEVICE/anchors", s(&g["a"]["anchors"]))
            .await
            .0,
        200
    );
    let (st, b) = t
        .register_chain("DEVICE", "dev-s", &s(&g["a"]["short_leaf"]))
        .await;
    assert_eq!(st, 201, "{b}");
    tokio::time::sleep(Duration::from_secs(7)).await;
    t.share_refused("card", RES, "DEVICE/dev-s", 409, "partner_untrusted")
        .await;
    let m = support::trust::metric(
        &t.metrics().await,
        "zkvault_trust_expiry_seconds{domain=\"DEVICE\"}",
    );
    assert!(m.is_some_and(|v| v < 0.0), "{m:?}");
}

/// held: a CRL signed by another domain CA (the root) that lists the serial of a leaf the
/// intermediate issued does not revoke that leaf; a CRL of an unrelated CA is refused.
async fn held_crl_of_another_issuer_with_matching_serial(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let Some(g) = gen(60) else { return };
    put_record(&t, "card", RES, b"{}").await;
    assert_eq!(
        put_text(&t, "/v1/trust/DEVICE/anchors", s(&g["a"]["anchors"]))
            .await
            .0,
        200
    );
    assert_eq!(
        t.register_chain("DEVICE", "dev-a", &s(&g["a"]["leaf"]))
            .await
            .0,
        201
    );
    let (status, body) = t.put_crl("DEVICE", s(&g["a"]["root_crl_4242"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(t.share("card", RES, "DEVICE/dev-a").await.status, 200);
    let (status, body) = t.put_crl("DEVICE", t.text("crl_foreign")).await;
    assert_eq!(
        (status.as_u16(), &body["reason"]),
        (400, &json!("crl_signature"))
    );
}

/// FINDING: "crl_stale" is per issuer *certificate* (its fingerprint), not per CA. With a CA
/// re-issued (same name and key, new certificate — a renewal) in the anchors, an older CRL of
/// the same CA is accepted under the other certificate's fingerprint; both are loaded, and
/// webpki applies the first authoritative one (rows ordered by issuer fingerprint), so the
/// older, empty CRL un-revokes what the newer one revoked.
async fn FINDING_a_stale_crl_is_accepted_under_a_renewed_ca_certificate(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let Some(g) = gen(60) else { return };
    let d = &g["d"];
    put_record(&t, "card", RES, b"{}").await;
    // The new CRL goes under the larger fingerprint, the old one under the smaller (read first).
    let (big, small) = if s(&d["fa"]) > s(&d["fb"]) {
        ("ia", "ib")
    } else {
        ("ib", "ia")
    };
    let bundle = |first: &str, second: &str| s(&d["root"]) + &s(&d[first]) + &s(&d[second]);
    assert_eq!(
        put_text(&t, "/v1/trust/DEVICE/anchors", bundle(big, small))
            .await
            .0,
        200
    );
    assert_eq!(
        t.register_chain("DEVICE", "dev-d", &s(&d["leaf"])).await.0,
        201
    );
    assert_eq!(t.put_crl("DEVICE", s(&d["crl_new"])).await.0, 200);
    t.share_refused("card", RES, "DEVICE/dev-d", 409, "partner_untrusted")
        .await;
    assert_eq!(
        put_text(&t, "/v1/trust/DEVICE/anchors", bundle(small, big))
            .await
            .0,
        200
    );
    let (status, body) = t.put_crl("DEVICE", s(&d["crl_old"])).await;
    let s2 = t.share("card", RES, "DEVICE/dev-d").await;
    assert!(
        status == 400 && s2.status == 409,
        "old CRL accepted ({status} {body}); share after it: {}",
        s2.status
    );
}

/// FINDING (contract): "Registering the same certificate again → 409" holds only against the
/// newest version (`versions.last()` in `register_partner`): a superseded certificate is
/// accepted again as a new version and becomes the one shares use, bringing back the key the
/// partner rotated away from.
async fn FINDING_a_superseded_certificate_registers_again(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    t.register("AUTH", "ida-1", "ec2").await;
    let (status, body) = t
        .register_chain("AUTH", "ida-1", &t.text("partners.ec.chain"))
        .await;
    assert_eq!(
        status, 409,
        "the superseded v1 certificate came back: {body}"
    );
}

/// held: a revoked certificate cannot come back under another id of the domain.
async fn held_revoked_certificate_under_another_id(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    assert_eq!(
        t.revoke("AUTH", "ida-1", "key_compromise", None).await.0,
        200
    );
    let (status, body) = t
        .register_chain("AUTH", "ida-other", &t.text("partners.ec.chain"))
        .await;
    assert_eq!(
        (status.as_u16(), &body["reason"]),
        (400, &json!("revoked")),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Share
// ---------------------------------------------------------------------------------------------

/// held: the JWE header is exactly what the contract lists (plus `epk` for ECDH-ES), `kid` is
/// the x5t#S256, the plaintext is the record's exact bytes.
async fn held_jwe_header_is_as_specified(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    let body = b"{ \"exact\" :  \"bytes\" }\n";
    put_record(&t, "card", RES, body).await;
    t.register("AUTH", "ida-1", "ec").await;
    t.register("AUTH", "ida-r", "rsa3072").await;
    let s = t
        .share_on(
            &t.app.url(""),
            &t.sharer,
            "card",
            RES,
            json!({"partner": "AUTH/ida-1", "ttl_secs": 60}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let (plain, h) = t.decrypt(&s.body, "ec");
    assert_eq!(plain, body);
    let mut keys: Vec<&str> = h.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["alg", "enc", "epk", "exp", "iat", "jti", "kid", "zkv_name", "zkv_ns", "zkv_rev"],
        "{h}"
    );
    assert_eq!(h["alg"], "ECDH-ES+A256KW");
    assert_eq!(h["enc"], "A256GCM");
    assert_eq!(h["kid"], json!(t.thumbprint("ec")));
    assert_eq!(h["exp"].as_i64().unwrap() - h["iat"].as_i64().unwrap(), 60);
    let jti = h["jti"].as_str().unwrap();
    assert!(jti.len() == 32 && jti.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(h["zkv_rev"].is_i64());
    let rsa = t.share_ok("card", RES, "AUTH/ida-r").await;
    let (plain, h) = t.decrypt(&rsa, "rsa3072");
    assert_eq!(plain, body);
    assert_eq!(h["alg"], "RSA-OAEP-256");
    assert_eq!(
        h["exp"].as_i64().unwrap() - h["iat"].as_i64().unwrap(),
        3600
    );
    for ttl in [0, 3601] {
        let s = t
            .share_on(
                &t.app.url(""),
                &t.sharer,
                "card",
                RES,
                json!({"partner": "AUTH/ida-1", "ttl_secs": ttl}),
            )
            .await;
        assert_eq!(s.status, 400, "ttl {ttl}");
    }
}

/// held: a sharer of `rp` cannot share a `uin` record; a wrong Resident-Id and an absent record
/// answer the same 404; the partner is checked first, but that leaks nothing about residents.
async fn held_share_scope_and_absent_records(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{}").await;
    t.register("AUTH", "ida-1", "ec").await;
    let r = t
        .app
        .client
        .post(t.app.url("/v1/ns/uin/records/card/share"))
        .bearer_auth(&t.sharer)
        .header("Resident-Id", "2345678901")
        .json(&json!({"partner": "AUTH/ida-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let wrong = t.share("card", "resident-r9-9999", "AUTH/ida-1").await;
    let absent = t.share("nothing", RES, "AUTH/ida-1").await;
    assert_eq!(
        (wrong.status.as_u16(), wrong.json()),
        (absent.status.as_u16(), absent.json())
    );
    assert_eq!(wrong.status, 404);
    // A reader or writer is not a sharer.
    let r = t
        .app
        .req(
            Method::POST,
            "/v1/ns/rp/records/card/share",
            &t.app.tokens.writer,
            Some(RES),
        )
        .json(&json!({"partner": "AUTH/ida-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// held: path and id tricks.
async fn held_path_and_id_tricks(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{}").await;
    t.register("AUTH", "ida-1", "ec").await;
    for id in [
        "../ida-1",
        "ida-1/..",
        ".ida",
        "a b",
        "ida-1%2F..",
        &"x".repeat(65),
    ] {
        let (status, _) = t
            .register_chain("AUTH", id, &t.text("partners.ec2.chain"))
            .await;
        assert_eq!(status, 400, "id {id}");
    }
    for partner in [
        "AUTH/../ida-1",
        "AUTH/ida-1/x",
        "auth/ida-1",
        "AUTH//ida-1",
        "AUTH/ida-1%00",
    ] {
        let s = t.share("card", RES, partner).await;
        assert_eq!(s.status, 400, "partner {partner}: {}", s.body);
    }
    for path in [
        "/v1/trust/AUTH%2Fpartners/ida-1",
        "/v1/trust/AUTH/partners/ida-1%2F..",
        "/v1/trust/DEVICE/partners/ida-1",
    ] {
        let (status, _) = t.app.call(Method::GET, path, &t.admin, None).await;
        assert_eq!(status, 404, "{path}");
    }
    t.share_refused("card", RES, "DEVICE/ida-1", 404, "unknown_partner")
        .await;
}

/// held: bodies over 64 KiB are refused before parsing; more than 16 certificates refused.
async fn held_huge_pem_bodies(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    let big = t.text("partners.ec.chain").repeat(200);
    assert!(big.len() > 65 * 1024);
    let (status, _) = put_text(&t, "/v1/trust/AUTH/anchors", big.clone()).await;
    assert_eq!(status, 413);
    let (status, _) = t.register_chain("AUTH", "big", &big).await;
    assert!(status == 413 || status == 400, "{status}");
    let seventeen = t.text("partners.ec.cert").repeat(17);
    let (status, body) = t.register_chain("AUTH", "many", &seventeen).await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains("zkv-partner"), "{body}");
}

/// held: shares counted exactly under concurrency; the resident ID appears in no receipt, no
/// audit entry, no exposure answer.
async fn held_concurrent_exposure_and_no_resident_ids(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    let residents: Vec<String> = (0..4).map(|i| format!("RESIDENTSECRET{i:04}")).collect();
    for r in &residents {
        put_record(&t, "card", r, b"{}").await;
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let r = residents[i % 4].clone();
        let url = t.app.url("/v1/ns/rp/records/card/share");
        let client = t.app.client.clone();
        let token = t.sharer.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("Resident-Id", r)
                .json(&json!({"partner": "AUTH/ida-1"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let e = t.exposure("AUTH", "ida-1", None).await;
    assert_eq!(
        (e["shares"].as_i64(), e["residents"].as_i64()),
        (Some(20), Some(4)),
        "{e}"
    );
    let re = t.resident_exposure(&residents[0]).await;
    assert_eq!(re["shares"].as_array().unwrap().len(), 5);
    let receipts = query_strings(
        t.app.db.url(),
        "SELECT jti || domain || partner_id || thumbprint || namespace || resident_tag || record_name AS v FROM share_receipts",
    );
    let audit = serde_json::to_string(&t.audit(None).await).unwrap();
    for text in receipts
        .iter()
        .chain([&audit, &e.to_string(), &re.to_string()])
    {
        assert!(!text.contains("RESIDENTSECRET"), "{text}");
    }
}

/// held: a revocation made on one instance is honoured by another within about a second.
async fn held_revocation_reaches_a_peer(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    put_record(&t, "card", RES, b"{}").await;
    t.register("AUTH", "ida-1", "ec").await;
    let peer = t.app.start_peer().await;
    let base = peer.url("");
    let ok = t
        .share_on(
            &base,
            &t.sharer,
            "card",
            RES,
            json!({"partner": "AUTH/ida-1"}),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        t.revoke("AUTH", "ida-1", "key_compromise", None).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = t
        .share_on(
            &base,
            &t.sharer,
            "card",
            RES,
            json!({"partner": "AUTH/ida-1"}),
        )
        .await;
    assert_eq!(after.status, 409, "peer still shares after 1.5 s");
    peer.handle.stop(false).await;
}

// ---------------------------------------------------------------------------------------------
// From the second, read-only review of the fixes above
// ---------------------------------------------------------------------------------------------

/// FINDING: a CRL's ledger entry outlived its CA. After the anchors were replaced without that
/// CA and its CRL row was lost, the domain trusted nothing for good: no CRL of a CA outside
/// the anchors can be imported to put it right.
async fn FINDING_a_crl_of_a_ca_that_left_the_anchors_locks_the_domain(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    let (status, body) = t.put_crl("AUTH", t.text("crl")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = t.put_anchors("AUTH", &t.pki["unrelated_root"]).await;
    assert_eq!(status, 200, "{body}");
    execute_sql(t.app.db.url(), "DELETE FROM trust_crls");
    refresh(&t.app).await;
    // A partner of the new CA registers and receives shares.
    let chain = t.text("refused.unknown_issuer.chain");
    let (status, body) = t.register_chain("AUTH", "ida-new", &chain).await;
    assert_eq!(status, 201, "{body}");
}

/// FINDING: the exposure report listed only the versions whose rows are authentic, so a
/// database writer who deleted a partner's row hid its shares, and `consistent` stayed true.
async fn FINDING_deleting_a_partner_row_hides_its_shares_from_the_exposure_report(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    for i in 0..2 {
        let r = format!("resident-r9-{i:04}");
        put_record(&t, "card", &r, b"{}").await;
        t.share_ok("card", &r, "AUTH/ida-1").await;
    }
    t.register("AUTH", "ida-1", "ec2").await;
    execute_sql(
        t.app.db.url(),
        "DELETE FROM trust_partners WHERE partner_id = 'ida-1' AND version = 1",
    );
    refresh(&t.app).await;
    let report = t.exposure("AUTH", "ida-1", None).await;
    assert_eq!(report["consistent"], false, "{report}");
    let v1 = &report["versions"][0];
    assert_eq!(
        (&v1["version"], &v1["row_missing"], &v1["audited_shares"]),
        (&json!(1), &json!(true), &json!(2)),
        "{report}"
    );
}

/// FINDING: a revoked certificate was remembered through its row only: once every row of the
/// domain was deleted, the compromised certificate registered again under another id.
async fn FINDING_a_revoked_certificate_whose_rows_are_deleted_registers_again(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    let (status, body) = t.revoke("AUTH", "ida-1", "key_compromise", None).await;
    assert_eq!(status, 200, "{body}");
    execute_sql(t.app.db.url(), "DELETE FROM trust_partners");
    refresh(&t.app).await;
    let (status, body) = t
        .register_chain("AUTH", "ida-9", &t.text("partners.ec.chain"))
        .await;
    assert_eq!(
        (status.as_u16(), &body["reason"]),
        (400, &json!("revoked")),
        "{body}"
    );
}

on_both_backends!(
    FINDING_deleting_the_revoked_newest_version_revives_the_superseded_one,
    FINDING_a_forged_newest_row_falls_back_to_the_superseded_version,
    held_restored_partner_rows_do_not_unrevoke,
    FINDING_restoring_an_older_crl_row_lifts_its_revocations,
    held_forged_partner_rows_are_refused,
    held_deleted_share_receipts_are_flagged_by_the_audit_trail,
    held_revocation_reaches_a_peer,
    held_concurrent_exposure_and_no_resident_ids,
    FINDING_deleting_a_partner_row_hides_its_shares_from_the_exposure_report,
    FINDING_a_revoked_certificate_whose_rows_are_deleted_registers_again,
);

mod sqlite_only {
    use super::*;
    macro_rules! sqlite_tests {
        ($($name:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(TestDb::sqlite()).await }
        )*};
    }
    sqlite_tests!(
        held_an_expired_root_anchor_refuses_its_partners,
        held_an_expired_intermediate_anchor_refuses_shares,
        FINDING_one_expired_anchor_untrusts_the_whole_domain,
        held_a_leaf_expired_after_registration_is_untrusted,
        held_crl_of_another_issuer_with_matching_serial,
        FINDING_a_stale_crl_is_accepted_under_a_renewed_ca_certificate,
        held_revoked_certificate_under_another_id,
        FINDING_a_superseded_certificate_registers_again,
        held_jwe_header_is_as_specified,
        held_share_scope_and_absent_records,
        held_path_and_id_tricks,
        held_huge_pem_bodies,
        FINDING_a_crl_of_a_ca_that_left_the_anchors_locks_the_domain
    );
}
