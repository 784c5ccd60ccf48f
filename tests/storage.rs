//! The storage suite, run unchanged on SQLite (temp file) and PostgreSQL (fresh database per
//! test; skipped loudly when unreachable unless CI=true). See tests/support/db.rs.

#[path = "support/db.rs"]
mod db;

use std::sync::{Arc, Barrier};
use std::time::Instant;

use db::TestDb;
use zkvault::states::{KekState, MasterState, Role, Roles};
use zkvault::storage::{
    Backend, CredentialRow, IndexKeyRow, KekRow, MasterRow, RecordRow, StorageError, Store,
};

/// Every write carries an audit entry; these tests only need one to exist.
fn audit() -> zkvault::storage::AuditEntry {
    zkvault::storage::AuditEntry {
        actor: "storage-test".into(),
        operation: "test".into(),
        outcome: "ok".into(),
        ..Default::default()
    }
}

fn store(db: &TestDb, max: u32) -> Store {
    let s = Store::open(db.url(), max).expect("open");
    s.migrate().expect("migrate");
    with_row_key(s)
}

/// Masters, KEKs and credentials are MACed: storage needs a key to write and read them.
fn with_row_key(s: Store) -> Store {
    let key = zkvault_core::IntegrityKey::new(zkvault_core::Secret32::from_bytes([9; 32]));
    s.set_row_key(std::sync::Arc::new(key));
    s
}

/// A store whose records can be written: the storage layer refuses a record under a master that
/// is not active (the check that keeps a stale instance from writing under a destroyed key).
fn record_store(db: &TestDb, max: u32) -> Store {
    let s = store(db, max);
    for (ns, v) in [("uin", 1), ("uin", 2), ("aid", 1), ("aid", 3)] {
        s.insert_master(&master(ns, v, MasterState::Active), &audit())
            .unwrap();
    }
    s
}

fn master(ns: &str, version: i32, state: MasterState) -> MasterRow {
    MasterRow {
        namespace: ns.into(),
        version,
        state,
        compromised_at: None,
        kek_version: 1,
        wrapped: Some(vec![0xA0 ^ version as u8; 72]),
        salt: vec![7; 32],
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
    }
}

fn index_key(ns: &str) -> IndexKeyRow {
    IndexKeyRow {
        namespace: ns.into(),
        kek_version: 1,
        wrapped: vec![0xB1; 72],
        created_at: 1_700_000_000_000,
    }
}

fn record(ns: &str, bi: &[u8], name: &str, dm: i32) -> RecordRow {
    RecordRow {
        id: uuid::Uuid::new_v4().as_bytes().to_vec(),
        namespace: ns.into(),
        blind_index: bi.to_vec(),
        name: name.into(),
        format: 1,
        master_version: dm,
        dek_nonce: vec![1; 24],
        wrapped_dek: vec![2; 48],
        body_nonce: vec![3; 24],
        body_ciphertext: vec![4; 2048 + 16],
        content_type: "application/json".into(),
        plaintext_len: 2048,
        revision: 1,
        etag: format!("e-{name}-1"),
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
    }
}

fn credential(id: &str, created_at: i64) -> CredentialRow {
    CredentialRow {
        id: id.into(),
        label: format!("label {id}"),
        roles: Roles([Role::Writer, Role::Reader].into()),
        namespaces: "*".into(),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        created_at,
        expires_at: Some(created_at + 86_400_000),
        revoked_at: None,
        rotated_from: None,
    }
}

const BI_A: [u8; 32] = [0xAA; 32];
const BI_B: [u8; 32] = [0xBB; 32];

// ---------------------------------------------------------------------------------------------
// The suite: each function runs once per backend (see `suite!` at the bottom).

fn backend_matches_url(db: &TestDb) {
    let s = store(db, 2);
    let want = if db.is_postgres() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    assert_eq!(s.backend(), want);
    s.ping().unwrap();
}

