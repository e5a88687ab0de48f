//! The one place that escapes: unit names from paths (exactly as `systemd-escape --path`),
//! template instances, and values written into unit files.

use std::borrow::Cow;

/// Longest unit name systemd accepts without falling back to a hashed name.
pub const UNIT_NAME_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscapeError {
    /// The path has a `..` component (systemd refuses it too).
    NotNormalized,
    /// The escaped unit name would be longer than [`UNIT_NAME_MAX`]; systemd would hash it.
    TooLong,
}

impl std::fmt::Display for EscapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EscapeError::NotNormalized => "the path has a '..' component",
            EscapeError::TooLong => "the unit name for this path would exceed 255 characters",
        })
    }
}

fn push_hex(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\x");
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 15)] as char);
}

/// systemd's `do_escape`: `/` becomes `-`; letters, digits, `:`, `_` and `.` stay; a leading
/// `.` and every other byte become `\xNN`.
fn escape_bytes(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut rest = bytes;
    if let Some((&b'.', tail)) = bytes.split_first() {
        push_hex(out, b'.');
        rest = tail;
    }
    for &b in rest {
        match b {
            b'/' => out.push('-'),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            b => push_hex(out, b),
        }
    }
}

/// `systemd-escape --path`: simplify the path (collapse `//`, drop `.` components and the
/// trailing `/`), refuse `..`, map `/` to `-`.
pub fn path_escape(path: &str) -> Result<String, EscapeError> {
    let mut components = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(EscapeError::NotNormalized),
            c => components.push(c),
        }
    }
    if components.is_empty() {
        return Ok("-".to_owned());
    }
    let mut out = String::with_capacity(path.len() + 8);
    escape_bytes(&components.join("/"), &mut out);
    Ok(out)
}

/// The unit name of a path, e.g. `/sysroot/home` + `.mount` = `sysroot-home.mount`.
pub fn unit_name_from_path(path: &str, suffix: &str) -> Result<String, EscapeError> {
    let mut name = path_escape(path)?;
    name.push_str(suffix);
    if name.len() > UNIT_NAME_MAX {
        return Err(EscapeError::TooLong);
    }
    Ok(name)
}

/// `systemd-escape --unescape --path`: what [`path_escape`] made of a path, back (`-` is `/`,
/// `\xNN` the byte); `None` for text no escape could have made.
pub fn path_unescape(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len() + 1);
    bytes.push(b'/');
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'-' => {
                bytes.push(b'/');
                rest = tail;
            }
            b'\\' => {
                let hex = tail.get(..3).filter(|h| h[0] == b'x')?;
                let text = std::str::from_utf8(&hex[1..]).ok()?;
                bytes.push(u8::from_str_radix(text, 16).ok()?);
                rest = &tail[3..];
            }
            b => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// A template instance from a non-path string (`systemd-escape` without `--path`).
pub fn instance_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    escape_bytes(text, &mut out);
    out
}

/// `name@instance.suffix`, for template units.
pub fn instance_unit(template: &str, instance: &str, suffix: &str) -> String {
    format!("{template}@{instance}{suffix}")
}

/// Double every `%` so that systemd does not expand specifiers in the value.
pub fn specifier_escape(value: &str) -> Cow<'_, str> {
    if value.contains('%') {
        Cow::Owned(value.replace('%', "%%"))
    } else {
        Cow::Borrowed(value)
    }
}

/// A value for a setting like `What=`, `Description=` or `Options=`: `%` doubled, and
/// characters that would change the line's meaning (newline, other control characters, a
/// trailing backslash that continues the line, surrounding whitespace) replaced, so that no
/// input can ever inject a setting. Inputs reaching here were already checked; this is the
/// last line of defence.
pub fn value(raw: &str) -> String {
    // Nearly every value is plain printable ASCII without `%`: copied as it is.
    let plain = |b: u8| (b' '..=b'~').contains(&b) && b != b'%';
    if raw.bytes().all(plain) && !raw.starts_with(' ') && !raw.ends_with([' ', '\\']) {
        return raw.to_owned();
    }
    let mut out: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    while out.ends_with('\\') {
        out.pop();
        out.push('?');
    }
    specifier_escape(&out).into_owned()
}

/// A path for a path-list setting (`RequiresMountsFor=`): specifiers escaped, quoted when it
/// contains whitespace. Paths reaching here never contain quotes or backslashes (names.rs).
pub fn path_list_item(path: &str) -> String {
    let v = value(path);
    if v.contains(char::is_whitespace) {
        format!("\"{v}\"")
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_from_systemd_unit_5() {
        let cases = [
            ("/", "-.mount"),
            ("/sysroot", "sysroot.mount"),
            (
                "/sysroot/home/user name",
                "sysroot-home-user\\x20name.mount",
            ),
            ("/sysroot/.config", "sysroot-.config.mount"),
            ("/.foo", "\\x2efoo.mount"),
            ("/sysroot/-x", "sysroot-\\x2dx.mount"),
            ("/sysroot/a:b,c", "sysroot-a:b\\x2cc.mount"),
            ("/sysroot/a%b", "sysroot-a\\x25b.mount"),
            ("/sysroot/a\\b", "sysroot-a\\x5cb.mount"),
            ("/sysroot/a_b~c", "sysroot-a_b\\x7ec.mount"),
            ("/sysroot/ü", "sysroot-\\xc3\\xbc.mount"),
            ("/foo//bar/", "foo-bar.mount"),
            ("/a/./b/.", "a-b.mount"),
            (
                "/run/live/rootfs/filesystem.squashfs",
                "run-live-rootfs-filesystem.squashfs.mount",
            ),
        ];
        for (path, name) in cases {
            assert_eq!(unit_name_from_path(path, ".mount").unwrap(), name, "{path}");
        }
        assert_eq!(
            unit_name_from_path("/dev/zvol/rpool/live-persist", ".device").unwrap(),
            "dev-zvol-rpool-live\\x2dpersist.device"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            unit_name_from_path("/a/../b", ".mount"),
            Err(EscapeError::NotNormalized)
        );
        let long = format!("/{}", "a".repeat(250));
        assert_eq!(
            unit_name_from_path(&long, ".mount"),
            Err(EscapeError::TooLong)
        );
        assert!(unit_name_from_path(&format!("/{}", "a".repeat(249)), ".mount").is_ok());
    }

    #[test]
    fn instances_and_values() {
        assert_eq!(instance_escape("dpool"), "dpool");
        assert_eq!(instance_escape("my-pool/x"), "my\\x2dpool-x");
        assert_eq!(instance_escape(".hidden"), "\\x2ehidden");
        assert_eq!(value("50%"), "50%%");
        assert_eq!(
            value("Persistent /home (union)"),
            "Persistent /home (union)"
        );
        assert_eq!(value(" /x\t"), "/x");
        assert_eq!(value("a\\\\"), "a\\?");
        assert_eq!(value("a\u{85}ü"), "a?ü");
        assert_eq!(value(" a\nb\\"), "a?b?");
        assert_eq!(path_list_item("/a b"), "\"/a b\"");
        assert_eq!(path_list_item("/a%b"), "/a%%b");
    }
}
