//! Properties over arbitrary bytes, names, addresses and TTLs.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query as Question, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;

use super::super::{addresses_answer, answers, parse_query, Cache, QueryError};
use super::{a, addresses, parse, upstream, wire};

/// Names of 0 to 4 labels of arbitrary bytes (dots, upper case and non-ASCII included).
fn any_name() -> impl Strategy<Value = Name> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..5)
        .prop_map(|labels| Name::from_labels(labels).unwrap())
}

/// A query's wire form: a valid query with some bytes overwritten, so the inputs reach past the
/// header checks more often than uniform random bytes do.
fn mangled_query() -> impl Strategy<Value = Vec<u8>> {
    (
        any_name(),
        any::<u16>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(name, qtype, edits)| {
            let mut message = Message::new(1, MessageType::Query, OpCode::Query);
            message.add_query(Question::query(name, RecordType::from(qtype)));
            let mut bytes = wire(&message);
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        })
}

proptest! {
    #[test]
    fn parse_query_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_query(&bytes);
    }

    /// What parse_query answers is a response with the query's ID.
    #[test]
    fn parse_query_refusals_are_responses(bytes in mangled_query()) {
        if let Err(QueryError::Answer(reply)) = parse_query(&bytes) {
            let reply = parse(&reply);
            prop_assert_eq!(reply.message_type, MessageType::Response);
            prop_assert_eq!(reply.id.to_be_bytes(), [bytes[0], bytes[1]]);
        }
    }

    #[test]
    fn addresses_answer_holds_exactly_the_asked_family(
        name in any_name(),
        v6 in any::<bool>(),
        addrs in proptest::collection::vec(any::<IpAddr>(), 0..20),
        ttl in any::<u32>(),
    ) {
        let qtype = if v6 { RecordType::AAAA } else { RecordType::A };
        let mut message = Message::new(9, MessageType::Query, OpCode::Query);
        message.add_query(Question::query(name.clone(), qtype));
        let query = parse_query(&wire(&message)).unwrap();
        let bytes = addresses_answer(&query, &addrs, ttl);
        prop_assert!(answers(&query, &bytes));
        let reply = parse(&bytes);
        prop_assert_eq!(reply.response_code, ResponseCode::NoError);
        prop_assert!(reply.queries[0].name.eq_case(&name));
        let want: BTreeSet<IpAddr> = addrs.iter().map(|ip| ip.to_canonical()).filter(|ip| ip.is_ipv6() == v6).collect();
        let got = addresses(&reply);
        prop_assert_eq!(got.len(), want.len(), "one record per distinct address");
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
        prop_assert!(reply.answers.iter().all(|r| r.ttl == ttl.min(0x7FFF_FFFF)));
    }

    /// get ∘ insert gives back the records, TTLs reduced by the whole seconds elapsed.
    #[test]
    fn cache_round_trips_records(
        ttls in proptest::collection::vec(1u32..100_000, 1..6),
        elapsed_ms in 0u64..200_000,
        id in any::<u16>(),
    ) {
        let name = "round.trip.test.";
        let records: Vec<_> = ttls.iter().enumerate().map(|(i, ttl)| a(name, *ttl, [10, 0, 0, i as u8])).collect();
        let response = upstream(1, name, RecordType::A, ResponseCode::NoError, records.clone(), vec![]);
        let mut asking = Message::new(1, MessageType::Query, OpCode::Query);
        asking.add_query(Question::query(name.parse().unwrap(), RecordType::A));
        let first = parse_query(&wire(&asking)).unwrap();
        asking.metadata.id = id;
        let again = parse_query(&wire(&asking)).unwrap();
        let t0 = Instant::now();
        let mut cache = Cache::new(4);
        cache.insert(&first, &response, t0, u32::MAX);
        let now = t0 + Duration::from_millis(elapsed_ms);
        let smallest = u64::from(*ttls.iter().min().unwrap());
        match cache.get(&again, now) {
            None => prop_assert!(elapsed_ms / 1000 >= smallest),
            Some(hit) => {
                prop_assert!(elapsed_ms / 1000 < smallest);
                prop_assert!(answers(&again, &hit));
                let hit = parse(&hit);
                prop_assert_eq!(addresses(&hit), addresses(&parse(&response)));
                let age = (elapsed_ms / 1000) as u32;
                let want: Vec<u32> = ttls.iter().map(|ttl| ttl - age).collect();
                prop_assert_eq!(hit.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), want);
            }
        }
    }
}
