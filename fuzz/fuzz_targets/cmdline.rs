#![no_main]
//! Any kernel command line: parsing never panics, and what it keeps is safe to use.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let c = zlive::cmdline::parse(&text);
    for label in &c.labels {
        assert!(zlive::names::check_label(label).is_ok());
    }
    if let zlive::cmdline::MediumSpec::Device(d) = &c.medium {
        assert!(d.starts_with("/dev/"));
        assert!(!d.split('/').any(|x| x == ".."));
    }
    assert!(!c.media_path.starts_with('/') && !c.media_path.split('/').any(|x| x == ".." || x.is_empty()));
});
