//! Every runbook in `docs/runbooks/` executed as written, against PostgreSQL and SoftHSM2 with
//! two `zkvault serve` instances; afterwards, on both instances, every record that should
//! survive reads back byte-exactly and every shredded one answers 410.
//!
//! Per page, a fresh deployment: a new PostgreSQL database, a new SoftHSM2 token (and a second
//! one, the target of hsm-migration.md), a config file with `[keystore] kind = "pkcs11"`, the
//! repository's `keys-policy/`, `keystore init`, the credentials the README's "Before you start"
//! block creates (its own `zkvault credentials create` commands, run as written), two instances,
//! a few dozen residents with records in both namespaces stored over HTTP, and the ID file.
//!
//! Then the page's ```sh blocks, in order, in one `bash -euo pipefail` (plus `-x` for the
//! transcript), with the README's variables set to this deployment's values, `zkvault` on PATH
//! and the deployment directory as the working directory. The one textual change made to a
//! page is `/etc/zkvault` → the deployment directory. `$RESTART` is a script that stops each
//! instance, lets the test's supervisor start it again (as systemd would) and waits until it is
//! ready.
//!
//! Without PostgreSQL or SoftHSM2 a test is skipped with a loud message; with `CI=true` it fails.
//! Deployments run one at a time: each is two servers on a machine that may have two cores.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::app::{execute_sql, query_strings};
use support::db::TestDb;
use support::softhsm;

const BIN: &str = env!("CARGO_BIN_EXE_zkvault");
const RESIDENTS: u64 = 36;
/// Every instance sees a change another process made within one second (README, rotation.md);
/// checks start after this.
const PROPAGATION: Duration = Duration::from_millis(1500);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The ```sh blocks of a markdown page, each de-indented by its fence's indentation.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None; // (indentation, text)
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match open.as_mut() {
            None => {
                if trimmed == "```sh" {
                    open = Some((line[..line.len() - trimmed.len()].to_owned(), String::new()));
                }
            }
            Some((_, text)) if trimmed == "```" => {
                blocks.push(std::mem::take(text));
                open = None;
            }
            Some((indent, text)) => {
                let line = match line.strip_prefix(indent.as_str()) {
                    Some(rest) => rest,
                    None if line.trim().is_empty() => "",
                    None => panic!("line less indented than its ```sh fence: {line:?}"),
                };
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(open.is_none(), "unterminated ```sh block");
    blocks
}

