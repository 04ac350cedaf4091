//! Certificates for relays: one CA for the cluster and one certificate per node, all for the
//! fixed name [`SERVER_NAME`](super::link::SERVER_NAME) (nodes are dialled by IP; the CA says
//! who belongs). For tests, the demo, and IT staff setting up a cluster without a PKI.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::link::SERVER_NAME;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("node name {0:?} cannot name a file: use letters, digits, '-', '_' and '.'")]
    BadNodeName(String),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n != "ca"
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

/// Writes into `dir` (created if missing) `ca.pem` (the CA certificate; its key is not kept,
/// so adding a node later means a new CA for all) and, per node, `<node>.pem` and `<node>.key`.
pub fn generate(dir: &Path, nodes: &[&str]) -> Result<(), CertError> {
    if let Some(bad) = nodes.iter().find(|n| !valid_name(n)) {
        return Err(CertError::BadNodeName(bad.to_string()));
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "classroom SFU cluster CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    let issuer = Issuer::new(ca, ca_key);

    for node in nodes {
        let mut p = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, *node);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node both accepts relays (server) and opens them (client).
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        write(&dir.join(format!("{node}.pem")), &cert.pem(), false)?;
        write(&dir.join(format!("{node}.key")), &key.serialize_pem(), true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ca_and_node_files_and_refuses_path_like_names() {
        let dir = std::env::temp_dir().join(format!("sfu-certs-{}", std::process::id()));
        generate(&dir, &["node-a", "node_b.1"]).unwrap();
        for f in [
            "ca.pem",
            "node-a.pem",
            "node-a.key",
            "node_b.1.pem",
            "node_b.1.key",
        ] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{f}: {text}");
        }
        let tls = crate::cluster::link::RelayTls {
            cert: dir.join("node-a.pem"),
            key: dir.join("node-a.key"),
            ca: dir.join("ca.pem"),
        };
        assert!(tls.load().is_ok());
        for bad in ["../x", "", "a/b", "ca", ".hidden"] {
            assert!(
                matches!(generate(&dir, &[bad]), Err(CertError::BadNodeName(_))),
                "{bad:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loader_names_the_missing_or_bad_file() {
        let dir = std::env::temp_dir().join(format!("sfu-certs-bad-{}", std::process::id()));
        generate(&dir, &["n"]).unwrap();
        let missing = crate::cluster::link::RelayTls {
            cert: dir.join("n.pem"),
            key: dir.join("nope.key"),
            ca: dir.join("ca.pem"),
        };
        let e = missing.load().unwrap_err().to_string();
        assert!(e.contains("nope.key"), "{e}");
        std::fs::write(dir.join("junk.pem"), "hello").unwrap();
        let junk = crate::cluster::link::RelayTls {
            cert: dir.join("n.pem"),
            key: dir.join("n.key"),
            ca: dir.join("junk.pem"),
        };
        let e = junk.load().unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
