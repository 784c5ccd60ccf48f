//! Review 8: attacks on signing (DESIGN.md "Signing (v1)"). The tests whose comments say
//! FINDING failed against the code as reviewed and pass since the fix; the others record
//! attacks that held.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use support::app::{backup, execute_sql, grant, query_strings, raw_request, restore, TestApp};
use support::db::TestDb;
use support::signing::{b64, jwks, kids, scheduler_at, sign, start, verify};
use zkvault::vault::{now_ms, Role};

async fn refresh(app: &TestApp) {
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || vault.signers().refresh().unwrap())
        .await
        .unwrap();
}

fn row(app: &TestApp, signer: &str, version: i32) -> String {
    query_strings(
        app.db.url(),
        &format!(
            "SELECT state || ':' || CASE WHEN wrapped IS NULL THEN 'no-material' ELSE 'sealed' END \
             AS v FROM signer_keys WHERE signer = '{signer}' AND version = {version}"
        ),
    )
    .pop()
    .unwrap_or_else(|| "absent".into())
}

// ---------------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------------

/// FINDING: `compromise_kek` (the response to "the KEK/HSM is suspected exposed") compromises
/// and rotates every live DM, but leaves every signing key sealed under that KEK active and
/// published. Whoever holds the exposed KEK and any database dump unwraps the P-256 scalar and
/// forges signatures that verify, through the JWKS, until the key's natural retirement
/// (rotation + verify window: up to 120 days with this policy).
async fn kek_compromise_leaves_sealed_signing_keys_trusted(db: TestDb) {
    let app = start(db).await;
    let signer = app
        .issue(&[Role::Signer, Role::Verifier], &["idsign"])
        .await;
    let (jws, kid) = sign(&app, &signer, "idsign", b"signed before the KEK leaked").await;
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        vault
            .compromise_kek(&grant(&vault, Role::Operator, None))
            .unwrap()
    })
    .await
    .unwrap();
    refresh(&app).await;
    let (_, new_kid) = sign(&app, &signer, "idsign", b"after").await;
    assert_ne!(
        new_kid, kid,
        "the signer still signs with a key sealed under the compromised KEK"
    );
    assert!(
        !kids(&jwks(&app).await).contains(&kid),
        "a key sealed under the compromised KEK is still in the JWKS"
    );
    assert_eq!(verify(&app, &signer, &jws).await["valid"], false);
}

/// FINDING: with the signer rows restored from before a compromise, the service's snapshot
/// serves the key as compromised (JWKS, verify, sign), but the operator paths read the rows
/// directly (`rows_of`, which ignores the keystore's ledger): until the next scheduler pass
/// (up to `scheduler_tick`, 60 s by default; never, if the scheduler is failing), the
/// compromised key still signs a CSR (a CA may then certify the leaked key) and accepts a
/// certificate, whose attachment re-MACs and re-stores the row as `active`.
async fn restored_rows_let_a_compromised_key_sign_a_csr(db: TestDb) {
    let app = start(db).await;
    let op = app.tokens.operator.clone();
    backup(app.db.url(), "before", &["signer_keys"]);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/versions/1/compromise",
            &op,
            None,
        )
        .await;
    assert_eq!(status, 200);
    restore(app.db.url(), "before", &["signer_keys"]);
    refresh(&app).await;
    // The snapshot is right: the key is served as compromised.
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/jws",
            &signer,
            Some(json!({"payload": b64(b"x")})),
        )
        .await;
    assert_ne!(status, 200, "the snapshot signs with a revoked key");
    // The CSR path is not.
    let r = app
        .req(Method::POST, "/v1/signers/idsign/versions/1/csr", &op, None)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "a CSR signed by a key the keystore records as compromised"
    );
}

