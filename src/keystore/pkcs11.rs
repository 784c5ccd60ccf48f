//! PKCS#11 keystore: KEKs are AES-256 token objects generated inside the HSM.
//!
//! On the token:
//! - a KEK is `CKO_SECRET_KEY`/`CKK_AES`, 32 bytes, token, private, sensitive, not extractable,
//!   label `zkvault-kek-v{n}`, `CKA_ID` = `u32be(n)`, generated with `CKM_AES_KEY_GEN`;
//! - **creating**: other instances may share the token, so a new version is claimed, not
//!   assumed: the key is generated as `zkvault-kek-pending-v{n}` (invisible to listing and
//!   wrapping), then, if it is the only key object with its `CKA_ID`, relabelled
//!   `zkvault-kek-v{n}`; otherwise it is destroyed and the next free version tried. Of two
//!   objects for one version, whichever looks second sees the first, so at most one is
//!   claimed. Afterwards every active version but the newest is retired. A crash while
//!   pending leaves an unused pending object behind; its version is skipped, never reused;
//! - **retired** = `CKA_ENCRYPT` set to false: the HSM itself then refuses to wrap with it, which
//!   also holds for other service instances sharing the token, and it survives restarts;
//! - **destroyed** = the key object is gone (`C_DestroyObject`) and a tombstone remains: a private
//!   `CKO_DATA` object labelled `zkvault-kek-destroyed` with `CKA_VALUE` = `u32be(n)`, so version
//!   numbers are never reused and `list_keks` still reports the version. The tombstone is
//!   written before the key is destroyed; a key with a tombstone counts as destroyed.
//!
//! Wrapping uses `CKM_AES_GCM` encrypt/decrypt (SoftHSM offers GCM only there) with
//! AAD = `ctx.aad()`, a 96-bit IV from the OS CSPRNG and a 128-bit tag:
//! `blob = iv (12) || ciphertext (32) || tag (16)`. The IV in the blob is read back from the
//! mechanism parameters after `C_Encrypt`, since a token may generate its own and write it there.
//! A failed `C_Decrypt` is [`KeystoreError::Unwrap`] when its code names the data, or when it is
//! `CKR_GENERAL_ERROR` (SoftHSM's tag mismatch) and a health probe shows the token still works;
//! otherwise the token is failing: [`KeystoreError::Unavailable`].
//!
//! Sessions: login is per application and token, and closing the last session logs out, so one
//! logged-in session is held for the keystore's lifetime and the rest are pooled. A call that
//! fails because its session or login is gone drops the pool, logs in again and retries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use zeroize::Zeroizing;
use zkvault_core::{random, Secret32, WrapContext};

use super::kek_state::{self, Op};
use super::{secret_from_env_or_file, KekInfo, KekState, Keystore, KeystoreError};
use crate::secret::SecretString;

/// Environment variable naming the PKCS#11 module; see [`Pkcs11Config::module_from_env`].
pub const MODULE_ENV: &str = "ZKVAULT_PKCS11_MODULE";
/// Module used when [`MODULE_ENV`] is unset: Debian's SoftHSM2.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Environment variable read by [`Pkcs11Config::pin_from_env_or_file`] when no file is given.
pub const PIN_ENV: &str = "ZKVAULT_PKCS11_PIN";

const LABEL_PREFIX: &str = "zkvault-kek-v";
const PENDING_PREFIX: &str = "zkvault-kek-pending-v";
const TOMBSTONE_LABEL: &str = "zkvault-kek-destroyed";
/// Versions `create_kek` tries before giving up when other instances keep taking them.
const CREATE_ATTEMPTS: u32 = 8;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = IV_LEN + 32 + TAG_LEN;

/// Where the KEKs live. Holds the user PIN, so it implements neither `Debug` nor `Clone`.
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Label of the token that holds the KEKs.
    pub token_label: String,
    /// User PIN.
    pub pin: SecretString,
}

