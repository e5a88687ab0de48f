//! `persistence.conf`: live-boot's line grammar, with zlive's stricter validation.
//!
//! Pure: bytes in, accepted entries and rejected lines out. Rules that involve several
//! entries (duplicates, nested sources) are applied across volumes by `plan.rs`.
//! Where live-boot's reader is buggy zlive does what a user would expect; each such
//! decision is listed in `man/zlive.persistence.conf.5.md`.

use crate::names;
use std::fmt;

/// Longest line accepted; longer lines are refused (no path needs more).
pub const MAX_LINE: usize = 4096;
/// Most entries accepted from one file; the rest are refused.
pub const MAX_ENTRIES: usize = 4096;

/// Names on a volume that start with this are zlive's own (bootstrap copies in progress).
pub const RESERVED_PREFIX: &str = ".zlive-";

/// How an entry makes DIR persistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Bind-mount the source over DIR (live-boot's default).
    Bind,
    /// Overlay with the image's DIR as lower layer and `SRC/rw` as upper layer.
    Union,
    /// A symlink farm in DIR pointing at the files in the source.
    Link,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bind => "bind",
            Mode::Union => "union",
            Mode::Link => "link",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in its file.
    pub line: usize,
    /// DIR, normalised: absolute, single slashes, no trailing slash (except `/`).
    pub dir: String,
    pub mode: Mode,
    /// The source directory relative to the volume root, normalised; empty means the
    /// volume root itself (`source=.`, or DIR `/` without `source=`).
    pub source: String,
}

/// One refused line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub file: String,
    pub line: usize,
    /// The offending text, made printable.
    pub text: String,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: ignoring '{}': {}",
            self.file, self.line, self.text, self.reason
        )
    }
}

/// The result of parsing one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub rejected: Vec<Rejection>,
}

/// Trees that no entry may cover: API file systems that systemd mounts after switch-root
/// (an entry there would be hidden or break the boot), zlive's own `/run/live`, and `/lib`,
/// which live-boot refuses as well.
const FORBIDDEN_TREES: &[(&str, &str)] = &[
    ("/proc", "/proc is the kernel's process file system"),
    ("/sys", "/sys is the kernel's sysfs"),
    ("/dev", "/dev is the kernel's device file system"),
    (
        "/run",
        "/run is a tmpfs shared with the initrd and holds the persistence volumes themselves",
    ),
    (
        "/lib",
        "/lib is refused, as live-boot does: the boot's own libraries and modules live there",
    ),
];

/// Whether `path` is `tree` or lies below it (on component boundaries).
pub fn is_within(path: &str, tree: &str) -> bool {
    if tree == "/" {
        return true;
    }
    path == tree || (path.starts_with(tree) && path.as_bytes().get(tree.len()) == Some(&b'/'))
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parse a whole file. `file` names it in messages.
pub fn parse(file: &str, bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // A last line without a newline is read like any other (live-boot silently drops it).
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = index + 1;
        // Windows line endings: the CR is not part of the last word (live-boot keeps it).
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut reject = |text: &str, reason: String| {
            parsed.rejected.push(Rejection {
                file: file.to_owned(),
                line: line_no,
                text: names::printable(text),
                reason,
            })
        };
        if raw.len() > MAX_LINE {
            let head = String::from_utf8_lossy(&raw[..64]);
            reject(&head, format!("the line is longer than {MAX_LINE} bytes"));
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            let text = String::from_utf8_lossy(raw);
            reject(
                &text,
                "the line is not valid UTF-8 (is this a text file?)".to_owned(),
            );
            continue;
        };
        let line = line.trim_matches(is_blank);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if parsed.entries.len() >= MAX_ENTRIES {
            reject(line, format!("more than {MAX_ENTRIES} entries in one file"));
            continue;
        }
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            reject(
                line,
                format!("the line contains {}", names::describe_char(c)),
            );
            continue;
        }
        if line.contains('\\') {
            reject(
                line,
                "the line contains a backslash; live-boot reads it as an escape, zlive refuses it"
                    .to_owned(),
            );
            continue;
        }
        match parse_line(line) {
            Ok(Some((dir, mode, source))) => parsed.entries.push(Entry {
                line: line_no,
                dir,
                mode,
                source,
            }),
            Ok(None) => {}
            Err((text, reason)) => reject(&text, reason),
        }
    }
    parsed
}

