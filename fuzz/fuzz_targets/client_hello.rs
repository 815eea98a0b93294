//! The ClientHello peek (`gateway::listen::hello::read_client_hello`) and the SNI check after it: any
//! bytes end in a parsed hello or a refusal, never a panic, and never more than 16 KiB read;
//! the bytes kept for replay are exactly those read.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut io = tokio::io::join(data, tokio::io::sink());
        // Keeping the bytes read, as `sni-only` does to replay them upstream.
        if let Ok((accepted, kept)) =
            gateway::listen::hello::read_client_hello(&mut io, Duration::from_secs(1), true).await
        {
            assert!(data.len() <= gateway::listen::hello::MAX_HELLO + 4096);
            assert!(
                data.starts_with(&kept),
                "the kept bytes are exactly what was read"
            );
            if let Some(sni) = accepted.client_hello().server_name() {
                let _ = sni.parse::<policy::HostName>();
            }
        }
    });
});
