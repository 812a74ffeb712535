//! Any text given as a config file is either a checked model or a list of problems:
//! never a panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = splitgate::config::parse(std::path::Path::new("fuzz/splitgate.toml"), text);
});
