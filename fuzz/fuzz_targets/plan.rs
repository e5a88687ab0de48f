#![no_main]
//! The whole plan and its rendering from a command line and two persistence.conf files:
//! no panic, and every file the generator would write has a single-component name and
//! unit text without stray line breaks.
use libfuzzer_sys::fuzz_target;
use zlive::plan;
use zlive::world::{ConfRead, DirState, World};
use zlive::render::{self, Output};

struct Fake<'a> {
    confs: Vec<&'a [u8]>,
}

impl World for Fake<'_> {
    fn is_mounted(&self, path: &str) -> bool {
        path.starts_with("/run/live/persistence/")
    }
    fn read_conf(&self, volume_dir: &str) -> ConfRead {
        let i = volume_dir.len() % self.confs.len();
        ConfRead::Text(self.confs[i].to_vec())
    }
    fn image_dir(&self, dir: &str) -> DirState {
        if dir.len() % 3 == 0 { DirState::Missing } else { DirState::Directory }
    }
    fn volume_dir(&self, _volume_dir: &str, source: &str) -> DirState {
        if source.contains("ln") { DirState::Symlink(source.to_owned()) } else { DirState::Directory }
    }
    fn luks_containers(&self) -> Vec<String> {
        vec!["dpool/luks".to_owned(), String::from_utf8_lossy(self.confs[0]).into_owned()]
    }
    fn root_fallback(&self) -> Option<String> {
        (self.confs[0].len() % 5 == 0).then(|| "fuzzed".to_owned())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let cmdline = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let a = parts.next().unwrap_or_default();
    let b = parts.next().unwrap_or_default();
    let cmd = zlive::cmdline::parse(&format!("boot=live persistence {cmdline}"));
    if !cmd.live {
        return;
    }
    let plan = plan::plan(&cmd, &Fake { confs: vec![a, b] });
    for output in render::render(&plan) {
        let (names, body) = match &output {
            Output::Unit { name, body, .. } => (vec![name.clone()], body.clone()),
            Output::DropIn { unit, name, body, .. } => (vec![unit.clone(), name.to_string()], body.clone()),
            Output::RequiresLink { unit, target, .. } => (vec![unit.clone(), target.to_string()], String::new()),
            Output::Mask { unit, .. } => (vec![unit.to_string()], String::new()),
        };
        for n in names {
            assert!(!n.is_empty() && !n.contains('/') && n != "." && n != ".." && n.len() <= 256, "{n:?}");
        }
        for line in body.lines() {
            assert!(line.is_empty() || line.starts_with('[') || line.contains('='), "{line:?}");
            assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        }
    }
});
