//! Each message function on hand-built queries and responses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use super::super::{
    addresses_answer, answer_addresses, answers, parse_query, rcode_answer, truncate_for_udp, udp_limit, QueryError,
};
use super::{a, aaaa, addresses, parse, query, query_message, upstream, wire};

/// The response `parse_query` wants sent for `bytes`, decoded.
fn refusal(bytes: &[u8]) -> hickory_proto::op::Message {
    match parse_query(bytes) {
        Err(QueryError::Answer(reply)) => parse(&reply),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn short_datagrams_and_responses_are_dropped() {
    assert_eq!(parse_query(&[]), Err(QueryError::Drop));
    assert_eq!(parse_query(&[0; 11]), Err(QueryError::Drop));
    let response = upstream(7, "campus.test", RecordType::A, ResponseCode::NoError, vec![], vec![]);
    assert_eq!(parse_query(&response), Err(QueryError::Drop));
    // A response that does not even decode is still a response: silence.
    let mut garbage = vec![0x12, 0x34, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 5]);
    assert_eq!(parse_query(&garbage), Err(QueryError::Drop));
}

#[test]
fn garbage_after_a_header_gets_formerr_with_the_id() {
    let mut bytes = vec![0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0xc0, 0xff, 0x00]); // a compression pointer past the end
    let reply = refusal(&bytes);
    assert_eq!(reply.id, 0xabcd);
    assert_eq!(reply.message_type, MessageType::Response);
    assert_eq!(reply.response_code, ResponseCode::FormErr);
    assert!(reply.recursion_desired, "RD copied");
    assert!(reply.queries.is_empty(), "nothing decoded to echo");
}

#[test]
fn question_counts_other_than_one_get_formerr() {
    let mut none = wire(&query_message(5, "campus.test.", RecordType::A, None));
    none.truncate(12);
    none[4..6].copy_from_slice(&[0, 0]);
    assert_eq!(refusal(&none).response_code, ResponseCode::FormErr);
    let mut two = query_message(6, "campus.test.", RecordType::A, None);
    two.add_query(hickory_proto::op::Query::query(
        "other.test.".parse().unwrap(),
        RecordType::A,
    ));
    let reply = refusal(&wire(&two));
    assert_eq!((reply.id, reply.response_code), (6, ResponseCode::FormErr));
    assert!(reply.queries.is_empty());
}

#[test]
fn other_opcodes_get_notimp_with_the_question() {
    let mut notify = query_message(9, "Campus.Test.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let reply = refusal(&wire(&notify));
    assert_eq!(
        (reply.id, reply.op_code, reply.response_code),
        (9, OpCode::Notify, ResponseCode::NotImp)
    );
    assert_eq!(reply.queries, notify.queries, "question echoed as sent");
}

#[test]
fn edns_versions_other_than_zero_get_badvers() {
    let mut message = query_message(3, "campus.test.", RecordType::A, Some(4096));
    message.edns.as_mut().unwrap().set_version(1);
    let reply = refusal(&wire(&message));
    // 16 is BADVERS in an OPT-carrying response; hickory decodes the number as its TSIG twin.
    assert_eq!(u16::from(reply.response_code), u16::from(ResponseCode::BADVERS));
    assert_eq!(reply.edns.map(|e| e.version()), Some(0));
}

#[test]
fn a_query_parses_into_its_question() {
    let q = query(0x1234, "Intranet.CAMPUS.test.", RecordType::AAAA);
    assert_eq!(
        (q.id(), q.name(), q.qtype(), q.qclass()),
        (0x1234, &b"intranet.campus.test"[..], 28, 1)
    );
    assert!(q.is_address());
    let mx = query(1, "campus.test.", RecordType::MX);
    assert_eq!(mx.qtype(), 15);
    assert!(!mx.is_address());
    assert_eq!(query(2, ".", RecordType::NS).name(), b"");
}

#[test]
fn a_answer_carries_only_ipv4_including_mapped() {
    let q = query(77, "Host.Campus.Test.", RecordType::A);
    let addrs: Vec<IpAddr> = vec![
        "10.1.2.3".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
        "::ffff:10.9.9.9".parse().unwrap(),
        "10.1.2.3".parse().unwrap(), // a duplicate: one record
    ];
    let reply = parse(&addresses_answer(&q, &addrs, 42));
    assert_eq!(
        (reply.id, reply.message_type, reply.response_code),
        (77, MessageType::Response, ResponseCode::NoError)
    );
    assert!(reply.recursion_available && reply.recursion_desired);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(
        reply.queries[0].name.to_ascii(),
        "Host.Campus.Test.",
        "question echoed in its case"
    );
    let want: Vec<IpAddr> = vec![Ipv4Addr::new(10, 1, 2, 3).into(), Ipv4Addr::new(10, 9, 9, 9).into()];
    assert_eq!(addresses(&reply), want);
    assert!(reply.answers.iter().all(|r| r.ttl == 42));
}

#[test]
fn aaaa_answer_carries_only_ipv6_and_nodata_when_none() {
    let q = query(8, "host.campus.test.", RecordType::AAAA);
    let addrs: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    let reply = parse(&addresses_answer(&q, &addrs, 60));
    assert_eq!(
        addresses(&reply),
        vec![IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap())]
    );
    let nodata = parse(&addresses_answer(&q, &addrs[..1], 60));
    assert_eq!(nodata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.queries.len(), 1);
}

