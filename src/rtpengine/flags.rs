//! The flag string of `rtpengine_offer/answer/manage/delete("…")`, read as Kamailio's
//! rtpengine module reads it, into the entries of the ng command's dictionary.
//!
//! Words are separated by white space; each is `key` or `key=value`:
//!
//! - `RTP/AVP`, `RTP/SAVP`, `RTP/AVPF`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP`, `UDP/TLS/RTP/SAVPF`
//!   (or `transport-protocol=…`): the `transport-protocol` key; `RTP`, `SRTP`, `AVP`, `AVPF`
//!   build one (`SRTP AVPF` is `RTP/SAVPF`), as Kamailio's older syntax did;
//! - `ICE=…`, `DTLS=…`, `direction=…` (twice: one per side; `internal`/`external` alone
//!   are directions too), `media-address=…`, `address-family=…`, `label=…`, any other
//!   `key=value`: that key of the dictionary with the value as a string (`direction` a list);
//! - `replace-X`: `X` in the `replace` list (`replace-origin`,
//!   `replace-session-connection`); `SDES-X`, `OSRTP-X`, `rtcp-mux-X`, `T38-X`/`T.38-X`: `X`
//!   in that key's list; `codec-OP-X` (`codec-strip-PCMA`, `codec-offer-opus`, `codec-mask-…`,
//!   `codec-transcode-…`, `codec-accept-…`, `codec-consume-…`, `codec-except-…`,
//!   `codec-set-…`): `X` in the list `OP` of the `codec` dictionary;
//! - `call-id=…`, `from-tag=…`, `to-tag=…`: the message's own values replaced;
//! - any other bare word (`trust-address`, `symmetric`, `asymmetric`, `strict-source`,
//!   `media-handover`, `port-latching`, `record-call`, `loop-protect`, `SIP-source-address`,
//!   …): into the `flags` list.
//!
//! Read once when the script is loaded (a flag string is a literal), so a malformed one is
//! refused with its line. `via-branch=` (Kamailio picks a Via's branch as a call leg) is not
//! taken: ser refuses it rather than ignoring it.

use super::bencode::Value;

/// A flag string, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// The entries to merge into the command's dictionary.
    pub dict: Vec<(String, Value)>,
    pub call_id: Option<String>,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
}

const TRANSPORTS: &[&str] = &[
    "RTP/AVP",
    "RTP/SAVP",
    "RTP/AVPF",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
];

/// Prefixes of words that add their rest to a list of that key.
const LISTS: &[(&str, &str)] = &[
    ("replace-", "replace"),
    ("SDES-", "SDES"),
    ("OSRTP-", "OSRTP"),
    ("rtcp-mux-", "rtcp-mux"),
    ("T38-", "T.38"),
    ("T.38-", "T.38"),
];

const CODEC_OPS: &[&str] = &[
    "strip",
    "offer",
    "transcode",
    "mask",
    "accept",
    "consume",
    "except",
    "set",
];