type LineError = (String, String);

/// One non-comment line: `DIR [OPTIONS]`. DIR ends at the first blank; options are
/// separated by blanks and commas.
fn parse_line(line: &str) -> Result<Option<(String, Mode, String)>, LineError> {
    let (dir_text, options) = match line.find(is_blank) {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let dir = check_dir(dir_text).map_err(|reason| (dir_text.to_owned(), reason))?;

    let mut mode = Mode::Bind;
    let mut source: Option<&str> = None;
    for token in options.split(|c: char| is_blank(c) || c == ',') {
        match token {
            "" => {}
            // Inline comment (live-boot would refuse the line as an unknown option '#').
            t if t.starts_with('#') => break,
            "bind" => mode = Mode::Bind,
            "union" => mode = Mode::Union,
            "link" => mode = Mode::Link,
            t if t.starts_with("source=") => {
                let value = &t["source=".len()..];
                source = if value.is_empty() { None } else { Some(value) };
            }
            t => {
                let hint = if t.eq_ignore_ascii_case("bind")
                    || t.eq_ignore_ascii_case("union")
                    || t.eq_ignore_ascii_case("link")
                {
                    " (options are lower case)"
                } else {
                    ""
                };
                return Err((
                    t.to_owned(),
                    format!("unknown option; expected bind, union, link or source=DIR{hint}"),
                ));
            }
        }
    }

    let source = match source {
        None => dir.trim_start_matches('/').to_owned(),
        Some(".") => String::new(),
        Some(value) => check_source(value).map_err(|reason| (format!("source={value}"), reason))?,
    };
    if source.split('/').any(|c| c.starts_with(RESERVED_PREFIX)) {
        return Err((
            if source == dir.trim_start_matches('/') { dir } else { format!("source={source}") },
            format!("names starting with '{RESERVED_PREFIX}' on a volume are zlive's own (unfinished copies)"),
        ));
    }
    Ok(Some((dir, mode, source)))
}

/// Validate and normalise DIR.
pub fn check_dir(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        let hint = match text.chars().next() {
            Some('\u{201c}' | '\u{201d}' | '\u{2018}' | '\u{2019}') => {
                " (it starts with a typographic quote)"
            }
            _ => "",
        };
        return Err(format!("not an absolute path{hint}"));
    }
    let dir = format!("/{}", names::components(text)?.join("/"));
    for (tree, why) in FORBIDDEN_TREES {
        if is_within(&dir, tree) {
            return Err(format!("refused: {why}"));
        }
    }
    Ok(dir)
}

