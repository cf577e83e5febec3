//! The archive reader behind `unpack --check` and `inspect ARCHIVE`: zstd, tar, the manifest
//! and every digest, from arbitrary bytes. Anything but a verdict (a panic, an abort, an
//! allocation from a claimed size) is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mdeploy::pack::check_archive(std::io::Cursor::new(data), None);
});
