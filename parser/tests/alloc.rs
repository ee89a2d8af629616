//! A typical INVITE parses, and its common headers are read, without one heap allocation.
//! (Its own test binary: the counting allocator counts only the thread that asks it to.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ser_parser::{parse, write, Edits};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Route: <sip:proxy.example.com;lr>\r\n\
Record-Route: <sip:rr.example.com;lr>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n\
Supported: replaces, timer\r\n\
User-Agent: softphone/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 142\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

#[test]
fn typical_invite_parses_without_allocating() {
    // Warm up anything lazily initialised by std.
    let _ = parse(INVITE).unwrap();
    let mut out = Vec::with_capacity(2048);
    let mut edits = Edits::new();
    {
        let msg = parse(INVITE).unwrap();
        edits.push_via(&msg, b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx");
        edits.add_record_route(&msg, b"<sip:192.0.2.1;lr>");
        edits
            .set_via_received(&msg, Some(b"192.0.2.101"), Some(5060))
            .unwrap();
        edits.clear();
    }
    let n = allocations(|| {
        let msg = parse(INVITE).expect("valid");
        assert_eq!(msg.body().len(), 142);
        let via = msg.top_via().unwrap();
        assert_eq!(via.branch, Some("z9hG4bK776asdhds"));
        assert_eq!(msg.cseq().unwrap().number, 314159);
        assert_eq!(msg.from().unwrap().tag, Some("1928301774"));
        assert!(msg.to().unwrap().tag.is_none());
        assert_eq!(msg.contacts().count(), 1);
        assert_eq!(msg.routes().count(), 1);
        assert_eq!(msg.max_forwards().unwrap().unwrap(), 70);
        // Warm edits and a pre-sized output buffer: writing allocates nothing either.
        edits.push_via(&msg, b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx");
        edits.add_record_route(&msg, b"<sip:192.0.2.1;lr>");
        edits
            .set_via_received(&msg, Some(b"192.0.2.101"), Some(5060))
            .unwrap();
        write(&msg, &edits, &mut out);
    });
    assert_eq!(n, 0, "allocations during parse + accessors + write");
}
