//! The DNS responder (`gateway::listen::dns::answer`) on any packet: malformed input is dropped, every
//! answer is a well-formed response to the same id, and the UDP truncation keeps it parseable.
//! The policy has static records and no passthrough, so no lookup ever leaves the process.
#![no_main]

use std::sync::OnceLock;

use gateway::metrics::Metrics;
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
dns:
  proxy_ip: 10.0.0.1
  proxy_ip6: "fd00::1"
  records:
    - {name: static.test, type: A, value: 192.0.2.7}
    - {name: static.test, type: AAAA, value: "2001:db8::7"}
    - {name: alias.test, type: CNAME, value: static.test}
transforms:
  - name: allowlist
    config:
      domains: ["*.example.com"]
"#;

fn config() -> &'static policy::Config {
    static C: OnceLock<policy::Config> = OnceLock::new();
    C.get_or_init(|| policy::Config::parse(POLICY).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let metrics = Metrics::default();
    let Some(resp) = rt.block_on(gateway::listen::dns::answer(&config().dns, &metrics, data))
    else {
        return;
    };
    let query = Message::from_vec(data).unwrap();
    let parsed = Message::from_vec(&resp).unwrap();
    assert_eq!(parsed.metadata.id, query.metadata.id);
    assert_eq!(parsed.metadata.message_type, MessageType::Response);
    let udp = gateway::listen::dns::udp_size(resp, data);
    Message::from_vec(&udp).unwrap();
});