/// FINDING: destroying a sealed signing key only blanks its row; the keystore keeps nothing
/// (`destroy_signing_key` is a no-op for sealed keys) and does not refuse to unwrap it. Rows
/// restored from an older backup bring the sealed scalar back, and the next KEK rotation
/// (`rewrap_signer_keys`, which, unlike the masters' rewrap, does not consult the ledger)
/// carries the destroyed key over to the new KEK; the scheduler's reconciliation then only
/// marks it `compromised` and keeps the material. Destroying the old KEK no longer shreds it.
async fn a_destroyed_signing_key_survives_a_restore_and_a_kek_rotation(db: TestDb) {
    let app = start(db).await;
    let op = app.tokens.operator.clone();
    backup(app.db.url(), "before", &["signer_keys"]);
    for step in ["compromise", "destroy"] {
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/v1/signers/idsign/versions/1/{step}"),
                &op,
                None,
            )
            .await;
        assert_eq!(status, 200, "{step}: {body}");
    }
    assert_eq!(row(&app, "idsign", 1), "destroyed:no-material");
    restore(app.db.url(), "before", &["signer_keys"]);
    refresh(&app).await;
    let (status, body) = app
        .call(Method::POST, "/v1/keys/kek/rotate", &op, None)
        .await;
    assert_eq!(status, 200, "{body}");
    scheduler_at(&app, 0).await;
    let kek = query_strings(
        app.db.url(),
        "SELECT COALESCE(CAST(kek_version AS TEXT), '-') AS v FROM signer_keys WHERE signer = 'idsign' AND version = 1",
    );
    // The keystore's record cannot tell a destruction from a compromise: the row comes back
    // compromised, and without its material.
    assert_eq!(
        row(&app, "idsign", 1),
        "compromised:no-material",
        "a destroyed key's private half is back in the database, sealed under KEK {kek:?}"
    );
}

/// FINDING (policy bypass): `max_token_ttl_secs` bounds only `…/jwt`. Any `signer` credential
/// mints a JWT (`typ: "JWT"`, claims with a ten-year `exp`, or none) through `…/jws`, and the
/// service's own `verify` (and every relying party using the JWKS) accepts it.
async fn a_jws_with_typ_jwt_outlives_max_token_ttl(db: TestDb) {
    let app = start(db).await;
    let signer = app
        .issue(&[Role::Signer, Role::Verifier], &["idsign"])
        .await;
    let now = now_ms() / 1000;
    let claims = json!({"sub": "partner-17", "iat": now, "exp": now + 10 * 365 * 86_400});
    let r = app
        .call(
            Method::POST,
            "/v1/signers/idsign/jws",
            &signer,
            Some(json!({"payload": b64(claims.to_string().as_bytes()), "typ": "JWT"})),
        )
        .await;
    if r.0 != 200 {
        return; // refused: the bound holds
    }
    let jwt = r.1["jws"].as_str().unwrap();
    assert_eq!(
        verify(&app, &signer, jwt).await["valid"],
        false,
        "a JWT living ten years, over max_token_ttl_secs = 1 day, verifies"
    );
}

/// FINDING (low): `verify` reads `exp`/`nbf` with `as_i64`, so a NumericDate written as a
/// non-integer (RFC 7519 allows it) or a claim of the wrong type is ignored: a token expired
/// in 1970 verifies. jwcrypto/PyJWT treat `1000.5` as expired and reject a string.
async fn non_integer_exp_and_nbf_are_ignored(db: TestDb) {
    let app = start(db).await;
    let signer = app
        .issue(&[Role::Signer, Role::Verifier], &["idsign"])
        .await;
    let mut valid = Vec::new();
    // A JWS whose `exp` is not a number is not signed at all (400).
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/jws",
            &signer,
            Some(json!({"payload": b64(json!({"exp": "1000"}).to_string().as_bytes())})),
        )
        .await;
    assert_eq!(status, 400);
    for claims in [
        json!({"exp": 1000.5}),
        json!({"nbf": 99_999_999_999.5_f64}),
        json!({"exp": 1e3}),
    ] {
        let (jws, _) = sign(&app, &signer, "idsign", claims.to_string().as_bytes()).await;
        if verify(&app, &signer, &jws).await["valid"] == true {
            valid.push(claims);
        }
    }
    assert!(
        valid.is_empty(),
        "expired or not-yet-valid tokens verify: {valid:?}"
    );
}

