//! [`Cache`] and [`NameMap`] with explicit `Instant`s.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::super::{Cache, NameMap};
use super::{a, parse, query, soa, upstream};

const NAME: &str = "host.campus.test.";

fn positive(id: u16, ttls: [u32; 2]) -> Vec<u8> {
    let records = vec![a(NAME, ttls[0], [10, 0, 0, 1]), a(NAME, ttls[1], [10, 0, 0, 2])];
    upstream(id, NAME, RecordType::A, ResponseCode::NoError, records, vec![])
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn ttls_count_down_and_entries_expire_at_the_smallest() {
    let t0 = Instant::now();
    let mut cache = Cache::new(8);
    cache.insert(&query(1, NAME, RecordType::A), &positive(1, [100, 40]), t0, 3600);
    assert_eq!(cache.len(), 1);
    let asker = query(0x5555, "HOST.campus.test.", RecordType::A);
    let hit = parse(&cache.get(&asker, t0 + Duration::from_millis(10_500)).unwrap());
    assert_eq!(hit.id, 0x5555, "the asker's ID");
    assert_eq!(
        hit.queries[0].name.to_ascii(),
        "HOST.campus.test.",
        "the asker's question"
    );
    assert_eq!(hit.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), vec![90, 30]);
    assert!(cache.get(&asker, t0 + secs(39)).is_some());
    assert!(
        cache.get(&asker, t0 + secs(40)).is_none(),
        "expired with the smallest TTL"
    );
    assert_eq!(cache.len(), 0, "expired entry removed");
}

#[test]
fn max_ttl_caps_the_lifetime() {
    let t0 = Instant::now();
    let mut cache = Cache::new(8);
    let q = query(1, NAME, RecordType::A);
    cache.insert(&q, &positive(1, [100, 100]), t0, 10);
    assert!(cache.get(&q, t0 + secs(9)).is_some());
    assert!(cache.get(&q, t0 + secs(10)).is_none());
}

#[test]
fn eviction_keeps_the_bound_and_drops_the_soonest_expiring() {
    let t0 = Instant::now();
    let mut cache = Cache::new(3);
    let names = ["a.test.", "b.test.", "c.test.", "d.test."];
    let ttls = [300, 100, 200, 400];
    for (name, ttl) in names.iter().zip(ttls) {
        let response = upstream(
            1,
            name,
            RecordType::A,
            ResponseCode::NoError,
            vec![a(name, ttl, [10, 0, 0, 1])],
            vec![],
        );
        cache.insert(&query(1, name, RecordType::A), &response, t0, 3600);
        assert!(cache.len() <= 3);
    }
    assert_eq!(cache.len(), 3);
    assert!(
        cache.get(&query(2, "b.test.", RecordType::A), t0).is_none(),
        "TTL 100 evicted"
    );
    for name in ["a.test.", "c.test.", "d.test."] {
        assert!(cache.get(&query(2, name, RecordType::A), t0).is_some(), "{name}");
    }
}

#[test]
fn negative_answers_live_for_the_soa_minimum() {
    let t0 = Instant::now();
    let mut cache = Cache::new(8);
    let q = query(1, "gone.campus.test.", RecordType::A);
    let nxdomain = upstream(
        1,
        "gone.campus.test.",
        RecordType::A,
        ResponseCode::NXDomain,
        vec![],
        vec![soa("campus.test.", 300, 30)],
    );
    cache.insert(&q, &nxdomain, t0, 3600);
    let hit = parse(&cache.get(&q, t0 + secs(5)).unwrap());
    assert_eq!(hit.response_code, ResponseCode::NXDomain);
    assert_eq!(hit.authorities[0].ttl, 295);
    assert!(cache.get(&q, t0 + secs(30)).is_none(), "SOA MINIMUM bounds it");
    // NODATA without a SOA says nothing about how long: not cached.
    let bare = upstream(
        1,
        "gone.campus.test.",
        RecordType::A,
        ResponseCode::NoError,
        vec![],
        vec![],
    );
    cache.insert(&q, &bare, t0, 3600);
    assert_eq!(cache.len(), 0);
}

#[test]
fn servfail_truncated_and_mismatched_responses_are_not_cached() {
    let t0 = Instant::now();
    let mut cache = Cache::new(8);
    let q = query(1, NAME, RecordType::A);
    let servfail = upstream(
        1,
        NAME,
        RecordType::A,
        ResponseCode::ServFail,
        vec![],
        vec![soa("campus.test.", 60, 60)],
    );
    cache.insert(&q, &servfail, t0, 3600);
    let mut truncated = positive(1, [60, 60]);
    truncated[2] |= 0x02; // TC
    cache.insert(&q, &truncated, t0, 3600);
    cache.insert(&q, &positive(2, [60, 60]), t0, 3600); // another ID
    cache.insert(&q, &positive(1, [0, 60]), t0, 3600); // TTL 0
    cache.insert(&q, b"garbage", t0, 3600);
    assert_eq!(cache.len(), 0);
    assert!(Cache::new(0).get(&q, t0).is_none());
}

#[test]
fn name_map_remembers_until_expiry_and_stays_bounded() {
    let t0 = Instant::now();
    let mut map = NameMap::new(2);
    let v4: IpAddr = "10.0.0.1".parse().unwrap();
    map.remember(v4, b"intranet.campus.test", secs(60), t0);
    assert_eq!(
        map.lookup(v4, t0 + secs(59)).as_deref(),
        Some(&b"intranet.campus.test"[..])
    );
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    assert!(map.lookup(mapped, t0).is_some(), "IPv4-mapped finds the IPv4 entry");
    assert_eq!(map.lookup(v4, t0 + secs(60)), None);
    assert!(map.is_empty());
    for (i, ttl) in [(1u8, 30), (2, 10), (3, 20)] {
        map.remember(IpAddr::from([10, 0, 0, i]), b"x", secs(ttl), t0);
    }
    assert_eq!(map.len(), 2);
    assert_eq!(
        map.lookup(IpAddr::from([10, 0, 0, 2]), t0),
        None,
        "soonest-expiring evicted"
    );
    map.remember(IpAddr::from([10, 0, 0, 1]), b"newer", secs(30), t0);
    assert_eq!(
        map.lookup(IpAddr::from([10, 0, 0, 1]), t0).as_deref(),
        Some(&b"newer"[..])
    );
}
