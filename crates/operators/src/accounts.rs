//! The operators' accounts file: who may log in to the dashboard, for which agency, in which
//! role, with which argon2id password hash. Reading refuses a file others may read and reports
//! every problem at its line; writing replaces the file atomically, readable by its owner only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use refbus_core::format::RecordKind;
use refbus_core::ids::OperatorId;
use refbus_core::{AgencyId, Registry};
use serde::Deserialize;
use toml::Spanned;

use crate::password::{self, PasswordHash};

/// An accounts file is a few hundred bytes per operator; anything this large is a mistake.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

// === Role ===

/// What an operator may do on the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Tim Terpadu's coordinator: sees every agency's referrals.
    Coordinator,
    /// An agency head: sees her agency's referrals, acknowledges escalations addressed to it.
    Head,
    /// An agency supervisor: as a head.
    Supervisor,
    /// Sees what her agency's head sees and cannot act.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Coordinator,
        Role::Head,
        Role::Supervisor,
        Role::Viewer,
    ];

    /// Whether the role may act (acknowledge escalations addressed to its agency).
    pub fn may_act(self) -> bool {
        self != Role::Viewer
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Head => "head",
            Role::Supervisor => "supervisor",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: use coordinator, head, supervisor or viewer")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| UnknownRole(text.to_owned()))
    }
}

// === Username ===

/// An operator's login name: 1 to 64 lower-case letters, digits, `.`, `-` or `_`, starting with
/// a letter or digit. Always a valid [`OperatorId`], since acknowledgements record it; safe in
/// logs. The login form lower-cases what is typed (phone keyboards capitalise the first letter).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

/// Why a text is not a [`Username`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid username: use 1 to 64 lower-case letters, digits, '.', '-' or '_', \
     starting with a letter or digit (e.g. siti.dp3a)"
)]
pub struct BadUsername(pub String);

impl Username {
    pub fn new(text: impl Into<String>) -> Result<Username, BadUsername> {
        let text = text.into();
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.as_bytes()[0].is_ascii_alphanumeric()
            && text.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if valid {
            Ok(Username(text))
        } else {
            Err(BadUsername(text))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The operator as events record her.
    pub fn operator_id(&self) -> OperatorId {
        OperatorId::new(self.0.clone()).expect("a username is always a valid operator id")
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

// === Account ===

/// One operator's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: Username,
    pub agency: AgencyId,
    pub role: Role,
    /// Never printed: its `Debug` says only that it is there.
    pub password_hash: PasswordHash,
}

/// Every account of a deployment, by username.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    accounts: BTreeMap<Username, Account>,
}

/// One problem in an accounts file, at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub message: String,
}

/// Why an accounts file could not be read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("cannot read the operators' accounts file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} holds the operators' password hashes and others may read it (mode {mode:04o}): \
         refbus refuses to use it. Make it readable by its owner only (`chmod 600 {path}`)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path} is larger than {MAX_FILE_LEN} bytes: it is not an operators' accounts file")]
    TooLarge { path: PathBuf },
    #[error("{}", display_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("cannot write the operators' accounts file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "another command is changing the operators' accounts in {directory} right now; nothing \
         was written: try again when it is done"
    )]
    Busy { directory: PathBuf },
}

/// Held while one command reads, changes and writes an accounts file, so that two
/// administrators adding operators at once cannot lose one of the additions. The lock is on
/// the file's directory (the file itself is replaced by a rename, and may not exist yet); it is
/// released when this is dropped, or when the process ends.
#[derive(Debug)]
pub struct ChangeLock {
    _directory: File,
}

impl ChangeLock {
    /// Takes the lock, or refuses at once if another process holds it.
    pub fn take(path: impl AsRef<Path>) -> Result<ChangeLock, AccountsError> {
        let directory = directory_of(path.as_ref());
        let file = File::open(&directory).map_err(|source| AccountsError::Write {
            path: path.as_ref().to_owned(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => Ok(ChangeLock { _directory: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(AccountsError::Busy { directory }),
            Err(std::fs::TryLockError::Error(source)) => Err(AccountsError::Write {
                path: path.as_ref().to_owned(),
                source,
            }),
        }
    }
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn display_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}:{}: {}", path.display(), problem.line, problem.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why an account cannot be added or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("an operator named `{0}` already exists (remove her first to change her account)")]
    Exists(Username),
    #[error("there is no operator named `{0}`")]
    NotFound(Username),
    #[error("{0}")]
    Registry(String),
}

// === The file's form ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    /// The file's format (`refbus_core::format`); checked before the rest (`FormatForm`).
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "read by `FormatForm` first; here so it is not unknown"
    )]
    format: Option<u64>,
    #[serde(default)]
    operator: Vec<Spanned<EntryForm>>,
}

