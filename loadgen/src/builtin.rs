//! The built-in scenarios, written as SIPp XML and compiled by the same code as a user's file
//! (one engine, so the built-ins exercise the XML path and vice versa). `[user]`, `[domain]`,
//! `[callee]`, `[password]` are loadgen's keywords for `--users`/`--user-pattern`.

pub const OPTIONS: &str = r#"<scenario name="options">
<send retrans="500"><![CDATA[
OPTIONS sip:[callee]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[callee]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: [cseq] OPTIONS
Content-Length: 0
]]></send>
<recv response="200"/>
</scenario>"#;

pub const MESSAGE: &str = r#"<scenario name="message">
<send retrans="500"><![CDATA[
MESSAGE sip:[callee]@[domain] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[callee]@[domain]>
Call-ID: [call_id]
CSeq: [cseq] MESSAGE
Content-Type: text/plain
Content-Length: [len]

loadgen message [call_number]
]]></send>
<recv response="200" optional="true" next="done"/>
<recv response="202"/>
<label id="done"/>
</scenario>"#;

pub const REGISTER: &str = r#"<scenario name="register">
<send retrans="500"><![CDATA[
REGISTER sip:[domain] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[user]@[domain]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:[user]@[local_ip]:[local_port]>
Expires: 3600
Content-Length: 0
]]></send>
<recv response="401" auth="true" optional="true" next="auth"/>
<recv response="407" auth="true" optional="true" next="auth"/>
<recv response="200" next="done"/>
<label id="auth"/>
<send retrans="500"><![CDATA[
REGISTER sip:[domain] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[user]@[domain]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:[user]@[local_ip]:[local_port]>
[authentication]
Expires: 3600
Content-Length: 0
]]></send>
<recv response="200"/>
<label id="done"/>
</scenario>"#;

pub const CALL: &str = r#"<scenario name="call">
<send retrans="500"><![CDATA[
INVITE sip:[callee]@[domain] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[callee]@[domain]>
Call-ID: [call_id]
CSeq: [cseq] INVITE
Contact: <sip:[user]@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=loadgen 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="183" optional="true"/>
<recv response="200" rrs="true"/>
<send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
[routes]
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[callee]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: [cseq] ACK
Content-Length: 0
]]></send>
<pause/>
<send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
[routes]
Max-Forwards: 70
From: <sip:[user]@[domain]>;tag=[call_number]-[pid]
To: <sip:[callee]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: [cseq] BYE
Content-Length: 0
]]></send>
<recv response="200"/>
</scenario>"#;

/// Answers: 180, 200 (retransmitted until the ACK), then BYE → 200. The ACK is optional: a
/// proxy with several processes (Kamailio's children) may pass the BYE on before the ACK.
pub const UAS_ANSWER: &str = r#"<scenario name="uas">
<recv request="INVITE"/>
<send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[call_number]-[pid]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Content-Length: 0
]]></send>
<send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[call_number]-[pid]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=loadgen 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
<recv request="ACK" optional="true"/>
<recv request="BYE"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>"#;

/// The `--fail-share` of calls: 486 Busy Here, then the ACK.
pub const UAS_BUSY: &str = r#"<scenario name="uas-busy">
<recv request="INVITE"/>
<send retrans="500"><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[call_number]-[pid]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
<recv request="ACK"/>
</scenario>"#;

/// The `--noanswer-share` of calls: 100 Trying (so the caller stops retransmitting), then
/// nothing; the call is kept for a while to absorb retransmissions.
pub const UAS_NOANSWER: &str = r#"<scenario name="uas-noanswer">
<recv request="INVITE"/>
<send><![CDATA[
SIP/2.0 100 Trying
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
<timewait milliseconds="32000"/>
</scenario>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compile() {
        for (x, server) in [
            (OPTIONS, false),
            (MESSAGE, false),
            (REGISTER, false),
            (CALL, false),
            (UAS_ANSWER, true),
            (UAS_BUSY, true),
            (UAS_NOANSWER, true),
        ] {
            let s = crate::scenario::parse_xml(x, "builtin").expect("builtin compiles");
            assert_eq!(s.server, server, "{}", s.name);
        }
    }
}
