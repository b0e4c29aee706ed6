//! The deployment files (deploy/systemd, deploy/k8s, deploy/container) checked with the tools
//! this machine has: `systemd-analyze verify` of every unit in a scratch root that holds the
//! real binaries, the Kubernetes manifests against the pinned Kubernetes version's schemas
//! (tests/python/check_k8s_manifests.py, kubernetes-validate from scripts/install-tools.sh),
//! the NATS nodes' configuration with the pinned nats-server's `-t`, the container
//! definition's COPY sources, and every refbus flag and variable they use against
//! the command's own `--help`. Nothing is started: a unit that verifies can still fail on a
//! real machine for what only a real machine has (users, files in /etc/refbus).

mod common;

use common::repo_root;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are written for: 1.37 is the first whose gRPC probe
/// speaks TLS (`grpc.mode`), which the adapters' readiness needs.
const KUBERNETES_VERSION: &str = "1.37.0";

/// Every unit, with the name `systemd-analyze verify` is given (a template needs an instance).
const UNITS: [(&str, &str); 6] = [
    ("nats-server.service", "nats-server.service"),
    (
        "refbus-adapter@.service",
        "refbus-adapter@maros-dinsos.service",
    ),
    ("refbus-router.service", "refbus-router.service"),
    ("refbus-notary.service", "refbus-notary.service"),
    ("refbus-witness.service", "refbus-witness.service"),
    ("refbus-dashboard.service", "refbus-dashboard.service"),
];

/// Each unit's environment file in deploy/systemd, by unit file (nats-server's is optional).
const ENV_FILES: [(&str, &str); 6] = [
    ("nats-server.service", "nats-server.env"),
    ("refbus-adapter@.service", "adapter.env"),
    ("refbus-router.service", "router.env"),
    ("refbus-notary.service", "notary.env"),
    ("refbus-witness.service", "witness.env"),
    ("refbus-dashboard.service", "dashboard.env"),
];