/// The file's format alone, read first: a newer file may not have this build's form. A file
/// without `format` was written before formats were recorded: format 1.
#[derive(Deserialize)]
struct FormatForm {
    #[serde(default)]
    format: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryForm {
    username: Spanned<String>,
    agency: Spanned<String>,
    role: Spanned<String>,
    password_hash: Spanned<String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

// === impl Accounts ===

impl Accounts {
    pub fn new() -> Accounts {
        Accounts::default()
    }

    /// Reads `path`, refusing it if its group or anyone else may read it (the same check as
    /// secret key files: [`refbus_seal::exposed_mode`]). A missing file is an error: the
    /// dashboard with no accounts would let nobody in.
    pub fn load(path: impl AsRef<Path>) -> Result<Accounts, AccountsError> {
        let path = path.as_ref();
        let text = read_private(path)?;
        Accounts::parse(&text).map_err(|problems| AccountsError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Reads `path` if it exists, or gives no accounts (for `user add` on a new file).
    pub fn load_or_empty(path: impl AsRef<Path>) -> Result<Accounts, AccountsError> {
        let path = path.as_ref();
        match Accounts::load(path) {
            Err(AccountsError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(Accounts::new())
            }
            other => other,
        }
    }

    /// Parses an accounts file's text: every problem found, each at its line. Pure.
    pub fn parse(text: &str) -> Result<Accounts, Vec<Problem>> {
        if let Ok(FormatForm {
            format: Some(format),
        }) = toml::from_str::<FormatForm>(text)
        {
            let line = line_of(text, format.span().start);
            refbus_core::format::check(
                RecordKind::OperatorAccounts,
                Some(*format.get_ref()),
                String::new,
            )
            .map_err(|unknown| {
                vec![Problem {
                    line,
                    message: unknown.sentence(),
                }]
            })?;
        }
        let form: FileForm = toml::from_str(text).map_err(|error| {
            vec![Problem {
                line: error.span().map_or(0, |span| line_of(text, span.start)),
                message: error.message().to_owned(),
            }]
        })?;
        let mut problems = Vec::new();
        let mut accounts = Accounts::new();
        for entry in form.operator {
            let entry_line = line_of(text, entry.span().start);
            let entry = entry.into_inner();
            let at = |spanned: &Spanned<String>| line_of(text, spanned.span().start);
            let username = Username::new(entry.username.get_ref().clone()).map_err(|error| {
                problems.push(Problem {
                    line: at(&entry.username),
                    message: error.to_string(),
                })
            });
            let agency = AgencyId::new(entry.agency.get_ref().clone()).map_err(|error| {
                problems.push(Problem {
                    line: at(&entry.agency),
                    message: error.to_string(),
                })
            });
            let role = entry.role.get_ref().parse::<Role>().map_err(|error| {
                problems.push(Problem {
                    line: at(&entry.role),
                    message: error.to_string(),
                })
            });
            let hash = PasswordHash::parse(entry.password_hash.get_ref()).map_err(|error| {
                problems.push(Problem {
                    line: at(&entry.password_hash),
                    message: error.to_string(),
                })
            });
            let (Ok(username), Ok(agency), Ok(role), Ok(password_hash)) =
                (username, agency, role, hash)
            else {
                continue;
            };
            if accounts.get(&username).is_some() {
                problems.push(Problem {
                    line: entry_line,
                    message: format!(
                        "operator `{username}` appears twice; each username names one account"
                    ),
                });
                continue;
            }
            accounts.accounts.insert(
                username.clone(),
                Account {
                    username,
                    agency,
                    role,
                    password_hash,
                },
            );
        }
        if problems.is_empty() {
            Ok(accounts)
        } else {
            Err(problems)
        }
    }

    /// Every account whose agency the registry does not know, or whose coordinator role is not
    /// at the registry's coordinator agency; one message each, naming the account.
    pub fn check_against(&self, registry: &Registry) -> Vec<String> {
        self.accounts
            .values()
            .filter_map(|account| check_account(account, registry).err())
            .collect()
    }

    pub fn get(&self, username: &Username) -> Option<&Account> {
        self.accounts.get(username)
    }

    /// Every account, by username.
    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Adds `account`, refused if its username exists or (with a registry) its agency is
    /// unknown or its coordinator role is at another agency.
    pub fn add(
        &mut self,
        account: Account,
        registry: Option<&Registry>,
    ) -> Result<(), ChangeError> {
        if self.accounts.contains_key(&account.username) {
            return Err(ChangeError::Exists(account.username));
        }
        if let Some(registry) = registry {
            check_account(&account, registry).map_err(ChangeError::Registry)?;
        }
        self.accounts.insert(account.username.clone(), account);
        Ok(())
    }

    pub fn remove(&mut self, username: &Username) -> Result<Account, ChangeError> {
        self.accounts
            .remove(username)
            .ok_or_else(|| ChangeError::NotFound(username.clone()))
    }

    /// The file's text, as [`Accounts::parse`] reads it.
    pub fn to_toml(&self) -> String {
        let mut text = String::from(
            "# refbus dashboard operators (`refbus dashboard user add|remove|list`).\n\
             # Keep this file readable by its owner only (mode 0600): it holds password hashes.\n",
        );
        text.push_str(&format!(
            "\nformat = {}\n",
            RecordKind::OperatorAccounts.written()
        ));
        for account in self.accounts.values() {
            // Every value is a slug, a role name or a PHC string: nothing needs escaping, and
            // parsing what is written back is tested.
            text.push_str(&format!(
                "\n[[operator]]\nusername = \"{}\"\nagency = \"{}\"\nrole = \"{}\"\npassword_hash = \"{}\"\n",
                account.username,
                account.agency,
                account.role,
                account.password_hash.phc_string(),
            ));
        }
        text
    }

    /// Replaces `path` with these accounts: a new file (mode 0600) written beside it, synced,
    /// then renamed over it, so a reader sees the old file or the new one and a failure leaves
    /// the old one as it was. A command that read the file to change it holds a [`ChangeLock`]
    /// from before the read until after this.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), AccountsError> {
        let path = path.as_ref();
        let write_error = |source| AccountsError::Write {
            path: path.to_owned(),
            source,
        };
        let directory = directory_of(path);
        let file_name = path
            .file_name()
            .ok_or_else(|| write_error(io::Error::other("the path names no file")))?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|error| write_error(io::Error::other(error)))?;
        let temporary = directory.join(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            data_encoding::HEXLOWER.encode(&suffix)
        ));
        let result = (|| {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&temporary)?;
            file.write_all(self.to_toml().as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, path)?;
            // The rename is durable once the directory is.
            if let Ok(directory) = File::open(&directory) {
                let _ = directory.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result.map_err(write_error)
    }
}

fn check_account(account: &Account, registry: &Registry) -> Result<(), String> {
    check_placement(&account.username, &account.agency, account.role, registry)
}

/// Whether an operator `username` of `agency` in `role` fits the registry: her agency is one it
/// lists, and a coordinator belongs to the registry's coordinator agency.
pub fn check_placement(
    username: &Username,
    agency: &AgencyId,
    role: Role,
    registry: &Registry,
) -> Result<(), String> {
    let account = PlacementOf {
        username,
        agency,
        role,
    };
    if registry.agency(account.agency).is_none() {
        return Err(format!(
            "operator `{}`: unknown agency `{}`; the registry lists {}",
            account.username,
            account.agency,
            registry
                .agencies
                .keys()
                .map(AgencyId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if account.role == Role::Coordinator && *account.agency != registry.coordinator {
        return Err(format!(
            "operator `{}`: the coordinator role belongs to the coordinator's agency `{}`, not `{}` \
             (an agency's own operators are head, supervisor or viewer)",
            account.username, registry.coordinator, account.agency
        ));
    }
    Ok(())
}

struct PlacementOf<'a> {
    username: &'a Username,
    agency: &'a AgencyId,
    role: Role,
}

/// The text of a file only its owner may read.
fn read_private(path: &Path) -> Result<String, AccountsError> {
    let read_error = |source| AccountsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    if let Some(mode) = refbus_seal::exposed_mode(&file).map_err(read_error)? {
        return Err(AccountsError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(AccountsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

/// A new account with `password` hashed (argon2id, OWASP's parameters).
pub fn new_account(
    username: Username,
    agency: AgencyId,
    role: Role,
    password: &str,
) -> Result<Account, password::PasswordError> {
    Ok(Account {
        username,
        agency,
        role,
        password_hash: PasswordHash::hash(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        PasswordHash::hash("correct horse battery")
            .unwrap()
            .phc_string()
            .to_owned()
    }

    #[test]
    fn a_written_file_reads_back() {
        let mut accounts = Accounts::new();
        let account = new_account(
            Username::new("siti.dp3a").unwrap(),
            AgencyId::new("maros-dp3a").unwrap(),
            Role::Head,
            "correct horse battery",
        )
        .unwrap();
        accounts.add(account, None).unwrap();
        assert_eq!(Accounts::parse(&accounts.to_toml()).unwrap(), accounts);
    }

    #[test]
    fn the_file_names_its_format_and_one_without_is_format_1_an_unknown_one_refused() {
        let mut accounts = Accounts::new();
        let account = new_account(
            Username::new("siti.dp3a").unwrap(),
            AgencyId::new("maros-dp3a").unwrap(),
            Role::Head,
            "correct horse battery",
        )
        .unwrap();
        accounts.add(account, None).unwrap();
        let written = accounts.to_toml();
        assert!(written.contains("\nformat = 1\n"), "{written}");
        // Written before formats were recorded: no `format`, format 1.
        let legacy = written.replace("format = 1\n", "");
        assert_eq!(Accounts::parse(&legacy).unwrap(), accounts);
        // A newer refbus's file: refused at the line of its format, whatever else it holds.
        let newer = written
            .replace("format = 1", "format = 2")
            .replace("password_hash", "password_hashes");
        let problems = Accounts::parse(&newer).unwrap_err();
        assert_eq!(
            problems,
            vec![Problem {
                line: 4,
                message: "operators' accounts file format 2 is unknown; this refbus reads \
                          format 1; upgrade this reader before the writers \
                          (docs/ARCHITECTURE.md, \"Record formats and versions\")"
                    .to_owned(),
            }]
        );
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let hash = hash();
        let text = format!(
            "[[operator]]\nusername = \"siti\"\nagency = \"maros-dp3a\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n\
             \n[[operator]]\nusername = \"budi\"\nagency = \"maros-dinsos\"\nrole = \"head\"\npassword_hash = \"plaintext\"\n\
             \n[[operator]]\nusername = \"ani\"\nagency = \"maros-dinsos\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n\
             \n[[operator]]\nusername = \"ani\"\nagency = \"maros-dinsos\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n\
             \n[[operator]]\nusername = \"Ani Besar\"\nagency = \"Maros Dinsos\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n"
        );
        let problems = Accounts::parse(&text).unwrap_err();
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![4, 11, 19, 26, 27], "{problems:?}");
        assert!(problems[0].message.contains("unknown role `admin`"));
        assert!(
            problems[1].message.contains("not a PHC string"),
            "{problems:?}"
        );
        assert!(problems[2].message.contains("`ani` appears twice"));
        assert!(problems[3].message.contains("not a valid username"));
        assert!(problems[4].message.contains("not a valid agency id"));
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_refused_with_a_line() {
        let problems =
            Accounts::parse("[[operator]]\nusername = \"siti\"\npassword = \"x\"\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("password"), "{problems:?}");
        let problems = Accounts::parse("[[operator]\n").unwrap_err();
        assert_eq!(problems[0].line, 1);
    }

    #[test]
    fn only_argon2id_hashes_are_accepted() {
        for bad in [
            "",
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$2b$12$abcdefghijklmnopqrstuu5rXqPZ0ZfVVR7a6zZKQ0n7p6s8m6p6e",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
        assert!(PasswordHash::parse(&hash()).is_ok());
    }

    #[test]
    fn debug_output_never_shows_the_hash() {
        let account = new_account(
            Username::new("siti").unwrap(),
            AgencyId::new("maros-dp3a").unwrap(),
            Role::Head,
            "correct horse battery",
        )
        .unwrap();
        let mut accounts = Accounts::new();
        accounts.add(account.clone(), None).unwrap();
        for shown in [format!("{account:?}"), format!("{accounts:?}")] {
            assert!(
                shown.contains("siti") && shown.contains("PasswordHash(..)"),
                "{shown}"
            );
            assert!(!shown.contains("argon2"), "{shown}");
        }
    }

    #[test]
    fn roles_parse_by_name_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("Head".parse::<Role>().is_err());
        assert!("admin".parse::<Role>().is_err());
    }
}
