//! How a client reaches a daemon: `http://` (plain HTTP/2) or `https://` (TLS, rustls). In: the
//! daemon's address and, for `https://`, an optional CA file (PEM; without one the system's
//! roots). Out: a tonic [`Endpoint`] for Flight and Flight SQL calls, and a rustls client
//! configuration for the SDK's own `DoPut` connections (see `put`). Both trust the same roots,
//! so every call of one client meets the same certificate check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The scheme of a daemon's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`: plain HTTP/2 (loopback, or a private network).
    Http,
    /// `https://`: TLS.
    Https,
}

impl Scheme {
    /// The scheme of `server` (`http://…` or `https://…`), or why it is neither.
    pub fn of(server: &str) -> Result<Scheme, String> {
        match server.split_once("://").map(|(s, _)| s) {
            Some("http") => Ok(Scheme::Http),
            Some("https") => Ok(Scheme::Https),
            Some(other) => Err(format!(
                "the scheme '{other}://' is not served: use http:// or https://"
            )),
            None => Err("the address needs a scheme: http://host:port or https://host:port".into()),
        }
    }
}

/// The TLS settings of a client: the roots it trusts. Made once per client (reading the CA file
/// then, so a missing or malformed file is an error before anything is sent).
#[derive(Clone)]
pub struct ClientTls {
    /// The CA file's PEM, when one was given (tonic's channel takes it as is).
    ca_pem: Option<Vec<u8>>,
    /// The rustls configuration of `DoPut` connections (ALPN h2).
    rustls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_pem.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Trusts the certificates of `ca_file` (PEM), or the system's roots when none is given.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, String> {
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        format!(
                            "the CA file {} is not PEM certificates: {e}",
                            path.display()
                        )
                    })?;
                if certs.is_empty() {
                    return Err(format!(
                        "the CA file {} holds no certificate (expected PEM 'BEGIN CERTIFICATE' blocks)",
                        path.display()
                    ));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "the CA file {} holds a bad certificate: {e}",
                            path.display()
                        )
                    })?;
                }
                Some(pem)
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "no CA file given and no system root certificates found: pass the daemon's CA file (--ca-file / LRID_CA_FILE)".into(),
                    );
                }
                None
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            ca_pem,
            rustls: Arc::new(config),
        })
    }

    /// The rustls configuration of the SDK's own connections.
    pub(crate) fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.rustls.clone()
    }

    fn tonic(&self) -> ClientTlsConfig {
        match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        }
    }
}

/// Where a client connects: the daemon's address and, for `https://`, its TLS settings.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `http://host:port` or `https://host:port`.
    pub server: String,
    /// Present exactly for `https://`.
    pub tls: Option<ClientTls>,
}

impl Remote {
    /// `server` with a scheme (`host:port` alone means `http://host:port`); `ca_file` is the
    /// CA that signed an `https://` daemon's certificate (ignored for `http://`).
    pub fn new(server: &str, ca_file: Option<&Path>) -> Result<Remote, String> {
        let server = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let tls = match Scheme::of(&server)? {
            Scheme::Http => None,
            Scheme::Https => Some(ClientTls::new(ca_file)?),
        };
        Ok(Remote { server, tls })
    }

    /// A tonic endpoint for Flight and Flight SQL calls (not connected yet).
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| format!("'{}' is not a server address: {e}", self.server))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        match &self.tls {
            None => Ok(endpoint),
            Some(tls) => endpoint
                .tls_config(tls.tonic())
                .map_err(|e| format!("TLS set-up for {} failed: {e}", self.server)),
        }
    }
}

/// Whether `e` (or an error it wraps) is a certificate the client does not trust: the caller's
/// to fix (give the daemon's CA file), not a network failure to retry.
pub fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && untrusted_certificate(inner)
        {
            return true;
        }
        at = e.source();
    }
    false
}

/// The hint a refused certificate gets.
pub const UNTRUSTED_HINT: &str = "the daemon's certificate is not trusted: give the CA file that signed it (--ca-file / LRID_CA_FILE)";

/// The CA file named by `LRID_CA_FILE`, when it is set and not empty: how processes started by
/// another (sweep workers, say) inherit the roots their parent trusts.
pub fn ca_file_from_env() -> Option<PathBuf> {
    std::env::var_os(CA_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The environment variable of the CA file (`--ca-file` of the command line).
pub const CA_FILE_ENV: &str = "LRID_CA_FILE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_http_or_https() {
        assert_eq!(Scheme::of("http://a:1").unwrap(), Scheme::Http);
        assert_eq!(Scheme::of("https://a:1").unwrap(), Scheme::Https);
        let e = Scheme::of("grpc+tls://a:1").unwrap_err();
        assert!(e.contains("'grpc+tls://'"), "{e}");
        assert!(Remote::new("127.0.0.1:5", None).unwrap().tls.is_none());
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = std::env::temp_dir().join(format!("lrid-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = Remote::new("https://127.0.0.1:1", Some(&missing)).unwrap_err();
        assert!(
            e.contains("cannot read the CA file") && e.contains("missing.pem"),
            "{e}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Remote::new("https://127.0.0.1:1", Some(&empty)).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        // A CA file is not read for plain HTTP.
        assert!(Remote::new("http://127.0.0.1:1", Some(&missing)).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
