//! Helpers for the partner and device trust tests (tests/trust.rs): a policy with the `AUTH`
//! and `DEVICE` trust domains, a certificate scenario built by Python `cryptography`
//! (tests/fixtures/pki.py), JWE decryption with jwcrypto, and the HTTP calls of DESIGN.md
//! "Partner and device trust (v1)".

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zkvault::vault::Role;

use super::app::{TestApp, POLICY};
use super::db::TestDb;

/// The test policy with two trust domains: `AUTH` (partners need 30 days of validity left,
/// shares live an hour at most) and `DEVICE` (any remaining validity).
pub fn policy() -> String {
    format!(
        r#"{POLICY}
[trust.AUTH]
min_rsa_bits = 2048
min_remaining_days = 30
expiry_warn_days = [30, 7, 1]
max_share_ttl_secs = 3600

[trust.DEVICE]
min_rsa_bits = 2048
min_remaining_days = 0
expiry_warn_days = [30, 7, 1]
max_share_ttl_secs = 600
"#
    )
}

/// The tables that hold trust state (what a database backup of "the trust tables" copies).
pub const TRUST_TABLES: [&str; 3] = ["trust_anchors", "trust_crls", "trust_partners"];

/// Runs tests/fixtures/pki.py with `request` (see [`super::python::run_json`]).
pub fn pki_py(request: &Value) -> Option<Value> {
    let what = format!("pki.py {}", request["op"]);
    let script = super::python::fixture("pki.py");
    super::python::run_json(&what, &[&script], request.to_string().as_bytes())
}

/// The certificate scenario of pki.py, made once per test binary (every test has its own
/// database, so they can share certificates).
pub fn scenario() -> Option<&'static Value> {
    static PKI: OnceLock<Option<Value>> = OnceLock::new();
    PKI.get_or_init(|| pki_py(&json!({"op": "pki"}))).as_ref()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The service under [`policy`] with credentials for the trust roles.
pub struct Trust {
    pub app: TestApp,
    pub pki: &'static Value,
    /// `trust_admin`: anchors, partners, revocations, CRLs.
    pub admin: String,
    /// `sharer` in namespace `rp`.
    pub sharer: String,
    /// `auditor`: partner views, partner exposure, expiring certificates, the audit trail.
    pub auditor: String,
}

/// A share's answer: status, `Content-Type`, body (the compact JWE when 200).
pub struct Shared {
    pub status: StatusCode,
    pub content_type: String,
    pub body: String,
}

impl Shared {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl Trust {
    /// `None` when the Python checker is missing (outside CI).
    pub async fn start(db: TestDb) -> Option<Trust> {
        Self::start_with(db, &policy()).await
    }

    /// [`Trust::start`] under another policy than [`policy`].
    pub async fn start_with(db: TestDb, policy: &str) -> Option<Trust> {
        let pki = scenario()?;
        let app = TestApp::start_with(db, 1024 * 1024, policy).await;
        Some(Trust {
            admin: app.issue(&[Role::TrustAdmin], &[]).await,
            sharer: app.issue(&[Role::Sharer], &["rp"]).await,
            auditor: app.issue(&[Role::Auditor], &[]).await,
            app,
            pki,
        })
    }

    /// [`Trust::start`] with the scenario's root and intermediate as `AUTH` and `DEVICE` anchors.
    pub async fn with_anchors(db: TestDb) -> Option<Trust> {
        let t = Self::start(db).await?;
        for domain in ["AUTH", "DEVICE"] {
            let (status, body) = t.put_anchors(domain, &t.pki["anchors"]).await;
            assert_eq!(status, 200, "{body}");
        }
        Some(t)
    }

    /// A field of the scenario as text (`partners.ec.chain`, `crl`).
    pub fn text(&self, path: &str) -> String {
        path.split('.')
            .fold(self.pki, |v, k| &v[k])
            .as_str()
            .unwrap_or_else(|| panic!("pki.py gave no {path}"))
            .to_owned()
    }

    /// `method path` with `token` and a raw text body: the status and the JSON answer.
    pub async fn send_text(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let r = self
            .app
            .req(method, path, token, None)
            .header("Content-Type", "application/x-pem-file")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put_anchors(&self, domain: &str, pem: &Value) -> (StatusCode, Value) {
        self.send_text(
            Method::PUT,
            &format!("/v1/trust/{domain}/anchors"),
            &self.admin,
            pem.as_str().unwrap().to_owned(),
        )
        .await
    }

    pub async fn put_crl(
        &self,
        domain: &str,
        crl: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        self.send_text(
            Method::PUT,
            &format!("/v1/trust/{domain}/crl"),
            &self.admin,
            crl,
        )
        .await
    }

    /// Registers `chain` as partner `id` of `domain`.
    pub async fn register_chain(&self, domain: &str, id: &str, chain: &str) -> (StatusCode, Value) {
        self.app
            .call(
                Method::POST,
                &format!("/v1/trust/{domain}/partners"),
                &self.admin,
                Some(json!({"id": id, "certificate_chain": chain})),
            )
            .await
    }

    /// Registers the scenario's good partner certificate `label` (`ec`, `rsa3072`, …) as `id`;
    /// must succeed.
    pub async fn register(&self, domain: &str, id: &str, label: &str) -> Value {
        let chain = self.text(&format!("partners.{label}.chain"));
        let (status, body) = self.register_chain(domain, id, &chain).await;
        assert_eq!(status, 201, "registering {label} as {domain}/{id}: {body}");
        body
    }

    pub async fn partner(&self, domain: &str, id: &str) -> (StatusCode, Value) {
        self.app
            .call(
                Method::GET,
                &format!("/v1/trust/{domain}/partners/{id}"),
                &self.admin,
                None,
            )
            .await
    }

    /// Revokes `domain/id` (its newest version, or `version`) for `reason`.
    pub async fn revoke(
        &self,
        domain: &str,
        id: &str,
        reason: &str,
        version: Option<i64>,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "reason": reason });
        if let Some(v) = version {
            body["version"] = v.into();
        }
        self.app
            .call(
                Method::POST,
                &format!("/v1/trust/{domain}/partners/{id}/revoke"),
                &self.admin,
                Some(body),
            )
            .await
    }