fn migrate_is_idempotent(db: &TestDb) {
    let s = store(db, 2);
    s.migrate().unwrap();
    s.migrate().unwrap();
    // A second Store on the same database migrates (nothing pending) as well.
    store(db, 1).migrate().unwrap();
    assert!(s.keks().unwrap().is_empty());
}

fn kek_upsert(db: &TestDb) {
    let s = store(db, 2);
    let mut k1 = KekRow {
        version: 1,
        state: KekState::Active,
        created_at: 10,
        retired_at: None,
        destroyed_at: None,
        keystore: "soft:test".into(),
    };
    s.upsert_kek(&k1, &audit()).unwrap();
    s.upsert_kek(
        &KekRow {
            version: 2,
            state: KekState::Active,
            created_at: 20,
            retired_at: None,
            destroyed_at: None,
            keystore: "soft:test".into(),
        },
        &audit(),
    )
    .unwrap();
    k1.state = KekState::Retired;
    k1.retired_at = Some(30);
    s.upsert_kek(&k1, &audit()).unwrap();
    let keks = s.keks().unwrap();
    assert_eq!(keks.len(), 2);
    assert_eq!(keks[0], k1);
    assert_eq!(keks[1].version, 2);
    // None is written as NULL on update.
    k1.retired_at = None;
    s.upsert_kek(&k1, &audit()).unwrap();
    assert_eq!(s.keks().unwrap()[0].retired_at, None);
}

fn masters_and_index_keys(db: &TestDb) {
    let s = store(db, 2);
    s.insert_master(&master("uin", 2, MasterState::Active), &audit())
        .unwrap();
    s.insert_master(&master("uin", 1, MasterState::DecryptOnly), &audit())
        .unwrap();
    s.insert_master(&master("aid", 1, MasterState::Active), &audit())
        .unwrap();
    assert!(matches!(
        s.insert_master(&master("uin", 1, MasterState::Active), &audit()),
        Err(StorageError::Conflict)
    ));

    let uin = s.masters("uin").unwrap();
    assert_eq!(uin.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(uin[1], master("uin", 2, MasterState::Active));
    let all = s.all_masters().unwrap();
    assert_eq!(
        all.iter()
            .map(|m| (m.namespace.as_str(), m.version))
            .collect::<Vec<_>>(),
        [("aid", 1), ("uin", 1), ("uin", 2)]
    );
    assert!(s.masters("nope").unwrap().is_empty());

    // Destroy: wrapped becomes NULL.
    let mut m = uin[0].clone();
    m.state = MasterState::Destroyed;
    m.wrapped = None;
    m.compromised_at = Some(5);
    m.updated_at += 1;
    s.update_master(&m, &audit()).unwrap();
    assert_eq!(s.masters("uin").unwrap()[0], m);
    assert!(matches!(
        s.update_master(&master("uin", 9, MasterState::Active), &audit()),
        Err(StorageError::NotFound)
    ));

    s.insert_index_key(&index_key("uin"), &audit()).unwrap();
    assert!(matches!(
        s.insert_index_key(&index_key("uin"), &audit()),
        Err(StorageError::Conflict)
    ));
    assert_eq!(s.index_key("uin").unwrap(), Some(index_key("uin")));
    assert_eq!(s.index_key("aid").unwrap(), None);
    s.insert_index_key(&index_key("aid"), &audit()).unwrap();
    assert_eq!(
        s.all_index_keys()
            .unwrap()
            .iter()
            .map(|k| k.namespace.as_str())
            .collect::<Vec<_>>(),
        ["aid", "uin"]
    );
}

fn init_namespace_once(db: &TestDb) {
    let s = store(db, 2);
    assert!(s
        .init_namespace(
            &master("uin", 1, MasterState::Active),
            &index_key("uin"),
            &audit()
        )
        .unwrap());
    let mut other = master("uin", 1, MasterState::Active);
    other.salt = vec![9; 32];
    assert!(!s
        .init_namespace(&other, &index_key("uin"), &audit())
        .unwrap());
    assert_eq!(
        s.masters("uin").unwrap(),
        vec![master("uin", 1, MasterState::Active)]
    );

    // An IK without DM (should not happen) still makes init refuse, atomically: no DM written.
    s.insert_index_key(&index_key("half"), &audit()).unwrap();
    assert!(!s
        .init_namespace(
            &master("half", 1, MasterState::Active),
            &index_key("half"),
            &audit()
        )
        .unwrap());
    assert!(s.masters("half").unwrap().is_empty());
}

fn init_namespace_race(db: &TestDb) {
    let s = store(db, 8);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut dm = master("race", 1, MasterState::Active);
                dm.salt = vec![i as u8; 32];
                barrier.wait();
                s.init_namespace(&dm, &index_key("race"), &audit()).unwrap()
            })
        })
        .collect();
    let wins: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    assert_eq!(s.masters("race").unwrap().len(), 1);
    assert!(s.index_key("race").unwrap().is_some());
}