/// Validate and normalise a `source=` value other than `.`.
fn check_source(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        return Err(
            "the source must be relative to the volume root (or '.' for the root itself)"
                .to_owned(),
        );
    }
    Ok(names::components(value)?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, Mode, String)> {
        let p = parse("p.conf", text.as_bytes());
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        p.entries
            .into_iter()
            .map(|e| (e.dir, e.mode, e.source))
            .collect()
    }

    fn rejected(text: &str) -> Vec<Rejection> {
        let p = parse("p.conf", text.as_bytes());
        assert!(p.entries.is_empty(), "{:?}", p.entries);
        p.rejected
    }

    fn e(dir: &str, mode: Mode, source: &str) -> (String, Mode, String) {
        (dir.to_owned(), mode, source.to_owned())
    }

    #[test]
    fn grammar() {
        assert_eq!(
            entries("# c\n\n  /home  \n/usr\tunion\n/a bind,source=x\n/b link , source=y//z/\n/c union link bind\n"),
            vec![
                e("/home", Mode::Bind, "home"),
                e("/usr", Mode::Union, "usr"),
                e("/a", Mode::Bind, "x"),
                e("/b", Mode::Link, "y/z"),
                e("/c", Mode::Bind, "c"),
            ]
        );
        assert_eq!(entries("/ union"), vec![e("/", Mode::Union, "")]);
        assert_eq!(entries("//etc// source=."), vec![e("/etc", Mode::Bind, "")]);
        assert_eq!(
            entries("/x source=a source="),
            vec![e("/x", Mode::Bind, "x")]
        );
        assert_eq!(
            entries("/x source=a,source=b"),
            vec![e("/x", Mode::Bind, "b")]
        );
    }

    #[test]
    fn decisions_where_live_boot_is_buggy() {
        // Last line without newline, CRLF, BOM, inline comment.
        assert_eq!(
            entries("/a\r\n/b union\r\n/c"),
            vec![
                e("/a", Mode::Bind, "a"),
                e("/b", Mode::Union, "b"),
                e("/c", Mode::Bind, "c"),
            ]
        );
        assert_eq!(entries("\u{feff}/ union"), vec![e("/", Mode::Union, "")]);
        assert_eq!(
            entries("/home union # keep"),
            vec![e("/home", Mode::Union, "home")]
        );
        // The /lib test is by component: /library and /lib64 are ordinary paths.
        assert_eq!(
            entries("/library\n/lib64"),
            vec![
                e("/library", Mode::Bind, "library"),
                e("/lib64", Mode::Bind, "lib64"),
            ]
        );
    }

    #[test]
    fn rejections_name_line_text_and_reason() {
        let r = rejected("/ok union bogus\n\nhome\n/a/../b\n/lib/firmware\n/run/live/x\n/proc\n/x source=/abs\n/y source=a/../b\n/z Union\n/q\\ x\n/sp\u{1}x\n/d source=a:b");
        let summary: Vec<(usize, &str)> = r.iter().map(|r| (r.line, r.text.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                (1, "bogus"),
                (3, "home"),
                (4, "/a/../b"),
                (5, "/lib/firmware"),
                (6, "/run/live/x"),
                (7, "/proc"),
                (8, "source=/abs"),
                (9, "source=a/../b"),
                (10, "Union"),
                (11, "/q\\ x"),
                (12, "/sp\\u{1}x"),
                (13, "source=a:b"),
            ]
        );
        assert!(r[8].reason.contains("lower case"));
        assert!(r.iter().all(|r| r.file == "p.conf" && !r.reason.is_empty()));
        let reserved = rejected("/srv/x bind,source=.zlive-bootstrap-home\n/a/.zlive-x\n");
        assert_eq!(reserved[0].text, "source=.zlive-bootstrap-home");
        assert_eq!(reserved[1].text, "/a/.zlive-x");
        assert!(reserved.iter().all(|r| r.reason.contains("zlive's own")));
        let quote = rejected("\u{201c}/ union\u{201d}");
        assert!(quote[0].reason.contains("typographic"));
    }

    #[test]
    fn binary_and_huge_input() {
        let r = parse("p.conf", b"/a\n\xff\xfe\x00\n/b\x00\n");
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.rejected.len(), 2);
        let long = format!("/{}\n/ok", "a/".repeat(MAX_LINE));
        let r = parse("p.conf", long.as_bytes());
        assert_eq!(r.entries.len(), 1);
        assert!(r.rejected[0].reason.contains("longer"));
        let many: String = (0..MAX_ENTRIES + 3).map(|i| format!("/d{i}\n")).collect();
        let r = parse("p.conf", many.as_bytes());
        assert_eq!(r.entries.len(), MAX_ENTRIES);
        assert_eq!(r.rejected.len(), 3);
    }

    #[test]
    fn within() {
        assert!(is_within("/run/live", "/run"));
        assert!(is_within("/run", "/run"));
        assert!(!is_within("/running", "/run"));
        assert!(is_within("/anything", "/"));
    }
}
