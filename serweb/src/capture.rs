//! The last SIP messages ser saw, from its capture files (`capture_file`: classic pcap,
//! Ethernet with zero MACs, synthesized IPv4/IPv6 and UDP headers, a stream message as one
//! TCP segment; see ser's src/capture.rs), for the admin's "last messages" page and the
//! ladder of one Call-ID. ser keeps no capture ring in memory that a tool could reach; the
//! files are the record it keeps, and serweb reads their tail.
//!
//! Only the last [`TAIL`] bytes of a file are read. In the middle of a file the first whole
//! record is found again by its shape (a record header whose lengths fit, then ser's 12 zero
//! MAC bytes and an IP ethertype) and accepted only when the records chain from there to the
//! end. A record cut short at the end (the writer flushing) is left out. Parsing takes bytes
//! and returns messages; only [`read`] touches files.

use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// Bytes read from the end of a capture file, at most.
pub const TAIL: u64 = 8 << 20;
/// Largest record accepted (ser's messages are at most 64 KiB plus headers).
const MAX_RECORD: usize = 262_144;
/// Bytes of a message's text kept for the page.
const MAX_TEXT: usize = 8192;

/// One captured SIP message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    /// Microseconds since the Unix epoch.
    pub micros: u64,
    /// `YYYY-MM-DD HH:MM:SS.mmm` UTC.
    pub time: String,
    pub src: String,
    pub dst: String,
    pub transport: &'static str,
    /// The request or status line.
    pub first_line: String,
    pub call_id: String,
    pub cseq: String,
    pub text: String,
}

fn u32_at(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

/// The byte order and time unit of a pcap global header: (big-endian, nanoseconds).
fn header(b: &[u8]) -> Option<(bool, bool)> {
    match b.get(..4)? {
        [0xd4, 0xc3, 0xb2, 0xa1] => Some((false, false)),
        [0xa1, 0xb2, 0xc3, 0xd4] => Some((true, false)),
        [0x4d, 0x3c, 0xb2, 0xa1] => Some((false, true)),
        [0xa1, 0xb2, 0x3c, 0x4d] => Some((true, true)),
        _ => None,
    }
}

/// Does a record that ser wrote start at `at`? (lengths that fit, zero MACs, IP ethertype)
fn looks_like_record(b: &[u8], at: usize, big: bool) -> bool {
    let (Some(incl), Some(orig)) = (u32_at(b, at + 8, big), u32_at(b, at + 12, big)) else {
        return false;
    };
    let incl = incl as usize;
    (34..=MAX_RECORD).contains(&incl)
        && incl as u32 <= orig
        && b.get(at + 16..at + 28)
            .is_some_and(|m| m.iter().all(|x| *x == 0))
        && matches!(b.get(at + 28..at + 30), Some([0x08, 0x00] | [0x86, 0xdd]))
}

/// Walks records from `at`; Some(end) when they chain to the end of `b` (a last record cut
/// short allowed).
fn chains(b: &[u8], mut at: usize, big: bool) -> bool {
    while at + 16 <= b.len() {
        if !looks_like_record(b, at, big) {
            return false;
        }
        let incl = u32_at(b, at + 8, big).unwrap_or(0) as usize;
        at += 16 + incl;
    }
    true
}

/// The messages of a whole pcap file's bytes, or of its tail (`whole` false: `b` starts
/// anywhere after the global header, whose byte order `big`/`nanos` gives).
pub fn parse(b: &[u8], whole: bool, big: bool, nanos: bool) -> Vec<Message> {
    let mut at = if whole { 24 } else { 0 };
    if !whole {
        match (0..b.len().saturating_sub(30))
            .find(|i| looks_like_record(b, *i, big) && chains(b, *i, big))
        {
            Some(i) => at = i,
            None => return Vec::new(),
        }
    }
    let mut out = Vec::new();
    while at + 16 <= b.len() {
        let (Some(secs), Some(frac), Some(incl)) = (
            u32_at(b, at, big),
            u32_at(b, at + 4, big),
            u32_at(b, at + 8, big),
        ) else {
            break;
        };
        let incl = incl as usize;
        let Some(frame) = b.get(at + 16..at + 16 + incl) else {
            break;
        };
        at += 16 + incl;
        let micros = u64::from(secs) * 1_000_000
            + if nanos {
                u64::from(frac) / 1000
            } else {
                u64::from(frac)
            };
        if let Some(m) = message(frame, micros) {
            out.push(m);
        }
    }
    out
}

/// One Ethernet frame → the SIP message it carries.
fn message(f: &[u8], micros: u64) -> Option<Message> {
    let ethertype = u16::from_be_bytes(f.get(12..14)?.try_into().ok()?);
    let ip = f.get(14..)?;
    let (src, dst, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                *ip.get(9)?,
                ip.get(ihl..)?,
            )
        }
        0x86dd => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                *ip.get(6)?,
                ip.get(40..)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes(l4.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
    let (transport, payload) = match proto {
        17 => ("UDP", l4.get(8..)?),
        6 => ("TCP", l4.get(usize::from(l4.get(12)? >> 4) * 4..)?),
        _ => return None,
    };
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX_TEXT)]).into_owned();
    let first_line = text.lines().next().unwrap_or_default().trim().to_string();
    if first_line.is_empty() {
        return None; // keep-alives
    }
    let header = |names: &[&str]| {
        text.lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                names
                    .iter()
                    .any(|n| k.trim().eq_ignore_ascii_case(n))
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let t = UNIX_EPOCH + Duration::from_micros(micros);
    Some(Message {
        micros,
        time: format!("{}.{:03}", ser::db::datetime(t), (micros / 1000) % 1000),
        // ser writes an IPv4 peer of an IPv6 socket as a mapped address: shown as IPv4.
        src: SocketAddr::new(src.to_canonical(), sport).to_string(),
        dst: SocketAddr::new(dst.to_canonical(), dport).to_string(),
        transport,
        call_id: header(&["call-id", "i"]),
        cseq: header(&["cseq"]),
        first_line,
        text: text.replace("\r\n", "\n"),
    })
}

