use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: proxy.example.org\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn sip_upgrade() -> String {
    upgrade("Sec-WebSocket-Protocol: sip\r\nOrigin: https://phone.example.org\r\n")
}

/// A client frame: masked, as RFC 6455 §5.3 requires of clients.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

struct Run {
    out: Vec<u8>,
    msgs: Vec<(usize, usize)>,
    write: Vec<u8>,
}

impl Run {
    fn messages(&self) -> Vec<&[u8]> {
        self.msgs.iter().map(|&(a, b)| &self.out[a..b]).collect()
    }
    fn written(&self) -> String {
        String::from_utf8_lossy(&self.write).into_owned()
    }
}

fn feed(ws: &mut WsConn, data: &[u8], s: &WsSettings) -> (Run, Result<(), WsError>) {
    let mut r = Run {
        out: Vec::new(),
        msgs: Vec::new(),
        write: Vec::new(),
    };
    let res = ws.feed(
        data,
        Instant::now(),
        s,
        &mut r.out,
        &mut r.msgs,
        &mut r.write,
    );
    (r, res)
}

fn open() -> WsConn {
    let mut ws = WsConn::new(65535);
    let (r, res) = feed(&mut ws, sip_upgrade().as_bytes(), &WsSettings::default());
    assert_eq!(res, Ok(()));
    assert!(ws.is_open());
    assert!(r.written().starts_with("HTTP/1.1 101 "), "{}", r.written());
    ws
}

#[test]
fn upgrade_answers_101_with_the_rfc_accept_key() {
    let mut ws = WsConn::new(65535);
    let req = sip_upgrade();
    // In two pieces: nothing until the head is whole.
    let (r, res) = feed(&mut ws, &req.as_bytes()[..40], &WsSettings::default());
    assert_eq!(res, Ok(()));
    assert!(r.write.is_empty() && !ws.is_open());
    assert!(ws.incomplete_since().is_some());
    // The rest, with a first message right behind it.
    let mut rest = req.as_bytes()[40..].to_vec();
    rest.extend(client_frame(true, 1, b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
    let (r, res) = feed(&mut ws, &rest, &WsSettings::default());
    assert_eq!(res, Ok(()));
    let w = r.written();
    assert!(w.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{w}");
    // RFC 6455 §1.3's example key and answer.
    assert!(
        w.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{w}"
    );
    assert!(w.contains("Sec-WebSocket-Protocol: sip\r\n"), "{w}");
    assert_eq!(r.messages(), vec![&b"OPTIONS sip:x SIP/2.0\r\n\r\n"[..]]);
    assert!(ws.incomplete_since().is_none());
}

#[test]
fn upgrades_that_are_not_for_sip_are_refused_with_http_errors() {
    let cases: Vec<(String, u16)> = vec![
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(), 426),
        (upgrade(""), 400),
        (upgrade("Sec-WebSocket-Protocol: chat, superchat\r\n"), 400),
        (
            sip_upgrade().replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            426,
        ),
        (sip_upgrade().replace(KEY, "short=="), 400),
        (sip_upgrade().replace("GET ", "POST "), 405),
        (
            sip_upgrade().replace("Connection: keep-alive, Upgrade", "Connection: close"),
            400,
        ),
        ("\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03".into(), 400),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD + 10)),
            431,
        ),
    ];
    for (req, code) in cases {
        let mut ws = WsConn::new(65535);
        let (r, res) = feed(&mut ws, req.as_bytes(), &WsSettings::default());
        assert!(
            matches!(res, Err(WsError::Refused(c, _)) if c == code),
            "{req:?}: {res:?}"
        );
        assert!(
            r.written().starts_with(&format!("HTTP/1.1 {code} ")),
            "{}",
            r.written()
        );
        assert!(r.written().contains("Connection: close"));
        // Done: nothing more is read.
        let (r, res) = feed(&mut ws, b"more", &WsSettings::default());
        assert_eq!((r.write.len(), res), (0, Ok(())));
    }
}

