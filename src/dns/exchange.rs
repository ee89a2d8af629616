//! One DNS query to the configured name servers: over a connected UDP socket (random id,
//! resent within the timeout, the answer's id and question checked), then over TCP when the
//! answer is truncated; each server in turn until one answers NOERROR or NXDOMAIN.
//!
//! It does not cache or interpret the records (that is [`super::cache`]); a malformed or
//! mismatched datagram is ignored as if it had not arrived. Key types: [`ExchangeError`] (why
//! one server gave no answer), [`UdpOutcome`].

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::wire::{decode_response, encode_query, Response};
use super::{display_name, DnsError, Resolver};

/// The EDNS UDP payload size we advertise (the DNS flag day 2020 value: no IP fragmentation).
const EDNS_PAYLOAD: u16 = 1232;
/// Receive buffer for one UDP answer: larger than anything we advertise.
const UDP_BUF: usize = 4096;
/// How many times one UDP query is sent within its timeout (evenly spaced).
const UDP_SENDS: u32 = 3;

/// Why one exchange with one server gave no answer.
enum ExchangeError {
    Timeout,
    Io(io::Error),
    Malformed,
    /// Our own query could not be encoded (a label over 63 bytes).
    Encode,
}

impl Resolver {
    /// Asks each server in turn until one answers NOERROR or NXDOMAIN.
    pub(super) fn ask(&self, name: &Name, rtype: RecordType) -> Result<Response, DnsError> {
        let shown = display_name(name);
        let mut worst: Option<DnsError> = None;
        for &server in &self.servers {
            let err = match self.exchange(server, name, rtype) {
                Ok(msg) => match msg.rcode {
                    ResponseCode::NoError | ResponseCode::NXDomain => return Ok(msg),
                    rcode => DnsError::ServerFailure {
                        name: shown.clone(),
                        rcode: rcode.to_string(),
                    },
                },
                Err(ExchangeError::Timeout) => DnsError::Timeout(shown.clone()),
                Err(ExchangeError::Malformed) => DnsError::Malformed(shown.clone()),
                Err(ExchangeError::Io(e)) => DnsError::Io {
                    name: shown.clone(),
                    error: format!("name server {server}: {e}"),
                },
                Err(ExchangeError::Encode) => return Err(DnsError::InvalidName(shown)),
            };
            let worse = match &worst {
                Some(w) => err.rank() > w.rank(),
                None => true,
            };
            if worse {
                worst = Some(err);
            }
        }
        Err(worst.unwrap_or(DnsError::NoServers(shown)))
    }

    /// One query to one server: UDP, then TCP when the answer is truncated.
    fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Response, ExchangeError> {
        let id: u16 = rand::random();
        let query = encode_query(id, name, rtype, EDNS_PAYLOAD).ok_or(ExchangeError::Encode)?;
        let deadline = Instant::now() + self.timeout;
        match udp_exchange(server, &query, id, name, rtype, deadline) {
            Ok(msg) if !msg.truncated => Ok(msg),
            Ok(truncated) => {
                let deadline = Instant::now() + self.timeout;
                // Whatever TCP gives is complete; if it gives nothing, keep what UDP gave.
                Ok(tcp_exchange(server, &query, id, name, rtype, deadline).unwrap_or(truncated))
            }
            Err(UdpOutcome::TruncatedUnparsable) => {
                let deadline = Instant::now() + self.timeout;
                tcp_exchange(server, &query, id, name, rtype, deadline)
                    .map_err(|_| ExchangeError::Malformed)
            }
            Err(UdpOutcome::Failed(e)) => Err(e),
        }
    }
}

enum UdpOutcome {
    /// Our answer, with TC set, cut where it cannot be decoded: go to TCP.
    TruncatedUnparsable,
    Failed(ExchangeError),
}

