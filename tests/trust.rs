//! Partner and device trust (DESIGN.md "Partner and device trust (v1)") through the HTTP API,
//! on both backends. Certificates, chains and CRLs are made by Python `cryptography` and shared
//! records are opened by jwcrypto with the partner's private key (tests/fixtures/pki.py): no
//! zkvault code judges zkvault's output.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use support::app::{backup, query_strings, restore};
use support::db::TestDb;
use support::trust::{epoch, metric, Trust, TRUST_TABLES};
use zkvault::vault::{now_ms, Role};

on_both_backends!(
    good_ec_and_rsa_partners_register_as_versions,
    refused_certificates_name_the_check_echo_nothing_and_change_nothing,
    shared_records_open_with_jwcrypto_to_the_exact_bytes,
    revocation_reaches_a_second_instance_within_a_second,
    a_restored_backup_does_not_undo_a_revocation,
    an_imported_crl_makes_a_registered_partner_untrusted,
    exposure_counts_match_the_shares_made,
    roles_and_namespaces_are_enforced,
    expiring_certificates_are_listed_measured_and_warned,
    under_dual_control_new_anchors_wait_for_an_operator,
    shares_are_audited_and_no_resident_id_is_stored,
);

const ALICE: &str = "TRUSTalice01";
const BOB: &str = "TRUSTbob0002";
const CAROL: &str = "TRUSTcarol03";

/// Every refusal reason a partner certificate of the scenario (`refused.<reason>`) earns.
const REFUSALS: [&str; 12] = [
    "self_signed",
    "unknown_issuer",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "not_a_ca",
    "ca_as_partner",
    "key_usage",
    "key_too_small",
    "unsupported_key",
    "remaining_validity",
    "malformed",
];

fn now_secs() -> i64 {
    now_ms() / 1000
}

/// A JWE's protected header, read without checking anything (for the `jti`).
fn header(jwe: &str) -> Value {
    let b64 = jwe.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap()
}

fn jti(jwe: &str) -> String {
    header(jwe)["jti"].as_str().unwrap().to_owned()
}

/// A refusal: status 400, `certificate_refused`, `reason`, and nothing of the input.
fn assert_refused(body: &Value, reason: &str, subject_cn: &str) {
    assert_eq!(
        (&body["error"], &body["reason"]),
        (&json!("certificate_refused"), &json!(reason)),
        "{body}"
    );
    assert!(body["message"].is_string(), "{body}");
    let text = body.to_string();
    for echo in [subject_cn, "zkv-", "BEGIN", "MII"] {
        assert!(
            !text.contains(echo),
            "{reason}: the answer echoes {echo}: {text}"
        );
    }
}

/// The version `n` of a partner view.
fn version(view: &Value, n: i64) -> &Value {
    view["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == n)
        .unwrap_or_else(|| panic!("no version {n} in {view}"))
}

/// Good EC P-256 and RSA (3072 and 2048 bits) partners register with the thumbprint and
/// expiry `cryptography` computed; a new certificate for the same id is the next version, the
/// same certificate again a conflict.
async fn good_ec_and_rsa_partners_register_as_versions(db: TestDb) {
    let Some(t) = Trust::start(db).await else {
        return;
    };
    let (status, body) = t
        .register_chain("AUTH", "ida-1", &t.text("partners.ec.chain"))
        .await;
    assert_eq!(status, 400);
    assert_refused(&body, "no_anchors", &t.text("partners.ec.cn"));

    let (status, anchors) = t.put_anchors("AUTH", &t.pki["anchors"]).await;
    assert_eq!(status, 200, "{anchors}");
    assert_eq!(
        (
            &anchors["domain"],
            &anchors["roots"],
            &anchors["intermediates"]
        ),
        (&json!("AUTH"), &json!(1), &json!(1))
    );
    let fingerprints: BTreeSet<&str> = anchors["fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        fingerprints,
        BTreeSet::from([
            t.pki["root_fingerprint"].as_str().unwrap(),
            t.pki["intermediate_fingerprint"].as_str().unwrap()
        ])
    );

    for (id, label, key) in [
        ("ida-1", "ec", "EC P-256"),
        ("ida-rsa", "rsa3072", "RSA 3072"),
        ("ida-rsa2k", "rsa2048", "RSA 2048"),
    ] {
        let r = t.register("AUTH", id, label).await;
        assert_eq!(
            (&r["domain"], &r["id"], &r["version"], &r["key"]),
            (&json!("AUTH"), &json!(id), &json!(1), &json!(key)),
            "{r}"
        );
        assert_eq!(r["thumbprint"], t.thumbprint(label), "x5t#S256 of {label}");
        assert_eq!(
            epoch(&r["not_after"]),
            t.pki["partners"][label]["not_after"].as_i64().unwrap()
        );
    }
    let (status, body) = t
        .register_chain("AUTH", "ida-1", &t.text("partners.ec.chain"))
        .await;
    assert_eq!((status.as_u16(), &body["error"]), (409, &json!("conflict")));

    let next = t.register("AUTH", "ida-1", "ec2").await;
    assert_eq!(next["version"], 2);
    assert_eq!(next["thumbprint"], t.thumbprint("ec2"));
    let (status, view) = t.partner("AUTH", "ida-1").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (&view["domain"], &view["id"]),
        (&json!("AUTH"), &json!("ida-1"))
    );
    assert_eq!(view["versions"].as_array().unwrap().len(), 2);
    for (n, label, state) in [(1, "ec", "superseded"), (2, "ec2", "active")] {
        let v = version(&view, n);
        assert_eq!(
            (
                &v["thumbprint"],
                &v["key"],
                &v["state"],
                &v["revoked_reason"]
            ),
            (
                &json!(t.thumbprint(label)),
                &json!("EC P-256"),
                &json!(state),
                &Value::Null
            ),
            "{view}"
        );
        assert!(epoch(&v["not_before"]) < now_secs());
        assert_eq!(
            epoch(&v["not_after"]),
            t.pki["partners"][label]["not_after"].as_i64().unwrap()
        );
        assert!(v["created_at"].is_string());
    }
    let (status, body) = t.partner("AUTH", "nobody").await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (404, &json!("unknown_partner"))
    );
}