/// The messages in the tail of one capture file (empty when it does not exist).
fn read_file(path: &Path) -> Result<Vec<Message>, String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut head = [0u8; 24];
    if f.read_exact(&mut head).is_err() {
        return Ok(Vec::new());
    }
    let (big, nanos) =
        header(&head).ok_or_else(|| format!("{} is not a pcap file", path.display()))?;
    if u32_at(&head, 20, big) != Some(1) {
        return Err(format!("{}: not an Ethernet capture", path.display()));
    }
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let whole = len <= TAIL + 24;
    let start = if whole { 0 } else { len - TAIL };
    f.seek(SeekFrom::Start(start))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut b = Vec::new();
    f.take(TAIL + 24)
        .read_to_end(&mut b)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(parse(&b, whole, big, nanos))
}

/// The last `keep` messages of ser's capture at `path` (and of `path.1` when the current file
/// holds fewer), oldest first.
pub fn read(path: &Path, keep: usize) -> Result<Vec<Message>, String> {
    let mut msgs = read_file(path)?;
    if msgs.len() < keep {
        let mut older = path.as_os_str().to_owned();
        older.push(".1");
        let mut prev = read_file(Path::new(&older))?;
        prev.append(&mut msgs);
        msgs = prev;
    }
    let skip = msgs.len().saturating_sub(keep);
    Ok(msgs.split_off(skip))
}

/// One row of a ladder diagram: an arrow from column `from` to column `to`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub from: usize,
    pub to: usize,
    pub label: String,
    pub time: String,
    pub text: String,
}

/// The ladder of some messages (one Call-ID), in time order: the parties (addresses, in order
/// of appearance) and one step per message.
pub fn ladder(msgs: &[&Message]) -> (Vec<String>, Vec<Step>) {
    let mut parties: Vec<String> = Vec::new();
    let col = |a: &str, parties: &mut Vec<String>| match parties.iter().position(|p| p == a) {
        Some(i) => i,
        None => {
            parties.push(a.to_string());
            parties.len() - 1
        }
    };
    let mut steps = Vec::new();
    for m in msgs {
        let from = col(&m.src, &mut parties);
        let to = col(&m.dst, &mut parties);
        let label = match m.first_line.strip_prefix("SIP/2.0 ") {
            Some(status) => status.to_string(),
            None => m
                .first_line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        steps.push(Step {
            from,
            to,
            label: format!("{label} ({})", m.transport),
            time: m.time.get(11..).unwrap_or(&m.time).to_string(),
            text: m.text.clone(),
        });
    }
    (parties, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ser's capture writer writes, read back: ser's own writer makes the file.
    #[test]
    fn reads_what_ser_writes() {
        let dir = std::env::temp_dir().join(format!("serweb-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sip.pcap");
        let cap = ser::capture::Capture::start(ser::capture::CaptureConfig {
            path: path.clone(),
            max_size: 10 << 20,
            files: 2,
        })
        .unwrap();
        let a: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let s: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "[::1]:5080".parse().unwrap();
        let invite = "INVITE sip:bob@x SIP/2.0\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n";
        cap.record(a, s, invite.as_bytes());
        cap.record_stream(s, b, invite.as_bytes());
        cap.record(
            s,
            a,
            b"SIP/2.0 486 Busy Here\r\ni: c1\r\nCSeq: 1 INVITE\r\n\r\n",
        );
        cap.record(a, s, b"\r\n\r\n");
        cap.close();
        let m = read(&path, 10).unwrap();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].first_line, "INVITE sip:bob@x SIP/2.0");
        assert_eq!(
            (m[0].src.as_str(), m[0].dst.as_str()),
            ("127.0.0.1:5070", "127.0.0.1:5060")
        );
        assert_eq!(m[1].transport, "TCP");
        assert_eq!(m[1].dst, "[::1]:5080");
        assert_eq!(m[2].call_id, "c1");
        assert_eq!(m[2].cseq, "1 INVITE");
        let refs: Vec<&Message> = m.iter().collect();
        let (parties, steps) = ladder(&refs);
        assert_eq!(parties.len(), 3);
        assert_eq!((steps[2].from, steps[2].to), (1, 0));
        assert_eq!(steps[2].label, "486 Busy Here (UDP)");

        // The tail of a file, from anywhere: the first whole record is found again.
        let bytes = std::fs::read(&path).unwrap();
        for cut in [24, 30, 77, 150] {
            let tail = parse(&bytes[cut..], false, false, false);
            assert!(
                tail.len() <= 3 && !tail.is_empty() || cut > 150,
                "cut {cut}"
            );
            assert_eq!(tail.last().unwrap().first_line, "SIP/2.0 486 Busy Here");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