impl Pkcs11Config {
    /// `ZKVAULT_PKCS11_MODULE`, else [`DEFAULT_MODULE`].
    pub fn module_from_env() -> PathBuf {
        std::env::var_os(MODULE_ENV).map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from)
    }

    /// Reads the user PIN: from `file` if given (one trailing newline dropped), else from
    /// `ZKVAULT_PKCS11_PIN`. Never from argv.
    pub fn pin_from_env_or_file(file: Option<&Path>) -> Result<SecretString, KeystoreError> {
        secret_from_env_or_file(file, PIN_ENV, "PKCS#11 PIN")
    }
}

/// The process-wide context for a module, initialised on first use and never finalised.
///
/// PKCS#11 allows one `C_Initialize` per module per process (and SoftHSM reads `SOFTHSM2_CONF`
/// only then), while keystores may come and go; so every keystore on the same module shares
/// one context.
pub fn module_context(module: &Path) -> Result<Pkcs11, KeystoreError> {
    static MODULES: Mutex<BTreeMap<PathBuf, Pkcs11>> = Mutex::new(BTreeMap::new());
    let mut modules = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = modules.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        KeystoreError::Unavailable(format!(
            "cannot load PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library in this process initialised it first: the context is usable.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(unavailable(e)),
    }
    modules.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A token's gate (see [`Pkcs11Keystore::gate`]).
type Gate = Arc<RwLock<()>>;

/// The gate of one token in this process, shared by every keystore open on it.
fn token_gate(module: &Path, slot: Slot) -> Gate {
    static GATES: Mutex<BTreeMap<(PathBuf, u64), Gate>> = Mutex::new(BTreeMap::new());
    Arc::clone(
        lock(&GATES)
            .entry((module.to_owned(), slot.id()))
            .or_default(),
    )
}

/// The PKCS#11 keystore.
pub struct Pkcs11Keystore {
    ctx: Pkcs11,
    slot: Slot,
    token_label: String,
    /// Kept to log in again after the token dropped our sessions (HSM restart, failover).
    pin: AuthPin,
    /// Holds the login: while it is open, every pooled session is logged in.
    login: Mutex<Option<Session>>,
    pool: Mutex<Vec<Session>>,
    handles: RwLock<BTreeMap<u32, ObjectHandle>>,
    /// Key operations share it; lifecycle changes take it alone. SoftHSM's object store fails
    /// (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT, CKR_ATTRIBUTE_VALUE_INVALID) when a token
    /// object is created or changed while other sessions of the process read, and lifecycle
    /// changes are rare enough to stop the world. It belongs to the token, not the keystore:
    /// every keystore open on the same token in this process shares it. It orders calls
    /// within a process only; versions are kept apart by `create_kek`'s claim, which also
    /// holds between processes.
    gate: Gate,
}

impl Pkcs11Keystore {
    /// Loads the module, finds the token by label and logs in. If a crash left more than one
    /// active KEK, all but the newest are retired.
    pub fn open(config: &Pkcs11Config) -> Result<Self, KeystoreError> {
        let ctx = module_context(&config.module)?;
        let slot = find_slot(&ctx, &config.token_label)?;
        let store = Pkcs11Keystore {
            ctx,
            slot,
            token_label: config.token_label.clone(),
            pin: AuthPin::from(config.pin.expose()),
            login: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            handles: RwLock::new(BTreeMap::new()),
            gate: token_gate(&config.module, slot),
        };
        store.ensure_login().map_err(unavailable)?;
        store.retire_stale_actives()?;
        Ok(store)
    }

    /// Retires every active KEK but the newest (left by a crash inside `create_kek`).
    fn retire_stale_actives(&self) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        let older = self.retire_all_but_newest_active()?;
        if !older.is_empty() {
            tracing::warn!(
                ?older,
                "more than one active KEK on the token; retired all but the newest"
            );
        }
        Ok(())
    }

    /// Retires every active version but the newest, as the token shows them now; returns the
    /// versions retired (callers hold the gate). Never retires the newest active version, so
    /// instances doing this concurrently agree on the one that stays.
    fn retire_all_but_newest_active(&self) -> Result<Vec<u32>, KeystoreError> {
        let older = kek_state::superseded(self.list()?);
        for &v in &older {
            self.set_encrypt(v, false)?;
        }
        Ok(older)
    }

    /// The version to try next: one above every version any key object, pending or finished,
    /// or tombstone holds.
    fn next_version(&self, floor: u32) -> Result<u32, KeystoreError> {
        let (objects, tombstones) = self
            .with_session(|s| Ok((kek_objects(s)?, find_tombstones(s)?)))
            .map_err(unavailable)?;
        kek_state::next_version(objects.iter().map(|o| o.version).chain(tombstones), floor)
    }

    /// Makes the pending key `handle` KEK `version` if it is the only key object with that
    /// `CKA_ID`; otherwise destroys it. Returns whether it was claimed.
    fn claim(&self, version: u32, handle: ObjectHandle) -> Result<bool, KeystoreError> {
        self.with_session(|s| {
            require_login(s)?;
            let same_id = s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Id(version.to_be_bytes().to_vec()),
            ])?;
            if same_id == [handle] {
                s.update_attributes(handle, &[Attribute::Label(kek_label(version).into_bytes())])?;
                return Ok(true);
            }
            match s.destroy_object(handle) {
                // Already gone (a retry of this closure, or someone cleaning up): fine.
                Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .map_err(unavailable)
    }

    /// Logs in once; the login lasts while the held session stays open.
    fn ensure_login(&self) -> Result<(), CkError> {
        let mut login = lock(&self.login);
        if login.is_none() {
            let session = self.ctx.open_rw_session(self.slot)?;
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(e),
            }
            *login = Some(session);
        }
        Ok(())
    }

    /// Forgets every session and handle after the token lost them.
    fn reset(&self) {
        lock(&self.pool).clear();
        *lock(&self.login) = None;
        write(&self.handles).clear();
    }

    /// Runs `f` on a pooled session. A session-level failure drops every session and logs in
    /// again; a stale object handle empties the handle cache; either way `f` runs again.
    fn with_session<T>(
        &self,
        mut f: impl FnMut(&Session) -> Result<T, CkError>,
    ) -> Result<T, CkError> {
        // Two retries: a lost login can first show as a stale handle, then as no login.
        let mut retries = 0;
        loop {
            self.ensure_login()?;
            let pooled = lock(&self.pool).pop();
            let session = match pooled {
                Some(s) => s,
                None => self.ctx.open_rw_session(self.slot)?,
            };
            match f(&session) {
                Ok(v) => {
                    lock(&self.pool).push(session);
                    return Ok(v);
                }
                Err(e) if is_session_error(&e) => {
                    drop(session);
                    self.reset();
                    if retries == 2 {
                        return Err(e);
                    }
                }
                Err(e) => {
                    lock(&self.pool).push(session);
                    if !is_handle_error(&e) || retries == 2 {
                        return Err(e);
                    }
                    write(&self.handles).clear();
                }
            }
            retries += 1;
        }
    }

    /// The key object of `version`, if present and not tombstoned; cached per version.
    fn key_handle(&self, s: &Session, version: u32) -> Result<Option<ObjectHandle>, CkError> {
        if let Some(h) = read(&self.handles).get(&version) {
            return Ok(Some(*h));
        }
        require_login(s)?;
        let found = s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Id(version.to_be_bytes().to_vec()),
            Attribute::Label(kek_label(version).into_bytes()),
        ])?;
        let Some(&h) = found.first() else {
            return Ok(None);
        };
        if !find_tombstones(s)?.contains(&version) {
            write(&self.handles).insert(version, h);
            return Ok(Some(h));
        }
        Ok(None)
    }

    /// The error for a version whose key object is missing.
    fn missing(&self, version: u32) -> KeystoreError {
        match self.with_session(find_tombstones) {
            Ok(t) if t.contains(&version) => KeystoreError::State {
                version,
                state: KekState::Destroyed,
            },
            Ok(_) => KeystoreError::UnknownVersion(version),
            Err(e) => unavailable(e),
        }
    }

    fn set_encrypt(&self, version: u32, allowed: bool) -> Result<(), KeystoreError> {
        let done = self
            .with_session(|s| match self.key_handle(s, version)? {
                Some(h) => s
                    .update_attributes(h, &[Attribute::Encrypt(allowed)])
                    .map(|()| true),
                None => Ok(false),
            })
            .map_err(unavailable)?;
        if done {
            Ok(())
        } else {
            Err(self.missing(version))
        }
    }

    /// Every KEK on the token (callers hold the gate).
    fn list(&self) -> Result<Vec<KekInfo>, KeystoreError> {
        let (objects, tombstones) = self
            .with_session(|s| Ok((kek_objects(s)?, find_tombstones(s)?)))
            .map_err(unavailable)?;
        let mut all = BTreeMap::new();
        for o in objects.into_iter().filter(|o| !o.pending) {
            all.insert(
                o.version,
                if o.encrypt {
                    KekState::Active
                } else {
                    KekState::Retired
                },
            );
        }
        for v in tombstones {
            all.insert(v, KekState::Destroyed);
        }
        Ok(all
            .into_iter()
            .map(|(version, state)| KekInfo { version, state })
            .collect())
    }

    /// The state of `version` as the token shows it now; `None` if it has no such KEK.
    fn state_of(&self, version: u32) -> Result<Option<KekState>, KeystoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|k| k.version == version)
            .map(|k| k.state))
    }
}

