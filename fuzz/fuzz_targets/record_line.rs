//! JSONL record lines: validation never panics, and every accepted record writes back to a line
//! that parses to the same record (and quantizes without panicking).
#![no_main]

use coordexp_core::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(record) = Record::from_json_line(line) else { return };
    let written = record.to_json_line();
    let again = Record::from_json_line(&written).expect("a written record must validate");
    assert_eq!(again, record);
    let _ = record.to_bins();
});
