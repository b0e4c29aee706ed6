//! `refbus keys`: an agency's keys for sealed identity data and signed records: made, rotated,
//! backed up, and used to recover what was sealed for the agency when its online key is lost.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use refbus_core::signature::Signer;
use refbus_core::{AgencyId, ReferralId};
use refbus_seal::signing::signing_key_file_name;
use refbus_seal::{Context, KeyPair, PublicKey, SecretKey};

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Subcommand)]
// Parsed once per run: the size of the variant carrying NATS flags costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum KeysCommand {
    /// Generate an agency's keys: the sealing key pair `<agency>.key` (secret, mode 0600, never
    /// overwritten) and `<agency>.pub`, and the signing key pair `<agency>.sign.key` and
    /// `<agency>.sign.pub`, in DIR; print the public keys, with their fingerprints, for the
    /// registry.
    Generate {
        /// The agency the keys are for, as in the registry (e.g. maros-dinsos).
        #[arg(long)]
        agency: String,
        /// Where to write the key files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Generate the router's signing key pair: `router.sign.key` (secret, mode 0600, never
    /// overwritten) and `router.sign.pub` in DIR; print the public key for the registry.
    GenerateRouter {
        /// Where to write the key files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Generate the notary's checkpoint key: FILE (secret, signed-note format, mode 0600,
    /// never overwritten) and FILE with the extension `.vkey` (the verifier key auditors and
    /// witnesses are given).
    GenerateNotary {
        /// The key's name: the log's origin (e.g. refbus.maros.go.id/log).
        #[arg(long)]
        name: String,
        /// The secret key file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Generate a witness's cosigning key (C2SP cosignature/v1): FILE (secret, mode 0600) and
    /// FILE with the extension `.vkey`.
    GenerateWitness {
        /// The witness's name (e.g. inspektorat.maros.go.id/witness).
        #[arg(long)]
        name: String,
        /// The secret key file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Generate an agency's backup sealing key pair: `<agency>.backup.key` (secret, mode 0600)
    /// and `<agency>.backup.pub` in DIR. The agency head keeps the secret file offline (on
    /// removable media in a safe, never on the adapter's machine); the registry lists the
    /// public key as `backup_public_key`, and everything sealed for the agency from then on is
    /// also wrapped for it, so a lost online key loses nothing (`refbus keys recover`).
    GenerateBackup {
        /// The agency the key is for.
        #[arg(long)]
        agency: String,
        /// Where to write the key files (removable media, not the adapter's disk).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Rotate an agency's keys in DIR: the current sealing key becomes
    /// `<agency>.<key id>.old.key` (the adapter keeps opening what was sealed for it), the
    /// current signing key `<agency>.sign.<key id>.old.key`, and new ones take their names.
    /// Prints the registry lines: the new public key, and the signing keys new and old (readers
    /// must keep accepting the old one for the records it signed). The adapter uses the key the
    /// registry lists for new seals, so the files may be rotated before the registry changes;
    /// restart the adapter after both.
    Rotate {
        /// The agency whose keys rotate.
        #[arg(long)]
        agency: String,
        /// The directory holding `<agency>.key` (the adapter's --key directory).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Open, with an agency's backup key, everything sealed for the agency on one referral
    /// (identity, notes, consent justification), and write it to a new file readable by its
    /// owner only. An offline administrator's tool for when the online key is lost: run it on
    /// a trusted machine with the backup key brought from its safe, hand the file to the case
    /// worker who needs it, then destroy the file; rotate the online key
    /// (`refbus keys rotate`, or `generate` into a new directory) so new referrals are sealed
    /// for a key the agency holds. Nothing is written to the bus.
    Recover {
        /// The agency whose backup key this is.
        #[arg(long)]
        agency: String,
        /// The backup secret key (`<agency>.backup.key`).
        #[arg(long, value_name = "FILE")]
        backup_key: PathBuf,
        /// The referral to open.
        #[arg(long)]
        referral: String,
        /// Where to write what was opened (JSON lines); must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The deployment's registry.
        #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
        config: PathBuf,
        /// A directory of `<name>.sign.pub` and `<agency>.backup.pub` files, for keys the
        /// registry does not list.
        #[arg(long, value_name = "DIR")]
        public_keys: Option<PathBuf>,
        #[command(flatten)]
        nats: runtime::NatsArgs,
    },
}

/// `generate-notary` and `generate-witness`: a signed-note key and its verifier key.
fn generate_note_key(
    name: &str,
    out: &std::path::Path,
    kind: refbus_notary::note::KeyKind,
) -> anyhow::Result<ExitCode> {
    let key = refbus_notary::note::NoteKey::write_new(out, name, kind)?;
    println!("secret key:   {}", out.display());
    println!("verifier key: {}", key.verifier_key());
    println!("(also in {})", out.with_extension("vkey").display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::GenerateNotary { name, out } => {
            generate_note_key(&name, &out, refbus_notary::note::KeyKind::Notary)
        }
        KeysCommand::GenerateWitness { name, out } => {
            generate_note_key(&name, &out, refbus_notary::note::KeyKind::Witness)
        }
        KeysCommand::GenerateRouter { out } => {
            let signer = Signer::Router;
            let public = runtime::generate_signing_key(&out, &signer)?;
            println!(
                "secret key: {}",
                out.join(signing_key_file_name(&signer)).display()
            );
            println!("key id:     {}", public.id());
            println!();
            println!("Put this line in the registry's [deployment] table:");
            println!(
                "router_signing_keys = [\"{} {}\"]",
                public.to_base64(),
                public.id()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Generate { agency, out } => {
            let agency = agency_id(&agency)?;
            let (public, signing) = runtime::generate_keys(&out, &agency)?;
            println!(
                "secret key: {}",
                out.join(refbus_seal::secret_key_file_name(&agency))
                    .display()
            );
            println!("key id:     {}", public.key_id());
            println!();
            println!("Put these lines in the registry, in the [[agency]] table of {agency}:");
            println!("public_key = \"{}\"", fingerprinted(&public));
            println!(
                "signing_keys = [\"{} {}\"]",
                signing.to_base64(),
                signing.id()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::GenerateBackup { agency, out } => {
            let agency = agency_id(&agency)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let pair = KeyPair::generate();
            let secret = out.join(format!("{agency}.backup.key"));
            pair.write_secret(&secret)?;
            std::fs::write(
                runtime::backup_public_key_file(&out, &agency),
                format!("{}\n", pair.public().to_base64()),
            )?;
            println!("backup secret key: {} (keep it offline)", secret.display());
            println!("key id:            {}", pair.public().key_id());
            println!();
            println!("Put this line in the registry, in the [[agency]] table of {agency}:");
            println!("backup_public_key = \"{}\"", fingerprinted(pair.public()));
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate { agency, dir } => rotate(&agency_id(&agency)?, &dir),
        KeysCommand::Recover {
            agency,
            backup_key,
            referral,
            out,
            config,
            public_keys,
            nats,
        } => {
            let agency = agency_id(&agency)?;
            let referral: ReferralId = referral
                .parse()
                .map_err(|err| UsageError(format!("--referral: {err}")))?;
            recover(
                &agency,
                &backup_key,
                &referral,
                &out,
                &config,
                public_keys.as_deref(),
                &nats,
            )
        }
    }
}

fn agency_id(text: &str) -> anyhow::Result<AgencyId> {
    Ok(AgencyId::new(text).map_err(|err| UsageError(err.to_string()))?)
}

/// `<base64> <key id>`: a key as the registry holds it, with the fingerprint `config check`
/// verifies.
fn fingerprinted(key: &PublicKey) -> String {
    format!("{} {}", key.to_base64(), key.key_id())
}

// === rotate ===

fn rotate(agency: &AgencyId, dir: &Path) -> anyhow::Result<ExitCode> {
    let current = dir.join(refbus_seal::secret_key_file_name(agency));
    let old = SecretKey::from_file(&current).with_context(|| {
        format!("the current key of {agency} (rotate needs `refbus keys generate` first)")
    })?;
    let old_public = old.public_key().clone();
    let retired = dir.join(runtime::earlier_key_file_name(agency, &old_public));
    move_aside(&current, &retired)?;
    let pair = KeyPair::generate();
    pair.write_secret(&current)?;
    std::fs::write(
        runtime::public_key_file(dir, agency),
        format!("{}\n", pair.public().to_base64()),
    )?;

    let signer = Signer::Agency(agency.clone());
    let signing_file = dir.join(signing_key_file_name(&signer));
    let mut signing_lines = Vec::new();
    if signing_file.exists() {
        let old_signing = runtime::signing_key(&signing_file, signer.clone())?.verifying_key();
        let retired_signing = dir.join(format!("{agency}.sign.{}.old.key", old_signing.id()));
        move_aside(&signing_file, &retired_signing)?;
        let new_signing = runtime::generate_signing_key(dir, &signer)?;
        signing_lines.push(format!("{} {}", new_signing.to_base64(), new_signing.id()));
        signing_lines.push(format!("{} {}", old_signing.to_base64(), old_signing.id()));
        println!(
            "signing key: {} (the old one kept as {})",
            new_signing.id(),
            retired_signing.display()
        );
    } else {
        println!(
            "signing key: none in {} (`refbus keys generate` makes one)",
            dir.display()
        );
    }
    println!(
        "sealing key: {} (the old one, {}, kept as {})",
        pair.public().key_id(),
        old_public.key_id(),
        retired.display()
    );
    println!();
    println!("In the registry, in the [[agency]] table of {agency}:");
    println!("public_key = \"{}\"", fingerprinted(pair.public()));
    if !signing_lines.is_empty() {
        println!(
            "signing_keys = [{}]",
            signing_lines
                .iter()
                .map(|line| format!("\"{line}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("(keep any earlier signing keys listed after these: old records stay verifiable)");
    }
    println!();
    println!(
        "Then restart {agency}'s adapter: it seals with the key the registry lists and opens \
         with every key in {}.",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Renames a secret key file to `to`, refusing to replace anything there.
fn move_aside(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        bail!(
            "{} already exists; refbus never overwrites a secret key",
            to.display()
        );
    }
    std::fs::rename(from, to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

// === recover ===

fn recover(
    agency: &AgencyId,
    backup_key: &Path,
    referral: &ReferralId,
    out: &Path,
    config: &Path,
    public_keys: Option<&Path>,
    nats: &runtime::NatsArgs,
) -> anyhow::Result<ExitCode> {
    runtime::init_tracing();
    let registry = runtime::load_registry(config)?;
    if registry.agency(agency).is_none() {
        return Err(
            UsageError(format!("{agency} is not an agency of {}", config.display())).into(),
        );
    }
    let backup =
        SecretKey::from_file(backup_key).with_context(|| format!("the backup key of {agency}"))?;
    let directory = runtime::public_keys(&registry, public_keys)?;
    match directory.backup.get(agency) {
        Some(listed) if listed != backup.public_key() => bail!(
            "{} holds key {}, but the backup key listed for {agency} is {}",
            backup_key.display(),
            backup.public_key().key_id(),
            listed.key_id()
        ),
        Some(_) => {}
        None => tracing::warn!(
            "no backup key is listed for {agency}: only payloads sealed while one was listed \
             are wrapped for it"
        ),
    }
    let signers = runtime::signers(&registry, public_keys)?;
    let verifier = refbus_bus::Verifier::new(
        registry.clone(),
        std::sync::Arc::new(signers),
        Some(refbus_core::integrity::DEFAULT_MAX_SKEW),
    );
    // Created first and empty, so nothing is read when the file cannot be written.
    let mut file = new_private_file(out)?;
    let secrets = [backup];
    let (opened, closed) = tokio::runtime::Runtime::new()?.block_on(async {
        let bus = nats.connect(Some(agency.clone())).await?;
        let mut lines = Vec::new();
        let mut closed = 0usize;
        let mut found = false;
        for pattern in refbus_bus::subjects::referral_patterns_for(agency, referral) {
            for subject in bus.checked_subjects(&verifier, &pattern).await? {
                found = true;
                for stored in bus.checked_history(&verifier, &subject).await? {
                    let event = serde_json::to_value(&stored.record.event)?;
                    let mut payloads = Vec::new();
                    sealed_payloads(&event, "event", &mut payloads);
                    for (field, payload) in payloads {
                        match open_payload(&payload, agency, &secrets, referral) {
                            Some(value) => lines.push(serde_json::json!({
                                "referral": referral.to_string(),
                                "event_seq": stored.record.event.seq,
                                "field": field,
                                "opened": value,
                            })),
                            None => closed += 1,
                        }
                    }
                }
            }
        }
        if !found {
            bail!("no referral {referral} of {agency} on the bus");
        }
        anyhow::Ok((lines, closed))
    })?;
    for line in &opened {
        writeln!(file, "{line}")?;
    }
    file.sync_all()?;
    println!(
        "opened {} sealed payloads of referral {referral} with the backup key of {agency}; \
         written to {} (mode 0600: hand it over, then destroy it)",
        opened.len(),
        out.display()
    );
    if closed > 0 {
        println!(
            "{closed} sealed payloads could not be opened with this key (sealed before the \
             backup key was listed, or not for {agency})"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A new file only its owner can read; never an existing one.
fn new_private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}

/// Every sealed payload in an event's JSON (an object with `recipients` and `envelope`), with
/// its path: whatever the event, nothing sealed is missed.
fn sealed_payloads(
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<(String, refbus_core::referral::SealedPayload)>,
) {
    match value {
        serde_json::Value::Object(map) => {
            if map.contains_key("recipients") && map.contains_key("envelope") {
                if let Ok(payload) = serde_json::from_value(value.clone()) {
                    out.push((path.to_owned(), payload));
                }
                return;
            }
            for (key, child) in map {
                sealed_payloads(child, &format!("{path}.{key}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                sealed_payloads(child, &format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

/// Opens a payload with the backup key: an identity as its fields, text as text.
fn open_payload(
    payload: &refbus_core::referral::SealedPayload,
    agency: &AgencyId,
    secrets: &[SecretKey],
    referral: &ReferralId,
) -> Option<serde_json::Value> {
    use prost::Message as _;
    let contexts = [
        Context::Identity(referral),
        Context::Note(referral),
        Context::Justification(referral),
    ];
    let (context, plaintext) =
        refbus_seal::open_in_contexts(payload, agency, secrets, &contexts).ok()?;
    Some(match context {
        Context::Identity(_) => {
            let identity = refbus_proto::v1::ClientIdentity::decode(plaintext.as_slice()).ok()?;
            serde_json::json!({
                "identity": {
                    "full_name": identity.full_name,
                    "nik": identity.nik,
                    "birth_date": identity.birth_date,
                    "sex": identity.sex,
                    "address": identity.address,
                    "phone": identity.phone,
                    "narrative": identity.narrative,
                    "guardian_name": identity.guardian_name,
                }
            })
        }
        Context::Note(_) => serde_json::json!({ "note": String::from_utf8_lossy(&plaintext) }),
        Context::Justification(_) => serde_json::json!({
            "consent_override_justification": String::from_utf8_lossy(&plaintext)
        }),
    })
}