fn systemd_dir() -> PathBuf {
    repo_root().join("deploy/systemd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The unit's settings as `(key, value)`, continuation lines joined, comments left out.
fn settings(unit: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in unit.lines() {
        let line = line.trim();
        if current.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
        } else {
            current.push_str(line);
            joined.push(std::mem::take(&mut current));
        }
    }
    joined
        .into_iter()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The commands of a unit's Exec*= settings, each split into words (no quoting is used).
fn exec_commands(unit: &str) -> Vec<Vec<String>> {
    settings(unit)
        .into_iter()
        .filter(|(key, _)| key.starts_with("Exec"))
        .map(|(_, value)| {
            value
                .trim_start_matches(['-', '@', ':', '+', '!'])
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The long options `refbus <command> --help` lists.
fn help_flags(command: &str) -> (BTreeSet<String>, String) {
    let output = common::command(&[])
        .args([command, "--help"])
        .output()
        .expect("the refbus binary runs");
    assert!(output.status.success(), "refbus {command} --help failed");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let flags = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|word| word.starts_with("--"))
        .map(|word| word.split('=').next().unwrap_or(word).to_owned())
        .collect();
    (flags, help)
}

/// What is wrong with a refbus command line: every `--flag` that `refbus <command> --help`
/// does not list, and every flag its usage line requires that is not given.
fn unknown_flags(args: &[String]) -> Vec<String> {
    let command = &args[0];
    let (known, help) = help_flags(command);
    let given: BTreeSet<String> = args[1..]
        .iter()
        .filter(|arg| arg.starts_with("--"))
        .map(|arg| arg.split('=').next().unwrap_or(arg).to_owned())
        .collect();
    let usage = help
        .lines()
        .find(|line| line.starts_with("Usage: "))
        .expect("--help has a usage line");
    let required = usage
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .map(str::to_owned);
    let unknown = given
        .iter()
        .filter(|flag| !known.contains(*flag))
        .map(|flag| format!("refbus {command} {flag}: no such flag"));
    let missing = required
        .filter(|flag| !given.contains(flag))
        .map(|flag| format!("refbus {command}: {flag} is required"));
    unknown.chain(missing).collect()
}

/// Copies a tree, keeping symbolic links as links (systemd's unit directories are full of them).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Puts `binary` at `path` inside `root`: a hard link where possible (the debug refbus binary
/// is large), else a copy.
fn install(binary: &Path, root: &Path, path: &str) {
    let target = root.join(path.trim_start_matches('/'));
    if target.exists() {
        return;
    }
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    if std::fs::hard_link(binary, &target).is_err() {
        std::fs::copy(binary, &target).unwrap();
    }
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// A scratch root with the system's unit directory (the targets units refer to), the units,
/// and every binary their Exec*= lines name: the refbus binary built for this test, the pinned
/// nats-server, and this machine's own copy of anything else (`/bin/kill`).
fn scratch_root(units: &[(&str, String)]) -> tempfile::TempDir {
    // Beside the test binaries, so that the refbus binary is hard-linked rather than copied.
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &root.path().join("usr/lib/systemd/system"),
    );
    let system = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&system).unwrap();
    let nats_server = repo_root().join(".tools/bin/nats-server");
    for (file, text) in units {
        std::fs::write(system.join(file), text).unwrap();
        for command in exec_commands(text) {
            let path = command[0].as_str();
            assert!(
                path.starts_with('/'),
                "{file}: {path} is not an absolute path"
            );
            match path {
                "/usr/local/bin/refbus" => {
                    install(Path::new(env!("CARGO_BIN_EXE_refbus")), root.path(), path);
                }
                "/usr/local/bin/nats-server" => {
                    assert!(
                        nats_server.exists(),
                        "{} is missing: run scripts/install-tools.sh",
                        nats_server.display()
                    );
                    install(&nats_server, root.path(), path);
                }
                other => {
                    assert!(
                        Path::new(other).exists(),
                        "{file}: {other} is not on this machine either"
                    );
                    install(Path::new(other), root.path(), path);
                }
            }
        }
    }
    root
}

/// What `systemd-analyze verify` says of one unit in `root`: `None` when it is clean (exit 0
/// and nothing printed: unknown settings are only warnings, but warnings count here).
fn verify(systemd_analyze: &Path, root: &Path, unit: &str) -> Option<String> {
    let output = Command::new(systemd_analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        None
    } else {
        Some(format!("{unit} ({}):\n{said}", output.status))
    }
}

#[test]
fn every_systemd_unit_passes_systemd_analyze_verify() {
    let Some(systemd_analyze) = systemd_analyze() else {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed here (Debian: apt-get install systemd); \
             the units in deploy/systemd were not verified"
        );
        return;
    };
    let units: Vec<(&str, String)> = UNITS
        .iter()
        .map(|(file, _)| (*file, read(&systemd_dir().join(file))))
        .collect();
    let root = scratch_root(&units);
    let problems: Vec<String> = UNITS
        .iter()
        .filter_map(|(_, unit)| verify(&systemd_analyze, root.path(), unit))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The check can fail: a misspelt setting, and a command that is not there, are reported.
    let (file, text) = &units[2];
    let broken = text.replace("ProtectHome=yes", "ProtectHomes=yes");
    std::fs::write(root.path().join("etc/systemd/system").join(file), broken).unwrap();
    let said = verify(&systemd_analyze, root.path(), file).expect("a misspelt key is reported");
    assert!(said.contains("ProtectHomes"), "{said}");
    std::fs::write(root.path().join("etc/systemd/system").join(file), text).unwrap();
    std::fs::remove_file(root.path().join("usr/local/bin/refbus")).unwrap();
    let said = verify(&systemd_analyze, root.path(), file).expect("a missing binary is reported");
    assert!(said.contains("/usr/local/bin/refbus"), "{said}");
}

#[test]
fn every_unit_is_hardened_and_restarts_on_failure() {
    let required = [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
    ];
    let mut problems = Vec::new();
    for (file, _) in UNITS {
        let unit = read(&systemd_dir().join(file));
        let lines: BTreeSet<String> = settings(&unit)
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut wanted: Vec<&str> = required.to_vec();
        if file.starts_with("refbus-") {
            // The refbus components hold no account of their own and get secrets as credentials.
            wanted.extend(["DynamicUser=yes"]);
            if !lines.iter().any(|line| line.starts_with("LoadCredential=")) {
                problems.push(format!("{file}: no LoadCredential="));
            }
            if !lines.iter().any(|line| line.starts_with("StateDirectory="))
                && !file.starts_with("refbus-adapter")
            {
                problems.push(format!("{file}: no StateDirectory="));
            }
        } else if !lines.iter().any(|line| line.starts_with("StateDirectory=")) {
            problems.push(format!("{file}: no StateDirectory="));
        }
        for line in wanted {
            if !lines.contains(line) {
                problems.push(format!("{file}: no {line}"));
            }
        }
        if !lines
            .iter()
            .any(|line| line.starts_with("EnvironmentFile="))
        {
            problems.push(format!("{file}: no EnvironmentFile="));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_units_use_only_flags_and_variables_refbus_has() {
    let mut problems = Vec::new();
    for (file, env_file) in ENV_FILES {
        let unit = read(&systemd_dir().join(file));
        let mut command = None;
        for words in exec_commands(&unit) {
            if words[0] == "/usr/local/bin/refbus" {
                problems.extend(unknown_flags(&words[1..]));
                command = Some(words[1].clone());
            }
        }
        // Each variable of the example environment file is one refbus reads itself (its
        // `[env: ...]` in --help) or one the unit passes on (`${NAME}` in ExecStart=).
        let Some(command) = command else { continue };
        let (_, help) = help_flags(&command);
        for line in read(&systemd_dir().join(env_file)).lines() {
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            if line.starts_with('#') {
                continue;
            }
            let read_by_refbus = help.contains(&format!("[env: {name}="));
            let passed_by_unit = unit.contains(&format!("${{{name}}}"));
            if !read_by_refbus && !passed_by_unit {
                problems.push(format!(
                    "{env_file}: {name} is read neither by refbus {command} nor by {file}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_kubernetes_manifest_is_valid_for_the_pinned_kubernetes_version() {
    let python = repo_root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-tools.sh (it installs kubernetes-validate)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(repo_root().join("tests/python/check_k8s_manifests.py"))
        .arg(repo_root().join("deploy/k8s"))
        .arg(KUBERNETES_VERSION)
        .output()
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy/k8s does not pass:\n{stderr}"
    );
    let commands: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the checker prints JSON");
    let commands = commands.as_array().expect("a list of commands");
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for command in commands {
        let args: Vec<String> = command["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| arg.as_str().unwrap().to_owned())
            .collect();
        seen.insert(args[0].clone());
        problems.extend(
            unknown_flags(&args)
                .into_iter()
                .map(|flag| format!("{}: {flag}", command["where"])),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let expected: BTreeSet<String> = ["adapter", "router", "dashboard", "notary", "witness"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(seen, expected, "the refbus components the manifests run");
}

#[test]
fn the_containerfile_copies_what_exists_and_runs_as_a_user() {
    let containerfile = read(&repo_root().join("deploy/container/Containerfile"));
    let mut copied = 0;
    for line in containerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"COPY") || words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        // COPY <sources...> <destination>, sources relative to the context (the repository).
        for source in &words[1..words.len() - 1] {
            assert!(
                repo_root().join(source).exists(),
                "Containerfile copies {source}, which is not in the repository"
            );
            copied += 1;
        }
    }
    assert!(copied >= 5, "the Containerfile's COPY lines were not found");
    assert!(
        containerfile.contains("cargo build --release --locked"),
        "the build is --release --locked"
    );
    // The last stage runs as a numeric non-root user (runAsNonRoot checks numbers).
    let runtime = containerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0, "the image runs as root");
    // The ignore file lets in every source the build stage copies.
    let ignore = read(&repo_root().join("deploy/container/Containerfile.dockerignore"));
    for source in [
        "Cargo.toml",
        "Cargo.lock",
        "crates",
        "proto",
        "deploy/config",
    ] {
        assert!(
            ignore.lines().any(|line| line == format!("!{source}")),
            "Containerfile.dockerignore leaves out {source}"
        );
    }
}

/// The text of a literal block (`key: |`) of a YAML file: the lines indented deeper than the
/// key, without that indentation. Enough for the one ConfigMap this reads.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|line| line.trim() != format!("{key}: |"));
    let header = lines.next().expect("the block is in the file");
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|line| line.trim().is_empty() || line.len() - line.trim_start().len() >= indent)
        .map(|line| line.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_nats_configuration_is_valid_for_the_pinned_nats_server() {
    let nats_server = repo_root().join(".tools/bin/nats-server");
    assert!(
        nats_server.exists(),
        "{} is missing: run scripts/install-tools.sh",
        nats_server.display()
    );
    // The pod's /etc/nats, as the projected volume lays it out: the ConfigMap's nats.conf, the
    // shipped permissions.conf, the example secrets, and certificates `refbus certs` makes.
    let etc = tempfile::tempdir().unwrap();
    let dir = etc.path();
    let conf = yaml_block(
        &read(&repo_root().join("deploy/k8s/nats.yaml")),
        "nats.conf",
    );
    let local = |path: &str| dir.join(path).display().to_string();
    let conf = conf
        .replace("/etc/nats/tls", &local("tls"))
        .replace("/data/jetstream", &local("jetstream"))
        .replace("/var/run/nats/nats.pid", &local("nats.pid"));
    std::fs::write(dir.join("nats.conf"), conf).unwrap();
    let deploy_nats = repo_root().join("deploy/nats");
    std::fs::copy(
        deploy_nats.join("permissions.conf"),
        dir.join("permissions.conf"),
    )
    .unwrap();
    std::fs::copy(
        deploy_nats.join("passwords.conf.example"),
        dir.join("passwords.conf"),
    )
    .unwrap();
    std::fs::copy(
        deploy_nats.join("cluster/routes.conf.example"),
        dir.join("routes.conf"),
    )
    .unwrap();
    let pki = dir.join("pki");
    for args in [
        vec!["certs", "ca", "--dir"],
        vec![
            "certs",
            "server",
            "--name",
            "nats",
            "--host",
            "refbus-nats-0.refbus-nats.refbus.svc.cluster.local",
            "--dir",
        ],
    ] {
        let made = common::command(&[]).args(&args).arg(&pki).output().unwrap();
        assert!(made.status.success(), "{made:?}");
    }
    std::fs::create_dir(dir.join("tls")).unwrap();
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("server-nats.pem", "server.pem"),
        ("server-nats.key", "server-key.pem"),
    ] {
        std::fs::copy(pki.join(from), dir.join("tls").join(to)).unwrap();
    }

    let check = |pod_name: Option<&str>| {
        let mut command = Command::new(&nats_server);
        command.arg("-t").arg("-c").arg(dir.join("nats.conf"));
        command.env_remove("POD_NAME");
        if let Some(name) = pod_name {
            command.env("POD_NAME", name);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let (valid, said) = check(Some("refbus-nats-0"));
    assert!(valid, "{said}");
    // The check can fail: without the pod's name (which the StatefulSet sets) it is refused.
    let (valid, said) = check(None);
    assert!(!valid && said.contains("POD_NAME"), "{said}");
}