/// Writes committed together (group commit) succeed or fail one by one: a create that collides
/// with an existing record fails alone, and every other write of its batch lands with its entry.
fn one_failing_write_never_fails_its_batch(db: &TestDb) {
    let s = record_store(db, 4);
    let writers = 16;
    // Even writers recreate a record that exists (new id, same key); odd ones write new records.
    let existing: Vec<RecordRow> = (0..writers)
        .step_by(2)
        .map(|i| record("uin", &[i as u8; 32], "taken", 1))
        .collect();
    for row in &existing {
        s.insert_record(row, &audit()).unwrap();
    }
    let entries_before = s.audit_page(&all_entries()).unwrap().len();
    // Another session holds up the first batch, so the writes queue up behind it and share one.
    let held = hold_record_writes(db);
    let outcomes: Vec<_> = (0..writers)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let name = if i % 2 == 0 { "taken" } else { "new" };
                s.insert_record(&record("uin", &[i as u8; 32], name, 1), &audit())
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(held);
    let outcomes: Vec<_> = outcomes.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        match i % 2 {
            0 => assert!(
                matches!(outcome, Err(StorageError::Conflict)),
                "{i}: {outcome:?}"
            ),
            _ => assert!(outcome.is_ok(), "{i}: {outcome:?}"),
        }
    }
    for row in existing {
        assert_eq!(
            s.record("uin", &row.blind_index, "taken").unwrap(),
            Some(row)
        );
    }
    let entries = s.audit_page(&all_entries()).unwrap().len();
    assert_eq!(
        entries - entries_before,
        writers / 2,
        "an entry for a write that failed, or a write without one"
    );
}

/// A transaction of another session that blocks record writes until dropped.
fn hold_record_writes(db: &TestDb) -> Box<dyn std::any::Any> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    match db.url().strip_prefix("sqlite://") {
        Some(path) => {
            let mut c = diesel::SqliteConnection::establish(path).unwrap();
            c.batch_execute("BEGIN IMMEDIATE").unwrap();
            Box::new(c)
        }
        None => {
            let mut c = diesel::PgConnection::establish(db.url()).unwrap();
            c.batch_execute("BEGIN; LOCK TABLE records IN SHARE MODE")
                .unwrap();
            Box::new(c)
        }
    }
}

fn all_entries() -> zkvault::storage::AuditFilter {
    zkvault::storage::AuditFilter {
        limit: 100_000,
        ..Default::default()
    }
}

