//! Talking to the token: the module's process-wide context, the token's slot and gate, the
//! logged-in session pool with its retries, and what a PKCS#11 error means.
//!
//! Login is per application and token, and closing the last session logs out, so one logged-in
//! session is held for the pool's lifetime and the rest are pooled. A call that fails because
//! its session or login is gone drops the pool, logs in again and retries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zkvault_core::random;

use crate::keystore::KeystoreError;
use crate::secret::SecretString;

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

/// A token's gate (see `Pkcs11Keystore::gate`).
pub(super) type Gate = Arc<RwLock<()>>;

/// The gate of one token in this process, shared by every keystore open on it.
pub(super) fn token_gate(module: &Path, slot: Slot) -> Gate {
    static GATES: Mutex<BTreeMap<(PathBuf, u64), Gate>> = Mutex::new(BTreeMap::new());
    Arc::clone(
        lock(&GATES)
            .entry((module.to_owned(), slot.id()))
            .or_default(),
    )
}

/// Logged-in sessions on one token.
pub(super) struct SessionPool {
    ctx: Pkcs11,
    slot: Slot,
    /// Kept to log in again after the token dropped our sessions (HSM restart, failover).
    pin: AuthPin,
    /// Holds the login: while it is open, every pooled session is logged in.
    login: Mutex<Option<Session>>,
    pool: Mutex<Vec<Session>>,
}

impl SessionPool {
    /// Loads `module`, finds the token labelled `label` and logs in.
    pub(super) fn open(
        module: &Path,
        label: &str,
        pin: &SecretString,
    ) -> Result<Self, KeystoreError> {
        let ctx = module_context(module)?;
        let slot = find_slot(&ctx, label)?;
        let pool = SessionPool {
            ctx,
            slot,
            pin: AuthPin::from(pin.expose()),
            login: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
        };
        pool.ensure_login().map_err(unavailable)?;
        Ok(pool)
    }

    pub(super) fn slot(&self) -> Slot {
        self.slot
    }

    /// The token's serial number; empty if the token will not say.
    pub(super) fn token_serial(&self) -> String {
        self.ctx
            .get_token_info(self.slot)
            .map(|t| t.serial_number().trim().to_owned())
            .unwrap_or_default()
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

    /// Forgets every session after the token lost them.
    fn reset(&self) {
        lock(&self.pool).clear();
        *lock(&self.login) = None;
    }

    /// Runs `f` on a pooled session. A session-level failure drops every session and logs in
    /// again; a stale object handle calls `forget_handles`, as does a lost session (object
    /// handles die with the login); either way `f` runs again.
    pub(super) fn run<T>(
        &self,
        mut f: impl FnMut(&Session) -> Result<T, CkError>,
        forget_handles: impl Fn(),
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
                    forget_handles();
                    if retries == 2 {
                        return Err(e);
                    }
                }
                Err(e) => {
                    lock(&self.pool).push(session);
                    if !is_handle_error(&e) || retries == 2 {
                        return Err(e);
                    }
                    forget_handles();
                }
            }
            retries += 1;
        }
    }
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
pub(super) fn require_login(s: &Session) -> Result<(), CkError> {
    match s.get_session_info()?.session_state() {
        SessionState::RwUser | SessionState::RoUser => Ok(()),
        _ => Err(CkError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjectsInit,
        )),
    }
}

/// A random pause of up to 2^(attempt+1) ms (capped at 64), so that two instances that both
/// gave a version up do not collide again on the next.
pub(super) fn backoff(attempt: u32) {
    let r = random::array::<2>().map_or(0, u16::from_be_bytes);
    let ms = 1 + u64::from(r) % (2u64 << attempt.min(5));
    std::thread::sleep(std::time::Duration::from_millis(ms));
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
/// token says; for that code only, `token_works` (`objects::token_works` in production)
/// decides: if the token still does an unrelated GCM round trip, the failure was the blob's; if
/// not, the token is failing and the caller must hear "unavailable", not "integrity".
pub(super) fn is_auth_failure(e: &CkError, token_works: impl FnOnce() -> bool) -> bool {
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
pub(super) fn unavailable(e: CkError) -> KeystoreError {
    match e {
        CkError::Pkcs11(rv, function) => {
            KeystoreError::Unavailable(format!("PKCS#11 {function}: {rv:?}"))
        }
        other => KeystoreError::Unavailable(format!("PKCS#11: {other}")),
    }
}

// Poisoning is ignored: the guarded state is plain bookkeeping, valid after any panic.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