impl Keystore for Pkcs11Keystore {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn id(&self) -> String {
        let serial = self
            .ctx
            .get_token_info(self.slot)
            .map(|t| t.serial_number().trim().to_owned())
            .unwrap_or_default();
        format!("pkcs11:{}:{serial}", self.token_label)
    }

    /// The gate is taken per step, not across them: the claim, not the gate, keeps versions
    /// apart (the same holds for another process, which the gate does not reach).
    fn create_kek_after(&self, floor: u32) -> Result<u32, KeystoreError> {
        for attempt in 0..CREATE_ATTEMPTS {
            let version = {
                let _gate = read(&self.gate);
                self.next_version(floor)?
            };
            let handle = {
                let _gate = write(&self.gate);
                self.with_session(|s| s.generate_key(&Mechanism::AesKeyGen, &kek_template(version)))
                    .map_err(unavailable)?
            };
            let claimed = {
                let _gate = write(&self.gate);
                self.claim(version, handle)?
            };
            if claimed {
                let _gate = write(&self.gate);
                write(&self.handles).insert(version, handle);
                // The new key is active before the old one stops encrypting, so there is never
                // a moment without an active KEK; `open` repairs a crash in between.
                self.retire_all_but_newest_active()?;
                return Ok(version);
            }
            tracing::debug!(
                version,
                attempt,
                "another instance created the same KEK version; trying the next"
            );
            backoff(attempt);
        }
        Err(KeystoreError::Unavailable(format!(
            "no KEK version claimed in {CREATE_ATTEMPTS} attempts: other instances keep creating KEKs"
        )))
    }