/// FINDING (low): the chain check compares only names (each issuer with the next subject),
/// never a signature. A chain whose "CA" is any certificate that merely carries the issuer's
/// name is accepted and published as `x5c`. (An expired leaf and a leaf for another key are
/// refused: that part holds.)
async fn a_chain_that_does_not_verify_is_published_as_x5c(db: TestDb) {
    let app = start(db).await;
    let op = &app.tokens.operator;
    let csr = app
        .req(Method::POST, "/v1/signers/idsign/versions/1/csr", op, None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let Some(made) = python_certs(&csr) else {
        return;
    };
    // Held: an expired leaf, a leaf on P-384, and a huge PEM.
    assert_eq!(
        put_cert(&app, made["expired"].as_str().unwrap().to_owned()).await,
        400
    );
    assert_eq!(
        put_cert(&app, made["p384"].as_str().unwrap().to_owned()).await,
        400
    );
    assert_eq!(put_cert(&app, "A".repeat(200_000)).await, 413);
    // The leaf is genuine; the "CA" behind it has the right name and another key.
    let status = put_cert(&app, made["forged_chain"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        status, 400,
        "a chain whose second certificate did not issue the first is attached and published"
    );
}

async fn put_cert(app: &TestApp, pem: String) -> u16 {
    app.req(
        Method::PUT,
        "/v1/signers/idsign/versions/1/certificate",
        &app.tokens.operator,
        None,
    )
    .body(pem)
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

/// Certificates for the CSR's key made with Python's `cryptography`.
fn python_certs(csr: &str) -> Option<Value> {
    const SCRIPT: &str = r#"
import datetime, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
csr = x509.load_pem_x509_csr(sys.stdin.read().encode())
now = datetime.datetime.now(datetime.timezone.utc)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root CA")])
def cert(key, issuer, subject, pub, nb, na, ca=False):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
        .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
real, fake = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
day = datetime.timedelta(days=1)
leaf = cert(real, name, csr.subject, csr.public_key(), now - day, now + 30 * day)
impostor = cert(fake, name, name, fake.public_key(), now - day, now + 30 * day, ca=True)
expired = cert(real, name, csr.subject, csr.public_key(), now - 60 * day, now - day)
p384 = cert(real, name, csr.subject, ec.generate_private_key(ec.SECP384R1()).public_key(), now - day, now + day)
pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
print(json.dumps({"forged_chain": pem(leaf) + pem(impostor), "expired": pem(expired), "p384": pem(p384)}))
"#;
    support::python::run_json("review 8 certificates", &["-c", SCRIPT], csr.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Attacks that held
// ---------------------------------------------------------------------------------------------

/// HELD: alg `none`, HS256 keyed with the published key, an embedded `jwk` of the attacker's
/// own key under the victim's `kid`, a token of signer `other` verified under `idsign`, a real
/// token with its header's `kid` swapped, extra segments and a very long input are all
/// `valid: false` (and no 500).
async fn header_confusion_is_refused(db: TestDb) {
    use josekit::jws::{JwsHeader, ES256, HS256};
    let app = start(db).await;
    let verifier = app.issue(&[Role::Verifier], &["idsign"]).await;
    let signer = app.issue(&[Role::Signer], &[]).await;
    let (real, kid) = sign(&app, &signer, "idsign", b"real").await;
    let (other, other_kid) = sign(&app, &signer, "other", b"other").await;
    let set = jwks(&app).await;
    let published = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let payload = b64(b"forged");
    let mut forged = vec![format!(
        "{}.{payload}.",
        b64(json!({"alg": "none", "kid": kid}).to_string().as_bytes())
    )];
    for key in [
        published.to_string(),
        published["x"].as_str().unwrap().to_owned(),
    ] {
        let mut header = JwsHeader::new();
        header.set_key_id(&kid);
        let hs = HS256.signer_from_bytes(key.as_bytes()).unwrap();
        forged.push(josekit::jws::serialize_compact(b"forged", &header, &hs).unwrap());
    }
    let attacker = ES256.generate_key_pair().unwrap();
    let mut header = JwsHeader::new();
    header.set_key_id(&kid);
    header.set_jwk(attacker.to_jwk_public_key());
    let es = ES256
        .signer_from_jwk(&attacker.to_jwk_private_key())
        .unwrap();
    forged.push(josekit::jws::serialize_compact(b"forged", &header, &es).unwrap());
    // The kid of a real idsign token swapped into another's header.
    let mut parts: Vec<String> = other.split('.').map(str::to_owned).collect();
    let header = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
    parts[0] = b64(header.replace(&other_kid, &kid).as_bytes());
    forged.push(parts.join("."));
    forged.push(format!("{real}.x.y"));
    forged.push(format!("{real}{}", "A".repeat(500_000)));
    for jws in &forged {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/signers/idsign/verify",
                &verifier,
                Some(json!({ "jws": jws })),
            )
            .await;
        assert!(
            status == 200 && body["valid"] == false || status == 413 || status == 400,
            "{status} {body} for {}",
            &jws[..jws.len().min(120)]
        );
    }
    // A real token of `other`, under `idsign`: unknown.
    let body = verify(&app, &verifier, &other).await;
    assert_eq!(body["valid"], false);
    assert_eq!(body["state"], "unknown");
    assert_eq!(verify(&app, &verifier, &real).await["valid"], true);
}

/// HELD: a credential for `other` cannot reach `idsign` by path tricks: dot segments, case,
/// percent-encoding, doubled or trailing slashes.
async fn path_tricks_do_not_cross_signers(db: TestDb) {
    let app = start(db).await;
    let only_other = app.issue(&[Role::Signer], &["other"]).await;
    let body = json!({"payload": b64(b"x")}).to_string();
    for path in [
        "/v1/signers/other/../idsign/jws",
        "/v1/signers/other/%2e%2e/idsign/jws",
        "/v1/signers/IDSIGN/jws",
        "/v1/signers/idsign%00/jws",
        "/v1/signers/%69dsign/jws",
        "/v1/signers/idsign%2Fjws",
        "//v1/signers/idsign/jws",
        "/v1/signers//idsign/jws",
        "/v1/signers/idsign/jws/",
        "/v1/signers/idsign/./jws",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {only_other}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let status = raw_request(app.addr, request.as_bytes()).await;
        assert_ne!(status, Some(200), "{path} signed with idsign");
    }
}

/// HELD: a crash between the keystore's record of a compromise and the database update (the
/// ledger entry alone): every path serves the key as compromised at once, signing answers 503
/// instead of using it, and the next scheduler pass writes it back and makes a new key.
async fn a_crash_after_the_ledger_entry_leaves_the_key_revoked(db: TestDb) {
    let app = start(db).await;
    let signer = app
        .issue(&[Role::Signer, Role::Verifier], &["idsign"])
        .await;
    let (jws, kid) = sign(&app, &signer, "idsign", b"x").await;
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        vault
            .keyring()
            .keystore()
            .record_destroyed("sign/idsign", 1)
            .unwrap();
        vault.signers().refresh().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        row(&app, "idsign", 1),
        "active:sealed",
        "the database missed it"
    );
    assert!(!kids(&jwks(&app).await).contains(&kid));
    assert_eq!(verify(&app, &signer, &jws).await["valid"], false);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/jws",
            &signer,
            Some(json!({"payload": b64(b"x")})),
        )
        .await;
    assert_eq!(status, 503);
    scheduler_at(&app, 0).await;
    assert_eq!(row(&app, "idsign", 1), "compromised:no-material");
    let (_, new_kid) = sign(&app, &signer, "idsign", b"x").await;
    assert_ne!(new_kid, kid);
}

/// HELD: two instances racing `rotate?now=true` and a compromise of the active key leave
/// exactly one active key, distinct kids, and versions never reused (deleting a compromised
/// row does not free its number either).
async fn racing_rotations_keep_one_active_key(db: TestDb) {
    let app = start(db).await;
    let peer = app.start_peer().await;
    let op = app.tokens.operator.clone();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 {
            app.url("")
        } else {
            peer.url("")
        };
        let op = op.clone();
        let client = app.client.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i == 3 {
                "/v1/signers/idsign/versions/1/compromise"
            } else {
                "/v1/signers/idsign/rotate?now=true"
            };
            client
                .post(format!("{base}{path}"))
                .bearer_auth(op)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!([200, 409].contains(&status), "{status}");
    }
    let states = query_strings(
        app.db.url(),
        "SELECT state AS v FROM signer_keys WHERE signer = 'idsign'",
    );
    assert_eq!(
        states.iter().filter(|s| *s == "active").count(),
        1,
        "{states:?}"
    );
    let kids = query_strings(
        app.db.url(),
        "SELECT kid AS v FROM signer_keys WHERE signer = 'idsign'",
    );
    let mut distinct = kids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), kids.len());
    // A database writer deletes the compromised v1 and every other row: the next key is not
    // numbered 1 again.
    let highest: i32 = query_strings(
        app.db.url(),
        "SELECT CAST(MAX(version) AS TEXT) AS v FROM signer_keys WHERE signer = 'idsign'",
    )[0]
    .parse()
    .unwrap();
    execute_sql(
        app.db.url(),
        "DELETE FROM signer_keys WHERE signer = 'idsign'",
    );
    scheduler_at(&app, 0).await;
    let versions = query_strings(
        app.db.url(),
        "SELECT CAST(version AS TEXT) AS v FROM signer_keys WHERE signer = 'idsign'",
    );
    // Only v1 is in the ledger: the numbers above it that were never revoked may come back.
    assert!(
        versions.iter().all(|v| v.parse::<i32>().unwrap() > 1),
        "{versions:?} (highest was {highest})"
    );
    peer.handle.stop(false).await;
}

