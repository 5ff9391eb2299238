//! DNS messages for warren-local's DNS forwarder: parse a client's query, build the answers the
//! forwarder gives itself, check and trim the ones it relays, and remember them ([`Cache`],
//! [`NameMap`]). Pure code on byte slices, no sockets; the wire format is `hickory-proto`'s, so
//! there is no hand-written DNS parser here, only the decisions a forwarder makes on top of one.
//!
//! Every message has the shape of RFC 1035 §4.1:
//!
//! ```text
//!     +---------------------+
//!     |        Header       |  12 bytes: ID, QR|OPCODE|AA|TC|RD, RA|Z|AD|CD|RCODE, 4 counts
//!     +---------------------+
//!     |       Question      |  QNAME QTYPE QCLASS (a query we answer has exactly one)
//!     +---------------------+
//!     |        Answer       |  RRs answering the question
//!     +---------------------+
//!     |      Authority      |  RRs pointing toward an authority (the SOA of a negative answer)
//!     +---------------------+
//!     |      Additional     |  RRs holding additional information (the EDNS0 OPT pseudo-RR)
//!     +---------------------+
//! ```
//!
//! What a datagram gets back ([`parse_query`]):
//! - fewer than 12 bytes, or QR=1 (a response): nothing. There is no header to answer with, and
//!   answering responses lets a forged source address bounce two servers off each other forever
//!   (a reflection loop);
//! - a header with an OPCODE other than QUERY: NOTIMP (RFC 1035 §4.1.1);
//! - a header whose rest does not decode, or with QDCOUNT ≠ 1: FORMERR (RFC 1035 §4.1.1). A
//!   client that sent a header is waiting on that ID, and an immediate error beats its timeout;
//! - EDNS with VERSION ≠ 0: BADVERS (RFC 6891 §6.1.3);
//! - otherwise a [`Query`], which the caller answers with [`addresses_answer`] (A/AAAA resolved
//!   through the tunnel), [`rcode_answer`], or an upstream server's response checked with
//!   [`answers`].
//!
//! Every response echoes the ID and the question as the client sent it (its letter case too:
//! clients using "0x20" case randomisation compare it), copies RD, sets RA, and carries an OPT
//! record when the query did (RFC 6891 §6.1.1). Responses for UDP go through
//! [`truncate_for_udp`] with [`udp_limit`].
//!
//! Names from the network are bytes: [`Query::name`] is the labels joined by `.`, ASCII
//! lowercased, never decoded as UTF-8, and compared as bytes.

mod cache;
mod expiry;
mod names;
#[cfg(test)]
mod tests;

pub use cache::Cache;
pub use names::NameMap;

use std::net::IpAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, Query as Question, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Bytes in a DNS header (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;
/// The UDP payload every client accepts (RFC 1035 §4.2.1).
const MIN_UDP: u16 = 512;
/// The largest UDP payload we send or advertise: the 2020 DNS flag day's value, which fits
/// the IPv6 minimum MTU without fragmentation (RFC 9715 recommends the same bound).
const MAX_UDP: u16 = 1232;
/// The most records [`addresses_answer`] puts in one response: more than any resolver returns
/// for one name, and it keeps the response small whatever the caller passes.
const MAX_ADDRESSES: usize = 64;
/// TTLs above this are treated as zero on input and capped on output (RFC 2181 §8).
const MAX_TTL: u32 = 0x7FFF_FFFF;

/// RFC 1035 §3.2.4 CLASS IN, §3.2.2 TYPE A and RFC 3596 §2.1 TYPE AAAA.
const CLASS_IN: u16 = 1;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// A parsed DNS query (RFC 1035 §4.1): QR=0, OPCODE=QUERY, exactly one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    id: u16,
    /// The question's labels joined by `.`, ASCII lowercased.
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    recursion_desired: bool,
    /// The question exactly as it arrived, echoed in every response.
    question: Question,
    edns: Option<ClientEdns>,
}

/// What the client said in its OPT record (RFC 6891 §6.1.2) that shapes our responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientEdns {
    udp_payload: u16,
    dnssec_ok: bool,
}