/// A refusal's status line and body say what was wrong with the Upgrade, not a bare "Bad
/// Request" (a developer debugging a web phone reads them in the browser's network panel).
#[test]
fn refused_upgrades_say_what_was_wrong() {
    let cases: Vec<(String, &str)> = vec![
        (upgrade(""), "no sip subprotocol"),
        (
            sip_upgrade().replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            "Sec-WebSocket-Key",
        ),
        (sip_upgrade().replace(KEY, "short=="), "Sec-WebSocket-Key"),
        (
            sip_upgrade().replace("Connection: keep-alive, Upgrade", "Connection: close"),
            "Connection: Upgrade",
        ),
        (sip_upgrade().replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1"),
    ];
    for (req, what) in cases {
        let mut ws = WsConn::new(65535);
        let (r, res) = feed(&mut ws, req.as_bytes(), &WsSettings::default());
        assert!(
            matches!(res, Err(WsError::Refused(400, _))),
            "{req:?}: {res:?}"
        );
        let w = r.written();
        let status = w.lines().next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.1 400 Bad Request: ") && status.contains(what),
            "{req:?}: {w}"
        );
        assert!(
            w.ends_with(&format!("{}\n", &status["HTTP/1.1 ".len()..])),
            "{w}"
        );
    }
}

#[test]
fn origins_outside_the_allowed_list_are_forbidden() {
    let s = WsSettings {
        allowed_origins: vec!["https://phone.example.org".into()],
    };
    let mut ws = WsConn::new(65535);
    assert_eq!(feed(&mut ws, sip_upgrade().as_bytes(), &s).1, Ok(()));
    let evil = sip_upgrade().replace("phone.example.org", "evil.example.com");
    let mut ws = WsConn::new(65535);
    let (r, res) = feed(&mut ws, evil.as_bytes(), &s);
    assert_eq!(res, Err(WsError::Refused(403, "Forbidden")));
    assert!(r.written().starts_with("HTTP/1.1 403 "));
    // No Origin: not a browser, let in.
    let plain = upgrade("Sec-WebSocket-Protocol: sip\r\n");
    assert_eq!(
        feed(&mut WsConn::new(65535), plain.as_bytes(), &s).1,
        Ok(())
    );
}

#[test]
fn fragments_are_reassembled_and_control_frames_answered_between_them() {
    let mut ws = open();
    let mut data = client_frame(false, 1, b"MESSAGE sip:a ");
    data.extend(client_frame(true, 9, b"hi")); // a ping between fragments
    data.extend(client_frame(false, 0, b"SIP/2.0\r\n"));
    data.extend(client_frame(true, 0, b"\r\n"));
    data.extend(client_frame(true, 2, b"\x00binary ok"));
    // Byte by byte: framing must not depend on how reads split.
    let mut all = Vec::new();
    let mut pong = Vec::new();
    for b in &data {
        let (r, res) = feed(&mut ws, std::slice::from_ref(b), &WsSettings::default());
        assert_eq!(res, Ok(()));
        all.extend(r.messages().iter().map(|m| m.to_vec()));
        pong.extend(r.write);
    }
    assert_eq!(
        all,
        vec![
            b"MESSAGE sip:a SIP/2.0\r\n\r\n".to_vec(),
            b"\x00binary ok".to_vec()
        ]
    );
    assert_eq!(
        pong,
        vec![0x8a, 2, b'h', b'i'],
        "an unmasked pong with the ping's data"
    );
}

