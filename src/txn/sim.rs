//! A deterministic in-memory network for transaction tests: a UAC (client transactions in a
//! [`Table`]) and a UAS (server transactions in another, plus a scripted TU), joined by a
//! network whose loss, duplication and reordering come from a seeded xorshift generator.
//!
//! Time is virtual: [`Sim::step`] handles everything due now, then jumps the clock to the
//! earliest of the next datagram arrival, the next transaction deadline of either side and the
//! next scripted TU action. Nothing sleeps and no socket is opened, so a 32-second timeout
//! costs microseconds. Test-only (compiled under `cfg(test)`); no proxy in the middle yet.

use std::time::{Duration, Instant};

use ser_parser::Method;

use super::{
    ClientTransaction, Disposition, Key, ServerTransaction, Table, TableError, TimerConfig,
    Transaction, TransmitKind, TxnEvent,
};

/// One side's transactions: the [`Table`] with one key per transaction, driven the way a
/// shard drives it (change, then rearm or remove), and the count of completed server
/// transactions by class (index 0 = 2xx).
#[derive(Debug)]
pub(crate) struct SimTable {
    table: Table<Transaction>,
    completed: [u64; 5],
}

/// What the tests read of a side's counters.
#[derive(Debug)]
pub(crate) struct SimStats {
    pub completed: [u64; 5],
}

impl SimTable {
    fn new(capacity: usize) -> Self {
        Self {
            table: Table::new(capacity),
            completed: [0; 5],
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            completed: self.completed,
        }
    }

    fn insert(&mut self, txn: Transaction) -> Result<(), TableError> {
        let key = txn.key().clone();
        if self.table.contains(&key) {
            return Err(TableError::Exists);
        }
        let id = self.table.insert(txn)?;
        self.table.index(key, id, 0)
    }

    fn update<R>(&mut self, key: &Key, f: impl FnOnce(&mut Transaction) -> R) -> Option<R> {
        let (id, _) = self.table.lookup(key)?;
        let r = f(self.table.get_mut(id)?);
        self.settle(id);
        Some(r)
    }

    fn expire(&mut self, now: Instant, mut f: impl FnMut(&mut Transaction)) {
        while let Some(id) = self.table.pop_due(now) {
            if let Some(t) = self.table.get_mut(id) {
                t.handle_timeout(now);
                f(t);
            }
            self.settle(id);
        }
    }

    pub(crate) fn remove(&mut self, key: &Key) {
        if let Some((id, _)) = self.table.lookup(key) {
            self.table.remove(id);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        self.table.next_deadline()
    }

    fn settle(&mut self, id: super::EntryId) {
        let Some(t) = self.table.get(id) else {
            return;
        };
        if !t.is_terminated() {
            self.table.rearm(id);
            return;
        }
        if let (Transaction::Server(_), Some(code)) = (t, t.final_code()) {
            let class = usize::from(code / 100).saturating_sub(2);
            if let Some(n) = self.completed.get_mut(class) {
                *n += 1;
            }
        }
        self.table.remove(id);
    }
}

/// Messages the tests send (one dialog: alice at uac.example.com calls bob at uas.example.com).
pub(crate) mod msgs {
    /// A request; `to_tag` for in-dialog ones. CSeq method = `method`.
    pub(crate) fn request(method: &str, branch: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:bob@uas.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP uac.example.com:5060;branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             Route: <sip:p1.example.com;lr>\r\n\
             From: \"Alice\" <sip:alice@uac.example.com>;tag=fromtag\r\n\
             To: <sip:bob@uas.example.com>{to_tag}\r\n\
             Call-ID: call-1@uac.example.com\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@uac.example.com>\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    pub(crate) fn invite(branch: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
        request("INVITE", branch, cseq, to_tag)
    }

    pub(crate) fn ack_for(branch: &str, cseq: u32, to_tag: Option<&str>) -> Vec<u8> {
        request("ACK", branch, cseq, to_tag)
    }

    pub(crate) fn cancel(branch: &str, cseq: u32) -> Vec<u8> {
        request("CANCEL", branch, cseq, None)
    }

    /// A response to `req` with `code` (reason "Test"), To tag added when given.
    pub(crate) fn response(req: &[u8], code: u16, to_tag: Option<&str>) -> Vec<u8> {
        let Ok(msg) = ser_parser::parse(req) else {
            return Vec::new();
        };
        let spec = ser_parser::ReplySpec {
            code,
            reason: b"Test",
            to_tag: to_tag.map(str::as_bytes),
            received: None,
            rport: None,
            extra_headers: b"",
        };
        let mut out = Vec::new();
        ser_parser::write_reply(&msg, &spec, &mut out);
        out
    }
}

/// xorshift64*: small, seeded, good enough to pick fates for datagrams.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `per_mille`/1000.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// What the network does to each datagram.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NetConfig {
    pub loss: u64,
    pub duplicate: u64,
    /// Chance that a datagram gets up to `jitter` extra delay (so later ones overtake it).
    pub reorder: u64,
    pub latency: Duration,
    pub jitter: Duration,
}