fn record_insert_get_replace(db: &TestDb) {
    let s = record_store(db, 2);
    let r = record("uin", &BI_A, "profile", 1);
    assert_eq!(s.record("uin", &BI_A, "profile").unwrap(), None);
    s.insert_record(&r, &audit()).unwrap();
    assert_eq!(s.record("uin", &BI_A, "profile").unwrap(), Some(r.clone()));
    assert_eq!(s.record("uin", &BI_B, "profile").unwrap(), None);
    assert_eq!(s.record("aid", &BI_A, "profile").unwrap(), None);

    let mut r2 = r.clone();
    r2.revision = 2;
    r2.etag = "e-profile-2".into();
    r2.master_version = 2;
    r2.body_ciphertext = vec![5; 100];
    r2.plaintext_len = 84;
    r2.updated_at += 1000;
    assert!(s.replace_record(&r2, 1, &audit()).unwrap());
    assert_eq!(s.record("uin", &BI_A, "profile").unwrap(), Some(r2.clone()));

    // Stale revision: nothing changes.
    let mut r3 = r2.clone();
    r3.revision = 3;
    assert!(!s.replace_record(&r3, 1, &audit()).unwrap());
    assert_eq!(s.record("uin", &BI_A, "profile").unwrap(), Some(r2.clone()));
    // Unknown id.
    let mut ghost = r3.clone();
    ghost.id = vec![0; 16];
    assert!(!s.replace_record(&ghost, 2, &audit()).unwrap());
    assert!(s.replace_record(&r3, 2, &audit()).unwrap());
}

fn record_unique_conflict(db: &TestDb) {
    let s = record_store(db, 2);
    s.insert_record(&record("uin", &BI_A, "profile", 1), &audit())
        .unwrap();
    // Same (ns, bi, name), new id.
    assert!(matches!(
        s.insert_record(&record("uin", &BI_A, "profile", 1), &audit()),
        Err(StorageError::Conflict)
    ));
    // Any one part different is fine.
    s.insert_record(&record("uin", &BI_B, "profile", 1), &audit())
        .unwrap();
    s.insert_record(&record("aid", &BI_A, "profile", 1), &audit())
        .unwrap();
    s.insert_record(&record("uin", &BI_A, "photo", 1), &audit())
        .unwrap();
    // Same id.
    let r = record("uin", &BI_A, "x", 1);
    s.insert_record(&r, &audit()).unwrap();
    let mut dup = r.clone();
    dup.name = "y".into();
    assert!(matches!(
        s.insert_record(&dup, &audit()),
        Err(StorageError::Conflict)
    ));
    // Replacing onto another record's key is a conflict too.
    let mut onto = r.clone();
    onto.name = "photo".into();
    assert!(matches!(
        s.replace_record(&onto, 1, &audit()),
        Err(StorageError::Conflict)
    ));
    // A malformed id (not 16 bytes) is refused by the schema.
    let mut short = record("uin", &BI_A, "short", 1);
    short.id = vec![1; 8];
    assert!(matches!(
        s.insert_record(&short, &audit()),
        Err(StorageError::Corrupt(_))
    ));
}

fn list_ordering_without_ciphertext(db: &TestDb) {
    let s = record_store(db, 2);
    let names = [
        "photo", "a/b", "a-b", "ab", "a.b", "a0", "profile", "z", "0",
    ];
    for n in names {
        s.insert_record(&record("uin", &BI_A, n, 1), &audit())
            .unwrap();
    }
    s.insert_record(&record("uin", &BI_B, "other", 1), &audit())
        .unwrap();
    s.insert_record(&record("aid", &BI_A, "elsewhere", 1), &audit())
        .unwrap();

    let list = s.list_records("uin", &BI_A).unwrap();
    let mut want: Vec<&str> = names.to_vec();
    want.sort(); // bytewise
    assert_eq!(
        list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        want
    );
    let m = &list[0];
    assert_eq!(
        (m.revision, m.content_type.as_str(), m.plaintext_len),
        (1, "application/json", 2048)
    );
    assert_eq!(m.etag, "e-0-1");
    assert!(s.list_records("uin", &[0u8; 32]).unwrap().is_empty());
}