    /// Shares record `name` of `resident` in `rp` with `partner` ("DOMAIN/id") through the
    /// instance at `base` (`http://addr`), as `token`.
    pub async fn share_on(
        &self,
        base: &str,
        token: &str,
        name: &str,
        resident: &str,
        body: Value,
    ) -> Shared {
        let r = self
            .app
            .client
            .post(format!("{base}/v1/ns/rp/records/{name}/share"))
            .bearer_auth(token)
            .header("Resident-Id", resident)
            .json(&body)
            .send()
            .await
            .unwrap();
        Shared {
            status: r.status(),
            content_type: r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            body: r.text().await.unwrap(),
        }
    }

    /// [`Trust::share_on`] this instance as the `rp` sharer.
    pub async fn share(&self, name: &str, resident: &str, partner: &str) -> Shared {
        let base = self.app.url("");
        self.share_on(
            &base,
            &self.sharer,
            name,
            resident,
            json!({ "partner": partner }),
        )
        .await
    }

    /// A share that must succeed: the compact JWE.
    pub async fn share_ok(&self, name: &str, resident: &str, partner: &str) -> String {
        let s = self.share(name, resident, partner).await;
        assert_eq!(s.status, 200, "share {name} with {partner}: {}", s.body);
        assert_eq!(s.content_type, "application/jose");
        assert_eq!(s.body.split('.').count(), 5, "compact JWE: {}", s.body);
        s.body
    }

    /// A share refused with `status` and `error`.
    pub async fn share_refused(
        &self,
        name: &str,
        resident: &str,
        partner: &str,
        status: u16,
        error: &str,
    ) {
        let s = self.share(name, resident, partner).await;
        assert_eq!(
            (s.status.as_u16(), &s.json()["error"]),
            (status, &json!(error)),
            "share {name} with {partner}: {}",
            s.body
        );
    }

    /// Opens `jwe` with jwcrypto and the private key of the scenario's partner `label`: the
    /// plaintext and the protected header.
    pub fn decrypt(&self, jwe: &str, label: &str) -> (Vec<u8>, Value) {
        let out = pki_py(&json!({
            "op": "decrypt",
            "jwe": jwe,
            "key_pem": self.text(&format!("partners.{label}.key")),
        }))
        .expect("the scenario was made by the same Python");
        let plaintext = URL_SAFE_NO_PAD
            .decode(out["plaintext_b64"].as_str().unwrap())
            .unwrap();
        (plaintext, out["header"].clone())
    }

    /// The x5t#S256 of the scenario's partner certificate `label`, computed by `cryptography`.
    pub fn thumbprint(&self, label: &str) -> String {
        let out = pki_py(&json!({
            "op": "thumbprint",
            "cert_pem": self.text(&format!("partners.{label}.cert")),
        }))
        .unwrap();
        out["thumbprint"].as_str().unwrap().to_owned()
    }

    /// The partner exposure report (as auditor), optionally only versions revoked for `reason`.
    pub async fn exposure(&self, domain: &str, id: &str, reason: Option<&str>) -> Value {
        let query = reason.map(|r| format!("?reason={r}")).unwrap_or_default();
        let (status, body) = self
            .app
            .call(
                Method::GET,
                &format!("/v1/trust/{domain}/partners/{id}/exposure{query}"),
                &self.auditor,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// One resident's exposure in `rp`, as the `rp` reader.
    pub async fn resident_exposure(&self, resident: &str) -> Value {
        let r = self
            .app
            .req(
                Method::GET,
                "/v1/ns/rp/exposure",
                &self.app.tokens.reader,
                Some(resident),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// `GET /v1/trust/expiring?within=…` as `token`.
    pub async fn expiring(&self, within: &str, token: &str) -> (StatusCode, Value) {
        self.app
            .call(
                Method::GET,
                &format!("/v1/trust/expiring?within={within}"),
                token,
                None,
            )
            .await
    }

    /// Audit entries (as auditor), all or of one operation.
    pub async fn audit(&self, operation: Option<&str>) -> Vec<Value> {
        let query = operation
            .map(|o| format!("operation={o}&"))
            .unwrap_or_default();
        let (status, page) = self
            .app
            .call(
                Method::GET,
                &format!("/v1/audit?{query}limit=1000"),
                &self.auditor,
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["entries"].as_array().unwrap().clone()
    }

    pub async fn metrics(&self) -> String {
        self.app
            .client
            .get(self.app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Every stored trust row (partners, anchors, CRLs), for "nothing changed" comparisons.
    pub fn trust_rows(&self) -> Vec<String> {
        super::app::query_strings(
            self.app.db.url(),
            "SELECT 'partner ' || domain || '/' || partner_id || ' v' || CAST(version AS TEXT) || ' ' || thumbprint || ' ' || COALESCE(revoked_reason, '-') AS v FROM trust_partners \
             UNION ALL SELECT 'anchors ' || domain || ' ' || pem AS v FROM trust_anchors \
             UNION ALL SELECT 'crl ' || domain || ' ' || issuer || ' ' || CAST(this_update AS TEXT) AS v FROM trust_crls \
             ORDER BY v",
        )
    }
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn epoch(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap_or_else(|| panic!("{rfc3339}")))
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp()
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}
