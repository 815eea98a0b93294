//! The policy parser and validator (`policy::Config::parse`) and the test-case parser: any
//! text is a config or a list of errors with positions, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match policy::Config::parse(text) {
        Ok(_) => {}
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
    let _ = policy::parse_cases(text);
});
