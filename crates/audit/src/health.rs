//! A rollout server's health endpoint, probed with a plain HTTP/1.1 GET over `std::net` (no HTTP
//! client dependency): connect and read timeouts, the status line is all that is read.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The server answered with a 2xx status line.
    Healthy(String),
    /// The server answered with another status.
    Unhealthy(String),
    /// No answer: the reason (refused, timed out, unresolvable, malformed reply).
    Unreachable(String),
    /// The URL cannot be probed by this client (e.g. `https`): the reason.
    NotProbed(String),
}

/// `GET <url><path>` with `timeout` for the connection and for the reply.
pub fn probe(url: &str, path: &str, timeout: Duration) -> Health {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Health::NotProbed(format!(
                "{scheme}:// is not probed: this build has no TLS client (only http://)"
            ));
        }
        None => {
            return Health::Unreachable(format!(
                "`{url}` is not a URL (expected http://HOST:PORT)"
            ));
        }
    };
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match split_host_port(authority) {
        Some(hp) => hp,
        None => {
            return Health::Unreachable(format!("`{url}` has no valid host and port"));
        }
    };
    let addrs = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Health::Unreachable(format!("cannot resolve {host}: {e}")),
    };
    let mut last = format!("{host} resolves to no address");
    for addr in addrs {
        let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => s,
            Err(e) => {
                last = format!("cannot connect to {addr}: {e}");
                continue;
            }
        };
        if stream.set_read_timeout(Some(timeout)).is_err()
            || stream.set_write_timeout(Some(timeout)).is_err()
        {
            last = format!("cannot set timeouts on the connection to {addr}");
            continue;
        }
        let request = format!(
            "GET {base}{path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: coordexp-audit\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        if let Err(e) = stream.write_all(request.as_bytes()) {
            last = format!("cannot send the request to {addr}: {e}");
            continue;
        }
        return match status_line(&mut stream) {
            Ok(line) => {
                let code = line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
                match code {
                    Some(c) if (200..300).contains(&c) => Health::Healthy(line),
                    Some(_) => Health::Unhealthy(line),
                    None => Health::Unreachable(format!("not an HTTP reply: {line:?}")),
                }
            }
            Err(e) => Health::Unreachable(format!("no reply from {addr}: {e}")),
        };
    }
    Health::Unreachable(last)
}

/// `host:port`, `[v6]:port`, or a host alone (port 80).
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let authority = authority.rsplit('@').next()?;
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None if !authority.is_empty() => Some((authority, 80)),
        None => None,
    }
}

/// The first line of the reply (at most 1 KiB).
fn status_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(128);
    let mut byte = [0u8; 256];
    while buf.len() < 1024 {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_host_port("127.0.0.1:8000"), Some(("127.0.0.1", 8000)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port("example"), Some(("example", 80)));
        assert_eq!(split_host_port("h:notaport"), None);
        assert_eq!(split_host_port(""), None);
    }

    #[test]
    fn https_and_garbage_are_not_probed_or_unreachable_never_a_panic() {
        let t = Duration::from_millis(200);
        assert!(matches!(probe("https://x:1", "/health", t), Health::NotProbed(_)));
        assert!(matches!(probe("nonsense", "/health", t), Health::Unreachable(_)));
        assert!(matches!(probe("http://:80", "/health", t), Health::Unreachable(_)));
    }
}