/// Whether `msg` answers our query: same id, a response to a standard query, same question.
fn answers_query(msg: &Response, id: u16, name: &Name, rtype: RecordType) -> bool {
    msg.id == id
        && msg.is_response
        && msg.op_code == 0
        && msg.questions.len() == 1
        && msg.questions[0].name.eq_ignore_root(name)
        && msg.questions[0].qtype == rtype
        && msg.questions[0].qclass == DNSClass::IN
}

fn io_to_exchange(e: io::Error) -> ExchangeError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ExchangeError::Timeout,
        _ => ExchangeError::Io(e),
    }
}

fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Response, UdpOutcome> {
    let fail = |e: io::Error| UdpOutcome::Failed(io_to_exchange(e));
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(fail)?;
    // Connected: the kernel drops datagrams from anyone but the server, and reports ICMP
    // port unreachable as ECONNREFUSED instead of leaving us to time out.
    socket.connect(server).map_err(fail)?;
    socket.send(query).map_err(fail)?;
    // A lost query or answer should not cost the whole timeout: the query is sent again after
    // a third of it, twice at most (same id, so a late answer to the first copy still counts).
    let start = Instant::now();
    let resend_every = deadline.saturating_duration_since(start) / UDP_SENDS;
    let mut sent = 1u32;
    let mut buf = vec![0u8; UDP_BUF];
    let mut saw_malformed = false;
    loop {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(UdpOutcome::Failed(if saw_malformed {
                ExchangeError::Malformed
            } else {
                ExchangeError::Timeout
            }));
        }
        let next_send = start + resend_every * sent;
        if sent < UDP_SENDS && now >= next_send {
            socket.send(query).map_err(fail)?;
            sent += 1;
            continue;
        }
        let wait = if sent < UDP_SENDS {
            left.min(next_send.saturating_duration_since(now))
        } else {
            left
        };
        socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(fail)?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(fail(e)),
        };
        let datagram = &buf[..n];
        match decode_response(datagram) {
            Ok(msg) if answers_query(&msg, id, name, rtype) => return Ok(msg),
            // Someone else's answer (a late one to an earlier query, or a spoof): keep waiting.
            Ok(_) => {}
            Err(_) => {
                if is_truncated_answer_to(datagram, id) {
                    return Err(UdpOutcome::TruncatedUnparsable);
                }
                saw_malformed = true;
            }
        }
    }
}

/// From the raw header: our id, QR set, TC set.
fn is_truncated_answer_to(datagram: &[u8], id: u16) -> bool {
    datagram.len() >= 12
        && u16::from_be_bytes([datagram[0], datagram[1]]) == id
        && datagram[2] & 0x80 != 0
        && datagram[2] & 0x02 != 0
}

/// DNS over TCP (RFC 1035 4.2.2, RFC 7766): the query and the answer, each after a two-byte
/// length.
fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Response, ExchangeError> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ExchangeError::Timeout)
        } else {
            Ok(left)
        }
    };
    let mut stream = TcpStream::connect_timeout(&server, left()?).map_err(io_to_exchange)?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(io_to_exchange)?;
    let len = u16::try_from(query.len()).map_err(|_| ExchangeError::Encode)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(io_to_exchange)?;
    let mut len = [0u8; 2];
    read_exact_by(&mut stream, &mut len, deadline)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_exact_by(&mut stream, &mut answer, deadline)?;
    match decode_response(&answer) {
        Ok(msg) if answers_query(&msg, id, name, rtype) => Ok(msg),
        _ => Err(ExchangeError::Malformed),
    }
}

/// `read_exact` that gives up at `deadline`, however slowly the bytes trickle in.
fn read_exact_by(
    stream: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), ExchangeError> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(io_to_exchange)?;
        match stream.read(buf) {
            Ok(0) => return Err(ExchangeError::Malformed),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_to_exchange(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_an_answer() {
        assert!(decode_response(&[0xff; 7]).is_err());
        assert!(!is_truncated_answer_to(&[0x12, 0x34, 0x83, 0, 0], 0x1234));
        assert!(is_truncated_answer_to(
            &[0x12, 0x34, 0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
        assert!(!is_truncated_answer_to(
            &[0x12, 0x35, 0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
    }
}