#[test]
fn protocol_errors_close_with_the_right_code() {
    let cases: Vec<(Vec<u8>, WsError, u16)> = vec![
        (
            // Unmasked client frame.
            vec![0x81, 2, b'h', b'i'],
            WsError::Protocol("unmasked client frame"),
            1002,
        ),
        (client_frame(true, 1, b"\xff\xfe"), WsError::NotUtf8, 1007),
        (
            client_frame(true, 0, b"x"),
            WsError::Protocol("continuation without a message"),
            1002,
        ),
        (
            [client_frame(false, 1, b"a"), client_frame(true, 1, b"b")].concat(),
            WsError::Protocol("new message inside a fragmented one"),
            1002,
        ),
        (
            client_frame(true, 3, b"x"),
            WsError::Protocol("bad frame header"),
            1002,
        ),
        (
            client_frame(false, 9, b"x"),
            WsError::Protocol("bad control frame"),
            1002,
        ),
        (
            {
                let mut f = client_frame(true, 1, b"x");
                f[0] |= 0x40;
                f
            },
            WsError::Protocol("reserved bits set"),
            1002,
        ),
        (
            // A close body is a two-byte code and a reason: one byte is no code.
            client_frame(true, 8, b"x"),
            WsError::Protocol("close frame with a one-byte body"),
            1002,
        ),
        (
            // A control frame over 125 bytes is refused before its payload comes.
            client_frame(true, 9, &[b'p'; 126])[..8].to_vec(),
            WsError::Protocol("bad control frame"),
            1002,
        ),
    ];
    for (data, err, code) in cases {
        let mut ws = open();
        let (r, res) = feed(&mut ws, &data, &WsSettings::default());
        assert_eq!(res, Err(err.clone()), "{data:?}");
        let want = [&[0x88u8, 2][..], &code.to_be_bytes()].concat();
        assert_eq!(r.write, want, "{err}: a close frame with {code}");
    }
}

#[test]
fn oversized_and_endless_messages_are_cut_at_the_limit() {
    // One frame announcing more than the limit: refused before its payload comes.
    let mut ws = WsConn::new(1000);
    assert_eq!(
        feed(&mut ws, sip_upgrade().as_bytes(), &WsSettings::default()).1,
        Ok(())
    );
    let big = client_frame(true, 1, &vec![b'a'; 1001]);
    let (r, res) = feed(&mut ws, &big[..20], &WsSettings::default());
    assert_eq!(res, Err(WsError::TooLarge(1000)));
    assert_eq!(r.write, vec![0x88, 2, 0x03, 0xf1], "close 1009");
    // Fragments that never end: cut when their sum passes the limit.
    let mut ws = WsConn::new(1000);
    assert_eq!(
        feed(&mut ws, sip_upgrade().as_bytes(), &WsSettings::default()).1,
        Ok(())
    );
    let mut res = Ok(());
    let mut n = 0;
    while res.is_ok() && n < 100 {
        res = feed(
            &mut ws,
            &client_frame(false, if n == 0 { 1 } else { 0 }, &[b'a'; 100]),
            &WsSettings::default(),
        )
        .1;
        n += 1;
    }
    assert_eq!(res, Err(WsError::TooLarge(1000)));
    assert_eq!(n, 11, "ten fragments fit, the eleventh does not");
    assert!(
        ws.incomplete_since().is_none(),
        "nothing kept after the error"
    );
}

#[test]
fn a_ping_between_fragments_does_not_count_against_the_message_limit() {
    let mut ws = WsConn::new(1000);
    let s = WsSettings::default();
    assert_eq!(feed(&mut ws, sip_upgrade().as_bytes(), &s).1, Ok(()));
    let data = [
        client_frame(false, 1, &[b'a'; 900]),
        client_frame(true, 9, &[b'p'; 125]),
        client_frame(true, 0, &[b'b'; 100]),
    ]
    .concat();
    let (r, res) = feed(&mut ws, &data, &s);
    assert_eq!(res, Ok(()));
    assert_eq!(r.messages().len(), 1);
    assert_eq!(r.messages()[0].len(), 1000);
    assert!(r.write.starts_with(&[0x8a, 125]), "the pong");
}