fn delete_and_erase(db: &TestDb) {
    let s = record_store(db, 2);
    for n in ["a", "b", "c"] {
        s.insert_record(&record("uin", &BI_A, n, 1), &audit())
            .unwrap();
    }
    s.insert_record(&record("uin", &BI_B, "a", 1), &audit())
        .unwrap();
    s.insert_record(&record("aid", &BI_A, "a", 1), &audit())
        .unwrap();

    assert!(s.delete_record("uin", &BI_A, "b", &audit()).unwrap());
    assert!(!s.delete_record("uin", &BI_A, "b", &audit()).unwrap());
    assert_eq!(s.record("uin", &BI_A, "b").unwrap(), None);

    assert_eq!(s.erase_resident("uin", &BI_A, &audit()).unwrap(), 2);
    assert_eq!(s.erase_resident("uin", &BI_A, &audit()).unwrap(), 0);
    assert!(s.list_records("uin", &BI_A).unwrap().is_empty());
    // Other residents and namespaces untouched.
    assert!(s.record("uin", &BI_B, "a").unwrap().is_some());
    assert!(s.record("aid", &BI_A, "a").unwrap().is_some());
}

fn counts_by_master(db: &TestDb) {
    let s = record_store(db, 2);
    assert!(s.count_records_by_master().unwrap().is_empty());
    for (i, dm) in [1, 1, 1, 2, 2].into_iter().enumerate() {
        s.insert_record(&record("uin", &BI_A, &format!("r{i}"), dm), &audit())
            .unwrap();
    }
    s.insert_record(&record("aid", &BI_B, "r", 3), &audit())
        .unwrap();
    assert_eq!(
        s.count_records_by_master().unwrap(),
        vec![
            ("aid".to_string(), 3, 1),
            ("uin".to_string(), 1, 3),
            ("uin".to_string(), 2, 2)
        ]
    );
}