#[test]
fn addresses_answer_to_other_types_is_notimp() {
    let q = query(8, "campus.test.", RecordType::MX);
    let reply = parse(&addresses_answer(&q, &["10.0.0.1".parse().unwrap()], 60));
    assert_eq!(reply.response_code, ResponseCode::NotImp);
    assert!(reply.answers.is_empty());
}

#[test]
fn rcode_answer_echoes_question_and_edns() {
    let q = query(11, "nowhere.test.", RecordType::A);
    let reply = parse(&rcode_answer(&q, 3));
    assert_eq!(
        (reply.id, reply.response_code, reply.queries.len()),
        (11, ResponseCode::NXDomain, 1)
    );
    assert!(reply.answers.is_empty() && reply.edns.is_none());
    // An extended RCODE cannot be said without OPT: SERVFAIL instead.
    assert_eq!(parse(&rcode_answer(&q, 23)).response_code, ResponseCode::ServFail);
    let with_edns = parse_query(&wire(&query_message(12, "x.test.", RecordType::A, Some(4096)))).unwrap();
    let reply = parse(&rcode_answer(&with_edns, 23));
    assert_eq!(reply.response_code, ResponseCode::BADCOOKIE);
    assert_eq!(reply.edns.map(|e| e.max_payload()), Some(1232));
}

#[test]
fn answers_checks_id_and_question() {
    let q = query(21, "host.campus.test.", RecordType::A);
    let good = upstream(
        21,
        "HOST.campus.test.",
        RecordType::A,
        ResponseCode::NoError,
        vec![a("host.campus.test.", 5, [10, 0, 0, 1])],
        vec![],
    );
    assert!(answers(&q, &good), "names compare case-insensitively");
    assert!(!answers(
        &q,
        &upstream(
            22,
            "host.campus.test.",
            RecordType::A,
            ResponseCode::NoError,
            vec![],
            vec![]
        )
    ));
    assert!(!answers(
        &q,
        &upstream(
            21,
            "other.campus.test.",
            RecordType::A,
            ResponseCode::NoError,
            vec![],
            vec![]
        )
    ));
    assert!(!answers(
        &q,
        &upstream(
            21,
            "host.campus.test.",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![],
            vec![]
        )
    ));
    assert!(
        !answers(&q, &wire(&query_message(21, "host.campus.test.", RecordType::A, None))),
        "QR=0"
    );
    assert!(!answers(&q, &good[..good.len() - 1]), "cut short");
    // The same bytes joined by dots, but other labels: another name.
    let mut dotted = parse(&good);
    dotted.queries[0].name = hickory_proto::rr::Name::from_labels(vec![&b"host.campus"[..], b"test"]).unwrap();
    assert!(!answers(&q, &wire(&dotted)));
    assert!(!answers(&q, b"not dns"));
}

#[test]
fn udp_limit_follows_edns_within_bounds() {
    let size = |edns| udp_limit(&parse_query(&wire(&query_message(1, "a.test.", RecordType::A, edns))).unwrap());
    assert_eq!(size(None), 512);
    assert_eq!(size(Some(4096)), 1232);
    assert_eq!(size(Some(1000)), 1000);
    assert_eq!(size(Some(100)), 512);
}

#[test]
fn truncation_sets_tc_and_fits() {
    let name = "many.campus.test.";
    let records = (0..60u16)
        .map(|i| aaaa(name, 60, &format!("2001:db8::{i:x}")))
        .collect();
    let big = upstream(31, name, RecordType::AAAA, ResponseCode::NoError, records, vec![]);
    assert!(big.len() > 512);
    let cut = truncate_for_udp(&big, 512);
    assert!(cut.len() <= 512);
    let reply = parse(&cut);
    assert!(reply.truncation);
    assert_eq!((reply.id, reply.queries.len(), reply.answers.len()), (31, 1, 0));
    assert_eq!(
        truncate_for_udp(&big, big.len()),
        big,
        "fitting responses are unchanged"
    );
    // Bytes that do not decode keep only their header, TC set.
    let mut garbage = big[..12].to_vec();
    garbage.extend(std::iter::repeat_n(0xff, 600));
    let header = parse(&truncate_for_udp(&garbage, 512));
    assert!(header.truncation && header.id == 31 && header.queries.is_empty());
}

#[test]
fn answer_addresses_lists_a_and_aaaa_with_ttls() {
    let response = upstream(
        41,
        "host.campus.test.",
        RecordType::A,
        ResponseCode::NoError,
        vec![
            a("host.campus.test.", 30, [10, 0, 0, 1]),
            aaaa("host.campus.test.", 40, "2001:db8::2"),
        ],
        vec![],
    );
    let got = answer_addresses(&response);
    assert_eq!(
        got,
        vec![("10.0.0.1".parse().unwrap(), 30), ("2001:db8::2".parse().unwrap(), 40)]
    );
    assert!(answer_addresses(b"garbage that is not a message").is_empty());
}
