//! The SOCKS5 greeting and CONNECT request (`gateway::listen::socks::handshake`): any bytes
//! end in a target or a refusal with a reason; a domain target is always a valid host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut io = tokio::io::join(data, tokio::io::sink());
        match gateway::listen::socks::handshake(&mut io).await {
            Ok(target) => {
                let again = policy::Host::parse(&target.host.to_string());
                assert_eq!(again.as_ref(), Ok(&target.host));
            }
            Err(fail) => assert!(fail.reason.code().starts_with("socks_")),
        }
    });
});