fn credentials_insert_revoke(db: &TestDb) {
    let s = store(db, 2);
    s.insert_credential(&credential("00000000000000b2", 200), &audit())
        .unwrap();
    s.insert_credential(&credential("00000000000000a1", 100), &audit())
        .unwrap();
    assert!(matches!(
        s.insert_credential(&credential("00000000000000a1", 300), &audit()),
        Err(StorageError::Conflict)
    ));
    assert_eq!(
        s.credential("00000000000000a1").unwrap(),
        Some(credential("00000000000000a1", 100))
    );
    assert_eq!(s.credential("ffffffffffffffff").unwrap(), None);
    assert_eq!(
        s.credential_listing()
            .unwrap()
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["00000000000000a1", "00000000000000b2"]
    );

    assert!(s
        .revoke_credential("00000000000000a1", 5_000, &audit())
        .unwrap());
    assert!(
        !s.revoke_credential("00000000000000a1", 6_000, &audit())
            .unwrap(),
        "second revoke"
    );
    assert!(
        !s.revoke_credential("ffffffffffffffff", 6_000, &audit())
            .unwrap(),
        "unknown id"
    );
    assert_eq!(
        s.credential("00000000000000a1")
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(5_000)
    );
    assert_eq!(
        s.credential("00000000000000b2")
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
}

/// Raw SQL on the test database, as an operator with database access would run it.
fn sql(db: &TestDb, statement: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    match db.url().strip_prefix("sqlite://") {
        Some(path) => diesel::SqliteConnection::establish(path)
            .unwrap()
            .batch_execute(statement),
        None => diesel::PgConnection::establish(db.url())
            .unwrap()
            .batch_execute(statement),
    }
    .unwrap()
}

fn typed_columns_keep_their_text(db: &TestDb) {
    let s = store(db, 2);
    s.insert_master(&master("uin", 1, MasterState::DecryptOnly), &audit())
        .unwrap();
    let kek = KekRow {
        version: 1,
        state: KekState::Retired,
        created_at: 10,
        retired_at: Some(20),
        destroyed_at: None,
        keystore: "soft:test".into(),
    };
    s.upsert_kek(&kek, &audit()).unwrap();
    s.insert_credential(&credential("00000000000000a1", 100), &audit())
        .unwrap();
    // Existing databases hold this text: it must match byte for byte.
    sql(
        db,
        "UPDATE masters SET compromised_at = 7 WHERE state = 'decrypt_only'; \
         UPDATE keks SET keystore = 'seen' WHERE state = 'retired'; \
         UPDATE credentials SET label = 'seen' WHERE roles = 'writer,reader';",
    );
    // Each edit matched its row: the row now fails its MAC.
    assert!(matches!(s.masters("uin"), Err(StorageError::Integrity(_))));
    assert!(matches!(s.keks(), Err(StorageError::Integrity(_))));
    assert_eq!(s.credential_listing().unwrap()[0].label, "seen");

    // Text that names no value fails the read; it never becomes some default.
    sql(db, "UPDATE masters SET state = 'Active'");
    assert!(matches!(s.masters("uin"), Err(StorageError::Corrupt(_))));
    sql(db, "UPDATE keks SET state = 'gone'");
    assert!(matches!(s.keks(), Err(StorageError::Corrupt(_))));
    sql(db, "UPDATE credentials SET roles = 'reader,root'");
    let id = s.credential_listing().unwrap()[0].id.clone();
    assert!(matches!(s.credential(&id), Err(StorageError::Corrupt(_))));
    // The listing shows what is stored, so an administrator can find and revoke such a row.
    assert_eq!(s.credential_listing().unwrap()[0].roles, "reader,root");
}

fn unit_of_work_is_all_or_nothing(db: &TestDb) {
    let s = store(db, 2);
    s.insert_master(&master("uin", 1, MasterState::Active), &audit())
        .unwrap();
    let rotate = |from: MasterState| {
        s.unit_of_work(&audit(), |u| {
            u.set_master_state("uin", 1, from, MasterState::DecryptOnly, 9)?;
            u.insert_master(&master("uin", 2, MasterState::Active))
        })
    };
    // Decided on a state the row no longer has: nothing is written, the new master included.
    assert!(matches!(
        rotate(MasterState::DecryptOnly),
        Err(StorageError::Conflict)
    ));
    assert_eq!(
        s.masters("uin").unwrap(),
        vec![master("uin", 1, MasterState::Active)]
    );
    rotate(MasterState::Active).unwrap();
    let uin = s.masters("uin").unwrap();
    assert_eq!(
        (uin[0].state, uin[0].updated_at),
        (MasterState::DecryptOnly, 9)
    );
    assert_eq!(uin[1], master("uin", 2, MasterState::Active));
}

fn parallel_writers(db: &TestDb) {
    let s = record_store(db, 8);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let bi = [t; 32];
                for i in 0..50 {
                    let name = format!("r{i:03}");
                    s.insert_record(&record("uin", &bi, &name, 1), &audit())
                        .unwrap();
                    let mut r = s.record("uin", &bi, &name).unwrap().unwrap();
                    r.revision = 2;
                    assert!(s.replace_record(&r, 1, &audit()).unwrap());
                    if i % 10 == 0 {
                        assert!(s.delete_record("uin", &bi, &name, &audit()).unwrap());
                    }
                }
                s.init_namespace(
                    &master("ns-par", 1, MasterState::Active),
                    &index_key("ns-par"),
                    &audit(),
                )
                .unwrap()
            })
        })
        .collect();
    let wins = threads
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(
        s.count_records_by_master().unwrap(),
        vec![("uin".to_string(), 1, 8 * 45)]
    );
}

