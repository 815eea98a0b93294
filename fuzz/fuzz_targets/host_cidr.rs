//! Host names, host patterns and CIDR ranges as written in policies and requests: whatever
//! parses prints back to the same value, and matching never panics.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use policy::{Cidr, Host, HostPattern};

fuzz_target!(|input: (&str, &str, [u8; 16])| {
    let (a, b, octets) = input;
    let host = Host::parse(a).ok();
    if let Some(h) = &host {
        assert_eq!(Host::parse(&h.to_string()).as_ref(), Ok(h), "{a:?}");
    }
    if let Ok(p) = b.parse::<HostPattern>() {
        assert_eq!(
            p.to_string().parse::<HostPattern>().as_ref(),
            Ok(&p),
            "{b:?}"
        );
        if let Some(h) = &host {
            let _ = p.matches(h);
        }
    }
    if let Ok(c) = a.parse::<Cidr>() {
        assert_eq!(c.to_string().parse::<Cidr>(), Ok(c), "{a:?}");
        let _ = c.contains(IpAddr::from(octets));
        let mut v4 = [0u8; 4];
        v4.copy_from_slice(&octets[..4]);
        let _ = c.contains(IpAddr::from(v4));
    }
});
