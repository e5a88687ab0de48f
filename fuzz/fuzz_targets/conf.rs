#![no_main]
//! Any persistence.conf: no panic, and every accepted entry obeys the character policy.
use libfuzzer_sys::fuzz_target;
use zlive::conf;

fuzz_target!(|data: &[u8]| {
    let parsed = conf::parse("fuzz.conf", data);
    for e in &parsed.entries {
        assert!(e.dir.starts_with('/'));
        for part in e.dir.split('/').chain(e.source.split('/')).filter(|p| !p.is_empty()) {
            assert!(part != "." && part != "..");
            assert!(part.chars().all(zlive::names::is_safe_path_char), "{part:?}");
        }
        for tree in ["/proc", "/sys", "/dev", "/run", "/lib"] {
            assert!(!conf::is_within(&e.dir, tree));
        }
    }
    for r in &parsed.rejected {
        assert!(!r.reason.is_empty());
        assert!(!r.text.contains('\n'));
    }
});
