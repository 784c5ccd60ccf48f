//! The vault's use cases: everything an HTTP handler or a CLI command asks of zkvault.
//!
//! Blocking by design (storage, keystore, Argon2): callers on an async executor run these
//! through `spawn_blocking`/`web::block`. Nothing here knows about HTTP.

mod access;
mod approvals;
mod audit;
mod checkpoints;
mod credentials;
mod error;
mod integrity;
mod kek;
mod keyring;
mod lifecycle;
mod overview;
mod pem_chain;
mod record_history;
mod record_name;
mod records;
mod reencrypt;
mod refusals;
mod schedule;
mod seed;
mod signers;
mod state_history;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use zkvault_core::{IndexKey, KeyKind, WrapContext};

pub use access::{Caller, Grant};
pub use approvals::{Approved, Decision, PendingApproval};
pub use audit::{
    bounded, is_control_or_format, Actor, AuditBreak, AuditQuery, AuditVerification, EntryExt,
};
pub use credentials::{CredentialInfo, Credentials, IssuedCredential, Principal};
pub use error::VaultError;
pub use kek::KekRotation;
pub use keyring::{Keyring, MasterMeta, SYNC_INTERVAL};
pub use lifecycle::{CompromiseReport, DestroyReport, MasterRotation};
pub use overview::{KekView, KeyOverview, MasterView, NamespaceView};
pub use record_name::{valid_record_name, RECORD_NAME_PATTERN};
pub use records::{Precondition, PutOutcome, Record, RecordWrite};
pub use reencrypt::{ReencryptReport, MAX_REENCRYPT_IDS};
pub use refusals::{Refusal, REFUSAL_INTERVAL};
pub use schedule::{spawn_scheduler, LifecycleReport, PlannedEvent};
pub use seed::{seed_body, seed_uin, SeedOptions, SeedReport, SEED_BODY_BYTES, SEED_MAX_RESIDENTS};
pub use signers::{
    Jwks, Signed, SignerChange, SignerReport, Signers, SignersOverview, Verification,
    JWKS_MAX_AGE_SECS, MAX_SIGN_PAYLOAD,
};
pub use trust::{
    valid_partner_id, AnchorsReport, CrlReport, Expiring, ExpiringCertificate, PartnerExposure,
    PartnerView, Refusal as CertificateRefusal, Registered, ResidentExposure, Shared, Trust,
    MAX_PEM_BYTES, PARTNER_ID_PATTERN, REVOCATION_REASONS,
};

pub use crate::states::{MasterState, Role};

use crate::keystore::{KekState, Keystore};
use crate::policy::Policy;
use crate::storage::{IndexKeyRow, KekRow, Store};

/// Milliseconds since the Unix epoch, UTC: the one clock every stored timestamp uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub struct Vault {
    store: Store,
    /// Authenticates MACed rows (held by the store too) and audit checkpoints.
    integrity: Arc<zkvault_core::IntegrityKey>,
    policy: Policy,
    keyring: Keyring,
    signers: Signers,
    trust: Trust,
    credentials: Credentials,
    refusals: refusals::Refusals,
    record_locks: [std::sync::Mutex<()>; records::RECORD_LOCK_STRIPES],
    /// Record successful reads in the audit trail (changes and failures are always recorded).
    audit_reads: bool,
}

/// Cache lifetimes, from the service configuration.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtls {
    pub masters: Duration,
    pub credentials: Duration,
}