#[test]
fn a_close_is_echoed_and_ends_the_connection() {
    let mut ws = open();
    let mut data = client_frame(true, 1, b"REGISTER sip:x SIP/2.0\r\n\r\n");
    data.extend(client_frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']));
    data.extend(client_frame(true, 1, b"after the close"));
    let (r, res) = feed(&mut ws, &data, &WsSettings::default());
    assert_eq!(res, Err(WsError::PeerClosed));
    assert_eq!(
        r.messages().len(),
        1,
        "the message before the close still counts"
    );
    assert_eq!(r.write, vec![0x88, 2, 0x03, 0xe8]);
}

#[test]
fn our_messages_go_out_as_single_unmasked_frames() {
    let mut w = Vec::new();
    message_frame(&mut w, b"SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(w[0], 0x81, "final text frame");
    assert_eq!(w[1] as usize, 18, "unmasked, 7-bit length");
    let mut w = Vec::new();
    let big = vec![b'x'; 300];
    message_frame(&mut w, &big);
    assert_eq!(&w[..4], &[0x81, 126, 1, 44]);
    assert_eq!(w.len(), 304);
    let mut w = Vec::new();
    message_frame(&mut w, b"\xff");
    assert_eq!(w[0], 0x82, "not UTF-8: binary");
}

#[test]
fn unmasking_by_words_matches_the_bytewise_xor_at_every_length() {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    for len in 0..40 {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i & 3])
            .collect();
        unmask(&mut buf, mask);
        assert_eq!(buf, plain, "length {len}");
    }
}

#[test]
fn whole_frames_and_a_fragmented_message_in_one_read_come_out_in_order() {
    let s = WsSettings::default();
    let mut ws = open();
    let mut data = client_frame(true, 1, b"OPTIONS sip:a SIP/2.0\r\n\r\n");
    data.extend(client_frame(false, 2, b"MESSAGE sip:b SIP/2.0\r\n"));
    data.extend(client_frame(true, 0, b"\r\n"));
    data.extend(client_frame(true, 1, b"INFO sip:c SIP/2.0\r\n\r\n"));
    let (run, r) = feed(&mut ws, &data, &s);
    assert!(r.is_ok());
    assert_eq!(
        run.messages(),
        vec![
            &b"OPTIONS sip:a SIP/2.0\r\n\r\n"[..],
            &b"MESSAGE sip:b SIP/2.0\r\n\r\n"[..],
            &b"INFO sip:c SIP/2.0\r\n\r\n"[..],
        ]
    );
}

/// A client frame with its own masking key.
fn masked_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

#[test]
fn fragments_of_odd_lengths_with_their_own_keys_fed_in_odd_chunks_reassemble() {
    let s = WsSettings::default();
    let msg: Vec<u8> = b"MESSAGE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bK1\r\n\r\nhello world, this is a body of some length 0123456789abcdef"
        .to_vec();
    for split in [1usize, 3, 5, 7, 9, 11, 13, 17] {
        for chunk in [1usize, 2, 3, 7, 8, 9, 1000] {
            let mut ws = open();
            let mut data = Vec::new();
            let pieces: Vec<&[u8]> = msg.chunks(split).collect();
            for (k, p) in pieces.iter().enumerate() {
                let fin = k + 1 == pieces.len();
                let op = if k == 0 { 1 } else { 0 };
                let mask = [(k * 31 + 1) as u8, 0x5a ^ k as u8, 0xc3, (k * 7) as u8];
                data.extend(masked_frame(fin, op, p, mask));
                if k % 3 == 1 {
                    data.extend(masked_frame(true, 9, b"pi", [9, 8, 7, 6]));
                }
            }
            data.extend(masked_frame(true, 1, &msg[..29], [1, 2, 3, 4]));
            let mut all = Vec::new();
            for c in data.chunks(chunk) {
                let (run, r) = feed(&mut ws, c, &s);
                assert!(r.is_ok(), "{split} {chunk} {r:?}");
                all.extend(run.messages().into_iter().map(|m| m.to_vec()));
            }
            assert_eq!(
                all,
                vec![msg.clone(), msg[..29].to_vec()],
                "split {split} chunk {chunk}"
            );
        }
    }
}