impl Query {
    /// The header's ID (RFC 1035 §4.1.1), echoed in every response.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The question's QNAME (RFC 1035 §4.1.2) as bytes, ASCII-lowercased, labels joined by `.`,
    /// without the trailing dot ("intranet.campus.test"); the root is empty. A label that itself
    /// contains a `.` byte is not escaped: callers treat this as a host name, not a zone key.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The QTYPE (RFC 1035 §3.2.2/§3.2.3): 1 = A, 28 = AAAA, ...
    pub fn qtype(&self) -> u16 {
        self.qtype
    }

    /// The QCLASS (RFC 1035 §3.2.4/§3.2.5): 1 = IN.
    pub fn qclass(&self) -> u16 {
        self.qclass
    }

    /// Whether this asks for addresses: QTYPE A (RFC 1035 §3.4.1) or AAAA (RFC 3596 §2.1) in
    /// class IN, the questions [`addresses_answer`] answers.
    pub fn is_address(&self) -> bool {
        self.qclass == CLASS_IN && (self.qtype == TYPE_A || self.qtype == TYPE_AAAA)
    }
}

/// What to do with bytes that are not a usable query (RFC 1035 §4.1.1, §7.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Not even a header (< 12 bytes), or a response (QR=1): send nothing (RFC 1035 says
    /// nothing to answer; answering responses makes reflection loops).
    Drop,
    /// A header we can answer: the encoded response to send back (FORMERR for undecodable or
    /// question count ≠ 1, NOTIMP for opcodes other than QUERY, BADVERS for EDNS versions other
    /// than 0), echoing the ID (and the question if it decoded).
    Answer(Vec<u8>),
}

/// Parses a client's query (RFC 1035 §4.1), or says whether and how to refuse it.
pub fn parse_query(bytes: &[u8]) -> Result<Query, QueryError> {
    let Some(header) = read_header(bytes) else {
        return Err(QueryError::Drop);
    };
    let meta = header.metadata;
    if meta.message_type == MessageType::Response {
        return Err(QueryError::Drop);
    }
    let message = decode(bytes);
    // The question is echoed only when it is the one question a query may carry.
    let question = message
        .as_ref()
        .filter(|m| m.queries.len() == 1)
        .and_then(|m| m.queries.first());
    let refuse = |rcode| {
        let mut reply = bare_response(&meta, rcode);
        reply.queries.extend(question.cloned());
        QueryError::Answer(encode(&reply))
    };
    if meta.op_code != OpCode::Query {
        return Err(refuse(ResponseCode::NotImp));
    }
    let (Some(message), Some(question)) = (message.as_ref(), question) else {
        return Err(refuse(ResponseCode::FormErr));
    };
    if let Some(edns) = &message.edns {
        if edns.version() != 0 {
            let mut reply = bare_response(&meta, ResponseCode::BADVERS);
            reply.queries.push(question.clone());
            // RFC 6891 §6.1.3: BADVERS carries the highest version we do implement, 0.
            reply.edns = Some(our_edns(edns.flags().dnssec_ok));
            return Err(QueryError::Answer(encode(&reply)));
        }
    }
    Ok(Query {
        id: meta.id,
        name: name_bytes(&question.name),
        qtype: u16::from(question.query_type),
        qclass: u16::from(question.query_class),
        recursion_desired: meta.recursion_desired,
        question: question.clone(),
        edns: message.edns.as_ref().map(|edns| ClientEdns {
            udp_payload: edns.max_payload(),
            dnssec_ok: edns.flags().dnssec_ok,
        }),
    })
}

