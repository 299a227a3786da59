use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

use super::*;

/// A CA made for one test, and the PEM files it issues into a temporary directory.
pub(crate) struct TestCa {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca_file: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// Issues a certificate for `names` (SANs) with subject CN `cn` (none if `None`);
    /// returns its certificate and key files.
    pub fn issue(&self, file_stem: &str, names: &[&str], cn: Option<&str>) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.path().join(format!("{file_stem}.pem"));
        let key_file = self.dir.path().join(format!("{file_stem}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

fn der(path: &Path) -> CertificateDer<'static> {
    certificates(path, "--test").unwrap().remove(0)
}

#[test]
fn identity_is_the_cn_else_the_first_dns_name() {
    let ca = TestCa::new();
    let check = |names: &[&str], cn: Option<&str>, expected: Option<&str>| {
        let (cert, _) = ca.issue("c", names, cn);
        assert_eq!(
            identity(&der(&cert)).as_deref(),
            expected,
            "{names:?} {cn:?}"
        );
    };
    check(&["alice.example"], Some("alice"), Some("alice"));
    check(&["bob.example", "other.example"], None, Some("bob.example"));
    check(&["127.0.0.1"], None, None);
    check(&[], Some("Zoë"), Some("Zoë"));
}

#[test]
fn der_take_refuses_what_overruns_its_input() {
    assert_eq!(
        der_take(&[0x30, 0x02, 1, 2, 3], 0x30),
        Some((&[1u8, 2][..], &[3u8][..]))
    );
    assert_eq!(der_take(&[0x30, 0x03, 1, 2], 0x30), None);
    assert_eq!(
        der_take(&[0x30, 0x81, 0x01, 9], 0x30),
        Some((&[9u8][..], &[][..]))
    );
    assert_eq!(der_take(&[0x30, 0x85, 0, 0, 0, 0, 1], 0x30), None);
    assert_eq!(der_take(&[0x31, 0x00], 0x30), None);
    assert_eq!(der_take(&[], 0x30), None);
    assert_eq!(common_name(&[0x31, 0x05, 0x30, 0x09]), None);
}
