//! The bytes a broadcast backend publishes: a small binary header, then the user's message
//! exactly as it was given (no pickle, no JSON wrapping).
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     1  kind: 1 broadcast, 2 to one socket, 3 count query, 4 members query, 5 reply
//!      2     1  flags: bit 0 binary message, bit 1 a room follows
//!      3     4  origin node tag (u32, big-endian): where replies go
//!      7     8  origin instance (u64): a process ignores its own echo by it
//!     15     8  argument (u64): excluded id (0: none) | target id | query id
//!     23     2  room length n (only with flag bit 1), then n bytes of UTF-8
//!      …        payload: the message; for a reply, big-endian u64s (a count, or ids)
//! ```
//!
//! This module only encodes and decodes; it knows no socket, no Redis and no registry.

use bytes::Bytes;

const VERSION: u8 = 1;
const FLAG_BINARY: u8 = 1;
const FLAG_ROOM: u8 = 2;
const FIXED: usize = 23;

/// Who a message is for, on every process that receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    Room(String),
    One(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Count,
    Members,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// A message for the members `target` names, except `exclude`.
    Message {
        target: Target,
        exclude: Option<u64>,
        binary: bool,
        payload: Bytes,
    },
    /// "How many members (of `room`) do you hold?" or "which?"
    Query {
        id: u64,
        query: Query,
        room: Option<String>,
    },
    /// One process's answer to query `id`: a count, or member ids.
    Reply { id: u64, values: Vec<u64> },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    pub origin_tag: u32,
    pub origin_instance: u64,
    pub body: Body,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, mut flags, argument, room, payload): (u8, u8, u64, Option<&str>, &[u8]);
        let reply_bytes: Vec<u8>;
        match &self.body {
            Body::Message {
                target,
                exclude,
                binary,
                payload: data,
            } => {
                flags = if *binary { FLAG_BINARY } else { 0 };
                payload = data;
                (kind, argument, room) = match target {
                    Target::All => (1, exclude.unwrap_or(0), None),
                    Target::Room(room) => (1, exclude.unwrap_or(0), Some(room.as_str())),
                    Target::One(id) => (2, *id, None),
                };
            }
            Body::Query { id, query, room: r } => {
                flags = 0;
                kind = match query {
                    Query::Count => 3,
                    Query::Members => 4,
                };
                argument = *id;
                room = r.as_deref();
                payload = &[];
            }
            Body::Reply { id, values } => {
                flags = 0;
                kind = 5;
                argument = *id;
                room = None;
                reply_bytes = values.iter().flat_map(|v| v.to_be_bytes()).collect();
                payload = &reply_bytes;
            }
        }
        if room.is_some() {
            flags |= FLAG_ROOM;
        }
        let room_len = room.map_or(0, |r| 2 + r.len());
        let mut out = Vec::with_capacity(FIXED + room_len + payload.len());
        out.extend_from_slice(&[VERSION, kind, flags]);
        out.extend_from_slice(&self.origin_tag.to_be_bytes());
        out.extend_from_slice(&self.origin_instance.to_be_bytes());
        out.extend_from_slice(&argument.to_be_bytes());
        if let Some(room) = room {
            out.extend_from_slice(&(room.len() as u16).to_be_bytes());
            out.extend_from_slice(room.as_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    pub fn decode(data: &[u8]) -> Result<Self, Malformed> {
        if data.len() < FIXED {
            return Err(Malformed("shorter than the header"));
        }
        if data[0] != VERSION {
            return Err(Malformed("unknown version"));
        }
        let (kind, flags) = (data[1], data[2]);
        let origin_tag = u32::from_be_bytes(data[3..7].try_into().expect("4 bytes"));
        let origin_instance = u64::from_be_bytes(data[7..15].try_into().expect("8 bytes"));
        let argument = u64::from_be_bytes(data[15..23].try_into().expect("8 bytes"));
        let mut rest = &data[FIXED..];
        let room = if flags & FLAG_ROOM != 0 {
            if rest.len() < 2 {
                return Err(Malformed("room length cut short"));
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let bytes = rest.get(2..2 + len).ok_or(Malformed("room cut short"))?;
            let room = std::str::from_utf8(bytes).map_err(|_| Malformed("room is not UTF-8"))?;
            rest = &rest[2 + len..];
            Some(room.to_owned())
        } else {
            None
        };
        let body = match kind {
            1 => Body::Message {
                target: room.map_or(Target::All, Target::Room),
                exclude: (argument != 0).then_some(argument),
                binary: flags & FLAG_BINARY != 0,
                payload: Bytes::copy_from_slice(rest),
            },
            2 => Body::Message {
                target: Target::One(argument),
                exclude: None,
                binary: flags & FLAG_BINARY != 0,
                payload: Bytes::copy_from_slice(rest),
            },
            3 | 4 => Body::Query {
                id: argument,
                query: if kind == 3 {
                    Query::Count
                } else {
                    Query::Members
                },
                room,
            },
            5 => {
                if !rest.len().is_multiple_of(8) {
                    return Err(Malformed("reply is not a whole number of u64s"));
                }
                Body::Reply {
                    id: argument,
                    values: rest
                        .chunks_exact(8)
                        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                }
            }
            _ => return Err(Malformed("unknown kind")),
        };
        Ok(Self {
            origin_tag,
            origin_instance,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: Body) {
        let envelope = Envelope {
            origin_tag: 0x1a_bcde,
            origin_instance: 0x0102_0304_0506_0708,
            body,
        };
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Body::Message {
            target: Target::All,
            exclude: None,
            binary: false,
            payload: Bytes::from_static(b"hello"),
        });
        round_trip(Body::Message {
            target: Target::Room("général".into()),
            exclude: Some(42),
            binary: true,
            payload: Bytes::from_static(&[0, 1, 2, 255]),
        });
        round_trip(Body::Message {
            target: Target::One(7 << 32 | 9),
            exclude: None,
            binary: false,
            payload: Bytes::new(),
        });
        round_trip(Body::Query {
            id: 3,
            query: Query::Members,
            room: Some(String::new()),
        });
        round_trip(Body::Query {
            id: 4,
            query: Query::Count,
            room: None,
        });
        round_trip(Body::Reply {
            id: 5,
            values: vec![1, u64::MAX, 0],
        });
    }

    #[test]
    fn the_message_follows_the_header_untouched() {
        let encoded = Envelope {
            origin_tag: 1,
            origin_instance: 2,
            body: Body::Message {
                target: Target::All,
                exclude: None,
                binary: false,
                payload: Bytes::from_static(b"{\"a\": 1}"),
            },
        }
        .encode();
        assert_eq!(encoded.len(), FIXED + 8);
        assert!(encoded.ends_with(b"{\"a\": 1}"));
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(&[9; 30]).is_err());
        let mut cut = Envelope {
            origin_tag: 1,
            origin_instance: 2,
            body: Body::Query {
                id: 1,
                query: Query::Count,
                room: Some("lobby".into()),
            },
        }
        .encode();
        cut.truncate(FIXED + 4);
        assert_eq!(Envelope::decode(&cut), Err(Malformed("room cut short")));
        let mut bad_kind = cut.clone();
        bad_kind[1] = 77;
        assert!(Envelope::decode(&bad_kind).is_err());
        for len in 0..cut.len() {
            let _ = Envelope::decode(&cut[..len]);
        }
    }
}