/// Each bad certificate is refused with 400 and the reason naming the check (self-signed,
/// expired, wrong issuer, CA without basicConstraints, too small a key, on a CRL, …), the
/// answer quotes nothing of the input, and no stored partner, anchor or CRL changes.
async fn refused_certificates_name_the_check_echo_nothing_and_change_nothing(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    let (status, body) = t.put_crl("AUTH", t.text("crl")).await;
    assert_eq!(status, 200, "{body}");
    let before = (t.trust_rows(), t.partner("AUTH", "ida-1").await);

    let mut cases: Vec<(&str, String, String)> = REFUSALS
        .iter()
        .map(|r| {
            (
                *r,
                t.text(&format!("refused.{r}.chain")),
                t.text(&format!("refused.{r}.cn")),
            )
        })
        .collect();
    cases.push((
        "revoked",
        t.text("partners.revoked.chain"),
        t.text("partners.revoked.cn"),
    ));
    for (i, (reason, chain, cn)) in cases.iter().enumerate() {
        let id = format!("bad-{i}");
        let (status, body) = t.register_chain("AUTH", &id, chain).await;
        assert_eq!(status, 400, "{reason}: {body}");
        assert_refused(&body, reason, cn);
        assert_eq!(t.partner("AUTH", &id).await.0, 404, "{reason}");
        // Nor does it become a new version of a registered partner.
        let (status, body) = t.register_chain("AUTH", "ida-1", chain).await;
        assert_eq!(status, 400, "{reason} as ida-1 v2: {body}");
        assert_refused(&body, reason, cn);
    }
    // Not JSON, or a partner id outside the pattern.
    let chain = t.text("partners.ec2.chain");
    for id in ["-lead", "a/b", "has space", &"x".repeat(65), ""] {
        let (status, body) = t.register_chain("AUTH", id, &chain).await;
        assert_eq!(status, 400, "id {id:?}: {body}");
        assert!(!body.to_string().contains("BEGIN"));
    }
    let (status, _) = t
        .send_text(Method::POST, "/v1/trust/AUTH/partners", &t.admin, chain)
        .await;
    assert_eq!(status, 400, "a bare PEM is not the JSON body");

    // Anchors: a CA certificate without basicConstraints is refused; an unknown domain is 404.
    let (status, body) = t.put_anchors("AUTH", &t.pki["bad_anchors"]).await;
    assert_eq!(status, 400, "{body}");
    assert_refused(&body, "not_a_ca", &t.text("bad_anchor_cn"));
    let (status, body) = t.put_anchors("NOPE", &t.pki["anchors"]).await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (404, &json!("unknown_domain"))
    );
    let (status, _) = t.put_anchors("AUTH", &json!("hello")).await;
    assert_eq!(status, 400);
    // An intermediate whose issuer is not in the bundle.
    let (status, body) = t.put_anchors("AUTH", &t.pki["intermediate"]).await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (400, &json!("certificate_refused")),
        "{body}"
    );

    assert_eq!((t.trust_rows(), t.partner("AUTH", "ida-1").await), before);
}