    fn list_keks(&self) -> Result<Vec<KekInfo>, KeystoreError> {
        let _gate = read(&self.gate);
        self.list()
    }

    fn wrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        secret: &Secret32,
    ) -> Result<Vec<u8>, KeystoreError> {
        let _gate = read(&self.gate);
        let aad = ctx.aad();
        let iv = random::array::<IV_LEN>()
            .map_err(|_| KeystoreError::Unavailable("OS random number generator failed".into()))?;
        let result = self.with_session(|s| {
            let Some(h) = self.key_handle(s, kek_version)? else {
                return Ok(None);
            };
            gcm_seal(iv, &aad, |mechanism| {
                s.encrypt(&*mechanism, h, secret.expose())
            })
            .map(Some)
        });
        match result {
            Ok(Some(blob)) if blob.len() == WRAPPED_LEN => Ok(blob),
            // Unwrap would refuse it: fail now rather than store a key nothing can open.
            Ok(Some(blob)) => Err(KeystoreError::Unavailable(format!(
                "PKCS#11 AES-GCM returned {} bytes instead of {}",
                blob.len() - IV_LEN,
                WRAPPED_LEN - IV_LEN
            ))),
            Ok(None) => Err(self.missing(kek_version)),
            // CKA_ENCRYPT = false: the HSM refuses, whichever instance retired the key.
            Err(CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _)) => {
                let state = kek_state::check(Op::Wrap, kek_version, self.state_of(kek_version)?)?;
                // A KEK the token lists as active yet refused is reported as a state error too.
                Err(KeystoreError::State {
                    version: kek_version,
                    state,
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn unwrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Secret32, KeystoreError> {
        let _gate = read(&self.gate);
        let aad = ctx.aad();
        let result = self.with_session(|s| {
            let Some(h) = self.key_handle(s, kek_version)? else {
                return Ok(None);
            };
            if wrapped.len() != WRAPPED_LEN {
                return Ok(Some(None));
            }
            match gcm_open(s, h, wrapped, &aad) {
                Ok(plain) => Ok(Some(Some(plain))),
                Err(e) if is_auth_failure(&e, || token_works(s)) => Ok(Some(None)),
                Err(e) => Err(e),
            }
        });
        match result {
            Ok(Some(Some(plain))) => Secret32::from_slice(&plain).ok_or(KeystoreError::Unwrap),
            Ok(Some(None)) => Err(KeystoreError::Unwrap),
            Ok(None) => Err(self.missing(kek_version)),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn retire_kek(&self, version: u32) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        kek_state::check(Op::Retire, version, self.state_of(version)?)?;
        self.set_encrypt(version, false)
    }

    fn destroy_kek(&self, version: u32) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        kek_state::check(Op::Destroy, version, self.state_of(version)?)?;
        self.with_session(|s| {
            let Some(h) = self.key_handle(s, version)? else {
                return Ok(());
            };
            if !find_tombstones(s)?.contains(&version) {
                s.create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(TOMBSTONE_LABEL.as_bytes().to_vec()),
                    Attribute::Value(version.to_be_bytes().to_vec()),
                ])?;
            }
            s.destroy_object(h)
        })
        .map_err(unavailable)?;
        write(&self.handles).remove(&version);
        Ok(())
    }

    fn check(&self) -> Result<(), KeystoreError> {
        self.with_session(|s| s.get_session_info().map(|_| ()))
            .map_err(unavailable)
    }
}

/// Runs one AES-GCM encryption through `encrypt` and returns `iv || ciphertext || tag`, with the
/// IV as it is in the mechanism's IV buffer *after* the call: a token may generate the IV itself
/// and write it there (PKCS#11 3.0, and some HSMs in FIPS mode), in which case `iv` is only the
/// buffer's starting value and emitting it would make the blob unopenable.
fn gcm_seal(
    iv: [u8; IV_LEN],
    aad: &[u8],
    encrypt: impl FnOnce(&mut Mechanism<'_>) -> Result<Vec<u8>, CkError>,
) -> Result<Vec<u8>, CkError> {
    let mut iv = iv;
    let ct = {
        let mut mechanism = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, Ulong::from(128))?);
        encrypt(&mut mechanism)?
    };
    let mut out = Vec::with_capacity(IV_LEN + ct.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts `iv || ciphertext || tag` with AES-GCM under `key`.
fn gcm_open(
    s: &Session,
    key: ObjectHandle,
    blob: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CkError> {
    let (iv, ct) = blob.split_at(IV_LEN);
    let mut iv: [u8; IV_LEN] = iv.try_into().expect("IV_LEN bytes");
    let params = GcmParams::new(&mut iv, aad, Ulong::from(128))?;
    s.decrypt(&Mechanism::AesGcm(params), key, ct)
        .map(Zeroizing::new)
}

/// Health probe, run when `C_Decrypt` failed with a code that does not say why: a fresh
/// session (non-token) AES-256 key, an AES-GCM round trip of 32 random bytes with random AAD,
/// the key destroyed. True if the token did it all and gave the bytes back.
fn token_works(s: &Session) -> bool {
    match gcm_probe(s) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(%why, "PKCS#11 health probe failed after C_Decrypt failed");
            false
        }
    }
}

fn gcm_probe(s: &Session) -> Result<(), String> {
    let rng = |_| "OS random number generator failed".to_owned();
    let data = Zeroizing::new(random::array::<32>().map_err(rng)?);
    let aad = random::array::<16>().map_err(rng)?;
    let iv = random::array::<IV_LEN>().map_err(rng)?;
    let ck = |e: CkError| e.to_string();
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(Ulong::from(32)),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .map_err(ck)?;
    let round_trip = gcm_seal(iv, &aad, |m| s.encrypt(&*m, key, &data[..]))
        .and_then(|sealed| gcm_open(s, key, &sealed, &aad));
    let destroyed = s.destroy_object(key);
    match round_trip.map_err(ck)? {
        plain if plain[..] == data[..] => {}
        _ => return Err("AES-GCM round trip returned other bytes".into()),
    }
    destroyed.map_err(ck)
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, KeystoreError> {
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(unavailable)?
    {
        if ctx.get_token_info(slot).map_err(unavailable)?.label() == label {
            return Ok(slot);
        }
    }
    Err(KeystoreError::Unavailable(format!(
        "no initialised PKCS#11 token labelled {label:?}"
    )))
}

/// Private objects are invisible without a login, so a search in a session that lost it
/// would wrongly report no keys: fail it as a session error instead, to log in again.
fn require_login(s: &Session) -> Result<(), CkError> {
    match s.get_session_info()?.session_state() {
        SessionState::RwUser | SessionState::RoUser => Ok(()),
        _ => Err(CkError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjectsInit,
        )),
    }
}

fn find_tombstones(s: &Session) -> Result<Vec<u32>, CkError> {
    require_login(s)?;
    let handles = s.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(TOMBSTONE_LABEL.as_bytes().to_vec()),
    ])?;
    let mut versions = Vec::with_capacity(handles.len());
    for h in handles {
        for a in s.get_attributes(h, &[AttributeType::Value])? {
            if let Attribute::Value(id) = a {
                versions.extend(version_from_id(&id));
            }
        }
    }
    Ok(versions)
}