impl NetConfig {
    pub(crate) fn perfect() -> Self {
        Self {
            latency: Duration::from_millis(10),
            ..Self::default()
        }
    }

    pub(crate) fn lossy(loss: u64) -> Self {
        Self {
            loss,
            duplicate: 100,
            reorder: 200,
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Uac,
    Uas,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: Node,
    bytes: Vec<u8>,
}

/// What the UAS's TU answers to each new request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UasScript {
    /// Sent at once when set.
    pub provisional: Option<u16>,
    /// Sent after `delay`; `None`: the TU never answers.
    pub final_code: Option<u16>,
    pub delay: Duration,
}

/// One side's observations, in virtual time since the start.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub sent: Vec<(Duration, TransmitKind)>,
    pub events: Vec<(Duration, TxnEvent)>,
    /// Statuses (UAC) or methods (UAS) passed up to the TU.
    pub up: Vec<(Duration, String)>,
    pub absorbed: usize,
}

/// The UAC, UAS and the network between them.
pub(crate) struct Sim {
    pub epoch: Instant,
    pub now: Instant,
    pub cfg: TimerConfig,
    net: NetConfig,
    rng: Rng,
    seq: u64,
    flight: Vec<InFlight>,
    pub uac: SimTable,
    pub uas: SimTable,
    pub uac_log: Log,
    pub uas_log: Log,
    script: UasScript,
    /// Scripted TU answers: (when, transaction, response bytes).
    tu: Vec<(Instant, Key, Vec<u8>)>,
    /// Set on a reliable transport: no loss is modelled then by the tests.
    pub reliable: bool,
}

impl Sim {
    pub(crate) fn new(seed: u64, net: NetConfig, cfg: TimerConfig, script: UasScript) -> Self {
        let epoch = Instant::now();
        Self {
            epoch,
            now: epoch,
            cfg,
            net,
            rng: Rng::new(seed),
            seq: 0,
            flight: Vec::new(),
            uac: SimTable::new(1024),
            uas: SimTable::new(1024),
            uac_log: Log::default(),
            uas_log: Log::default(),
            script,
            tu: Vec::new(),
            reliable: false,
        }
    }

    fn t(&self) -> Duration {
        self.now - self.epoch
    }

    /// The UAC starts a client transaction for `request`.
    pub(crate) fn start(&mut self, request: &[u8]) -> Key {
        let txn = match ClientTransaction::start(self.now, &self.cfg, request, self.reliable) {
            Ok(t) => t,
            Err(e) => panic!("test request rejected: {e}"),
        };
        let key = txn.key().clone();
        assert_eq!(self.uac.insert(Transaction::Client(txn)), Ok(()));
        self.update(Node::Uac, &key, |_, _| Disposition::Absorbed);
        key
    }

    /// Runs `f` on a transaction of `node`, then sends what it queued and logs its events.
    fn update(
        &mut self,
        node: Node,
        key: &Key,
        f: impl FnOnce(&mut Transaction, Instant) -> Disposition,
    ) -> Option<Disposition> {
        let now = self.now;
        let mut out = Vec::new();
        let mut events = Vec::new();
        let table = match node {
            Node::Uac => &mut self.uac,
            Node::Uas => &mut self.uas,
        };
        let d = table.update(key, |txn| {
            let d = f(txn, now);
            drain(txn, &mut out, &mut events);
            d
        });
        self.emit(node, out, events);
        d
    }

    fn emit(&mut self, node: Node, out: Vec<(TransmitKind, Vec<u8>)>, events: Vec<TxnEvent>) {
        let t = self.t();
        let (log, to) = match node {
            Node::Uac => (&mut self.uac_log, Node::Uas),
            Node::Uas => (&mut self.uas_log, Node::Uac),
        };
        log.events.extend(events.into_iter().map(|e| (t, e)));
        log.sent.extend(out.iter().map(|(kind, _)| (t, *kind)));
        for (_, bytes) in out {
            self.send(to, bytes);
        }
    }

