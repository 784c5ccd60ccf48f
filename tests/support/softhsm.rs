//! SoftHSM2 for tests: one private token directory per test process, one fresh token per caller.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, and a module is initialised once per
//! process; so the configuration is written and the variable set before the first use of the
//! module, and every test gets its own token (own label) in that directory rather than its own
//! directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use zkvault::keystore::pkcs11::{module_context, Pkcs11Config};

const SO_PIN: &str = "so-pin-for-tests";
pub const USER_PIN: &str = "user-pin-for-tests";

pub struct SoftHsm {
    _dir: tempfile::TempDir,
    pub module: PathBuf,
}

/// The process's SoftHSM, or `None` (with a loud message) when the module is missing outside CI.
/// With `CI=true` a missing module fails the test.
pub fn softhsm() -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = Pkcs11Config::module_from_env();
        if !module.exists() {
            let msg = format!(
                "PKCS#11 module {} not found (install softhsm2 or set ZKVAULT_PKCS11_MODULE)",
                module.display()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n!!!!! SKIPPING PKCS#11 TESTS: {msg} !!!!!\n");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        // Set before the module is first initialised (below, via module_context), which is the
        // only moment SoftHSM reads it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Some(SoftHsm { _dir: dir, module })
    })
    .as_ref()
}

/// Initialises a fresh token (unique label, user PIN set) and returns the config to open it.
pub fn new_token() -> Option<Pkcs11Config> {
    static INIT: Mutex<()> = Mutex::new(());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let hsm = softhsm()?;
    let ctx = module_context(&hsm.module).expect("initialise SoftHSM");
    let label = format!(
        "zkv-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let _one_at_a_time = INIT.lock().unwrap_or_else(|e| e.into_inner());
    // SoftHSM always offers one slot with an uninitialised token.
    let free = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            !ctx.get_token_info(*s)
                .expect("token info")
                .token_initialized()
        })
        .expect("SoftHSM offers a free slot");
    ctx.init_token(free, &AuthPin::from(SO_PIN), &label)
        .expect("init token");
    let slot = ctx
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| ctx.get_token_info(*s).expect("token info").label() == label)
        .expect("the new token");
    let session = ctx.open_rw_session(slot).expect("session");
    session
        .login(UserType::So, Some(&AuthPin::from(SO_PIN)))
        .expect("SO login");
    session
        .init_pin(&AuthPin::from(USER_PIN))
        .expect("init user PIN");
    session.logout().expect("SO logout");
    drop(session);
    Some(Pkcs11Config {
        module: hsm.module.clone(),
        token_label: label,
        pin: zkvault::secret::SecretString::new(USER_PIN),
    })
}
