//! `host[:port]` as in CONNECT targets and Host headers (`gateway::exchange::head::split_host_port`):
//! whatever is accepted prints back to a string that parses to the same host and port.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((host, port)) = gateway::exchange::head::split_host_port(raw) {
        assert_ne!(port, Some(0));
        let printed = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        assert_eq!(
            gateway::exchange::head::split_host_port(&printed),
            Some((host, port)),
            "{raw:?} -> {printed:?}"
        );
    }
});