impl Vault {
    /// Opens the vault over a migrated store: checks every stored key unwraps with this
    /// keystore, makes sure an active KEK exists, mirrors the KEK list into the database, and
    /// gives each policy namespace its DM v1 and index key on first start.
    ///
    /// The check comes first, so a wrong keystore (say, the source of a migration, whose KEK the
    /// migration retired) is refused before anything is written to it or to the database.
    pub fn open(
        store: Store,
        keystore: Arc<dyn Keystore>,
        policy: Policy,
        ttls: CacheTtls,
    ) -> Result<Vault, VaultError> {
        let system = Actor::new("system", "service start");
        let integrity;
        {
            // Instances starting together must not each create a first KEK or namespace keys.
            let _lock = key_lock(&store)?;
            integrity = integrity::load_or_create(&store, keystore.as_ref(), &system)?;
            past_forged_rows(
                "destruction reconciliation",
                lifecycle::reconcile_destructions(&store, keystore.as_ref()).map(drop),
            )?;
            past_forged_rows("unwrap check", check_unwrappable(&store, keystore.as_ref()))?;
            let kek = match keystore.active_kek()? {
                Some(v) => v,
                None => keystore.create_kek_after(store.highest_kek_version()? as u32)?,
            };
            past_forged_rows(
                "KEK mirror",
                mirror_keks(&store, keystore.as_ref(), &system),
            )?;
            for ns in policy.namespaces.keys() {
                if store.index_key(ns)?.is_none() {
                    init_namespace(&store, keystore.as_ref(), kek, ns, &system)?;
                }
            }
        }
        let namespaces: Vec<&str> = policy.namespaces.keys().map(String::as_str).collect();
        store.append_audit(
            &system
                .entry("policy.load", "", "")
                .with_detail(format!("namespaces: {}", namespaces.join(","))),
        )?;
        let vault = Vault {
            credentials: Credentials::new(store.clone(), ttls.credentials)?,
            signers: Signers::new(store.clone(), keystore.clone()),
            trust: Trust::new(store.clone(), keystore.clone()),
            keyring: Keyring::new(store.clone(), keystore, ttls.masters),
            refusals: refusals::Refusals::new(store.clone()),
            record_locks: std::array::from_fn(|_| std::sync::Mutex::new(())),
            store,
            integrity,
            policy,
            audit_reads: true,
        };
        vault.check_audit_anchor(&system)?;
        // Every policy signer signs from the first start; a forged signer row stops only that
        // signer (refused where it is used, named by `audit verify`).
        past_forged_rows("signer keys", vault.ensure_signers(&system).map(drop))?;
        vault.signers.refresh()?;
        vault.trust.refresh()?;
        Ok(vault)
    }