/// A key object that is, or is becoming, a KEK.
struct KekObject {
    version: u32,
    /// Still labelled pending: being created, or left by a crash while it was.
    pending: bool,
    encrypt: bool,
}

/// Every KEK key object on the token, pending ones included.
fn kek_objects(s: &Session) -> Result<Vec<KekObject>, CkError> {
    require_login(s)?;
    let handles = s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
    ])?;
    let mut objects = Vec::with_capacity(handles.len());
    for h in handles {
        let attrs = s.get_attributes(
            h,
            &[
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Encrypt,
            ],
        )?;
        let (mut label, mut id, mut encrypt) = (None, None, false);
        for a in attrs {
            match a {
                Attribute::Label(l) => label = Some(l),
                Attribute::Id(i) => id = Some(i),
                Attribute::Encrypt(e) => encrypt = e,
                _ => {}
            }
        }
        let (Some(version), Some(label)) = (id.as_deref().and_then(version_from_id), label) else {
            continue;
        };
        let pending = if label == kek_label(version).as_bytes() {
            false
        } else if label == pending_label(version).as_bytes() {
            true
        } else {
            continue;
        };
        objects.push(KekObject {
            version,
            pending,
            encrypt,
        });
    }
    Ok(objects)
}

/// A new KEK's attributes, labelled pending until [`Pkcs11Keystore::claim`] relabels it.
fn kek_template(version: u32) -> [Attribute; 16] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::from(32)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(pending_label(version).into_bytes()),
        Attribute::Id(version.to_be_bytes().to_vec()),
    ]
}

