//! A test CA and a server certificate for 127.0.0.1 (IP SAN) it signed, made with the
//! openssl CLI (ECDSA P-256, two days), for the tests of TLS peers (baresip, browsers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::run_bounded;

pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs `openssl args` in `dir` (bounded); panics with its output when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let (ok, out) = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(20),
    );
    assert!(ok, "openssl {args:?} failed:\n{out}");
}

/// Makes `ca.pem`/`ca.key` (subject `ca_name`) and `server.pem`/`server.key` in `dir`; the
/// server certificate's extended key usage is `eku` (e.g. "serverAuth,clientAuth").
pub fn make_test_ca(dir: &Path, ca_name: &str, eku: &str) -> TestCa {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let subj = format!("/CN={ca_name}");
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage={eku}\n"
        ),
    )
    .expect("write ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    TestCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}