/// The response to an A/AAAA `query` from addresses resolved elsewhere (RFC 1035 §4.1, RFC 3596
/// §2): NOERROR, RA=1, RD copied, the question echoed, one record per distinct address of the
/// asked family (A for IPv4, AAAA for IPv6, IPv4-mapped IPv6 counted as IPv4; at most 64), each
/// with `ttl` seconds (capped at 2^31-1, RFC 2181 §8); none of that family → NOERROR with no
/// answers (NODATA, RFC 2308 §2.2). Other questions: NOTIMP.
pub fn addresses_answer(query: &Query, addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    if !query.is_address() {
        return rcode_answer(query, u16::from(ResponseCode::NotImp));
    }
    let want_v4 = query.qtype == TYPE_A;
    let mut picked: Vec<IpAddr> = Vec::new();
    for ip in addrs.iter().map(|ip| ip.to_canonical()) {
        if picked.len() == MAX_ADDRESSES {
            break;
        }
        // RFC 2181 §5: an RRset holds no duplicate records.
        if ip.is_ipv4() == want_v4 && !picked.contains(&ip) {
            picked.push(ip);
        }
    }
    let mut reply = response(query, ResponseCode::NoError);
    let owner = query.question.name.clone();
    let ttl = ttl.min(MAX_TTL);
    reply.answers = picked
        .into_iter()
        .map(|ip| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            Record::from_rdata(owner.clone(), ttl, data)
        })
        .collect();
    encode(&reply)
}

/// A response to `query` with no records and `rcode` (RFC 1035 §4.1.1: NXDOMAIN=3, SERVFAIL=2,
/// NOTIMP=4, REFUSED=5 ...), question echoed. An extended RCODE (> 15, RFC 6891 §6.1.3) needs an
/// OPT record: without one in the query, or above 4095, it becomes SERVFAIL.
pub fn rcode_answer(query: &Query, rcode: u16) -> Vec<u8> {
    let fits = rcode <= 0xF || (rcode <= 0xFFF && query.edns.is_some());
    let rcode = if fits { rcode } else { u16::from(ResponseCode::ServFail) };
    encode(&response(query, rcode.into()))
}

/// Whether `response` answers `query`: it parses, QR=1, OPCODE=QUERY, the same ID and the same
/// single question (name compared label by label, ASCII case-insensitively as bytes; type;
/// class). The checks
/// RFC 5452 §9.1 asks of a resolver before it accepts an upstream answer.
pub fn answers(query: &Query, response: &[u8]) -> bool {
    decode(response).is_some_and(|message| answers_message(query, &message))
}

/// [`answers`] on a decoded message.
fn answers_message(query: &Query, message: &Message) -> bool {
    message.message_type == MessageType::Response
        && message.op_code == OpCode::Query
        && message.id == query.id
        && message.queries.len() == 1
        && message.queries.first().is_some_and(|q| {
            u16::from(q.query_type) == query.qtype
                && u16::from(q.query_class) == query.qclass
                && name_key(&q.name) == name_key(&query.question.name)
        })
}

/// The UDP payload a response to `query` may fill (RFC 1035 §4.2.1, RFC 6891 §6.2.3): 512, or
/// the query's EDNS0 UDP size, capped at 1232 (the size we advertise).
pub fn udp_limit(query: &Query) -> usize {
    usize::from(
        query
            .edns
            .map_or(MIN_UDP, |edns| edns.udp_payload.clamp(MIN_UDP, MAX_UDP)),
    )
}

/// `response` cut down to fit a UDP payload of `max` bytes: if it is longer, the answer,
/// authority and additional sections are dropped and TC is set (RFC 1035 §4.2.1, RFC 2181 §9),
/// keeping the question and the OPT record (RFC 6891 §7) while they fit. Bytes that do not
/// decode keep only their header, with TC set. The result fits whenever `max` ≥ 12; shorter
/// bytes come back unchanged.
pub fn truncate_for_udp(response: &[u8], max: usize) -> Vec<u8> {
    if response.len() <= max {
        return response.to_vec();
    }
    let Some(header) = read_header(response) else {
        return response.to_vec();
    };
    if let Some(message) = decode(response) {
        let mut cut = message.truncate();
        let wire = encode(&cut);
        if wire.len() <= max {
            return wire;
        }
        cut.edns = None;
        let wire = encode(&cut);
        if wire.len() <= max {
            return wire;
        }
    }
    let mut bare = Message::new(
        header.metadata.id,
        header.metadata.message_type,
        header.metadata.op_code,
    );
    bare.metadata = header.metadata;
    bare.metadata.truncation = true;
    encode(&bare)
}