/// HELD: signing with a KEK rotated and the old KEK destroyed, and after a keystore
/// migration, keeps working (the sealed keys are rewrapped; the KEK that still wraps one is
/// not destroyed).
async fn signing_survives_kek_rotation_and_destruction(db: TestDb) {
    let app = start(db).await;
    let signer = app
        .issue(&[Role::Signer, Role::Verifier], &["idsign"])
        .await;
    let (before, kid) = sign(&app, &signer, "idsign", b"x").await;
    let vault = app.vault.clone();
    let destroyed = tokio::task::spawn_blocking(move || {
        let g = grant(&vault, Role::Operator, None);
        vault.rotate_kek(&g).unwrap();
        vault.destroy_kek(&g, 1).map(drop)
    })
    .await
    .unwrap();
    assert!(destroyed.is_ok(), "{destroyed:?}");
    assert_eq!(
        query_strings(
            app.db.url(),
            "SELECT CAST(kek_version AS TEXT) AS v FROM signer_keys WHERE wrapped IS NOT NULL"
        ),
        ["2", "2"]
    );
    let (after, same) = sign(&app, &signer, "idsign", b"y").await;
    assert_eq!(same, kid);
    for jws in [before, after] {
        assert_eq!(verify(&app, &signer, &jws).await["valid"], true);
    }
}