fn insert_1000_timing(db: &TestDb) {
    let s = record_store(db, 2);
    let start = Instant::now();
    for i in 0..1000 {
        s.insert_record(&record("uin", &BI_A, &format!("r{i:04}"), 1), &audit())
            .unwrap();
    }
    let elapsed = start.elapsed();
    eprintln!(
        "TIMING {:?}: 1000 record inserts (2 KiB ciphertext, one statement each, autocommit): {:.3} s",
        s.backend(),
        elapsed.as_secs_f64()
    );
    assert_eq!(s.list_records("uin", &BI_A).unwrap().len(), 1000);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { let db = super::TestDb::sqlite(); super::$name(&db); })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(db) = super::TestDb::postgres() { super::$name(&db); }
            })*
        }
    };
}

suite!(
    backend_matches_url,
    migrate_is_idempotent,
    kek_upsert,
    masters_and_index_keys,
    init_namespace_once,
    init_namespace_race,
    record_insert_get_replace,
    one_failing_write_never_fails_its_batch,
    record_unique_conflict,
    list_ordering_without_ciphertext,
    delete_and_erase,
    counts_by_master,
    credentials_insert_revoke,
    typed_columns_keep_their_text,
    unit_of_work_is_all_or_nothing,
    parallel_writers,
    insert_1000_timing,
);

// ---------------------------------------------------------------------------------------------
// Backend-specific checks.

#[test]
fn bad_postgres_url_is_unavailable_without_password() {
    let started = Instant::now();
    let err = Store::open("postgres://zkv:Sup3rS3cretPW@127.0.0.1:1/zkv", 2).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(!msg.contains("Sup3rS3cretPW"), "{msg}");
    assert!(
        msg.contains("127.0.0.1"),
        "the real error is surfaced: {msg}"
    );
    assert!(!format!("{err:?}").contains("Sup3rS3cretPW"));
    assert!(started.elapsed().as_secs() < 5, "fails fast");
    eprintln!("bad URL error: {msg}");
}

#[test]
fn wrong_password_surfaces_server_error() {
    // Only meaningful if the server checks passwords; with trust auth this connects.
    let Some(db) = TestDb::postgres() else { return };
    let url = db
        .url()
        .replacen("://postgres@", "://nosuchuser:pw1234secret@", 1);
    match Store::open(&url, 1) {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(matches!(e, StorageError::Unavailable(_)));
            assert!(!msg.contains("pw1234secret"), "{msg}");
            assert!(
                !msg.contains("Invalid connection url"),
                "real error expected: {msg}"
            );
            eprintln!("wrong user error: {msg}");
        }
    }
}

#[test]
fn unknown_scheme_is_refused() {
    assert!(matches!(
        Store::open("mysql://u@h/db", 1),
        Err(StorageError::Unavailable(_))
    ));
}

#[test]
fn sqlite_plain_path_creates_parent_dirs_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/zkv.db");
    let s = with_row_key(Store::open(path.to_str().unwrap(), 2).unwrap());
    assert_eq!(s.backend(), Backend::Sqlite);
    s.migrate().unwrap();
    s.insert_master(&master("uin", 1, MasterState::Active), &audit())
        .unwrap();
    s.insert_record(&record("uin", &BI_A, "x", 1), &audit())
        .unwrap();
    assert!(path.exists());
    assert!(
        dir.path().join("a/b/c/zkv.db-wal").exists(),
        "WAL journal in use"
    );
}

#[test]
fn sqlite_memory_keeps_one_database() {
    let s = with_row_key(Store::open(":memory:", 8).unwrap());
    s.migrate().unwrap();
    s.insert_master(&master("uin", 1, MasterState::Active), &audit())
        .unwrap();
    s.insert_record(&record("uin", &BI_A, "x", 1), &audit())
        .unwrap();
    assert!(s.record("uin", &BI_A, "x").unwrap().is_some());
}

#[test]
fn debug_output_hides_bytes() {
    let r = record("uin", &BI_A, "x", 1);
    let dbg = format!("{r:?}");
    assert!(
        dbg.contains("<32 bytes>") && !dbg.contains("170, 170"),
        "{dbg}"
    );
    let c = format!("{:?}", credential("id", 1));
    assert!(!c.contains("argon2"), "{c}");
}
