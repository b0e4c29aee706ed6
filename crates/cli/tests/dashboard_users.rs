//! `refbus dashboard user add|remove|list` as an administrator runs it: the password comes from
//! standard input (never the command line), the file is written readable by its owner only,
//! bad input is refused with its exit status and message, and a refusal writes nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::{refbus_with_input, repo_root};

const PASSWORD: &str = "correct horse battery";

fn registry() -> String {
    repo_root()
        .join("deploy/config/refbus.toml")
        .display()
        .to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn add(file: &Path, username: &str, agency: &str, role: &str, stdin: &str) -> Output {
    refbus_with_input(
        &[
            "dashboard",
            "user",
            "add",
            "--accounts",
            &file.display().to_string(),
            "--username",
            username,
            "--agency",
            agency,
            "--role",
            role,
            "--config",
            &registry(),
        ],
        stdin,
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_added_operator_is_written_0600_and_listed_without_her_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operators.toml");
    let output = add(
        &file,
        "siti.dp3a",
        "maros-dp3a",
        "head",
        &format!("{PASSWORD}\n"),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("added siti.dp3a (head); 1 operator(s)"));
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "{text}");
    assert!(!text.contains(PASSWORD));

    let output = add(&file, "andi", "maros-bappeda", "coordinator", PASSWORD);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(mode(&file), 0o600);

    // The dashboard's own loading reads what the command wrote, and the password verifies.
    let accounts = refbus_operators::Accounts::load(&file).unwrap();
    let siti = accounts
        .get(&refbus_operators::Username::new("siti.dp3a").unwrap())
        .unwrap();
    assert!(siti.password_hash.verify(PASSWORD));
    assert!(!siti.password_hash.verify("wrong password"));

    let list = refbus_with_input(
        &[
            "dashboard",
            "user",
            "list",
            "--accounts",
            &file.display().to_string(),
        ],
        "",
    );
    assert!(list.status.success());
    let listed = stdout(&list);
    assert!(!listed.contains("argon2"), "{listed}");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["USERNAME", "AGENCY", "ROLE"],
            vec!["andi", "maros-bappeda", "coordinator"],
            vec!["siti.dp3a", "maros-dp3a", "head"],
        ]
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operators.toml");
    let first = add(&file, "siti.dp3a", "maros-dp3a", "head", PASSWORD);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = std::fs::read(&file).unwrap();

    let cases: [(&str, &str, &str, &str, i32, &str); 8] = [
        (
            "budi",
            "maros-dp3a",
            "admin",
            PASSWORD,
            2,
            "unknown role `admin`",
        ),
        (
            "Budi Santoso",
            "maros-dp3a",
            "head",
            PASSWORD,
            2,
            "is not a valid username",
        ),
        (
            "budi",
            "Maros DP3A",
            "head",
            PASSWORD,
            2,
            "is not a valid agency id",
        ),
        (
            "budi",
            "maros-ghost",
            "head",
            PASSWORD,
            2,
            "unknown agency `maros-ghost`",
        ),
        (
            "budi",
            "maros-dp3a",
            "coordinator",
            PASSWORD,
            2,
            "the coordinator role belongs to the coordinator's agency `maros-bappeda`",
        ),
        (
            "siti.dp3a",
            "maros-dp3a",
            "viewer",
            PASSWORD,
            1,
            "`siti.dp3a` already exists",
        ),
        (
            "budi",
            "maros-dp3a",
            "head",
            "short\n",
            1,
            "at least 8 characters",
        ),
        (
            "budi",
            "maros-dp3a",
            "head",
            "",
            1,
            "no password on standard input",
        ),
    ];
    for (username, agency, role, stdin, code, message) in cases {
        let output = add(&file, username, agency, role, stdin);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{username} {agency} {role}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(message), "{}", stderr(&output));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "nothing written for {username} {role}"
        );
    }
    // No temporary file left behind either.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("operators.toml")]);

    // A refused first add creates no file.
    let fresh = dir.path().join("new.toml");
    let output = add(&fresh, "budi", "maros-dp3a", "admin", PASSWORD);
    assert_eq!(output.status.code(), Some(2));
    assert!(!fresh.exists());
}

#[test]
fn an_accounts_file_others_may_read_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operators.toml");
    assert!(
        add(&file, "siti.dp3a", "maros-dp3a", "head", PASSWORD)
            .status
            .success()
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&file).unwrap();
    let output = add(&file, "budi", "maros-dp3a", "head", PASSWORD);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("chmod 600"), "{}", stderr(&output));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(
        mode(&file),
        0o644,
        "refbus does not quietly fix it: the operator must know"
    );
    let list = refbus_with_input(
        &[
            "dashboard",
            "user",
            "list",
            "--accounts",
            &file.display().to_string(),
        ],
        "",
    );
    assert_eq!(list.status.code(), Some(1));
}

#[test]
fn removing_an_operator_rewrites_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operators.toml");
    let path = file.display().to_string();
    assert!(
        add(&file, "siti.dp3a", "maros-dp3a", "head", PASSWORD)
            .status
            .success()
    );
    assert!(
        add(&file, "budi", "maros-dp3a", "viewer", PASSWORD)
            .status
            .success()
    );
    let output = refbus_with_input(
        &[
            "dashboard",
            "user",
            "remove",
            "--accounts",
            &path,
            "--username",
            "budi",
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("removed budi; 1 operator(s)"));
    assert_eq!(mode(&file), 0o600);
    let before = std::fs::read(&file).unwrap();
    let again = refbus_with_input(
        &[
            "dashboard",
            "user",
            "remove",
            "--accounts",
            &path,
            "--username",
            "budi",
        ],
        "",
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("there is no operator named `budi`"));
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_change_while_another_is_under_way_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operators.toml");
    assert!(
        add(&file, "siti.dp3a", "maros-dp3a", "head", PASSWORD)
            .status
            .success()
    );
    let before = std::fs::read(&file).unwrap();
    // Another administrator's command holds the lock (as `user add` does while it asks for
    // the password).
    let held = refbus_operators::accounts::ChangeLock::take(&file).unwrap();
    let output = add(&file, "budi", "maros-dp3a", "head", PASSWORD);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("another command is changing"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    drop(held);
    assert!(
        add(&file, "budi", "maros-dp3a", "head", PASSWORD)
            .status
            .success()
    );
}

#[test]
fn the_password_is_never_an_argument() {
    let output = refbus_with_input(&["dashboard", "user", "add", "--help"], "");
    let help = stdout(&output);
    assert!(!help.contains("--password"), "{help}");
}
