//! Tests of the DNS module: each function on hand-built messages (`messages`, `cache`), and
//! properties over arbitrary ones (`props`). Messages are built and read back with hickory, the
//! same codec the module uses, so the tests state DNS facts rather than byte layouts.

mod cache;
mod messages;
mod props;

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as Question, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{parse_query, Query};

/// A query for `name`/`qtype` with ID `id` and RD=1, with an OPT record advertising `edns`.
fn query_message(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Question::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        message.set_edns(opt);
    }
    message
}

fn wire(message: &Message) -> Vec<u8> {
    message.to_vec().unwrap()
}

/// The parsed form of [`query_message`].
fn query(id: u16, name: &str, qtype: RecordType) -> Query {
    parse_query(&wire(&query_message(id, name, qtype, None))).unwrap()
}

fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap()
}

/// An upstream server's response to `query_message(id, name, qtype)` with `rcode`, `answers`
/// and `authorities`.
fn upstream(
    id: u16,
    name: &str,
    qtype: RecordType,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
) -> Vec<u8> {
    let mut message = query_message(id, name, qtype, None).into_response();
    message.metadata.response_code = rcode;
    message.metadata.recursion_available = true;
    message.answers = answers;
    message.authorities = authorities;
    wire(&message)
}

fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, RData::A(A(ip.into())))
}

fn aaaa(name: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(
        Name::from_ascii(name).unwrap(),
        ttl,
        RData::AAAA(AAAA(ip.parse().unwrap())),
    )
}

/// The SOA of a negative answer, with record TTL `ttl` and MINIMUM `minimum`.
fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let mname = Name::from_ascii("ns.campus.test").unwrap();
    let rname = Name::from_ascii("hostmaster.campus.test").unwrap();
    let data = SOA::new(mname, rname, 1, 3600, 600, 86400, minimum);
    Record::from_rdata(Name::from_ascii(zone).unwrap(), ttl, RData::SOA(data))
}

/// The addresses in `message`'s answer section, in order.
fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}