/// The README's "Before you start" block: each `export NAME=VALUE`, in order.
fn readme_variables() -> Vec<(String, String)> {
    let readme = fs::read_to_string(repo("docs/runbooks/README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    assert_eq!(
        blocks.len(),
        1,
        "the README has one sh block, \"Before you start\""
    );
    blocks[0]
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (name, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("export without '=': {l}"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// A resident ID valid in both namespaces (biometrics checks Verhoeff).
fn uin(i: u64) -> String {
    let payload = (493_000_000 + i * 7_919).to_string();
    format!(
        "{payload}{}",
        zkvault_core::verhoeff::check_digit(&payload).unwrap()
    )
}

/// Deterministic bytes of every value 0..=255 (xorshift), for binary records.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Debug)]
struct Record {
    ns: &'static str,
    uin: String,
    name: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

fn records_of(i: u64) -> Vec<Record> {
    let id = uin(i);
    let rec = |ns, name, content_type, body| Record {
        ns,
        uin: id.clone(),
        name,
        content_type,
        body,
    };
    vec![
        rec(
            "resident-portal",
            "demographics",
            "application/json",
            format!(
                r#"{{"name":"Resident {i}","dob":"19{:02}-0{}-1{}"}}"#,
                i % 100,
                1 + i % 9,
                i % 10
            )
            .into_bytes(),
        ),
        rec(
            "resident-portal",
            "contact",
            "text/plain; charset=utf-8",
            format!("+256 700 {i:06}\nÉcole {i}, Kampala\n").into_bytes(),
        ),
        rec(
            "biometrics",
            "face",
            "image/jpeg",
            bytes(i, 3000 + i as usize),
        ),
        rec(
            "biometrics",
            "fingerprint-left",
            "application/octet-stream",
            bytes(1000 + i, 1024),
        ),
    ]
}

/// Stops each instance; the supervisor starts it again (the config file is read anew); waits
/// until the new process answers /readyz.
const RESTART_SCRIPT: &str = r#"#!/usr/bin/env bash
# The test's stand-in for "restart every instance" (systemctl restart zkvault on each host).
set -euo pipefail
cd "@RUN@"
for f in *.pid; do
  old=$(cat "$f")
  kill "$old"
  for _ in $(seq 600); do
    if [ "$(cat "$f")" != "$old" ] && curl -sf "http://127.0.0.1:${f%.pid}/readyz" >/dev/null; then continue 2; fi
    sleep 0.1
  done
  echo "instance on port ${f%.pid} did not come back" >&2
  exit 1
done
"#;

/// `zkvault serve` on a free port, started again whenever it exits (systemd's Restart=always),
/// its pid in `run/<port>.pid` and its stderr in `serve-<port>.log`.
struct Instance {
    url: String,
    log: PathBuf,
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
}

impl Instance {
    fn start(dir: &Path, config: &Path) -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("serve-{port}.log"));
        let pid_file = dir.join(format!("run/{port}.pid"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut serve = Command::new(BIN);
        without_zkvault_env(&mut serve);
        serve
            .arg("serve")
            .env("ZKVAULT_CONFIG", config)
            .env("ZKVAULT_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (stopping, log_path) = (stop.clone(), log.clone());
        let supervisor = std::thread::spawn(move || loop {
            let err = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let mut child = serve.stderr(err).spawn().expect("spawn zkvault serve");
            let tmp = pid_file.with_extension("tmp");
            fs::write(&tmp, child.id().to_string()).unwrap();
            fs::rename(&tmp, &pid_file).unwrap();
            loop {
                if stopping.load(Ordering::SeqCst) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(100));
        });
        Instance {
            url: format!("http://127.0.0.1:{port}"),
            log,
            stop,
            supervisor: Some(supervisor),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ({}), last lines:\n{}",
            self.url,
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
    }
}

fn without_zkvault_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ZKVAULT_") {
            cmd.env_remove(name);
        }
    }
}

struct Reply {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// What a record must answer after a page.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Expect {
    /// 200 with the stored bytes and Content-Type.
    Reads,
    /// 404: erased.
    Absent,
    /// 410: its master was destroyed.
    Shredded,
}

struct Deployment {
    // Instances first: they stop before the database is dropped.
    instances: Vec<Instance>,
    records: Vec<Record>,
    /// The README's variables, with this deployment's values.
    vars: BTreeMap<String, String>,
    /// A reader credential of the test's own, for the checks.
    checker: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    db: TestDb,
    dir: tempfile::TempDir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Deployment {
    /// A deployment with two instances and the records stored, or `None` (skipped loudly)
    /// without PostgreSQL or SoftHSM2 outside CI.
    fn start() -> Option<Deployment> {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let db = TestDb::postgres()?;
        let (source, target) = (softhsm::new_token()?, softhsm::new_token()?);
        let dir = tempfile::Builder::new()
            .prefix("zkv-runbook-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        fs::create_dir(root.join("keys-policy")).unwrap();
        for entry in fs::read_dir(repo("keys-policy")).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(
                &path,
                root.join("keys-policy").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
        fs::write(root.join("zkvault.pin"), source.pin.expose()).unwrap();
        fs::write(root.join("zkvault-b.pin"), target.pin.expose()).unwrap();
        let config = root.join("zkvault.toml");
        fs::write(
            &config,
            format!(
                "database_url = {:?}\npolicy_dir = {:?}\n\n[keystore]\nkind = \"pkcs11\"\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
                db.url(),
                root.join("keys-policy"),
                source.module,
                source.token_label,
                root.join("zkvault.pin"),
            ),
        )
        .unwrap();
        fs::create_dir(root.join("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, root.join("bin/zkvault")).unwrap();
        fs::create_dir(root.join("run")).unwrap();
        let restart = root.join("bin/restart-instances");
        fs::write(
            &restart,
            RESTART_SCRIPT.replace("@RUN@", root.join("run").to_str().unwrap()),
        )
        .unwrap();
        fs::set_permissions(&restart, fs::Permissions::from_mode(0o755)).unwrap();
        let residents: Vec<u64> = (0..RESIDENTS).collect();
        fs::write(
            root.join("all-uins.txt"),
            residents.iter().map(|&i| uin(i) + "\n").collect::<String>(),
        )
        .unwrap();

        let vars = BTreeMap::from([
            ("ZKVAULT_CONFIG".to_owned(), config.display().to_string()),
            (
                "IDS".to_owned(),
                root.join("all-uins.txt").display().to_string(),
            ),
            ("UIN".to_owned(), uin(0)),
            (
                "TARGET_MODULE".to_owned(),
                target.module.display().to_string(),
            ),
            ("TARGET_TOKEN".to_owned(), target.token_label.clone()),
            (
                "TARGET_PIN_FILE".to_owned(),
                root.join("zkvault-b.pin").display().to_string(),
            ),
            ("RESTART".to_owned(), restart.display().to_string()),
        ]);
        let mut d = Deployment {
            instances: Vec::new(),
            records: residents.iter().flat_map(|&i| records_of(i)).collect(),
            vars,
            checker: String::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // No pooled connections: a page runs longer than the server keeps an idle one open.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            db,
            dir,
            _one_at_a_time: serial,
        };
        // The README's "then, once" of a new deployment.
        d.cli(&["keystore", "init"]);
        d.cli(&["db", "migrate"]);
        // The credentials, by the README's own commands.
        for (name, value) in readme_variables() {
            if value.starts_with("$(zkvault credentials create ") {
                let command = value
                    .strip_prefix("$(")
                    .unwrap()
                    .strip_suffix(')')
                    .unwrap_or_else(|| panic!("README: {value}"));
                let out = d
                    .command("bash")
                    .args(["-euo", "pipefail", "-c", command])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "README: {command}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                d.vars.insert(
                    name,
                    String::from_utf8(out.stdout).unwrap().trim().to_owned(),
                );
            }
        }
        d.checker = d
            .cli(&[
                "credentials",
                "create",
                "--label",
                "runbook test checks",
                "--role",
                "reader",
            ])
            .trim()
            .to_owned();

        d.instances = (0..2)
            .map(|_| Instance::start(d.dir.path(), &config))
            .collect();
        for i in 0..d.instances.len() {
            d.wait_ready(i);
        }
        let urls: Vec<String> = d.instances.iter().map(|i| i.url.clone()).collect();
        d.vars.insert("URL".into(), urls[0].clone());
        d.vars.insert("INSTANCES".into(), urls.join(" "));
        let documented: BTreeSet<String> = readme_variables().into_iter().map(|(n, _)| n).collect();
        let given: BTreeSet<String> = d.vars.keys().cloned().collect();
        assert_eq!(
            documented, given,
            "the README's variables and the test's differ"
        );

        for (k, r) in d.records.iter().enumerate() {
            let url = format!(
                "{}/v1/ns/{}/records/{}",
                d.instances[k % 2].url,
                r.ns,
                r.name
            );
            let request = d
                .http
                .put(url)
                .bearer_auth(&d.vars["WRITER"])
                .header("Resident-Id", &r.uin)
                .header("Content-Type", r.content_type)
                .body(r.body.clone());
            let reply = d.send(request);
            assert_eq!(
                reply.status,
                201,
                "storing {r:?}: {}",
                String::from_utf8_lossy(&reply.body)
            );
        }
        println!(
            "deployment ready in {:.1} s: 2 instances, {} records of {RESIDENTS} residents",
            started.elapsed().as_secs_f64(),
            d.records.len()
        );
        Some(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command in the deployment's directory with the README's variables and `zkvault` on PATH.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        without_zkvault_env(&mut cmd);
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.current_dir(self.dir.path())
            .envs(&self.vars)
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// `zkvault ARGS` (on `$ZKVAULT_CONFIG`); its stdout, after asserting success.
    fn cli(&self, args: &[&str]) -> String {
        let out = self.command(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "zkvault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn keys(&self) -> Value {
        serde_json::from_str(&self.cli(&["keys", "list"])).unwrap()
    }

    /// The masters of `ns` as `keys list` shows them.
    fn masters(&self, ns: &str) -> Vec<Value> {
        let keys = self.keys();
        let ns = keys["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == ns)
            .unwrap()
            .clone();
        ns["masters"].as_array().unwrap().clone()
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.rt.block_on(async {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            Reply {
                status,
                content_type,
                body: r.bytes().await.unwrap().to_vec(),
            }
        })
    }

    fn wait_ready(&self, i: usize) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Ok(r)) = self.rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    self.http
                        .get(format!("{}/readyz", self.instances[i].url))
                        .send(),
                )
                .await
            }) {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "instance not ready after 60 s\n{}",
            self.instances[i].log_tail()
        );
    }

    fn get(&self, instance: usize, token: &str, r: &Record) -> Reply {
        let url = format!(
            "{}/v1/ns/{}/records/{}",
            self.instances[instance].url, r.ns, r.name
        );
        self.send(
            self.http
                .get(url)
                .bearer_auth(token)
                .header("Resident-Id", &r.uin),
        )
    }

    /// Runs the page's ```sh blocks in one bash, as the module comment says.
    fn run_page(&self, page: &str) {
        let markdown = fs::read_to_string(repo(&format!("docs/runbooks/{page}"))).unwrap();
        let script = sh_blocks(&markdown)
            .join("\n")
            .replace("/etc/zkvault", self.dir.path().to_str().unwrap());
        let script_path = self.path(&format!("{page}.sh"));
        fs::write(&script_path, &script).unwrap();
        let transcript_path = self.path(&format!("{page}.log"));
        let transcript = fs::File::create(&transcript_path).unwrap();
        let started = Instant::now();
        let status = self
            .command("bash")
            .args(["-euo", "pipefail", "-x"])
            .arg(&script_path)
            .stdout(transcript.try_clone().unwrap())
            .stderr(transcript)
            .status()
            .unwrap();
        let transcript = fs::read_to_string(&transcript_path).unwrap();
        println!(
            "===== {page}: {status} after {:.1} s =====\n{transcript}",
            started.elapsed().as_secs_f64()
        );
        if !status.success() {
            let logs: Vec<String> = self.instances.iter().map(Instance::log_tail).collect();
            panic!(
                "{page} failed ({status}):\n{transcript}\n{}",
                logs.join("\n")
            );
        }
    }

    /// Checks every record on every instance; `expect` says what each must answer.
    fn check_records(&self, expect: impl Fn(&Record) -> Expect) {
        std::thread::sleep(PROPAGATION);
        let started = Instant::now();
        let mut wrong = Vec::new();
        let mut seen: BTreeMap<Expect, usize> = BTreeMap::new();
        for i in 0..self.instances.len() {
            for r in &self.records {
                let want = expect(r);
                let reply = self.get(i, &self.checker, r);
                let ok = match want {
                    Expect::Reads => {
                        reply.status == 200
                            && reply.body == r.body
                            && reply.content_type.as_deref() == Some(r.content_type)
                    }
                    Expect::Absent => reply.status == 404,
                    Expect::Shredded => {
                        reply.status == 410
                            && String::from_utf8_lossy(&reply.body).contains("\"shredded\"")
                    }
                };
                *seen.entry(want).or_default() += 1;
                if !ok {
                    wrong.push(format!(
                        "{} {} {}/{}: want {want:?}, got {} ({} bytes)",
                        self.instances[i].url,
                        r.uin,
                        r.ns,
                        r.name,
                        reply.status,
                        reply.body.len()
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} reads wrong:\n{}",
            wrong.len(),
            self.records.len() * self.instances.len(),
            wrong.join("\n")
        );
        println!(
            "checked on {} instances in {:.1} s: {seen:?}",
            self.instances.len(),
            started.elapsed().as_secs_f64()
        );
    }

    /// Per record id: "namespace master_version sha256(DEK envelope) sha256(sealed body)".
    fn stored(&self) -> BTreeMap<String, String> {
        query_strings(
            self.db.url(),
            "SELECT encode(id, 'hex') || ' ' || namespace || ' ' || master_version \
             || ' ' || encode(sha256(dek_nonce || wrapped_dek), 'hex') \
             || ' ' || encode(sha256(body_nonce || body_ciphertext), 'hex') AS v FROM records",
        )
        .into_iter()
        .map(|v| {
            let (id, rest) = v.split_once(' ').unwrap();
            (id.to_owned(), rest.to_owned())
        })
        .collect()
    }
}

/// The sealed body's hash in a [`Deployment::stored`] value.
fn body_hash(stored: &str) -> &str {
    stored.rsplit(' ').next().unwrap()
}

fn assert_master(m: &Value, state: &str, compromised: bool, records: i64) {
    assert_eq!(
        (
            m["state"].as_str(),
            m["compromised"].as_bool(),
            m["records"].as_i64()
        ),
        (Some(state), Some(compromised), Some(records)),
        "{m}"
    );
}

/// Every live master's `kek_version` is the one active KEK; returns it.
fn masters_under_active_kek(keys: &Value) -> i64 {
    let active: Vec<&Value> = keys["keks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{keys}");
    let kek = active[0]["version"].as_i64().unwrap();
    for ns in keys["namespaces"].as_array().unwrap() {
        for m in ns["masters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] != "destroyed")
        {
            assert_eq!(m["kek_version"].as_i64(), Some(kek), "{keys}");
        }
    }
    kek
}

fn kek_state(keys: &Value, version: i64) -> String {
    keys["keks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == version)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn rotation() {
    let Some(d) = Deployment::start() else { return };
    d.run_page("rotation.md");
    d.check_records(|_| Expect::Reads);
    let rp = d.masters("resident-portal");
    assert_master(&rp[0], "destroyed", false, 0);
    assert_master(&rp[1], "active", false, RESIDENTS as i64 * 2);
    let keys = d.keys();
    assert_eq!(masters_under_active_kek(&keys), 2);
    assert_eq!(kek_state(&keys, 1), "destroyed");
}

#[test]
fn dm_compromise() {
    let Some(d) = Deployment::start() else { return };
    let before = d.stored();
    d.run_page("dm-compromise.md");
    d.check_records(|_| Expect::Reads);
    let rp = d.masters("resident-portal");
    assert_master(&rp[0], "destroyed", true, 0);
    assert_master(&rp[1], "active", false, RESIDENTS as i64 * 2);
    // Re-keyed, not rewrapped: every resident-portal body was encrypted again; biometrics untouched.
    let after = d.stored();
    for (id, was) in &before {
        let now = &after[id];
        assert_eq!(
            body_hash(was) != body_hash(now),
            was.starts_with("resident-portal"),
            "{id}: {was} → {now}"
        );
    }
}

#[test]
fn kek_compromise() {
    let Some(d) = Deployment::start() else { return };
    let before = d.stored();
    d.run_page("kek-compromise.md");
    d.check_records(|_| Expect::Reads);
    for ns in ["resident-portal", "biometrics"] {
        let masters = d.masters(ns);
        assert_master(&masters[0], "destroyed", true, 0);
        assert_master(&masters[1], "active", false, RESIDENTS as i64 * 2);
    }
    let keys = d.keys();
    assert_eq!(masters_under_active_kek(&keys), 2);
    assert_eq!(kek_state(&keys, 1), "destroyed");
    let after = d.stored();
    assert!(
        before
            .iter()
            .all(|(id, was)| body_hash(was) != body_hash(&after[id])),
        "every record re-keyed"
    );
}

#[test]
fn credential_compromise() {
    let Some(d) = Deployment::start() else { return };
    let exposed = d.vars["WRITER"].clone();
    d.run_page("credential-compromise.md");
    d.check_records(|_| Expect::Reads);
    for i in 0..d.instances.len() {
        assert_eq!(
            d.get(i, &exposed, &d.records[0]).status,
            401,
            "{} still accepts the revoked token",
            d.instances[i].url
        );
    }
    let listed: Vec<Value> = d
        .cli(&["credentials", "list"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = exposed.split('_').nth(1).unwrap();
    let mine: Vec<&Value> = listed
        .iter()
        .filter(|c| c["label"] == "id-repository prod")
        .collect();
    assert_eq!(mine.len(), 2, "{listed:?}");
    assert!(
        mine.iter()
            .any(|c| c["id"] == id && !c["revoked_at"].is_null()),
        "{listed:?}"
    );
    assert!(
        mine.iter()
            .any(|c| c["id"] != id && c["revoked_at"].is_null()),
        "a successor was issued: {listed:?}"
    );
}

#[test]
fn hsm_migration() {
    let Some(d) = Deployment::start() else { return };
    let before = d.stored();
    d.run_page("hsm-migration.md");
    assert_eq!(d.stored(), before, "records are never touched");
    d.check_records(|_| Expect::Reads);
    let keys = d.keys();
    let target = format!("pkcs11:{}:", d.vars["TARGET_TOKEN"]);
    assert!(
        keys["keystore"].as_str().unwrap().starts_with(&target),
        "{keys}"
    );
    let kek = masters_under_active_kek(&keys);
    let active = keys["keks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == kek)
        .unwrap();
    assert_eq!(active["keystore"], keys["keystore"], "{keys}");
}

#[test]
fn erasure() {
    let Some(d) = Deployment::start() else { return };
    let erased = d.vars["UIN"].clone();
    execute_sql(
        d.db.url(),
        "CREATE TABLE backup_records AS SELECT * FROM records",
    );
    d.run_page("erasure.md");
    d.check_records(|r| {
        if r.uin == erased {
            Expect::Absent
        } else {
            Expect::Reads
        }
    });
    for ns in ["resident-portal", "biometrics"] {
        let masters = d.masters(ns);
        assert_master(&masters[0], "destroyed", false, 0);
        assert_eq!(masters[1]["state"], "active");
    }
    // A backup taken before the erasure, restored: the erased resident's copies are shredded.
    execute_sql(d.db.url(), "INSERT INTO records SELECT * FROM backup_records b WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.id = b.id)");
    let restored = query_strings(
        d.db.url(),
        "SELECT count(*)::text AS v FROM records WHERE master_version = 1",
    );
    assert_eq!(
        restored,
        vec!["4"],
        "the erased resident's four records came back from the backup"
    );
    d.check_records(|r| {
        if r.uin == erased {
            Expect::Shredded
        } else {
            Expect::Reads
        }
    });
}

#[test]
fn restore() {
    let Some(d) = Deployment::start() else { return };
    d.cli(&["audit", "checkpoint"]);
    let trail = ["audit", "audit_heads", "audit_manifests", "audit_marks"];
    support::app::backup(d.db.url(), "nightly", &trail);
    d.check_records(|_| Expect::Reads);
    d.cli(&["audit", "checkpoint"]);
    // The restore, as pg_restore of the nightly backup would leave the trail.
    support::app::restore(d.db.url(), "nightly", &trail);
    d.run_page("restore.md");
    d.check_records(|_| Expect::Reads);
}

#[test]
fn signing_keys() {
    let Some(d) = Deployment::start() else { return };
    let active = |d: &Deployment| -> Vec<Value> {
        let answer = d.send(
            d.http
                .get(format!("{}/v1/signers", d.instances[0].url))
                .bearer_auth(&d.vars["OP"]),
        );
        serde_json::from_slice::<Value>(&answer.body).unwrap()["signers"][0]["versions"]
            .as_array()
            .unwrap()
            .clone()
    };
    d.run_page("signing-keys.md");
    d.check_records(|_| Expect::Reads);
    // The page rotated (a pending v2), compromised v1 (v2 promoted at once) and destroyed it.
    let versions = active(&d);
    let states: Vec<(i64, &str)> = versions
        .iter()
        .map(|v| (v["version"].as_i64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "destroyed"), (2, "active")], "{versions:?}");
    for i in &d.instances {
        let jwks = d.send(d.http.get(format!("{}/.well-known/jwks.json", i.url)));
        let jwks: Value = serde_json::from_slice(&jwks.body).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [versions[1]["kid"].as_str().unwrap()], "{}", i.url);
    }
}

impl Deployment {
    /// `PUT` of a PEM body on the first instance as the README's trust admin; the answer's JSON.
    fn put_pem(&self, path: &str, pem: &Value) -> Value {
        let reply = self.send(
            self.http
                .put(format!("{}{path}", self.instances[0].url))
                .bearer_auth(&self.vars["TRUST_ADMIN"])
                .body(pem.as_str().unwrap().to_owned()),
        );
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        serde_json::from_slice(&reply.body).unwrap()
    }

    fn register(&self, domain: &str, id: &str, chain: &Value) {
        let reply = self.send(
            self.http
                .post(format!(
                    "{}/v1/trust/{domain}/partners",
                    self.instances[0].url
                ))
                .bearer_auth(&self.vars["TRUST_ADMIN"])
                .json(&serde_json::json!({ "id": id, "certificate_chain": chain })),
        );
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    /// Shares `r` with `partner` through `instance` as the README's sharer.
    fn share(&self, instance: usize, r: &Record, partner: &str) -> Reply {
        self.send(
            self.http
                .post(format!(
                    "{}/v1/ns/{}/records/{}/share",
                    self.instances[instance].url, r.ns, r.name
                ))
                .bearer_auth(&self.vars["SHARER"])
                .header("Resident-Id", &r.uin)
                .json(&serde_json::json!({ "partner": partner })),
        )
    }

    fn auditor_get(&self, path: &str) -> Value {
        let reply = self.send(
            self.http
                .get(format!("{}{path}", self.instances[0].url))
                .bearer_auth(&self.vars["AUDITOR"]),
        );
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        serde_json::from_slice(&reply.body).unwrap()
    }

    /// The partner's version states, oldest first.
    fn partner_states(&self, domain: &str, id: &str) -> Vec<String> {
        self.auditor_get(&format!("/v1/trust/{domain}/partners/{id}"))["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["state"].as_str().unwrap().to_owned())
            .collect()
    }

    fn demographics(&self) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.ns == "resident-portal" && r.name == "demographics")
            .collect()
    }
}

#[test]
fn partner_key_compromise() {
    let Some(d) = Deployment::start() else { return };
    let Some(pki) = support::trust::pki_py(&serde_json::json!({"op": "pki"})) else {
        return;
    };
    // The partner as registered before the incident, with records already shared to it.
    d.put_pem("/v1/trust/AUTH/anchors", &pki["anchors"]);
    d.register("AUTH", "ida-1", &pki["partners"]["ec"]["chain"]);
    let before: Vec<&Record> = d.demographics().into_iter().take(5).collect();
    std::thread::sleep(PROPAGATION);
    for (k, r) in before.iter().enumerate() {
        let reply = d.share(k % 2, r, "AUTH/ida-1");
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    fs::create_dir(d.path("partners")).unwrap();
    fs::write(
        d.path("partners/AUTH-ida-1-new.pem"),
        pki["partners"]["ec2"]["chain"].as_str().unwrap(),
    )
    .unwrap();

    d.run_page("partner-key-compromise.md");
    d.check_records(|_| Expect::Reads);
    assert_eq!(d.partner_states("AUTH", "ida-1"), ["revoked", "active"]);
    let exposure = d.auditor_get("/v1/trust/AUTH/partners/ida-1/exposure");
    let v1 = &exposure["versions"][0];
    assert_eq!(
        (v1["shares"].as_i64(), v1["residents"].as_i64()),
        (Some(5), Some(5))
    );
    assert_eq!(v1["revoked_reason"], "key_compromise");
    // The page shared every resident's demographics again, to the new key only: one JWE each
    // (and one per instance for the check), opened here with the partner's new private key.
    let demographics = d.demographics();
    assert!(exposure["versions"][1]["shares"].as_i64().unwrap() >= demographics.len() as i64);
    let out = d.path("reshare-AUTH-ida-1-v2");
    for (line, r) in demographics.iter().enumerate() {
        let jwe = fs::read_to_string(out.join(format!("{}.demographics.jwe", line + 1))).unwrap();
        let opened = support::trust::pki_py(&serde_json::json!({
            "op": "decrypt", "jwe": jwe, "key_pem": pki["partners"]["ec2"]["key"],
        }))
        .unwrap();
        assert_eq!(opened["plaintext_b64"], support::trust::b64(&r.body));
        assert_eq!(
            opened["header"]["kid"],
            pki["partners"]["ec2"]["thumbprint"]
        );
    }
}

#[test]
fn device_key_exposure() {
    let Some(d) = Deployment::start() else { return };
    let Some(pki) = support::trust::pki_py(&serde_json::json!({"op": "provider"})) else {
        return;
    };
    d.put_pem("/v1/trust/DEVICE/anchors", &pki["anchors"]);
    for id in ["sbi-0001", "sbi-0002", "sbi-0003"] {
        d.register("DEVICE", id, &pki["devices"][id]);
    }
    let r = d.demographics()[0];
    for id in ["sbi-0001", "sbi-0002", "sbi-0003"] {
        let reply = d.share(0, r, &format!("DEVICE/{id}"));
        assert_eq!(
            reply.status,
            200,
            "{id}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    fs::create_dir(d.path("partners")).unwrap();
    fs::write(
        d.path("partners/DEVICE-provider.crl.pem"),
        pki["crl"].as_str().unwrap(),
    )
    .unwrap();
    fs::write(
        d.path("partners/DEVICE-anchors.pem"),
        pki["new_anchors"].as_str().unwrap(),
    )
    .unwrap();

    d.run_page("device-key-exposure.md");
    d.check_records(|_| Expect::Reads);
    assert_eq!(d.partner_states("DEVICE", "sbi-0001"), ["revoked"]);
    // The others are refused by the CRL and the new anchors, not by a revocation of ours.
    for id in ["sbi-0002", "sbi-0003"] {
        assert_eq!(d.partner_states("DEVICE", id), ["active"]);
        for instance in 0..2 {
            let reply = d.share(instance, r, &format!("DEVICE/{id}"));
            assert_eq!(reply.status, 409, "{id}");
        }
    }
    // A device of the provider's new hierarchy registers and receives shares.
    d.register("DEVICE", "sbi-0004", &pki["new_device"]);
    std::thread::sleep(PROPAGATION);
    assert_eq!(d.share(1, r, "DEVICE/sbi-0004").status, 200);
}
