//! `hivectl certs dev`: a development CA and the certificates a TLS setup
//! needs, made in-process (rcgen, ECDSA P-256), so compose files and tests
//! need no openssl. It writes, into `--dir`:
//!
//! - `ca.pem`, `ca-key.pem`: the CA (made unless `--ca-from` names one; an
//!   existing one is replaced only with `--force`);
//! - `server.pem`, `server-key.pem`: valid for localhost, 127.0.0.1, ::1
//!   and each `--host`;
//! - `client-NAME.pem`, `client-NAME-key.pem` for each `--client NAME`:
//!   client authentication, naming NAME (a worker's name or hostname).
//!
//! Keys are written mode 0600; every file is written to a temporary name
//! and renamed, so a coordinator reloading them never reads half a file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::output;

/// `hivectl certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a development CA, a server certificate and client certificates.
    Dev(DevArgs),
}

/// What `hivectl certs dev` makes.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Folder to write the files into (made if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Another name or address the server certificate is valid for
    /// (besides localhost, 127.0.0.1 and ::1); repeatable.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Make a client certificate naming NAME (a worker's name or hostname); repeatable.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Issue from the CA in this folder (its ca.pem and ca-key.pem) instead of making one.
    #[arg(long, value_name = "DIR")]
    pub ca_from: Option<PathBuf>,
    /// Replace a CA that is already in --dir.
    #[arg(long)]
    pub force: bool,
}

/// Common name of every development CA (issued certificates name it as their issuer).
const CA_NAME: &str = "Hive development CA";
/// Names the server certificate is always valid for.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Runs a `certs` subcommand.
///
/// # Errors
/// Files that cannot be read or written, an existing CA without `--force`,
/// a name a certificate cannot carry.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Dev(args) => {
            dev(&args)?;
            output::line(format!("certificates written to {}", args.dir.display()));
            Ok(())
        }
    }
}

/// Writes the files `args` asks for (see the module docs); prints nothing.
///
/// # Errors
/// As [`run`].
pub fn dev(args: &DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let ca = match &args.ca_from {
        Some(from) => {
            let ca = DevCa::load(from)?;
            if !same_folder(from, &args.dir) {
                refuse_to_replace_ca(args)?;
                write(&args.dir.join("ca.pem"), &ca.cert_pem, false)?;
            }
            ca
        }
        None => {
            refuse_to_replace_ca(args)?;
            let ca = DevCa::generate()?;
            write(&args.dir.join("ca.pem"), &ca.cert_pem, false)?;
            write(&args.dir.join("ca-key.pem"), &ca.key.serialize_pem(), true)?;
            ca
        }
    };
    let server_names: Vec<String> =
        LOCAL_NAMES.iter().map(|name| (*name).to_owned()).chain(args.hosts.clone()).collect();
    let common_name = args.hosts.first().map_or("localhost", String::as_str);
    ca.issue(&args.dir, "server", common_name, server_names, ExtendedKeyUsagePurpose::ServerAuth)?;
    for client in &args.clients {
        if client.is_empty() || client.contains(['/', '\0']) {
            bail!("--client `{client}`: a client name must be non-empty and hold no `/`");
        }
        let stem = format!("client-{client}");
        ca.issue(&args.dir, &stem, client, vec![client.clone()], ExtendedKeyUsagePurpose::ClientAuth)?;
    }
    Ok(())
}

fn refuse_to_replace_ca(args: &DevArgs) -> anyhow::Result<()> {
    let existing = args.dir.join("ca.pem");
    if existing.exists() && !args.force {
        bail!(
            "{} exists: pass --force to replace that CA (everything it issued stops being trusted), \
             or --ca-from {} to issue from it",
            existing.display(),
            args.dir.display()
        );
    }
    Ok(())
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A development CA: its certificate and the key it signs with.
struct DevCa {
    cert_pem: String,
    key: KeyPair,
}

impl DevCa {
    fn params() -> CertificateParams {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params
    }

    fn generate() -> anyhow::Result<Self> {
        let key = KeyPair::generate().context("generate the CA key")?;
        let cert_pem = Self::params().self_signed(&key).context("sign the CA certificate")?.pem();
        Ok(Self { cert_pem, key })
    }

    /// The CA that `hivectl certs dev` wrote into `dir`.
    fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
        };
        let cert_pem = read("ca.pem")?;
        let key = KeyPair::from_pem(&read("ca-key.pem")?)
            .with_context(|| format!("{}: not a PEM private key", dir.join("ca-key.pem").display()))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .with_context(|| format!("{}: not a PEM certificate", dir.join("ca.pem").display()))?;
        let public_key = key.subject_public_key_info();
        if !cert.windows(public_key.len()).any(|window| window == public_key.as_slice()) {
            bail!("{}: ca-key.pem is not the key of ca.pem", dir.display());
        }
        Ok(Self { cert_pem, key })
    }

    /// Writes `STEM.pem` and `STEM-key.pem`: a certificate for `names` (DNS
    /// names or IP addresses), named `common_name`, for `usage`.
    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        common_name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<()> {
        let mut params = CertificateParams::new(names).with_context(|| format!("names of {stem}.pem"))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generate a key")?;
        let issuer = Issuer::new(Self::params(), &self.key);
        let cert = params.signed_by(&key, &issuer).with_context(|| format!("sign {stem}.pem"))?;
        write(&dir.join(format!("{stem}-key.pem")), &key.serialize_pem(), true)?;
        write(&dir.join(format!("{stem}.pem")), &cert.pem(), false)
    }
}

/// Writes `contents` to `path` through a temporary file and a rename; mode 0600 when `private`.
fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> DevArgs {
        DevArgs { dir: dir.to_owned(), hosts: vec![], clients: vec![], ca_from: None, force: false }
    }

    #[test]
    fn a_ca_is_not_replaced_without_force_but_can_issue_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        dev(&DevArgs { clients: vec!["w1".into()], ..args(dir.path()) }).unwrap();
        for file in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client-w1.pem", "client-w1-key.pem"] {
            assert!(dir.path().join(file).is_file(), "{file}");
        }
        let mode = std::fs::metadata(dir.path().join("server-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();

        let err = dev(&args(dir.path())).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        dev(&DevArgs { ca_from: Some(dir.path().to_owned()), ..args(dir.path()) }).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca, "the CA stays");
        dev(&DevArgs { force: true, ..args(dir.path()) }).unwrap();
        assert_ne!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca, "--force makes a new CA");
    }

    #[test]
    fn a_ca_whose_key_does_not_match_is_refused() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        dev(&args(one.path())).unwrap();
        dev(&args(two.path())).unwrap();
        std::fs::copy(two.path().join("ca-key.pem"), one.path().join("ca-key.pem")).unwrap();
        let err = dev(&DevArgs { ca_from: Some(one.path().to_owned()), ..args(one.path()) }).unwrap_err();
        assert!(err.to_string().contains("is not the key of ca.pem"), "{err}");
    }
}