/// (IP, TTL seconds) of every A (RFC 1035 §3.4.1) and AAAA (RFC 3596 §2.1) record of class IN in
/// the answer section of `response`; empty if it does not decode. TTLs above 2^31-1 read as 0
/// (RFC 2181 §8).
pub fn answer_addresses(response: &[u8]) -> Vec<(IpAddr, u32)> {
    let Some(message) = decode(response) else {
        return Vec::new();
    };
    message
        .answers
        .iter()
        .filter(|record| record.dns_class == DNSClass::IN)
        .filter_map(|record| match &record.data {
            RData::A(a) => Some((IpAddr::V4(a.0), ttl_of(record))),
            RData::AAAA(aaaa) => Some((IpAddr::V6(aaaa.0), ttl_of(record))),
            _ => None,
        })
        .collect()
}

/// A record's TTL as RFC 2181 §8 reads it: values with the top bit set mean 0.
fn ttl_of(record: &Record) -> u32 {
    if record.ttl > MAX_TTL {
        0
    } else {
        record.ttl
    }
}

/// The header alone, or `None` for fewer than 12 bytes.
fn read_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    Header::read(&mut BinDecoder::new(bytes)).ok()
}

/// The whole message, or `None` if it does not decode. Messages with more than one question are
/// refused before hickory sees them: no message this module handles has more, and hickory
/// reserves room for QDCOUNT questions up front (up to 65535 of them for a 12-byte datagram).
fn decode(bytes: &[u8]) -> Option<Message> {
    if read_header(bytes)?.counts.queries > 1 {
        return None;
    }
    Message::from_vec(bytes).ok()
}

/// Encodes a message we built or decoded. hickory only fails on messages over 65535 bytes, which
/// nothing here builds (decoded messages were at most that, and re-encoding compresses names);
/// should it fail anyway, the client gets SERVFAIL with the same ID rather than nothing.
fn encode(message: &Message) -> Vec<u8> {
    message.to_vec().unwrap_or_else(|_| {
        let mut fallback = Message::new(message.id, MessageType::Response, message.op_code);
        fallback.metadata.response_code = ResponseCode::ServFail;
        fallback.to_vec().unwrap_or_default()
    })
}

/// A response to the header `meta` with `rcode`, and no question or records yet.
fn bare_response(meta: &Metadata, rcode: ResponseCode) -> Message {
    let mut reply = Message::response(meta.id, meta.op_code);
    reply.metadata.recursion_desired = meta.recursion_desired;
    // We are a recursive service for our clients: RA=1 tells them not to go elsewhere.
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = rcode;
    reply
}

/// A response to `query` with `rcode`, its question echoed and an OPT record if it had one.
fn response(query: &Query, rcode: ResponseCode) -> Message {
    let mut reply = Message::response(query.id, OpCode::Query);
    reply.metadata.recursion_desired = query.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = rcode;
    reply.queries.push(query.question.clone());
    reply.edns = query.edns.map(|edns| our_edns(edns.dnssec_ok));
    reply
}

/// The OPT record of our responses (RFC 6891 §6.1.1, §6.1.3): version 0, our UDP size, DO
/// copied from the query (RFC 3225 §3).
fn our_edns(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP);
    edns.set_version(0);
    edns.set_dnssec_ok(dnssec_ok);
    edns
}

/// `name` as this module compares names (RFC 4343 §3: ASCII case-insensitively, as bytes):
/// each label lowercased after its length, as on the wire uncompressed. Unlike [`Query::name`]
/// this keeps the label boundaries, so a label containing a `.` byte stays a different name.
fn name_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        // Labels are at most 63 bytes (hickory checks on decode and construction).
        out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out
}

/// [`Query::name`] of `name`: labels joined by `.`, ASCII lowercased, no trailing dot.
fn name_bytes(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out
}
