//! Serving the router over TCP, plain or TLS, so that no client can hold the server's
//! connections: a cap on open connections, overall and per peer address, a deadline for the TLS
//! handshake, and one for each request's headers (which also closes a keep-alive connection left
//! idle). Request deadlines are the router's ([`crate::http::router`]).
//!
//! The server speaks HTTP/1.1 only: its timeouts are the ones this module sets, and no second
//! protocol brings others.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::{rustls, TlsAcceptor};

/// How many connections the server holds, and how long it waits on each.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Open connections from one peer address at most (an IPv6 peer's address is its /64
    /// network, which one host usually has whole).
    pub max_connections_per_ip: usize,
    /// Time to send a request's headers, counted from the end of the previous response on a
    /// kept-alive connection (so it is also how long an idle connection stays open).
    pub header_timeout: Duration,
    /// Time to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_connections_per_ip: 512,
            header_timeout: Duration::from_secs(20),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// HTTPS: the coordinator's certificate chain and private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files (before the coordinator says it is listening).
    pub fn load(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let failed = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TLS certificate {} or key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                ),
            )
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| failed(&e))?;
        if chain.is_empty() {
            return Err(failed(&"the certificate file holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| failed(&e))?;
        // One crypto provider: ring, which reqwest uses too.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| failed(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Counts open connections, overall and by peer address; a [`Slot`] is one of them.
#[derive(Debug)]
struct Admission {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// An admitted connection; dropping it frees its place.
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().expect("admission lock");
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= self.limits.max_connections
            || from_ip >= self.limits.max_connections_per_ip
        {
            return None;
        }
        open.total += 1;
        open.by_ip.insert(ip, from_ip + 1);
        Some(Slot {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("admission lock");
        open.total -= 1;
        if let Some(count) = open.by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until the process ends: HTTPS with `tls`, else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
) -> io::Result<()> {
    let tls = tls.map(TlsAcceptor::from);
    let admission = Arc::new(Admission {
        limits,
        open: Mutex::default(),
    });
    let mut refused_since_logged = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: wait for connections to close rather
                // than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = admission.admit(peer_network(peer.ip())) else {
            refused_since_logged += 1;
            if refused_since_logged.is_power_of_two() {
                tracing::warn!(
                    "refused {refused_since_logged} connections over the limits (the latest from {peer})"
                );
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        let header_timeout = admission.limits.header_timeout;
        let handshake_timeout = admission.limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(TokioIo::new(stream), app, header_timeout, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), app, header_timeout, peer).await
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, app: Router, header_timeout: Duration, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service)
        .await;
    if let Err(e) = served {
        tracing::debug!("connection from {peer}: {e}");
    }
}

/// The address a peer's connections are counted under: an IPv4 address, or an IPv6 /64.
fn peer_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Errors of one incoming connection (it was reset before it was accepted), after which the
/// listener goes on.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Raises this process's limit on open files to the most it may have, so that the connection
/// caps, not the file limit, decide how many clients are served; returns the limit in effect.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_each_address_and_the_total() {
        let admission = Arc::new(Admission {
            limits: ConnectionLimits {
                max_connections: 3,
                max_connections_per_ip: 2,
                ..ConnectionLimits::default()
            },
            open: Mutex::default(),
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "a third from one address");
        let _third = admission.admit(b).unwrap();
        assert!(admission.admit(b).is_none(), "a fourth in all");
        drop(first);
        assert!(admission.admit(a).is_some(), "a place freed is taken again");
    }

    #[test]
    fn an_ipv6_peer_is_counted_by_its_network() {
        let network = |s: &str| peer_network(s.parse().unwrap());
        assert_eq!(network("2001:db8:1:2::5"), network("2001:db8:1:2:ffff::9"));
        assert_ne!(network("2001:db8:1:2::5"), network("2001:db8:1:3::5"));
        assert_eq!(network("::ffff:10.0.0.7"), network("10.0.0.7"));
        assert_eq!(network("10.0.0.7"), "10.0.0.7".parse::<IpAddr>().unwrap());
    }
}