/// HELD: the audit trail and the signer's answers carry no payload; the JWKS has a strong
/// ETag that changes with a compromise, honours `If-None-Match`, and a short max-age.
async fn audit_and_jwks_leak_nothing(db: TestDb) {
    let app = start(db).await;
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let marker = "RESIDENT-4242424242";
    sign(&app, &signer, "idsign", marker.as_bytes()).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/jwt",
            &signer,
            Some(json!({ "sub": marker })),
        )
        .await;
    assert_eq!(status, 200);
    let leaked = query_strings(
        app.db.url(),
        &format!(
            "SELECT operation AS v FROM audit WHERE actor || target || detail || resident_tag LIKE '%{marker}%'"
        ),
    );
    assert!(leaked.is_empty(), "{leaked:?}");
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    let again = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    app.call(
        Method::POST,
        "/v1/signers/idsign/versions/1/compromise",
        &app.tokens.operator,
        None,
    )
    .await;
    let after = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200, "a stale ETag is not fresh");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

on_both_backends!(
    kek_compromise_leaves_sealed_signing_keys_trusted,
    restored_rows_let_a_compromised_key_sign_a_csr,
    a_destroyed_signing_key_survives_a_restore_and_a_kek_rotation,
    a_jws_with_typ_jwt_outlives_max_token_ttl,
    non_integer_exp_and_nbf_are_ignored,
    a_chain_that_does_not_verify_is_published_as_x5c,
    header_confusion_is_refused,
    path_tricks_do_not_cross_signers,
    a_crash_after_the_ledger_entry_leaves_the_key_revoked,
    racing_rotations_keep_one_active_key,
    signing_survives_kek_rotation_and_destruction,
    audit_and_jwks_leak_nothing,
);
