//! strait's cluster DNS: the Kubernetes DNS-Based Service Discovery
//! specification 1.1.0 served from a ClusterState, everything else forwarded.
//!
//! [`Zone::build`] turns a snapshot into names (pure); [`answer`] answers a
//! query from a zone (pure); [`DnsServer`] serves UDP and TCP and swaps in a
//! new zone without holding up a query; [`Forwarder`] asks upstream servers.

mod answer;
mod fast;
mod forward;
pub mod junk;
mod metrics;
mod server;
mod zone;

pub use answer::{answer, Outcome};
pub use forward::{resolv_conf_upstreams, Forwarder};
pub use metrics::DnsMetrics;
pub use server::{decide, encode, udp_limit, Decision, DnsServer, SharedZone, TcpLimits};
pub use zone::{dashed, parse_reverse, reverse_name, Records, Rr, Srv, Zone};

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn zone() -> Zone {
        crate::zone::test_zone()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Whatever arrives, the handler decides without panicking, and
        /// whatever it answers can be encoded.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let zone = zone();
            match decide(&zone, &bytes) {
                Decision::Reply(q, m) => { let _ = encode(&q, m, udp_limit(&q)); }
                Decision::Raw(raw) => prop_assert_eq!(raw.len(), 12),
                Decision::Forward(_) | Decision::Chase(..) | Decision::Drop => {}
            }
        }

        /// Rotating addresses reads only what is there, whatever the bytes.
        #[test]
        fn rotating_arbitrary_bytes_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), turn in any::<u16>()) {
            let before = bytes.len();
            crate::fast::rotate_addresses(&mut bytes, usize::from(turn));
            prop_assert_eq!(bytes.len(), before);
        }

        /// Mutations of a valid query: same property.
        #[test]
        fn mutated_queries_never_panic(flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..8)) {
            let mut q = hickory_proto::op::Message::query();
            q.add_query(hickory_proto::op::Query::query(hickory_proto::rr::Name::from_ascii("web.default.svc.cluster.local.").unwrap(), hickory_proto::rr::RecordType::A));
            let mut bytes = q.to_vec().unwrap();
            for (at, value) in flips {
                if at < bytes.len() { bytes[at] = value; }
            }
            let _ = decide(&zone(), &bytes);
        }
    }
}
