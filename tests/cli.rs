//! The operator CLI against a real database and keystore: policy check and plan, a refused
//! start on an invalid policy, offline credentials, and a resumable bulk re-encryption.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::StatusCode;
use support::app::grant;
use support::app::POLICY;
use support::db::TestDb;
use support::deployment::{bare, bin, cli_ok, free_port, text, Deployment, Server};
use zkvault::vault::{AuditQuery, Role, Vault};

#[test]
fn policy_check_names_file_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_zkvault");
    let ok = Command::new(bin)
        .args(["policy", "check"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-policy"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("valid"));

    let bad = POLICY.replace("dm_rotation_days = 90\ndecrypt_only_max_days = 365\ndestroy_after_retired_days = 30\n\n[namespaces.uin]", "dm_rotation_days = 0\ndecrypt_only_max_days = 365\ndestroy_after_retired_days = 30\nretention = 1\n\n[namespaces.uin]");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let out = Command::new(bin)
        .args(["policy", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("bad.toml: namespaces.rp: unknown field `retention`"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        POLICY.replacen("dm_rotation_days = 90", "dm_rotation_days = 0", 1),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["policy", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "bad.toml: namespaces.rp.dm_rotation_days: must be a positive number of days, got 0"
        ),
        "{stdout}"
    );
}

#[test]
fn serve_refuses_an_invalid_policy() {
    let d = Deployment::new(TestDb::sqlite());
    std::fs::write(
        d.path("policy/test.toml"),
        POLICY.replacen(
            "decrypt_only_max_days = 365",
            "decrypt_only_max_days = 30",
            1,
        ),
    )
    .unwrap();
    let out = d.run(&["serve"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("namespaces.rp.decrypt_only_max_days"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn credentials_offline_and_policy_plan() {
    let d = Deployment::new(TestDb::sqlite());
    let out = d.run(&[
        "credentials",
        "create",
        "--label",
        "id-repo",
        "--role",
        "writer",
        "--ns",
        "rp",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("zkv_"));
    let id = token.split('_').nth(1).unwrap().to_owned();
    let list = text(&d.run(&["credentials", "list"]).stdout);
    assert!(
        list.contains(&id) && !list.contains(token.rsplit('_').next().unwrap()),
        "list shows ids, never secrets"
    );
    assert!(d.run(&["credentials", "revoke", &id]).status.success());
    assert!(
        !d.run(&["credentials", "revoke", &id]).status.success(),
        "already revoked"
    );
    assert!(!d
        .run(&["credentials", "create", "--label", "x", "--role", "root"])
        .status
        .success());

    let out = d.run(&[
        "policy",
        "plan",
        d.path("policy").to_str().unwrap(),
        "--horizon",
        "1y",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    // 90-day rotations: four within a year for each namespace; the credential expires at 90 days.
    assert_eq!(plan.matches("rp: rotate DM").count(), 4, "{plan}");
    assert_eq!(plan.matches("uin: rotate DM").count(), 4, "{plan}");
    assert!(plan.contains("rp: rotate DM v1 → v2"));
    assert!(
        !plan.contains(&format!("credential {id} (id-repo) expires")),
        "revoked credentials do not expire again"
    );
    let dates: Vec<&str> = plan.lines().map(|l| &l[..10]).collect();
    let mut sorted = dates.clone();
    sorted.sort();
    assert_eq!(dates, sorted, "timeline in date order");
}

#[test]
fn audit_verify_exits_non_zero_and_names_the_tampered_entry() {
    let d = Deployment::new(TestDb::sqlite());
    let vault = d.vault();
    for i in 0..5 {
        vault
            .put_record(
                &grant(&vault, Role::Writer, Some("rp")),
                "R1",
                &zkvault::vault::RecordWrite {
                    name: &format!("r{i}"),
                    content_type: "text/plain",
                    body: b"x",
                    precondition: &zkvault::vault::Precondition::None,
                },
            )
            .unwrap();
    }
    assert!(d.run(&["audit", "checkpoint"]).status.success());
    let ok = d.run(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("\"first_break\": null"));
    let url = d.db.url().strip_prefix("sqlite://").unwrap().to_owned();
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    diesel::SqliteConnection::establish(&url)
        .unwrap()
        .batch_execute("UPDATE audit SET target = 'r9' WHERE target = 'r3'")
        .unwrap();
    let bad = d.run(&["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(8), "integrity");
    assert!(
        text(&bad.stderr).contains("does not match its hash: edited"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn with_read_auditing_off_only_successful_reads_go_unrecorded() {
    let d = Deployment::new(TestDb::sqlite());
    let mut config = d.config();
    config.audit_reads = false;
    let vault = zkvault::app::open_vault(&config, false).unwrap();
    vault
        .put_record(
            &grant(&vault, Role::Writer, Some("rp")),
            "R1",
            &zkvault::vault::RecordWrite {
                name: "a",
                content_type: "text/plain",
                body: b"x",
                precondition: &zkvault::vault::Precondition::None,
            },
        )
        .unwrap();
    vault
        .get_record(&grant(&vault, Role::Reader, Some("rp")), "R1", "a")
        .unwrap();
    assert!(vault
        .get_record(&grant(&vault, Role::Reader, Some("rp")), "R1", "absent")
        .is_err());
    let filter = AuditQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let ops: Vec<(String, String)> = vault
        .audit_page(&grant(&vault, Role::Auditor, None), &filter)
        .unwrap()
        .0
        .into_iter()
        .map(|e| (e.entry.operation, e.entry.outcome))
        .collect();
    assert!(ops.contains(&("record.put".into(), "ok".into())));
    assert!(ops.contains(&("record.get".into(), "not_found".into())));
    assert!(!ops.contains(&("record.get".into(), "ok".into())));
}

fn put_one(vault: &Vault, ns: &str, id: &str) {
    let write = zkvault::vault::RecordWrite {
        name: "demographics",
        content_type: "application/json",
        body: b"{}",
        precondition: &zkvault::vault::Precondition::None,
    };
    vault
        .put_record(&grant(vault, Role::Writer, Some(ns)), id, &write)
        .unwrap();
}

fn reencrypt_report(d: &Deployment, ns: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let ids = d.path("ids.txt");
    let out = d.run(
        &[
            &["reencrypt", "--ns", ns, "--ids", ids.to_str().unwrap()],
            extra,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (
        serde_json::from_str(text(&out.stdout).trim()).unwrap(),
        text(&out.stderr),
    )
}

#[test]
fn bulk_reencryption_resumes_from_its_checkpoint() {
    let d = Deployment::new(TestDb::sqlite());
    let vault = d.vault();
    let ids: Vec<String> = (0..50).map(|i| format!("R{i:05}")).collect();
    for id in &ids {
        put_one(&vault, "rp", id);
    }
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    let file = ids.join("\n") + "\n";
    std::fs::write(d.path("ids.txt"), &file).unwrap();
    // An earlier run of this very job (namespace rp, to master v2, this file) was interrupted
    // after 25 lines, which it had moved.
    vault
        .reencrypt(&grant(&vault, Role::Reencrypt, Some("rp")), &ids[..25])
        .unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(file.as_bytes()));
    let checkpoint = d.path("ids.txt.rp.checkpoint");
    std::fs::write(
        &checkpoint,
        format!(r#"{{"namespace":"rp","target_master":2,"ids_sha256":"{sha}","lines_done":25}}"#),
    )
    .unwrap();

    let (report, stderr) = reencrypt_report(&d, "rp", &["--batch", "10"]);
    assert!(stderr.contains("resuming after line 25"), "{stderr}");
    assert_eq!(
        report["moved"], 25,
        "only the lines after the checkpoint were processed"
    );
    assert!(
        !checkpoint.exists(),
        "a finished job removes its checkpoint"
    );
    let counts = vault.store().count_records_by_master().unwrap();
    assert_eq!(
        counts,
        vec![("rp".to_string(), 2, 50)],
        "every listed record is on the new master"
    );

    // Rerunning the finished job is harmless and says so: everything is already current.
    let (report, _) = reencrypt_report(&d, "rp", &[]);
    assert_eq!(
        (report["moved"].as_u64(), report["already_current"].as_u64()),
        (Some(0), Some(50))
    );
}

/// The KEK-compromise runbook runs one ID file through two namespaces. Before checkpoints were
/// keyed by job, the second run resumed from the first one's checkpoint and moved nothing.
#[test]
fn a_checkpoint_never_applies_to_another_namespace_or_master() {
    let d = Deployment::new(TestDb::sqlite());
    let vault = d.vault();
    let ids: Vec<String> = (0..30).map(zkvault::vault::seed_uin).collect();
    for id in &ids {
        put_one(&vault, "rp", id);
        put_one(&vault, "uin", id);
    }
    std::fs::write(d.path("ids.txt"), ids.join("\n") + "\n").unwrap();
    vault
        .compromise_kek(&grant(&vault, Role::Operator, None))
        .unwrap();
    // An interrupted rp job leaves its checkpoint behind; the uin job must not use it.
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        (ids.join("\n") + "\n").as_bytes(),
    ));
    std::fs::write(
        d.path("ids.txt.uin.checkpoint"),
        format!(r#"{{"namespace":"rp","target_master":2,"ids_sha256":"{sha}","lines_done":30}}"#),
    )
    .unwrap();
    let (rp, _) = reencrypt_report(&d, "rp", &[]);
    let (uin, stderr) = reencrypt_report(&d, "uin", &[]);
    assert_eq!(rp["rekeyed"], 30, "{rp}");
    assert_eq!(
        uin["rekeyed"], 30,
        "every biometrics-like record re-keyed: {uin} {stderr}"
    );
    assert!(stderr.contains("belongs to another job"), "{stderr}");

    // A checkpoint of the same namespace and file but an older target master (a rotation since)
    // does not apply either: the records it covered must move again.
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    std::fs::write(
        d.path("ids.txt.rp.checkpoint"),
        format!(r#"{{"namespace":"rp","target_master":2,"ids_sha256":"{sha}","lines_done":30}}"#),
    )
    .unwrap();
    let (rp, _) = reencrypt_report(&d, "rp", &[]);
    assert_eq!(rp["moved"], 30, "{rp}");
    let counts = vault.store().count_records_by_master().unwrap();
    assert_eq!(
        counts,
        vec![("rp".to_string(), 3, 30), ("uin".to_string(), 2, 30)]
    );
}

#[test]
fn the_scheduler_applies_the_policy_when_due() {
    scheduler_applies_the_policy_when_due(TestDb::sqlite());
    if let Some(db) = TestDb::postgres() {
        // The scheduler's leader lock once shared the key-change lock's key on PostgreSQL: every
        // key change of a scheduled pass waited 15 s on its own lock, then failed with a conflict.
        scheduler_applies_the_policy_when_due(db);
    }
}

fn scheduler_applies_the_policy_when_due(db: TestDb) {
    let d = Deployment::new(db);
    let vault = d.vault();
    let pass = |now: i64| {
        vault
            .run_scheduled_pass(now)
            .unwrap()
            .expect("the only instance leads")
    };
    vault
        .put_record(
            &grant(&vault, Role::Writer, Some("rp")),
            "R1",
            &zkvault::vault::RecordWrite {
                name: "a",
                content_type: "text/plain",
                body: b"x",
                precondition: &zkvault::vault::Precondition::None,
            },
        )
        .unwrap();
    let now = zkvault::vault::now_ms();
    let day = 86_400_000i64;
    assert_eq!(pass(now).masters_rotated, vec![]);
    // 91 days later: both namespaces' DMs are due (90 days); the KEK (365 days) is not.
    let r = pass(now + 91 * day);
    assert_eq!(
        r.masters_rotated,
        vec![("rp".to_string(), 2), ("uin".to_string(), 2)]
    );
    assert_eq!(r.kek_rotated, None);
    assert_eq!(
        r.masters_retired,
        vec![("uin".to_string(), 1)],
        "uin v1 protects nothing"
    );
    // Retirement is stamped with the real clock, so at the simulated +91 days its 30-day
    // destruction delay has passed as well.
    assert_eq!(r.masters_destroyed, vec![("uin".to_string(), 1)]);
    // The record of rp stays on decrypt-only v1 past its window: reported, never lost.
    let r = pass(now + 500 * day);
    assert!(r.overdue_decrypt_only.contains(&("rp".to_string(), 1)));
    assert_eq!(r.kek_rotated, Some(2));
    assert_eq!(
        r.masters_retired,
        vec![("rp".to_string(), 2), ("uin".to_string(), 2)],
        "{r:?}"
    );
    assert_eq!(
        &*vault
            .get_record(&grant(&vault, Role::Reader, Some("rp")), "R1", "a")
            .unwrap()
            .body,
        b"x"
    );
}

/// The runbooks' key commands run while the service runs. On the soft keystore both processes
/// used to rewrite the keystore file from their own table with no lock: after `keys rotate-kek`
/// from the CLI, the service's own KEK rotation answered 500 and a restart refused to start
/// ("master cannot be unwrapped"): every record lost. And a `keys destroy --shred` from the CLI
/// left the records readable on the running service for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_commands_beside_a_running_service_lose_nothing_and_take_effect_within_a_second() {
    let d = Deployment::new(TestDb::sqlite());
    let token = cli_ok(
        &d,
        &[
            "credentials",
            "create",
            "--label",
            "t",
            "--role",
            "writer",
            "--role",
            "reader",
            "--role",
            "operator",
        ],
    )
    .trim()
    .to_owned();
    let server = Server::start(&d);
    let http = reqwest::Client::new();
    let record = |name: &str| format!("{}/v1/ns/rp/records/{name}", server.url);
    let put = |name: &str, body: &'static str| {
        http.put(record(name))
            .bearer_auth(&token)
            .header("Resident-Id", "R1")
            .body(body)
            .send()
    };
    assert!(put("old", "{\"a\":1}").await.unwrap().status().is_success());

    cli_ok(&d, &["keys", "rotate-kek"]);
    let r = http
        .post(format!("{}/v1/keys/kek/rotate", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the service's KEK rotation after the CLI's: {}",
        r.text().await.unwrap()
    );
    cli_ok(&d, &["keys", "rotate-kek"]);

    cli_ok(&d, &["keys", "rotate-master", "--ns", "rp"]);
    assert!(put("new", "{\"b\":2}").await.unwrap().status().is_success());
    cli_ok(
        &d,
        &[
            "keys",
            "destroy",
            "--ns",
            "rp",
            "--version",
            "1",
            "--shred",
            "--yes",
        ],
    );
    let shredded_at = std::time::Instant::now();
    loop {
        let status = http
            .get(record("old"))
            .bearer_auth(&token)
            .header("Resident-Id", "R1")
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::GONE {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            shredded_at.elapsed() < Duration::from_secs(1),
            "the service still served a record the CLI shredded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.kill();
    let server = Server::start(&d);
    let get = |name: &str| {
        http.get(format!("{}/v1/ns/rp/records/{name}", server.url))
            .bearer_auth(&token)
            .header("Resident-Id", "R1")
            .send()
    };
    let r = get("new").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "{\"b\":2}");
    assert_eq!(get("old").await.unwrap().status(), StatusCode::GONE);
    let keys: serde_json::Value = serde_json::from_str(&cli_ok(&d, &["keys", "list"])).unwrap();
    let keks = keys["keks"].as_array().unwrap();
    assert_eq!(
        keks.iter()
            .map(|k| k["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{keys}"
    );
    assert_eq!(keks.iter().filter(|k| k["state"] == "active").count(), 1);
    server.kill();
}

/// Outside the repository there is no `./keys-policy`: the embedded default used to refuse to
/// start ("keys-policy: cannot read directory") and leave a half-made `zkvault-data/` behind.
#[test]
fn the_embedded_default_starts_from_any_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = bare(cwd.path())
        .arg("serve")
        .env("ZKVAULT_BIND", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("serve exited with {status}: {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(cwd.path().join("zkvault-data/admin.token").is_file());
}

/// `ZKVAULT_PASSPHRASE` used to be ignored: the embedded default always read (and wrote) its
/// passphrase file. Now the variable seals the keystore, no passphrase file is written, and a
/// wrong passphrase is refused later (config error, exit 3).
#[test]
fn the_passphrase_may_come_from_the_environment() {
    let cwd = tempfile::tempdir().unwrap();
    let init = bare(cwd.path())
        .args(["keystore", "init"])
        .env("ZKVAULT_PASSPHRASE", "from the environment")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(cwd.path().join("zkvault-data/keystore.zks").is_file());
    assert!(
        !cwd.path().join("zkvault-data/passphrase").exists(),
        "a passphrase file was written beside the keystore"
    );
    let list = bare(cwd.path())
        .args(["keys", "list"])
        .env("ZKVAULT_PASSPHRASE", "from the environment")
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    let wrong = bare(cwd.path())
        .args(["keys", "list"])
        .env("ZKVAULT_PASSPHRASE", "another one")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong.stderr));
    // Without it, a config error: no random passphrase file is made up for an existing keystore
    // (one used to be, and every later run then read that wrong passphrase).
    let none = bare(cwd.path()).args(["keys", "list"]).output().unwrap();
    assert_eq!(none.status.code(), Some(3), "{}", text(&none.stderr));
    assert!(
        !cwd.path().join("zkvault-data/passphrase").exists(),
        "a passphrase file was made up"
    );
}

#[test]
fn a_start_that_fails_leaves_no_half_made_data_dir() {
    let cwd = tempfile::tempdir().unwrap();
    let out = bare(cwd.path())
        .arg("serve")
        .env("ZKVAULT_POLICY_DIR", "no-such-policy")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such-policy"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !cwd.path().join("zkvault-data").exists(),
        "a failed start left zkvault-data/ behind"
    );
}

/// `policy plan` in the wrong directory used to create a development deployment there and plan
/// against its empty database, as if all were well.
#[test]
fn operator_tools_refuse_a_directory_that_is_not_a_data_dir() {
    let cwd = tempfile::tempdir().unwrap();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-policy");
    for args in [
        &["policy", "plan", policy.to_str().unwrap()][..],
        &["keys", "list"],
        &["credentials", "list"],
    ] {
        let out = bare(cwd.path()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("not a zkvault data directory"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !cwd.path().join("zkvault-data").exists(),
            "{args:?} created a deployment"
        );
    }
}

/// When the keystore failed to open, about one run in fifty died of SIGSEGV: returning from
/// main ran libcrypto's exit handler while an r2d2 thread was still inside a PostgreSQL TLS
/// handshake. Now: a one-line message and exit code 3, every time. Two failures: a wrong PIN
/// (before the database is touched) and a keystore that does not hold the database's keys (the
/// situation after a migration, when the pool is already connecting).
#[test]
fn a_keystore_that_fails_to_open_is_a_clear_error_never_a_crash() {
    let (Some(token), Some(db)) = (support::softhsm::new_token(), TestDb::postgres()) else {
        return;
    };
    let d = Deployment::new(db);
    drop(d.vault()); // the database's masters, under the soft keystore
    let config = format!(
        "database_url = {:?}\npolicy_dir = {:?}\n[keystore]\nkind = \"pkcs11\"\nmodule = {:?}\ntoken_label = {:?}\n",
        d.db.url(),
        d.path("policy"),
        token.module,
        token.token_label
    );
    std::fs::write(d.path("hsm.toml"), config).unwrap();
    let runs = |pin: &str| {
        let statuses: Vec<(std::process::ExitStatus, String)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..12)
                            .map(|_| {
                                let out = bare(d.dir.path())
                                    .env("RUST_LOG", "error")
                                    .args([
                                        "--config",
                                        d.path("hsm.toml").to_str().unwrap(),
                                        "keys",
                                        "list",
                                    ])
                                    .env("SOFTHSM2_CONF", std::env::var("SOFTHSM2_CONF").unwrap())
                                    .env("ZKVAULT_PKCS11_PIN", pin)
                                    .output()
                                    .unwrap();
                                (out.status, text(&out.stderr))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        for (status, stderr) in &statuses {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), None, "killed by a signal: {stderr}");
            assert_eq!(status.code(), Some(3), "{stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
        }
        statuses.into_iter().map(|s| s.1).collect::<Vec<_>>()
    };
    // SoftHSM may answer a run racing three others with a token error of its own; the cause is
    // named by the runs it answers properly.
    let wrong_pin = runs("not-the-pin");
    assert!(
        wrong_pin.iter().any(|e| e.contains("PinIncorrect")),
        "{wrong_pin:?}"
    );
    let wrong_keystore = runs(token.pin.expose());
    assert!(
        wrong_keystore
            .iter()
            .any(|e| e.contains("wrong keystore for this database")),
        "{wrong_keystore:?}"
    );
}

/// `--overlap 30m` meant 30 months ("expires in 77760000s"), so the old credential kept its own
/// expiry; `0h` printed "expires in 0ns"; and rotating again silently issued a second successor.
#[test]
fn credential_rotation_overlap_is_real_and_happens_once() {
    let d = Deployment::new(TestDb::sqlite());
    let token = cli_ok(
        &d,
        &[
            "credentials",
            "create",
            "--label",
            "ops",
            "--role",
            "operator",
        ],
    )
    .trim()
    .to_owned();
    let id = token.split('_').nth(1).unwrap().to_owned();
    let before = zkvault::vault::now_ms();
    let out = d.run(&["credentials", "rotate", &id, "--overlap", "30m"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("(in 29m") || stderr.contains("(in 30m)"),
        "{stderr}"
    );
    let successor = text(&out.stdout)
        .trim()
        .split('_')
        .nth(1)
        .unwrap()
        .to_owned();
    let expires = d
        .vault()
        .store()
        .credential(&id)
        .unwrap()
        .unwrap()
        .expires_at
        .unwrap();
    assert!(
        (before + 30 * 60_000..=zkvault::vault::now_ms() + 30 * 60_000).contains(&expires),
        "30 minutes, not months"
    );

    let again = d.run(&["credentials", "rotate", &id]);
    assert_eq!(
        again.status.code(),
        Some(5),
        "conflict: {}",
        text(&again.stderr)
    );
    assert!(
        text(&again.stderr).contains(&format!("already rotated: its successor is {successor}")),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        text(&d.run(&["credentials", "list"]).stdout)
            .lines()
            .count(),
        2,
        "one successor, not two"
    );

    let out = d.run(&["credentials", "rotate", &successor, "--overlap", "0h"]);
    assert!(
        text(&out.stderr).contains("(in 0s)"),
        "{}",
        text(&out.stderr)
    );
    let bad = d.run(&["credentials", "rotate", &id, "--overlap", "18mo"]);
    assert_eq!(bad.status.code(), Some(2), "usage: {}", text(&bad.stderr));
}

/// `policy plan --horizon` bounded the rotations only: a decrypt-only window ending in a year and
/// a destruction in 30 days were listed in a 7-day plan.
#[test]
fn policy_plan_keeps_to_its_horizon() {
    let d = Deployment::new(TestDb::sqlite());
    let vault = d.vault();
    put_one(&vault, "rp", "R1");
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("uin")))
        .unwrap();
    assert_eq!(
        vault
            .run_due_lifecycle(zkvault::vault::now_ms())
            .unwrap()
            .masters_retired,
        vec![("uin".to_string(), 1)]
    );
    let plan = |horizon: &str| {
        cli_ok(
            &d,
            &[
                "policy",
                "plan",
                d.path("policy").to_str().unwrap(),
                "--horizon",
                horizon,
            ],
        )
    };
    let year = plan("1y");
    assert!(
        year.contains("rp: DM v1 decrypt-only window ends")
            && year.contains("uin: destroy retired DM v1"),
        "{year}"
    );
    let week = plan("7d");
    assert_eq!(week.trim(), "", "nothing is due within a week: {week}");
}

/// `policy check` stopped at a file's first mistake, then claimed the file defined no [global]
/// and no namespace, and named the line before the mistake.
#[test]
fn policy_check_reports_every_table_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = POLICY
        .replacen(
            "destroy_after_retired_days = 30\n",
            "destroy_after_retired_days = 30\nretention = 1\n",
            1,
        )
        .replace(
            "max_record_bytes = 4096\nid_checksum",
            "max_record_bites = 4096\nid_checksum",
        );
    std::fs::write(dir.path().join("bad.toml"), &bad).unwrap();
    let line = |needle: &str| bad.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let out = bare(dir.path())
        .args(["policy", "check", "."])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("namespaces.rp: unknown field `retention`")
            && stdout.contains(&format!("(line {})", line("retention"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("namespaces.uin: unknown field `max_record_bites`")
            && stdout.contains(&format!("(line {})", line("max_record_bites"))),
        "{stdout}"
    );
    assert!(
        !stdout.contains("no file defines") && !stdout.contains("no namespace"),
        "{stdout}"
    );
}

/// Every CLI run opened a new audit chain (114 after a day of runbooks), and without `$USER`
/// the actor was `cli:unknown`.
#[test]
fn cli_runs_share_one_audit_chain_and_name_their_actor() {
    let d = Deployment::new(TestDb::sqlite());
    for _ in 0..3 {
        let out = d.run(&["keys", "rotate-master", "--ns", "rp"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = Command::new(bin())
        .args([
            "--config",
            d.path("zkvault.toml").to_str().unwrap(),
            "--actor",
            "asha",
            "keys",
            "rotate-master",
            "--ns",
            "uin",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new(bin())
        .args([
            "--config",
            d.path("zkvault.toml").to_str().unwrap(),
            "keys",
            "rotate-master",
            "--ns",
            "uin",
        ])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vault = d.vault();
    let filter = AuditQuery {
        limit: Some(1000),
        operation: Some("master.rotate".into()),
        ..Default::default()
    };
    let rows = vault
        .audit_page(&grant(&vault, Role::Auditor, None), &filter)
        .unwrap()
        .0;
    assert!(
        rows.iter()
            .all(|r| r.chain == rows[0].chain && r.chain.starts_with("cli:")),
        "one chain for every CLI run on this host"
    );
    let actors: Vec<String> = rows.into_iter().map(|e| e.entry.actor).collect();
    assert_eq!(actors.len(), 5, "{actors:?}");
    assert!(actors.contains(&"cli:asha".to_string()), "{actors:?}");
    assert!(
        actors
            .iter()
            .all(|a| a.starts_with("cli:") && a != "cli:unknown"),
        "{actors:?}"
    );
    assert!(vault.verify_audit().unwrap().first_break.is_none());
}

/// Concurrent CLI runs on PostgreSQL append to the one per-host chain in turn: it never forks.
#[test]
fn concurrent_cli_runs_never_fork_their_chain() {
    let Some(db) = TestDb::postgres() else { return };
    let d = Deployment::new(db);
    std::thread::scope(|s| {
        for t in 0..4 {
            let d = &d;
            s.spawn(move || {
                for i in 0..3 {
                    cli_ok(
                        d,
                        &[
                            "credentials",
                            "create",
                            "--label",
                            &format!("c{t}-{i}"),
                            "--role",
                            "reader",
                        ],
                    );
                }
            });
        }
    });
    let vault = d.vault();
    let report = vault.verify_audit().unwrap();
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    let chains = vault.store().audit_chains().unwrap();
    assert_eq!(
        chains.iter().filter(|c| c.starts_with("cli:")).count(),
        1,
        "{chains:?}"
    );
    let filter = AuditQuery {
        limit: Some(1000),
        operation: Some("credential.create".into()),
        ..Default::default()
    };
    let rows = vault
        .audit_page(&grant(&vault, Role::Auditor, None), &filter)
        .unwrap()
        .0;
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r.chain.starts_with("cli:")), "{rows:?}");
}

/// `--dry-run` on the sweeping and irreversible key commands changes nothing; `--shred` and
/// `destroy-kek` without `--yes` and without a terminal to ask on are refused (exit 6).
#[test]
fn irreversible_key_commands_ask_first_and_dry_runs_change_nothing() {
    let d = Deployment::new(TestDb::sqlite());
    let vault = d.vault();
    put_one(&vault, "rp", "R1");
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    vault
        .rotate_kek(&grant(&vault, Role::Operator, None))
        .unwrap();
    let keys = || cli_ok(&d, &["keys", "list"]);
    let before = keys();

    let plan: serde_json::Value = serde_json::from_str(&cli_ok(
        &d,
        &[
            "keys",
            "destroy",
            "--ns",
            "rp",
            "--version",
            "1",
            "--shred",
            "--dry-run",
        ],
    ))
    .unwrap();
    assert_eq!(plan["records"], 1, "{plan}");
    assert!(
        plan["would"]
            .as_str()
            .unwrap()
            .contains("1 record(s) become unreadable forever"),
        "{plan}"
    );
    let plan: serde_json::Value = serde_json::from_str(&cli_ok(
        &d,
        &[
            "keys",
            "destroy",
            "--ns",
            "rp",
            "--version",
            "1",
            "--dry-run",
        ],
    ))
    .unwrap();
    assert!(
        plan["would"].as_str().unwrap().starts_with("refused"),
        "{plan}"
    );
    cli_ok(&d, &["keys", "destroy-kek", "1", "--dry-run"]);
    cli_ok(&d, &["keys", "compromise-kek", "--dry-run"]);
    cli_ok(
        &d,
        &[
            "keystore",
            "migrate",
            "--to",
            d.path("zkvault.toml").to_str().unwrap(),
            "--dry-run",
        ],
    );

    for args in [
        &["keys", "destroy", "--ns", "rp", "--version", "1", "--shred"][..],
        &["keys", "destroy-kek", "1"],
    ] {
        let out = d.run(args);
        assert_eq!(
            out.status.code(),
            Some(6),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("pass --yes"),
            "{}",
            text(&out.stderr)
        );
    }
    let after = keys();
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("updated_at"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&before), strip(&after), "nothing changed");
    assert_eq!(
        &*vault
            .get_record(
                &grant(&vault, Role::Reader, Some("rp")),
                "R1",
                "demographics"
            )
            .unwrap()
            .body,
        b"{}"
    );
    cli_ok(
        &d,
        &[
            "keys",
            "destroy",
            "--ns",
            "rp",
            "--version",
            "1",
            "--shred",
            "--yes",
        ],
    );
}

/// Every failure used to exit 1, and output was JSON for some commands and text for others.
#[test]
fn exit_codes_name_the_failure_and_json_is_everywhere() {
    let d = Deployment::new(TestDb::sqlite());
    let code = |args: &[&str]| d.run(args).status.code();
    assert_eq!(
        code(&["credentials", "revoke", "0123456789abcdef"]),
        Some(4),
        "not found"
    );
    assert_eq!(
        code(&["keys", "rotate-master", "--ns", "nope"]),
        Some(4),
        "unknown namespace"
    );
    assert_eq!(
        code(&["credentials", "create", "--label", "x", "--role", "root"]),
        Some(2),
        "usage"
    );
    assert_eq!(code(&["keys", "frobnicate"]), Some(2), "usage (clap)");
    {
        // A key change in progress elsewhere: the CLI waits for it, then reports a conflict
        // (it used to say "config", exit 3, as if the deployment were misconfigured).
        let _held = d.vault().store().key_lock(Duration::from_secs(1)).unwrap();
        assert_eq!(
            code(&["keys", "rotate-master", "--ns", "rp"]),
            Some(5),
            "conflict"
        );
    }

    let out = d.run(&["--json", "credentials", "revoke", "0123456789abcdef"]);
    let err: serde_json::Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(
        (err["error"].as_str(), err["exit"].as_i64()),
        (Some("not_found"), Some(4)),
        "{err}"
    );

    let one_json = |args: &[&str]| -> serde_json::Value {
        let stdout = cli_ok(&d, &[&["--json"], args].concat());
        assert_eq!(stdout.trim().lines().count(), 1, "{args:?}: {stdout}");
        serde_json::from_str(stdout.trim()).unwrap()
    };
    let created = one_json(&["credentials", "create", "--label", "a", "--role", "auditor"]);
    assert!(created["token"].as_str().unwrap().starts_with("zkv_"));
    assert_eq!(
        one_json(&["credentials", "list"]).as_array().unwrap().len(),
        1
    );
    assert!(one_json(&["keys", "list"])["keks"].is_array());
    assert!(
        one_json(&["policy", "plan", d.path("policy").to_str().unwrap()])
            .as_array()
            .unwrap()
            .len()
            >= 8
    );
    assert_eq!(
        one_json(&["policy", "check", d.path("policy").to_str().unwrap()])["valid"],
        true
    );
    assert!(one_json(&["audit", "verify"])["first_break"].is_null());
    assert_eq!(
        one_json(&["audit", "checkpoint"])["checkpoints_written"]
            .as_u64()
            .map(|n| n > 0),
        Some(true)
    );
    assert_eq!(one_json(&["db", "migrate"])["migrated"], true);
    assert_eq!(
        one_json(&["credentials", "revoke", created["id"].as_str().unwrap()])["revoked"],
        created["id"]
    );
}

/// One invalid ID aborted the whole bulk job (and the error named the batch, not the line);
/// shredded records were not reported; SIGINT killed the run without a summary.
#[test]
fn reencrypt_skips_invalid_ids_by_line_reports_shredded_and_stops_cleanly_on_sigint() {
    let d = Deployment::new(TestDb::sqlite());
    let vault = d.vault();
    put_one(&vault, "rp", "GONE1");
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    vault
        .destroy_master(&grant(&vault, Role::Operator, Some("rp")), 1, true)
        .unwrap();
    for id in ["R00001", "R00002"] {
        put_one(&vault, "rp", id);
    }
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    std::fs::write(
        d.path("ids.txt"),
        "R00001\nnot a resident id\nGONE1\n\nR00002\nsecret id 4930098371!\n",
    )
    .unwrap();
    let (report, stderr) = reencrypt_report(&d, "rp", &["--batch", "10"]);
    assert_eq!(
        (report["moved"].as_u64(), report["shredded"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(
        report["invalid_lines"],
        serde_json::json!([2, 6]),
        "{report}"
    );
    assert!(stderr.contains("line(s) 2, 6"), "{stderr}");
    assert!(
        !stderr.contains("not a resident id")
            && !stderr.contains("4930098371")
            && !report.to_string().contains("4930098371"),
        "IDs are never printed"
    );

    let ids: Vec<String> = (0..3000).map(|i| format!("N{i:05}")).collect();
    std::fs::write(d.path("many.txt"), ids.join("\n") + "\n").unwrap();
    let child = Command::new(bin())
        .args([
            "--config",
            d.path("zkvault.toml").to_str().unwrap(),
            "reencrypt",
            "--ns",
            "rp",
            "--batch",
            "1",
            "--ids",
            d.path("many.txt").to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = d.path("many.txt.rp.checkpoint");
    let started = std::time::Instant::now();
    while !checkpoint.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let done = summary["not_found"].as_u64().unwrap();
    assert!(done > 0 && done < 3000, "{summary}");
    assert!(checkpoint.exists(), "the checkpoint is kept for a rerun");
}

/// The CLI's two steps of dual control: `keys destroy --shred` and `keys destroy-kek` only print
/// an approval; `keys approve` by the same operator is refused, by another one carries it out.
#[test]
fn under_dual_control_the_cli_takes_two_operators() {
    // No move on read: the check that R1 is still readable leaves it under master 1.
    let policy = POLICY
        .replace(
            "credential_max_age_days = 90",
            "credential_max_age_days = 90\ndual_control = true",
        )
        .replace(
            "[namespaces.rp]\n",
            "[namespaces.rp]\nlazy_reencrypt = false\n",
        );
    let d = Deployment::with_policy(TestDb::sqlite(), &policy);
    let vault = d.vault();
    put_one(&vault, "rp", "R1");
    vault
        .rotate_master(&grant(&vault, Role::Operator, Some("rp")))
        .unwrap();
    vault
        .rotate_kek(&grant(&vault, Role::Operator, None))
        .unwrap();
    drop(vault);
    let as_actor = |actor: &str, args: &[&str]| {
        let mut all = vec!["--actor", actor];
        all.extend_from_slice(args);
        d.run(&all)
    };
    let pending = |out: Output| -> String {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["approval"]
            .as_str()
            .unwrap_or_else(|| panic!("no approval: {v}"))
            .to_owned()
    };
    let shred = pending(as_actor(
        "alice",
        &[
            "keys",
            "destroy",
            "--ns",
            "rp",
            "--version",
            "1",
            "--shred",
            "--yes",
        ],
    ));
    let kek = pending(as_actor("alice", &["keys", "destroy-kek", "1", "--yes"]));
    for id in [&shred, &kek] {
        let own = as_actor("alice", &["keys", "approve", id]);
        assert!(!own.status.success(), "the requester approved {id}");
    }
    let read = || {
        d.vault()
            .get_record(
                &grant(&d.vault(), Role::Reader, Some("rp")),
                "R1",
                "demographics",
            )
            .map(|_| ())
    };
    assert!(read().is_ok(), "shredded before the second operator");
    let done: serde_json::Value =
        serde_json::from_str(&cli_ok(&d, &["--actor", "bob", "keys", "approve", &shred])).unwrap();
    assert_eq!(done["shredded_records"], 1, "{done}");
    assert!(matches!(read(), Err(zkvault::vault::VaultError::Shredded)));
    let done: serde_json::Value =
        serde_json::from_str(&cli_ok(&d, &["--actor", "bob", "keys", "approve", &kek])).unwrap();
    assert_eq!(done["destroyed_kek"], 1, "{done}");
}