/// A random pause of up to 2^(attempt+1) ms (capped at 64), so that two instances that both
/// gave a version up do not collide again on the next.
fn backoff(attempt: u32) {
    let r = random::array::<2>().map_or(0, u16::from_be_bytes);
    let ms = 1 + u64::from(r) % (2u64 << attempt.min(5));
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn kek_label(version: u32) -> String {
    format!("{LABEL_PREFIX}{version}")
}

fn pending_label(version: u32) -> String {
    format!("{PENDING_PREFIX}{version}")
}

fn version_from_id(id: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(id.try_into().ok()?))
}

/// The session or login is gone: open new ones.
fn is_session_error(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
            _
        )
    )
}

/// A cached object handle went stale (e.g. another instance destroyed the key).
fn is_handle_error(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)
    )
}

/// Whether a `C_Decrypt` failure means the blob failed authentication (GCM tag mismatch or
/// malformed ciphertext: wrong key, context or bytes) rather than the token failing.
///
/// SoftHSM 2.6 reports a tag mismatch as `CKR_GENERAL_ERROR`, which is also what a failing
/// token says; for that code only, `token_works` ([`token_works`] in production) decides: if
/// the token still does an unrelated GCM round trip, the failure was the blob's; if not, the
/// token is failing and the caller must hear "unavailable", not "integrity".
fn is_auth_failure(e: &CkError, token_works: impl FnOnce() -> bool) -> bool {
    match e {
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange,
            _,
        ) => true,
        CkError::Pkcs11(RvError::GeneralError, _) => token_works(),
        _ => false,
    }
}

