//! Fuzz target `dns`: the DNS forwarder's message functions (`dns/`) on arbitrary bytes, read
//! both as a client's query and as an upstream server's response. Beyond "no panic" it checks
//! what the forwarder relies on: every response built for a query parses, with the query's ID,
//! and [`answers`] accepts it; truncation fits; the cache gives back responses to the question
//! asked.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};

use crate::dns::{
    addresses_answer, answer_addresses, answers, parse_query, rcode_answer, truncate_for_udp, udp_limit, Cache,
    NameMap, Query, QueryError,
};

/// The addresses every query is "resolved" to: both families, a duplicate and an IPv4-mapped one.
fn resolved() -> [IpAddr; 4] {
    [
        IpAddr::from([10, 1, 2, 3]),
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
        IpAddr::from([10, 1, 2, 3]),
        IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0x0a09, 0x0909]),
    ]
}

/// `data` as a query, then as a response.
pub fn dns(data: &[u8]) {
    match parse_query(data) {
        Ok(query) => query_path(&query),
        Err(QueryError::Answer(reply)) => {
            assert!(is_response_to(&reply, data), "refusal of {data:02x?} is {reply:02x?}");
        }
        Err(QueryError::Drop) => {
            let is_response = data.get(2).is_some_and(|flags| flags & 0x80 != 0);
            assert!(data.len() < 12 || is_response, "dropped {data:02x?}");
        }
    }
    response_path(data);
}

/// Every response the forwarder can build for `query`.
fn query_path(query: &Query) {
    let reply = addresses_answer(query, &resolved(), 300);
    assert!(answers(query, &reply), "{query:?}: {reply:02x?}");
    let found = answer_addresses(&reply);
    if query.is_address() {
        let want_v4 = query.qtype() == 1;
        assert_eq!(found.len(), if want_v4 { 2 } else { 1 }, "{query:?}: {found:?}");
        assert!(found.iter().all(|(ip, ttl)| ip.is_ipv4() == want_v4 && *ttl == 300));
    } else {
        assert!(found.is_empty());
    }
    for rcode in [2, 3, 5, 23, 5000] {
        assert!(answers(query, &rcode_answer(query, rcode)), "{query:?} rcode {rcode}");
    }
    let limit = udp_limit(query);
    assert!((512..=1232).contains(&limit));
    let cut = truncate_for_udp(&reply, limit);
    assert!(cut.len() <= limit && answers(query, &cut), "{query:?}: {cut:02x?}");

    let t0 = Instant::now();
    let mut cache = Cache::new(2);
    cache.insert(query, &reply, t0, 60);
    let hit = cache.get(query, t0 + Duration::from_secs(1));
    assert_eq!(hit.is_some(), query.is_address(), "{query:?}");
    if let Some(hit) = hit {
        assert!(answers(query, &hit));
        let mut names = NameMap::new(4);
        for (ip, ttl) in answer_addresses(&hit) {
            names.remember(ip, query.name(), Duration::from_secs(u64::from(ttl)), t0);
            assert_eq!(names.lookup(ip, t0).as_deref(), Some(query.name()));
        }
    }
}

/// `data` as an upstream response: cut for UDP it must fit and keep its ID; to the query it
/// would be with QR cleared, it must be an answer; cached, it must come back as one.
fn response_path(data: &[u8]) {
    let _ = answer_addresses(data);
    let cut = truncate_for_udp(data, 512);
    if data.len() >= 12 {
        assert!(
            cut.len() <= 512 && cut.get(..2) == data.get(..2),
            "{data:02x?} cut to {cut:02x?}"
        );
    }
    let mut asked = data.to_vec();
    let Some(flags) = asked.get_mut(2) else {
        return;
    };
    if *flags & 0x80 == 0 {
        return;
    }
    *flags &= 0x7f;
    let Ok(query) = parse_query(&asked) else {
        return;
    };
    // Compression pointers may point into the header, so clearing QR can change what decodes,
    // the question included: the claim is for responses that decode to the same question.
    let as_response = Message::from_vec(data).ok().map(|m| m.queries);
    if as_response.is_some() && as_response == Message::from_vec(&asked).ok().map(|m| m.queries) {
        assert!(answers(&query, data), "{data:02x?} does not answer itself as a query");
    }
    let t0 = Instant::now();
    let mut cache = Cache::new(1);
    cache.insert(&query, data, t0, 3600);
    if let Some(hit) = cache.get(&query, t0) {
        assert!(answers(&query, &hit), "cached {data:02x?} came back as {hit:02x?}");
    }
}

/// Whether `reply` decodes (with hickory, as a client would) as a response with the ID of
/// `request`.
fn is_response_to(reply: &[u8], request: &[u8]) -> bool {
    Message::from_vec(reply)
        .is_ok_and(|m| m.message_type == MessageType::Response && request.get(..2) == Some(&m.id.to_be_bytes()[..]))
}
