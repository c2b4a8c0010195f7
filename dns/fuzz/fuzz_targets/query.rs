//! Arbitrary bytes as one UDP datagram to the DNS server: hickory's parse, the handler over a
//! fixed catalog, hickory's UDP encoding; any broken invariant (`shoal_dns::fuzzing::check`) or
//! panic is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|packet: &[u8]| {
    if let Err(broken) = shoal_dns::fuzzing::check(packet) {
        panic!("{broken}");
    }
});