/// HSM errors carry the function and return code, never a PIN or key bytes.
fn unavailable(e: CkError) -> KeystoreError {
    match e {
        CkError::Pkcs11(rv, function) => {
            KeystoreError::Unavailable(format!("PKCS#11 {function}: {rv:?}"))
        }
        other => KeystoreError::Unavailable(format!("PKCS#11: {other}")),
    }
}

// Poisoning is ignored: the guarded state is plain bookkeeping, valid after any panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_are_four_bytes_big_endian() {
        assert_eq!(version_from_id(&7u32.to_be_bytes()), Some(7));
        assert_eq!(version_from_id(&[0, 7]), None);
        assert_eq!(kek_label(12), "zkvault-kek-v12");
    }

    /// A token that generates the IV and writes it into the parameters, as some HSMs do:
    /// the blob must carry that IV, not the one we put in.
    #[test]
    fn gcm_seal_emits_the_iv_the_token_used() {
        let host_iv = [0x11; IV_LEN];
        let token_iv = [0xEE; IV_LEN];
        let blob = gcm_seal(host_iv, b"aad", |mechanism| {
            let Mechanism::AesGcm(params) = mechanism else {
                panic!("not AES-GCM");
            };
            assert_eq!(params.aad(), b"aad");
            assert_eq!(u64::from(params.tag_bits()), 128);
            // What C_Encrypt does through CK_GCM_PARAMS.pIv.
            assert_eq!(params.iv(), host_iv);
            params.iv().copy_from_slice(&token_iv);
            Ok(vec![0xCC; 48])
        })
        .unwrap();
        assert_eq!(blob.len(), WRAPPED_LEN);
        assert_eq!(blob[..IV_LEN], token_iv);
        assert_eq!(blob[IV_LEN..], [0xCC; 48]);
    }

    #[test]
    fn general_error_is_the_blobs_fault_only_if_the_token_works() {
        let general = CkError::Pkcs11(RvError::GeneralError, Function::Decrypt);
        assert!(is_auth_failure(&general, || true));
        assert!(!is_auth_failure(&general, || false));
        // Codes that name the data are the blob's fault, and do not cost a probe.
        for rv in [
            RvError::EncryptedDataInvalid,
            RvError::EncryptedDataLenRange,
            RvError::DataInvalid,
            RvError::DataLenRange,
        ] {
            let e = CkError::Pkcs11(rv, Function::Decrypt);
            assert!(is_auth_failure(&e, || panic!("probed for {rv:?}")));
        }
        // Codes that name the token never count as a bad blob.
        for rv in [
            RvError::DeviceError,
            RvError::DeviceMemory,
            RvError::FunctionFailed,
            RvError::SessionHandleInvalid,
            RvError::KeyHandleInvalid,
        ] {
            let e = CkError::Pkcs11(rv, Function::Decrypt);
            assert!(!is_auth_failure(&e, || panic!("probed for {rv:?}")));
        }
    }

    #[test]
    fn errors_name_the_call_not_secrets() {
        let e = unavailable(CkError::Pkcs11(RvError::PinIncorrect, Function::Login));
        assert_eq!(
            e.to_string(),
            "keystore unavailable: PKCS#11 Function::Login: PinIncorrect"
        );
    }
}