impl Flags {
    /// Reads `s`; `Err` says which word is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = Flags::default();
        let mut dict = Value::dict();
        let (mut srtp, mut avpf, mut rtp) = (false, false, false);
        for word in s.split_ascii_whitespace() {
            let (key, val) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            if key.is_empty() {
                return Err(format!("flag \"{word}\" has no name"));
            }
            match (key, val) {
                (k, None) if TRANSPORTS.contains(&k) => {
                    dict.set("transport-protocol", Value::str(k));
                }
                ("RTP" | "AVP", None) => rtp = true,
                ("SRTP", None) => srtp = true,
                ("AVPF", None) => avpf = true,
                ("internal" | "external", None) => dict.push_to("direction", Value::str(key)),
                ("direction", Some(v)) => dict.push_to("direction", Value::str(v)),
                ("call-id", Some(v)) => f.call_id = Some(v.to_string()),
                ("from-tag", Some(v)) => f.from_tag = Some(v.to_string()),
                ("to-tag", Some(v)) => f.to_tag = Some(v.to_string()),
                ("via-branch", _) => {
                    return Err(String::from(
                        "via-branch= is not supported by this rtpengine module",
                    ))
                }
                (_, Some("")) => return Err(format!("flag \"{word}\" has an empty value")),
                (k, Some(v)) => dict.set(k, Value::str(v)),
                (k, None) => {
                    if let Some((list, rest)) = LISTS
                        .iter()
                        .find_map(|(p, l)| k.strip_prefix(p).map(|r| (*l, r)))
                    {
                        if rest.is_empty() {
                            return Err(format!("flag \"{word}\" names nothing after the dash"));
                        }
                        dict.push_to(list, Value::str(rest));
                    } else if let Some(rest) = k.strip_prefix("codec-") {
                        let (op, item) = rest
                            .split_once('-')
                            .filter(|(op, item)| CODEC_OPS.contains(op) && !item.is_empty())
                            .ok_or_else(|| {
                                format!(
                                    "flag \"{word}\": codec-OP-NAME with OP one of {}",
                                    CODEC_OPS.join(", ")
                                )
                            })?;
                        let mut codec = dict.get("codec").cloned().unwrap_or_else(Value::dict);
                        codec.push_to(op, Value::str(item));
                        dict.set("codec", codec);
                    } else {
                        dict.push_to("flags", Value::str(k));
                    }
                }
            }
        }
        if (rtp || srtp || avpf) && dict.get("transport-protocol").is_none() {
            let proto = format!(
                "RTP/{}AVP{}",
                if srtp { "S" } else { "" },
                if avpf { "F" } else { "" }
            );
            dict.set("transport-protocol", Value::Bytes(proto.into_bytes()));
        }
        if let Value::Dict(d) = dict {
            f.dict = d
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect();
        }
        Ok(f)
    }

    /// Merges the entries into a command's dictionary (lists are appended to).
    pub fn apply(&self, cmd: &mut Value) {
        for (k, v) in &self.dict {
            match v {
                Value::List(items) if matches!(cmd.get(k), Some(Value::List(_))) => {
                    for i in items {
                        cmd.push_to(k, i.clone());
                    }
                }
                _ => cmd.set(k, v.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &Value) -> String {
        String::from_utf8_lossy(&v.to_bytes()).into_owned()
    }

    #[test]
    fn kamailio_flag_strings() {
        let f = Flags::parse(
            "  RTP/SAVPF ICE=force DTLS=passive replace-origin replace-session-connection \
             trust-address direction=internal direction=external SDES-off \
             codec-strip-PCMA codec-offer-opus label=x rtcp-mux-demux\tsymmetric",
        )
        .unwrap();
        let mut d = Value::dict();
        f.apply(&mut d);
        assert_eq!(
            text(&d),
            "d4:DTLS7:passive3:ICE5:force4:SDESl3:offe\
             5:codecd5:offerl4:opuse5:stripl4:PCMAee\
             9:directionl8:internal8:externale\
             5:flagsl13:trust-address9:symmetrice\
             5:label1:x7:replacel6:origin18:session-connectione\
             8:rtcp-muxl5:demuxe18:transport-protocol9:RTP/SAVPFe"
        );
    }

    #[test]
    fn old_transport_words_and_overrides() {
        let f = Flags::parse("SRTP AVPF call-id=abc from-tag=f to-tag=t").unwrap();
        assert_eq!(f.call_id.as_deref(), Some("abc"));
        assert_eq!(f.from_tag.as_deref(), Some("f"));
        assert_eq!(f.to_tag.as_deref(), Some("t"));
        assert_eq!(
            f.dict,
            vec![(String::from("transport-protocol"), Value::str("RTP/SAVPF"))]
        );
        let f = Flags::parse("RTP").unwrap();
        assert_eq!(f.dict[0].1, Value::str("RTP/AVP"));
        // An explicit protocol wins over the old words.
        let f = Flags::parse("SRTP RTP/AVP").unwrap();
        assert_eq!(f.dict[0].1, Value::str("RTP/AVP"));
        assert_eq!(Flags::parse("").unwrap(), Flags::default());
    }

    #[test]
    fn bad_flags_are_refused() {
        for s in [
            "=x",
            "ICE=",
            "replace-",
            "codec-strip-",
            "codec-foo-PCMA",
            "codec-",
            "via-branch=1",
        ] {
            assert!(Flags::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn apply_appends_to_lists_of_the_command() {
        let f = Flags::parse("trust-address").unwrap();
        let mut d = Value::dict();
        d.push_to("flags", Value::str("x"));
        f.apply(&mut d);
        assert_eq!(text(&d), "d5:flagsl1:x13:trust-addressee");
    }
}