    /// Whether successful reads are audited (default on). Off trades that record for
    /// throughput; every change and every failure is still recorded.
    pub fn with_audit_reads(mut self, on: bool) -> Self {
        self.audit_reads = on;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn signers(&self) -> &Signers {
        &self.signers
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Serialises a key change with every other instance and the CLI (see [`Store::key_lock`]),
    /// and refuses it from an instance whose keystore is no longer the deployment's: after
    /// another instance migrated the keystore, a stale one would create KEKs in the old keystore
    /// and wrap new masters under them, where no instance can ever open them.
    pub(crate) fn key_lock(&self) -> Result<crate::storage::KeyLock, VaultError> {
        let lock = key_lock(&self.store)?;
        let here = self.keyring.keystore().id();
        match self.active_kek_row()? {
            Some(k) if !k.keystore.is_empty() && k.keystore != here => Err(VaultError::KeystoreUnavailable(format!(
                "the deployment's active KEK v{} is in keystore {}, not in this instance's ({here}): restart with the current keystore configuration",
                k.version, k.keystore
            ))),
            _ => Ok(lock),
        }
    }

    /// Database and keystore both answer, and this keystore still unwraps every stored master
    /// and index key (for `/readyz`): an instance left on the old keystore after another one
    /// migrated the deployment answers but can serve nothing.
    pub fn check_ready(&self) -> Result<(), VaultError> {
        self.store.ping()?;
        let keystore = self.keyring.keystore();
        keystore.check()?;
        check_unwrappable(&self.store, keystore.as_ref()).map_err(|e| match e {
            VaultError::Internal(why) => VaultError::KeystoreUnavailable(why),
            other => other,
        })
    }
}

/// A start goes on past a key row that fails its MAC: the row is refused wherever it is used
/// and reported by `audit verify`, and one forged row must not keep every instance and the CLI
/// (`audit verify` included) from starting. The integrity key itself was unwrapped first, so
/// this is the deployment's keystore.
fn past_forged_rows(step: &str, result: Result<(), VaultError>) -> Result<(), VaultError> {
    match result {
        Err(VaultError::Integrity) => {
            tracing::error!(
                step,
                "a key row failed authentication at start: skipped; run `zkvault audit verify`"
            );
            Ok(())
        }
        other => other,
    }
}

/// How long a key change waits for another one before answering 409.
const KEY_LOCK_WAIT: Duration = Duration::from_secs(15);

fn key_lock(store: &Store) -> Result<crate::storage::KeyLock, VaultError> {
    store.key_lock(KEY_LOCK_WAIT).map_err(|e| match e {
        crate::storage::StorageError::Conflict => {
            VaultError::Conflict("another key operation is in progress; retry".into())
        }
        other => other.into(),
    })
}

/// Unwraps every stored master and index key once, so a wrong keystore (or a wrong passphrase
/// that happened to open another file) stops the start instead of failing reads later.
fn check_unwrappable(store: &Store, keystore: &dyn Keystore) -> Result<(), VaultError> {
    let wrong = |what: String| {
        VaultError::Internal(format!(
            "{what} cannot be unwrapped by this {} keystore: wrong keystore for this database?",
            keystore.kind()
        ))
    };
    let destroyed = keystore.destroyed_masters()?;
    for row in store.all_masters()? {
        if row.wrapped.is_some() && row.state != MasterState::Destroyed {
            match keyring::unwrap_master(keystore, &row, &destroyed) {
                Ok(_) | Err(VaultError::Shredded) => {}
                Err(_) => return Err(wrong(format!("master {} v{}", row.namespace, row.version))),
            }
        }
    }
    for row in store.all_index_keys()? {
        let ctx = WrapContext::new(&row.namespace, KeyKind::IndexKey, 1);
        keystore
            .unwrap(row.kek_version as u32, &ctx, &row.wrapped)
            .map_err(|_| wrong(format!("index key of {}", row.namespace)))?;
    }
    Ok(())
}

/// Writes the keystore's KEK versions and states into the `keks` table (for `/v1/keys`), each
/// with the keystore that holds it. A version the database already records for another
/// keystore is never overwritten: it is another key under the same number (e.g. the KEK
/// `keystore init` made on a migration target, which the deployment never used), so it is
/// left out with a warning — nothing stored is wrapped under it. While this keystore has an
/// active KEK, another keystore's version still marked active (the source of a migration) is
/// marked retired: the deployment has one active KEK.
fn mirror_keks(store: &Store, keystore: &dyn Keystore, actor: &Actor) -> Result<(), VaultError> {
    let known = store.keks()?;
    let id = keystore.id();
    let keks = keystore.list_keks()?;
    let now = now_ms();
    for kek in &keks {
        let previous = known.iter().find(|k| k.version as u32 == kek.version);
        if let Some(p) = previous.filter(|p| !p.keystore.is_empty() && p.keystore != id) {
            tracing::warn!(version = kek.version, keystore = %id, recorded = %p.keystore, "KEK version already used by another keystore of this deployment: not recorded");
            continue;
        }
        let row = KekRow {
            version: kek.version as i32,
            state: kek.state,
            created_at: previous.map_or(now, |p| p.created_at),
            retired_at: previous
                .and_then(|p| p.retired_at)
                .or((kek.state != KekState::Active).then_some(now)),
            destroyed_at: previous
                .and_then(|p| p.destroyed_at)
                .or((kek.state == KekState::Destroyed).then_some(now)),
            keystore: id.clone(),
        };
        if previous != Some(&row) {
            store.upsert_kek(
                &row,
                &actor.entry(
                    "kek.state",
                    "",
                    format!("v{} {} in {id}", row.version, row.state),
                ),
            )?;
        }
    }
    if keks.iter().any(|k| k.state == KekState::Active) {
        for other in known
            .iter()
            .filter(|k| k.keystore != id && k.state == KekState::Active)
        {
            if keks.iter().any(|k| k.version as i32 == other.version) {
                continue; // a legacy row of this keystore, rewritten above
            }
            let row = KekRow {
                state: KekState::Retired,
                retired_at: Some(now),
                ..other.clone()
            };
            store.upsert_kek(
                &row,
                &actor.entry(
                    "kek.state",
                    "",
                    format!("v{} retired in {}", row.version, row.keystore),
                ),
            )?;
        }
    }
    Ok(())
}

/// Generates a namespace's DM v1 and index key from the OS CSPRNG and stores them wrapped. If
/// another instance got there first, its keys win and ours are dropped (zeroized).
fn init_namespace(
    store: &Store,
    keystore: &dyn Keystore,
    kek: u32,
    ns: &str,
    actor: &Actor,
) -> Result<(), VaultError> {
    // Version 1, unless this keystore destroyed masters of the namespace before (a database
    // made anew beside it).
    let version = lifecycle::next_master_version(&[], keystore, ns)?;
    let dm_row = lifecycle::new_master(keystore, kek, ns, version)?;
    let ik = IndexKey::generate()?;
    let now = dm_row.created_at;
    let ik_row = IndexKeyRow {
        namespace: ns.to_owned(),
        kek_version: kek as i32,
        wrapped: keystore.wrap(
            kek,
            &WrapContext::new(ns, KeyKind::IndexKey, 1),
            ik.secret(),
        )?,
        created_at: now,
    };
    store.init_namespace(
        &dm_row,
        &ik_row,
        &actor.entry("namespace.init", ns, format!("dm v{version}, index key")),
    )?;
    Ok(())
}