/// A record shared with an EC and with an RSA partner opens with jwcrypto and the partner's
/// private key to the record's exact bytes, under the protected header of DESIGN.md.
async fn shared_records_open_with_jwcrypto_to_the_exact_bytes(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-ec", "ec").await;
    t.register("AUTH", "ida-rsa", "rsa3072").await;
    let record = "{\"name\":\"Aarav Sharma\",\"city\":\"पुणे\",\"n\":[1,2.50]}".as_bytes();
    let put: Value = t
        .app
        .put("rp", "demographics", ALICE, record)
        .await
        .json()
        .await
        .unwrap();
    let revision = put["revision"].as_i64().unwrap();

    let mut jtis = BTreeSet::new();
    let mut check = |h: &Value, record_rev: i64, ttl: i64, label: &str, alg: &str| {
        assert_eq!(
            (&h["alg"], &h["enc"], &h["kid"]),
            (&json!(alg), &json!("A256GCM"), &json!(t.thumbprint(label))),
            "{h}"
        );
        assert_eq!(
            (&h["zkv_ns"], &h["zkv_name"], &h["zkv_rev"]),
            (&json!("rp"), &json!("demographics"), &json!(record_rev)),
            "{h}"
        );
        let iat = h["iat"].as_i64().expect("iat is an integer");
        assert!((now_secs() - 30..=now_secs() + 1).contains(&iat), "{h}");
        assert_eq!(h["exp"].as_i64().expect("exp is an integer") - iat, ttl);
        let jti = h["jti"].as_str().unwrap();
        assert!(
            jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()),
            "{jti}"
        );
        assert!(jtis.insert(jti.to_owned()), "a fresh jti per share");
    };
    for (id, label, alg) in [
        ("ida-ec", "ec", "ECDH-ES+A256KW"),
        ("ida-rsa", "rsa3072", "RSA-OAEP-256"),
    ] {
        let jwe = t
            .share_ok("demographics", ALICE, &format!("AUTH/{id}"))
            .await;
        let (plaintext, h) = t.decrypt(&jwe, label);
        assert_eq!(plaintext, record, "{id}");
        check(&h, revision, 3600, label, alg);
    }

    // The record as it now stands, for a shorter time.
    let record2 = b"{\"name\":\"Aarav S.\"}";
    let put: Value = t
        .app
        .put("rp", "demographics", ALICE, record2)
        .await
        .json()
        .await
        .unwrap();
    let revision2 = put["revision"].as_i64().unwrap();
    assert_ne!(revision2, revision);
    let s = t
        .share_on(
            &t.app.url(""),
            &t.sharer,
            "demographics",
            ALICE,
            json!({"partner": "AUTH/ida-rsa", "ttl_secs": 60}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let (plaintext, h) = t.decrypt(&s.body, "rsa3072");
    assert_eq!(plaintext, record2);
    check(&h, revision2, 60, "rsa3072", "RSA-OAEP-256");

    // Lifetimes outside 1..=max_share_ttl_secs, unknown partners, absent records.
    for ttl in [json!(0), json!(3601), json!(-5), json!("60")] {
        let s = t
            .share_on(
                &t.app.url(""),
                &t.sharer,
                "demographics",
                ALICE,
                json!({"partner": "AUTH/ida-ec", "ttl_secs": ttl}),
            )
            .await;
        assert_eq!(s.status, 400, "ttl_secs {ttl}: {}", s.body);
    }
    t.share_refused("demographics", ALICE, "AUTH/nobody", 404, "unknown_partner")
        .await;
    let s = t.share("demographics", ALICE, "NOPE/ida-ec").await;
    assert_eq!(s.status, 404, "an unknown domain: {}", s.body);
    let s = t.share("demographics", ALICE, "ida-ec").await;
    assert_eq!(s.status, 400, "no domain: {}", s.body);
    let s = t.share("biometrics", ALICE, "AUTH/ida-ec").await;
    assert_eq!(s.status, 404, "an absent record: {}", s.body);
    let s = t.share("demographics", BOB, "AUTH/ida-ec").await;
    assert_eq!(s.status, 404, "another resident's: {}", s.body);
    for s in [
        t.share("biometrics", ALICE, "AUTH/ida-ec").await,
        t.share("demographics", BOB, "AUTH/ida-ec").await,
    ] {
        assert_ne!(s.content_type, "application/jose");
    }
    let receipts = query_strings(t.app.db.url(), "SELECT jti AS v FROM share_receipts");
    assert_eq!(
        receipts.into_iter().collect::<BTreeSet<_>>(),
        jtis,
        "one receipt per share made, none for a refusal"
    );
}

/// A revocation made on one instance makes shares to that partner 409 there at once and on
/// another instance within a second.
async fn revocation_reaches_a_second_instance_within_a_second(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    t.app.put("rp", "demographics", ALICE, b"{}").await;
    let peer = t.app.start_peer().await;
    let peer_shares = || async {
        t.share_on(
            &peer.url(""),
            &t.sharer,
            "demographics",
            ALICE,
            json!({"partner": "AUTH/ida-1"}),
        )
        .await
        .status
    };
    assert_eq!(peer_shares().await, 200);

    let (status, view) = t.revoke("AUTH", "ida-1", "key_compromise", None).await;
    assert_eq!(status, 200, "{view}");
    let v1 = version(&view, 1);
    assert_eq!(
        (&v1["state"], &v1["revoked_reason"]),
        (&json!("revoked"), &json!("key_compromise"))
    );
    assert!(v1["revoked_at"].is_string(), "{view}");
    t.share_refused(
        "demographics",
        ALICE,
        "AUTH/ida-1",
        409,
        "partner_untrusted",
    )
    .await;

    let start = Instant::now();
    loop {
        match peer_shares().await.as_u16() {
            409 => break,
            200 => assert!(
                start.elapsed() < Duration::from_millis(1500),
                "the peer still shares with a revoked partner after a second"
            ),
            other => panic!("peer share: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, _) = t.revoke("AUTH", "ida-1", "cessation", None).await;
    assert_eq!(status, 409, "already revoked");
    let (status, _) = t.revoke("AUTH", "ida-1", "compromised", None).await;
    assert_eq!(status, 400, "not a reason");
    let (status, _) = t.revoke("AUTH", "nobody", "cessation", None).await;
    assert_eq!(status, 404);
    peer.handle.stop(false).await;
}

/// Restoring the trust tables from a backup taken before a revocation does not bring the
/// partner back: neither this instance nor one started over the restored database shares.
async fn a_restored_backup_does_not_undo_a_revocation(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    t.app.put("rp", "demographics", ALICE, b"{}").await;
    t.share_ok("demographics", ALICE, "AUTH/ida-1").await;
    let url = t.app.db.url().to_owned();
    backup(&url, "before", &TRUST_TABLES);
    let (status, _) = t.revoke("AUTH", "ida-1", "key_compromise", None).await;
    assert_eq!(status, 200);
    restore(&url, "before", &TRUST_TABLES);
    assert_eq!(
        query_strings(
            &url,
            "SELECT COALESCE(revoked_reason, 'none') AS v FROM trust_partners"
        ),
        ["none"],
        "the restored row is unrevoked"
    );
    // Past the propagation window, so any reload of the restored rows has happened.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    t.share_refused(
        "demographics",
        ALICE,
        "AUTH/ida-1",
        409,
        "partner_untrusted",
    )
    .await;
    let peer = t.app.start_peer().await;
    let s = t
        .share_on(
            &peer.url(""),
            &t.sharer,
            "demographics",
            ALICE,
            json!({"partner": "AUTH/ida-1"}),
        )
        .await;
    assert_eq!(
        (s.status.as_u16(), &s.json()["error"]),
        (409, &json!("partner_untrusted")),
        "a fresh instance over the restored database: {}",
        s.body
    );
    peer.handle.stop(false).await;
}

/// A CRL signed by the domain's intermediate makes shares to a partner it lists 409 and its
/// certificate unregistrable; CRLs of other CAs, garbage and older CRLs are refused. Anchors
/// replaced by others the partner does not chain to make its shares 409 too.
async fn an_imported_crl_makes_a_registered_partner_untrusted(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "crl-1", "revoked").await;
    t.register("AUTH", "ida-1", "ec").await;
    t.app.put("rp", "demographics", ALICE, b"{}").await;
    t.share_ok("demographics", ALICE, "AUTH/crl-1").await;

    let (status, body) = t.put_crl("AUTH", t.text("crl_foreign")).await;
    assert_eq!(
        (status.as_u16(), &body["reason"]),
        (400, &json!("crl_signature")),
        "{body}"
    );
    let (status, body) = t.put_crl("AUTH", "not a CRL").await;
    assert_eq!(
        (status.as_u16(), &body["reason"]),
        (400, &json!("malformed")),
        "{body}"
    );
    t.share_ok("demographics", ALICE, "AUTH/crl-1").await;

    let (status, crl) = t.put_crl("AUTH", t.text("crl")).await;
    assert_eq!(status, 200, "{crl}");
    assert_eq!(
        (&crl["domain"], &crl["issuer"], &crl["revoked"]),
        (
            &json!("AUTH"),
            &t.pki["intermediate_name_sha256"],
            &json!(1)
        ),
        "{crl}"
    );
    assert!(epoch(&crl["this_update"]) <= now_secs());
    assert!(epoch(&crl["next_update"]) > now_secs());
    t.share_refused(
        "demographics",
        ALICE,
        "AUTH/crl-1",
        409,
        "partner_untrusted",
    )
    .await;
    t.share_ok("demographics", ALICE, "AUTH/ida-1").await;
    let (status, body) = t
        .register_chain("AUTH", "crl-2", &t.text("partners.revoked.chain"))
        .await;
    assert_eq!(status, 400);
    assert_refused(&body, "revoked", &t.text("partners.revoked.cn"));

    // An older CRL of the same CA does not replace it; the same one as DER does.
    let (status, body) = t.put_crl("AUTH", t.text("crl_old")).await;
    assert_eq!(
        (status.as_u16(), &body["reason"]),
        (400, &json!("crl_stale")),
        "{body}"
    );
    let der = URL_SAFE_NO_PAD.decode(t.text("crl_der_b64")).unwrap();
    let (status, body) = t.put_crl("AUTH", der).await;
    assert_eq!(
        (status.as_u16(), &body["revoked"]),
        (200, &json!(1)),
        "{body}"
    );
    t.share_refused(
        "demographics",
        ALICE,
        "AUTH/crl-1",
        409,
        "partner_untrusted",
    )
    .await;

    // CRLs are per domain: DEVICE has none.
    t.register("DEVICE", "crl-1", "revoked").await;

    // Anchors replaced by an unrelated CA: the partner no longer chains.
    let (status, body) = t.put_anchors("AUTH", &t.pki["unrelated_root"]).await;
    assert_eq!(status, 200, "{body}");
    t.share_refused(
        "demographics",
        ALICE,
        "AUTH/ida-1",
        409,
        "partner_untrusted",
    )
    .await;
}

/// The partner exposure report counts the shares made per certificate version (shares,
/// distinct residents, record names, time window), filtered by revocation reason; a
/// resident's exposure lists the partners that received that resident's records.
async fn exposure_counts_match_the_shares_made(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    for (id, name) in [
        (ALICE, "demographics"),
        (ALICE, "biometrics"),
        (BOB, "demographics"),
        (CAROL, "demographics"),
    ] {
        assert_eq!(t.app.put("rp", name, id, b"{}").await.status(), 201);
    }
    let mut shared: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // Version 1: Alice's demographics twice and biometrics once, Bob's demographics once.
    for (id, name) in [
        (ALICE, "demographics"),
        (ALICE, "demographics"),
        (ALICE, "biometrics"),
        (BOB, "demographics"),
    ] {
        let jwe = t.share_ok(name, id, "AUTH/ida-1").await;
        shared.entry(id).or_default().push(jti(&jwe));
    }
    // Version 2 (the newest) receives the next shares, even after version 1 is revoked.
    t.register("AUTH", "ida-1", "ec2").await;
    let jwe = t.share_ok("demographics", BOB, "AUTH/ida-1").await;
    assert_eq!(t.decrypt(&jwe, "ec2").1["kid"], t.thumbprint("ec2"));
    shared.entry(BOB).or_default().push(jti(&jwe));
    let (status, view) = t.revoke("AUTH", "ida-1", "key_compromise", Some(1)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(version(&view, 1)["state"], "revoked");
    assert_eq!(version(&view, 2)["state"], "active");
    let jwe = t.share_ok("demographics", BOB, "AUTH/ida-1").await;
    shared.entry(BOB).or_default().push(jti(&jwe));

    let all = t.exposure("AUTH", "ida-1", None).await;
    assert_eq!(
        (
            &all["domain"],
            &all["id"],
            &all["shares"],
            &all["residents"]
        ),
        (&json!("AUTH"), &json!("ida-1"), &json!(6), &json!(2)),
        "{all}"
    );
    let v1 = version(&all, 1);
    assert_eq!(
        (
            &v1["thumbprint"],
            &v1["revoked_reason"],
            &v1["shares"],
            &v1["residents"]
        ),
        (
            &json!(t.thumbprint("ec")),
            &json!("key_compromise"),
            &json!(4),
            &json!(2)
        ),
        "{all}"
    );
    assert_eq!(
        v1["by_record_name"],
        json!({"demographics": 3, "biometrics": 1})
    );
    let v2 = version(&all, 2);
    assert_eq!(
        (
            &v2["thumbprint"],
            &v2["revoked_reason"],
            &v2["shares"],
            &v2["residents"]
        ),
        (
            &json!(t.thumbprint("ec2")),
            &Value::Null,
            &json!(2),
            &json!(1)
        ),
        "{all}"
    );
    assert_eq!(v2["by_record_name"], json!({"demographics": 2}));
    for v in [v1, v2] {
        let (first, last) = (epoch(&v["first_at"]), epoch(&v["last_at"]));
        assert!(first <= last && last <= now_secs(), "{v}");
    }
    assert!(epoch(&v1["last_at"]) <= epoch(&v2["first_at"]));

    // Only what went to the compromised key.
    let compromised = t.exposure("AUTH", "ida-1", Some("key_compromise")).await;
    assert_eq!(
        (&compromised["shares"], &compromised["residents"]),
        (&json!(4), &json!(2)),
        "{compromised}"
    );
    let versions = compromised["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{compromised}");
    assert_eq!(versions[0]["version"], 1);
    let none = t.exposure("AUTH", "ida-1", Some("cessation")).await;
    assert_eq!(
        (&none["shares"], &none["residents"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(none["versions"], json!([]));

    // A partner that received nothing.
    t.register("AUTH", "ida-2", "rsa2048").await;
    let idle = t.exposure("AUTH", "ida-2", None).await;
    assert_eq!(
        (&idle["shares"], &idle["residents"]),
        (&json!(0), &json!(0))
    );
    let v = &idle["versions"][0];
    assert_eq!(
        (&v["shares"], &v["residents"], &v["first_at"], &v["last_at"]),
        (&json!(0), &json!(0), &Value::Null, &Value::Null),
        "{idle}"
    );
    let (status, _) = t
        .app
        .call(
            Method::GET,
            "/v1/trust/AUTH/partners/nobody/exposure",
            &t.auditor,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // One resident's view: which partner, which certificate, revoked or not, newest first.
    let alice = t.resident_exposure(ALICE).await;
    let entries = alice["shares"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{alice}");
    for e in entries {
        assert_eq!(
            (&e["domain"], &e["id"], &e["version"], &e["thumbprint"]),
            (
                &json!("AUTH"),
                &json!("ida-1"),
                &json!(1),
                &json!(t.thumbprint("ec"))
            ),
            "{alice}"
        );
        assert_eq!(
            (&e["revoked"], &e["revoked_reason"], &e["revision"]),
            (&json!(true), &json!("key_compromise"), &json!(1)),
            "{alice}"
        );
        assert!(e["shared_at"].is_string());
    }
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["record_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["biometrics", "demographics", "demographics"],
        "newest first"
    );
    let jtis = |v: &Value| -> BTreeSet<String> {
        v["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["jti"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(jtis(&alice), shared[ALICE].iter().cloned().collect());
    let bob = t.resident_exposure(BOB).await;
    assert_eq!(jtis(&bob), shared[BOB].iter().cloned().collect());
    let revoked: Vec<(&Value, &Value)> = bob["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (&e["version"], &e["revoked"]))
        .collect();
    assert_eq!(
        revoked,
        [
            (&json!(2), &json!(false)),
            (&json!(2), &json!(false)),
            (&json!(1), &json!(true))
        ],
        "{bob}"
    );
    assert_eq!(t.resident_exposure(CAROL).await["shares"], json!([]));
}

/// 401 without a credential; 403 for a wrong role (a reader or writer shares, a sharer
/// registers, an operator revokes, …) or a sharer of another namespace.
async fn roles_and_namespaces_are_enforced(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    t.app.put("rp", "demographics", ALICE, b"{}").await;
    let tokens = &t.app.tokens;
    let uin_sharer = t.app.issue(&[Role::Sharer], &["uin"]).await;
    let chain = t.text("partners.ec2.chain");
    let register = json!({"id": "ida-9", "certificate_chain": chain});
    let revoke = json!({"reason": "cessation"});
    let share = json!({"partner": "AUTH/ida-1"});

    let endpoints: [(Method, &str, Option<&Value>); 10] = [
        (Method::PUT, "/v1/trust/AUTH/anchors", None),
        (Method::PUT, "/v1/trust/AUTH/crl", None),
        (Method::POST, "/v1/trust/AUTH/partners", Some(&register)),
        (Method::GET, "/v1/trust/AUTH/partners/ida-1", None),
        (
            Method::POST,
            "/v1/trust/AUTH/partners/ida-1/revoke",
            Some(&revoke),
        ),
        (Method::GET, "/v1/trust/AUTH/partners/ida-1/exposure", None),
        (Method::GET, "/v1/trust/expiring", None),
        (
            Method::POST,
            "/v1/ns/rp/records/demographics/share",
            Some(&share),
        ),
        (Method::GET, "/v1/ns/rp/exposure", None),
        (Method::GET, "/v1/trust/expiring?within=1d", None),
    ];
    for (method, path, body) in &endpoints {
        let mut r = t
            .app
            .client
            .request(method.clone(), t.app.url(path))
            .header("Resident-Id", ALICE);
        if let Some(body) = body {
            r = r.json(body);
        }
        assert_eq!(r.send().await.unwrap().status(), 401, "{method} {path}");
    }

    // Who may call what (every other role in the list is refused with 403).
    let (sharer, admin, auditor) = (&t.sharer, &t.admin, &t.auditor);
    let roles: [(&str, &str); 8] = [
        ("trust_admin", admin),
        ("sharer", sharer),
        ("auditor", auditor),
        ("operator", &tokens.operator),
        ("reader", &tokens.reader),
        ("writer", &tokens.writer),
        ("admin", &tokens.admin),
        ("uin sharer", &uin_sharer),
    ];
    let allowed: [(usize, &[&str]); 6] = [
        (2, &["trust_admin"]),
        (3, &["trust_admin", "auditor"]),
        (5, &["auditor"]),
        (6, &["operator", "auditor"]),
        (7, &["sharer"]),
        (8, &["reader", "writer"]),
    ];
    for (i, who) in allowed {
        let (method, path, body) = &endpoints[i];
        for (role, token) in roles {
            let mut r = t.app.req(method.clone(), path, token, Some(ALICE));
            if let Some(body) = body {
                r = r.json(body);
            }
            let status = r.send().await.unwrap().status().as_u16();
            if who.contains(&role) {
                assert!(
                    (200..300).contains(&status),
                    "{role} may {method} {path}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{role} may not {method} {path}");
            }
        }
    }
    // Anchors, CRLs and revocations (each run once, by the roles that may not).
    for (i, body) in [(0, t.text("anchors")), (1, t.text("crl"))] {
        let (method, path, _) = &endpoints[i];
        for (role, token) in &roles[1..] {
            let (status, _) = t.send_text(method.clone(), path, token, body.clone()).await;
            assert_eq!(status, 403, "{role} may not {method} {path}");
        }
    }
    for (role, token) in &roles[1..] {
        let (status, _) = t
            .app
            .call(Method::POST, endpoints[4].1, token, Some(revoke.clone()))
            .await;
        assert_eq!(status, 403, "{role} may not revoke");
    }
    // Nothing the refused calls asked for happened: ida-1 v1 is active, ida-9 v1 is the only
    // version the trust admin registered.
    let (_, view) = t.partner("AUTH", "ida-1").await;
    assert_eq!(version(&view, 1)["state"], "active", "{view}");
    let (_, view) = t.partner("AUTH", "ida-9").await;
    assert_eq!(view["versions"].as_array().unwrap().len(), 1, "{view}");
    // A sharer of `rp` shares from `rp` only.
    let s = t
        .share_on(
            &t.app.url(""),
            &uin_sharer,
            "demographics",
            ALICE,
            share.clone(),
        )
        .await;
    assert_eq!(s.status, 403);
}

/// A certificate near its expiry is listed by `GET /v1/trust/expiring`, measured by the
/// `zkvault_trust_expiry_seconds` gauge, warned about once per threshold in the audit trail
/// and dated in `policy plan`.
async fn expiring_certificates_are_listed_measured_and_warned(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    let gauge = |domain: &str| format!("zkvault_trust_expiry_seconds{{domain=\"{domain}\"}}");
    assert_eq!(
        metric(&t.metrics().await, &gauge("AUTH")),
        None,
        "no partner yet"
    );
    // DEVICE accepts a certificate with 2 days left (min_remaining_days = 0).
    t.register("DEVICE", "dev-1", "soon").await;
    t.register("AUTH", "ida-1", "ec").await;
    let soon_after = t.pki["partners"]["soon"]["not_after"].as_i64().unwrap();
    let ec_after = t.pki["partners"]["ec"]["not_after"].as_i64().unwrap();

    let partners = |list: &Value| -> Vec<(String, String, i64)> {
        list["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "partner")
            .map(|c| {
                (
                    c["domain"].as_str().unwrap().to_owned(),
                    c["id"].as_str().unwrap().to_owned(),
                    epoch(&c["not_after"]),
                )
            })
            .collect()
    };
    let (status, week) = t.expiring("7d", &t.app.tokens.operator).await;
    assert_eq!(status, 200, "{week}");
    assert_eq!(week["within_secs"], 7 * 86_400);
    assert_eq!(
        partners(&week),
        [("DEVICE".into(), "dev-1".into(), soon_after)]
    );
    let entry = &week["certificates"][0];
    assert_eq!(
        (&entry["version"], &entry["thumbprint"]),
        (&json!(1), &json!(t.thumbprint("soon")))
    );
    let (status, year) = t.expiring("400d", &t.auditor).await;
    assert_eq!(status, 200, "{year}");
    assert_eq!(
        partners(&year),
        [
            ("DEVICE".into(), "dev-1".into(), soon_after),
            ("AUTH".into(), "ida-1".into(), ec_after)
        ],
        "sorted by not_after"
    );
    let (status, default) = t
        .app
        .call(Method::GET, "/v1/trust/expiring", &t.auditor, None)
        .await;
    assert_eq!(
        (status.as_u16(), &default["within_secs"]),
        (200, &json!(30 * 86_400))
    );
    assert_eq!(partners(&default).len(), 1, "{default}");
    let (_, half_day) = t.expiring("12h", &t.auditor).await;
    assert_eq!(half_day["within_secs"], 43_200);
    assert!(partners(&half_day).is_empty(), "{half_day}");
    let (_, hour) = t.expiring("3600s", &t.auditor).await;
    assert_eq!(hour["within_secs"], 3600);
    for bad in ["abc", "-1d", "7x", "", "99999999999999999999d"] {
        let (status, _) = t.expiring(bad, &t.auditor).await;
        assert_eq!(status, 400, "within={bad}");
    }

    // Seconds to the nearest expiry, per domain, and no partner id in any label.
    let metrics = t.metrics().await;
    for (domain, not_after) in [("AUTH", ec_after), ("DEVICE", soon_after)] {
        let value = metric(&metrics, &gauge(domain)).unwrap_or_else(|| panic!("{metrics}"));
        let expected = (not_after - now_secs()) as f64;
        assert!(
            (value - expected).abs() < 120.0,
            "{domain}: {value} vs {expected}"
        );
    }
    assert!(!metrics.contains("dev-1") && !metrics.contains("ida-1"));

    // The 30- and 7-day thresholds of dev-1 are crossed: warned, once.
    let warnings = || async {
        t.audit(Some("trust.expiry_warning"))
            .await
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    };
    let vault = t.app.vault.clone();
    let lifecycle = move || {
        let vault = vault.clone();
        async move {
            tokio::task::spawn_blocking(move || vault.run_due_lifecycle(now_ms()))
                .await
                .unwrap()
                .unwrap();
        }
    };
    lifecycle().await;
    let first = warnings().await;
    assert!(!first.is_empty(), "no trust.expiry_warning");
    assert!(first.iter().all(|w| w.contains("dev-1")), "{first:?}");
    lifecycle().await;
    assert_eq!(warnings().await, first, "each threshold is warned once");

    let vault = t.app.vault.clone();
    let plan = tokio::task::spawn_blocking(move || {
        vault.plan(now_ms(), Duration::from_secs(400 * 86_400))
    })
    .await
    .unwrap()
    .unwrap();
    for id in ["dev-1", "ida-1"] {
        assert!(
            plan.iter().any(|e| e.what.contains(id)),
            "{id} in the plan: {:?}",
            plan.iter().map(|e| &e.what).collect::<Vec<_>>()
        );
    }

    // A revoked certificate is no longer listed.
    let (status, _) = t.revoke("DEVICE", "dev-1", "cessation", None).await;
    assert_eq!(status, 200);
    let (_, week) = t.expiring("7d", &t.auditor).await;
    assert!(partners(&week).is_empty(), "{week}");
}

/// Every share is a `trust.share` audit entry and a receipt; receipts and the audit trail hold
/// the resident's keyed tag, never the ID, and neither do the metrics.
async fn shares_are_audited_and_no_resident_id_is_stored(db: TestDb) {
    let Some(t) = Trust::with_anchors(db).await else {
        return;
    };
    t.register("AUTH", "ida-1", "ec").await;
    t.app.put("rp", "demographics", ALICE, b"{}").await;
    t.app.put("rp", "demographics", BOB, b"{}").await;
    let mut jtis = BTreeSet::new();
    for id in [ALICE, ALICE, BOB] {
        jtis.insert(jti(&t.share_ok("demographics", id, "AUTH/ida-1").await));
    }
    t.share_refused("demographics", ALICE, "AUTH/nobody", 404, "unknown_partner")
        .await;
    assert_eq!(t.put_crl("AUTH", t.text("crl")).await.0, 200);
    assert_eq!(t.revoke("AUTH", "ida-1", "superseded", None).await.0, 200);
    t.share_refused("demographics", BOB, "AUTH/ida-1", 409, "partner_untrusted")
        .await;

    let url = t.app.db.url();
    let receipts = query_strings(
        url,
        "SELECT jti || ' ' || domain || ' ' || partner_id || ' ' || CAST(version AS TEXT) || ' ' || thumbprint || ' ' || namespace || ' ' || resident_tag || ' ' || record_name || ' ' || CAST(revision AS TEXT) || ' ' || CAST(created_at AS TEXT) AS v FROM share_receipts",
    );
    assert_eq!(receipts.len(), 3, "{receipts:?}");
    let tags: BTreeSet<String> = query_strings(url, "SELECT resident_tag AS v FROM share_receipts")
        .into_iter()
        .collect();
    assert_eq!(tags.len(), 2, "one tag per resident: {tags:?}");

    let shares: Vec<Value> = t
        .audit(Some("trust.share"))
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "ok")
        .collect();
    assert_eq!(shares.len(), 3, "{shares:?}");
    let audit_tags: BTreeSet<String> = shares
        .iter()
        .map(|e| e["resident_tag"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(audit_tags, tags, "receipts carry the audit trail's tag");
    for jti in &jtis {
        assert!(
            shares.iter().any(|e| e.to_string().contains(jti.as_str())),
            "jti {jti} in a trust.share entry: {shares:?}"
        );
    }
    let trail = t.audit(None).await;
    let operations: BTreeSet<&str> = trail
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    for op in [
        "trust.anchors",
        "trust.register",
        "trust.share",
        "trust.crl",
        "trust.revoke",
    ] {
        assert!(operations.contains(op), "{op} in {operations:?}");
    }

    let metrics = t.metrics().await;
    for (place, text) in [
        ("share_receipts", receipts.join("\n")),
        ("the audit trail", Value::from(trail).to_string()),
        ("/metrics", metrics),
    ] {
        for id in [ALICE, BOB] {
            assert!(!text.contains(id), "{place} holds resident ID {id}");
        }
    }
}

/// Under `dual_control` a new anchor bundle is checked at once but takes effect only when an
/// operator approves it.
async fn under_dual_control_new_anchors_wait_for_an_operator(db: TestDb) {
    let policy = support::trust::policy().replace(
        "credential_max_age_days = 90",
        "credential_max_age_days = 90\ndual_control = true",
    );
    let Some(t) = Trust::start_with(db, &policy).await else {
        return;
    };
    let (status, body) = t.put_anchors("AUTH", &t.pki["bad_anchors"]).await;
    assert_eq!(status, 400, "checked before any approval: {body}");
    assert_refused(&body, "not_a_ca", &t.text("bad_anchor_cn"));

    let (status, pending) = t.put_anchors("AUTH", &t.pki["anchors"]).await;
    assert_eq!(status, 202, "{pending}");
    assert!(pending["expires_at"].is_string(), "{pending}");
    let chain = t.text("partners.ec.chain");
    let (status, body) = t.register_chain("AUTH", "ida-1", &chain).await;
    assert_eq!(status, 400, "not in force before the approval: {body}");
    assert_refused(&body, "no_anchors", &t.text("partners.ec.cn"));

    let approve = format!("/v1/approvals/{}", pending["approval"].as_str().unwrap());
    let (status, _) = t.app.call(Method::POST, &approve, &t.admin, None).await;
    assert_eq!(status, 403, "a trust admin does not approve");
    let (status, body) = t
        .app
        .call(Method::POST, &approve, &t.app.tokens.operator, None)
        .await;
    assert_eq!(status, 200, "{body}");
    t.register("AUTH", "ida-1", "ec").await;
    let approved = t.audit(Some("trust.anchors")).await;
    assert_eq!(approved.len(), 1, "{approved:?}");
}