    fn send(&mut self, to: Node, bytes: Vec<u8>) {
        if self.rng.chance(self.net.loss) {
            return;
        }
        let copies = if self.rng.chance(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.net.latency;
            if self.rng.chance(self.net.reorder) {
                let extra = self.rng.below(self.net.jitter.as_millis() as u64 + 1);
                delay += Duration::from_millis(extra);
            }
            self.seq += 1;
            self.flight.push(InFlight {
                at: self.now + delay,
                seq: self.seq,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    /// Handles everything due now, then moves the clock to the next thing due. False when
    /// nothing is left to happen.
    pub(crate) fn step(&mut self) -> bool {
        // Datagrams due now, in arrival order.
        loop {
            let due = self
                .flight
                .iter()
                .enumerate()
                .filter(|(_, f)| f.at <= self.now)
                .min_by_key(|(_, f)| (f.at, f.seq))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let f = self.flight.swap_remove(i);
            match f.to {
                Node::Uac => self.uac_receive(&f.bytes),
                Node::Uas => self.uas_receive(&f.bytes),
            }
        }
        // Scripted TU answers due now.
        while let Some(i) = self.tu.iter().position(|(at, _, _)| *at <= self.now) {
            let (_, key, resp) = self.tu.remove(i);
            self.update(Node::Uas, &key, |txn, now| {
                if let Transaction::Server(s) = txn {
                    // The transaction may have ended (H) before the TU answered.
                    let _ = s.send_response(now, &resp);
                }
                Disposition::Absorbed
            });
        }
        // Transaction timers due now.
        let now = self.now;
        for node in [Node::Uac, Node::Uas] {
            let mut out = Vec::new();
            let mut events = Vec::new();
            let table = match node {
                Node::Uac => &mut self.uac,
                Node::Uas => &mut self.uas,
            };
            table.expire(now, |txn| drain(txn, &mut out, &mut events));
            self.emit(node, out, events);
        }
        let next = [
            self.flight.iter().map(|f| f.at).min(),
            self.tu.iter().map(|t| t.0).min(),
            self.uac.next_deadline(),
            self.uas.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => {
                self.now = self.now.max(at);
                true
            }
            None => false,
        }
    }

    /// Steps until nothing is left or `limit` of virtual time has passed.
    pub(crate) fn run(&mut self, limit: Duration) {
        while self.t() <= limit && self.step() {}
    }

    fn uac_receive(&mut self, bytes: &[u8]) {
        let Ok(msg) = ser_parser::parse(bytes) else {
            return;
        };
        let Ok(key) = Key::client(&msg) else { return };
        let t = self.t();
        let code = msg.status().unwrap_or(0);
        let d = self.update(Node::Uac, &key, |txn, now| match txn {
            Transaction::Client(c) => c.handle_response(now, &msg),
            Transaction::Server(_) => Disposition::NotMatched,
        });
        match d {
            Some(Disposition::PassUp) => self.uac_log.up.push((t, code.to_string())),
            Some(_) => self.uac_log.absorbed += 1,
            // No transaction: a UA core would see a stray response.
            None => self.uac_log.up.push((t, format!("stray {code}"))),
        }
    }

    fn uas_receive(&mut self, bytes: &[u8]) {
        let Ok(msg) = ser_parser::parse(bytes) else {
            return;
        };
        let Ok(key) = Key::server(&msg) else { return };
        let t = self.t();
        let method = msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let d = self.update(Node::Uas, &key, |txn, now| match txn {
            Transaction::Server(s) => s.handle_request(now, &msg),
            Transaction::Client(_) => Disposition::NotMatched,
        });
        match d {
            Some(Disposition::Absorbed) => {
                self.uas_log.absorbed += 1;
                return;
            }
            Some(Disposition::PassUp) => {
                self.uas_log.up.push((t, method));
                return;
            }
            Some(Disposition::NotMatched) | None => {}
        }
        if msg.method() == Some(Method::Ack) {
            // An ACK for a 2xx (or an unmatched one): the TU's business.
            self.uas_log.up.push((t, format!("stray {method}")));
            return;
        }
        let txn = match ServerTransaction::new(self.now, &self.cfg, &msg, self.reliable) {
            Ok(s) => s,
            Err(_) => return,
        };
        if self.uas.insert(Transaction::Server(txn)).is_err() {
            return;
        }
        self.uas_log.up.push((t, method));
        let req = msg.buf().to_vec();
        if let Some(code) = self.script.provisional {
            self.tu.push((
                self.now,
                key.clone(),
                msgs::response(&req, code, Some("uastag")),
            ));
        }
        if let Some(code) = self.script.final_code {
            let resp = msgs::response(&req, code, Some("uastag"));
            self.tu.push((self.now + self.script.delay, key, resp));
        }
    }
}

fn drain(
    txn: &mut Transaction,
    out: &mut Vec<(TransmitKind, Vec<u8>)>,
    events: &mut Vec<TxnEvent>,
) {
    while let Some(t) = txn.poll_transmit() {
        out.push((t.kind, t.bytes.to_vec()));
    }
    while let Some(e) = txn.poll_event() {
        events.push(e);
    }
}
