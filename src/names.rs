//! Narrow types and checks for every name that reaches a unit file: pool and dataset names,
//! labels, device specs, and the character policy for paths used in overlay options.
//!
//! Values are checked here, once, so that the renderer only ever sees strings that are safe
//! in unit names (after escaping), unit values, overlay option strings and log lines.

use std::fmt;

/// Characters allowed inside a path component of a persistence entry, a label or a volume
/// directory name. Everything else would need escaping in at least one of: unit names,
/// unit values, overlay options (`,` `:` `\`), or the journal.
pub fn is_safe_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '@' | '-')
}

/// Longest path component Linux accepts.
pub const MAX_COMPONENT: usize = 255;

/// Check one path component against the character policy; `.` and `..` are refused.
pub fn check_component(component: &str) -> Result<(), String> {
    if component == "." || component == ".." {
        return Err(format!("has a '{component}' path component"));
    }
    if component.len() > MAX_COMPONENT {
        return Err(format!(
            "has a path component longer than {MAX_COMPONENT} bytes"
        ));
    }
    match component.chars().find(|c| !is_safe_path_char(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "contains the character {} (allowed: letters, digits and . _ + @ -)",
            describe_char(c)
        )),
    }
}

/// Name a character for a message without putting a raw control character into the log.
pub fn describe_char(c: char) -> String {
    match c {
        ' ' => "' ' (space)".to_owned(),
        '\t' => "'\\t' (tab)".to_owned(),
        c if c.is_control() => format!("U+{:04X} (a control character)", c as u32),
        c if !c.is_ascii() => format!("'{c}' (U+{:04X})", c as u32),
        c => format!("'{c}'"),
    }
}

/// Render untrusted text for a log line: control characters escaped, bounded length.
pub fn printable(text: &str) -> String {
    const LIMIT: usize = 160;
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == LIMIT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A label: a file-system label that is also used as a directory name under
/// `/run/live/persistence/`.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty".to_owned());
    }
    check_component(label)
}

/// Characters of ZFS dataset components that zlive accepts (a subset of ZFS's rules:
/// no spaces, which would need quoting everywhere).
fn is_zfs_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

fn check_zfs_component(what: &str, component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err(format!("{what} has an empty component"));
    }
    if component == "." || component == ".." {
        return Err(format!("{what} has a '{component}' component"));
    }
    match component.chars().find(|c| !is_zfs_char(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{what} contains the character {} (allowed: letters, digits and _ - . :)",
            describe_char(c)
        )),
    }
}

/// A pool name, checked against ZFS's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

impl PoolName {
    pub fn parse(name: &str) -> Result<Self, String> {
        check_zfs_component("the pool name", name)?;
        if name.len() > 240 {
            return Err("the pool name is too long".to_owned());
        }
        // Its import unit's name, with the name escaped ('-' takes four characters), must stay
        // within systemd's limit on unit names.
        if crate::units::fitting(crate::units::import(name)).is_err() {
            return Err(
                "the pool name is too long for its import unit's name once escaped".to_owned(),
            );
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err("a pool name must start with a letter".to_owned());
        }
        let reserved = [
            "mirror", "raidz", "draid", "spare", "log", "cache", "special", "dedup",
        ];
        if reserved.contains(&name) || name.starts_with("raidz") || name.starts_with("draid") {
            return Err(format!("'{name}' is a reserved word in ZFS"));
        }
        Ok(PoolName(name.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A volume's dataset name `POOL/VOL[/…]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dataset(String);

impl Dataset {
    pub fn parse(name: &str) -> Result<Self, String> {
        let (pool, rest) = name
            .split_once('/')
            .ok_or_else(|| "a zvol is named POOL/VOLUME".to_owned())?;
        PoolName::parse(pool)?;
        for component in rest.split('/') {
            check_zfs_component("the volume name", component)?;
        }
        if name.len() > 240 {
            return Err("the volume name is too long".to_owned());
        }
        Ok(Dataset(name.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn pool(&self) -> PoolName {
        PoolName(self.0.split('/').next().unwrap_or_default().to_owned())
    }
    /// The last component: the volume's directory name under `/run/live/persistence/`.
    pub fn leaf(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
    /// The device node udev creates for the volume (OpenZFS `60-zvol.rules`).
    pub fn device(&self) -> String {
        format!("/dev/zvol/{}", self.0)
    }
}

/// A snapshot of a volume, `POOL/VOL@NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snapshot {
    pub dataset: Dataset,
    pub name: String,
}

impl Snapshot {
    pub fn parse(full: &str) -> Result<Self, String> {
        let (dataset, name) = full
            .split_once('@')
            .ok_or_else(|| "a snapshot is named POOL/VOLUME@NAME".to_owned())?;
        let dataset = Dataset::parse(dataset)?;
        check_zfs_component("the snapshot name", name)?;
        Ok(Snapshot {
            dataset,
            name: name.to_owned(),
        })
    }
    /// The device of a visible snapshot (`snapdev=visible`).
    pub fn device(&self) -> String {
        format!("/dev/zvol/{}@{}", self.dataset, self.name)
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.name)
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Encode a label or UUID as udev does in `/dev/disk/by-*/` link names.
fn udev_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Turn a `live-media=` value into a device path: a `/dev/…` path as given, or a
/// `LABEL=`/`UUID=`/`PARTUUID=`/`PARTLABEL=` spec mapped to its udev link.
pub fn device_from_spec(spec: &str) -> Result<String, String> {
    if let Some((kind, value)) = spec.split_once('=') {
        let dir = match kind {
            "LABEL" | "CDLABEL" => "by-label",
            "UUID" => "by-uuid",
            "PARTUUID" => "by-partuuid",
            "PARTLABEL" => "by-partlabel",
            _ => return Err(format!("unknown device spec '{kind}='")),
        };
        if value.is_empty() || value.chars().any(|c| c.is_control() || c == '"') {
            return Err("empty or unprintable value".to_owned());
        }
        // udev makes no link named "." or ".."; as a path they would leave by-*/.
        if value == "." || value == ".." {
            return Err(format!("'{value}' cannot name a device link"));
        }
        return Ok(format!("/dev/disk/{dir}/{}", udev_encode(value)));
    }
    if !spec.starts_with("/dev/") {
        return Err(
            "not a device path under /dev/ nor a LABEL=/UUID=/PARTUUID=/PARTLABEL= spec".to_owned(),
        );
    }
    for component in spec.split('/').skip(1) {
        if component.is_empty() || component == "." || component == ".." {
            return Err("not a normalised path".to_owned());
        }
        if let Some(c) = component
            .chars()
            .find(|c| !(is_safe_path_char(*c) || matches!(c, ':' | '=')))
        {
            return Err(format!("contains the character {}", describe_char(c)));
        }
    }
    Ok(spec.to_owned())
}

/// The components of a path, each checked against the character policy: empty components
/// (from `//`, or a slash at either end) dropped, `.` and `..` refused.
pub fn components(path: &str) -> Result<Vec<&str>, String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for c in &components {
        check_component(c)?;
    }
    Ok(components)
}

/// Normalise a relative path (`live-media-path=`): slashes collapsed, no `.`/`..`, safe characters.
pub fn relative_path(path: &str) -> Result<String, String> {
    let components = components(path)?;
    if components.is_empty() {
        return Err("empty path".to_owned());
    }
    Ok(components.join("/"))
}

/// A tmpfs `size=` value: `N`, `Nk`, `Nm`, `Ng` or `N%` (1 to 100).
pub fn is_tmpfs_size(size: &str) -> bool {
    let (digits, suffix) = match size.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => size.split_at(i),
        None => (size, ""),
    };
    if digits.is_empty() || digits.len() > 15 {
        return false;
    }
    match suffix {
        "" | "k" | "K" | "m" | "M" | "g" | "G" => digits.parse::<u64>().is_ok_and(|n| n > 0),
        "%" => digits.parse::<u64>().is_ok_and(|n| (1..=100).contains(&n)),
        _ => false,
    }
}

/// A size as people write it: bytes, or with K, M, G or T (powers of 1024, an optional `iB`
/// or `B`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: '{}' (for example 4G or 512M)", printable(text)))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "not a size unit: '{}' in '{}' (K, M, G or T)",
                printable(unit),
                printable(text)
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{} is too large", printable(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn pools() {
        assert!(PoolName::parse("dpool").is_ok());
        assert!(PoolName::parse("rpool-2_x.y:z").is_ok());
        for bad in ["", "1pool", "mirror", "raidz2", "a/b", "a b", "a%b", "log"] {
            assert!(PoolName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datasets() {
        let d = Dataset::parse("dpool/live/persistence").unwrap();
        assert_eq!(d.pool().as_str(), "dpool");
        assert_eq!(d.leaf(), "persistence");
        assert_eq!(d.device(), "/dev/zvol/dpool/live/persistence");
        for bad in [
            "dpool",
            "dpool/",
            "dpool//x",
            "dpool/../x",
            "dpool/x@snap",
            "1/x",
            "dpool/a b",
        ] {
            assert!(Dataset::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshots() {
        let s = Snapshot::parse("dpool/persistence@zlive-20261126T235959Z").unwrap();
        assert_eq!(s.dataset.as_str(), "dpool/persistence");
        assert_eq!(
            s.device(),
            "/dev/zvol/dpool/persistence@zlive-20261126T235959Z"
        );
        for bad in [
            "dpool/persistence",
            "dpool@x",
            "dpool/v@",
            "dpool/v@a b",
            "dpool/v@a/b",
        ] {
            assert!(Snapshot::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_specs() {
        assert_eq!(device_from_spec("/dev/vdb").unwrap(), "/dev/vdb");
        assert_eq!(
            device_from_spec("LABEL=my disk/x").unwrap(),
            "/dev/disk/by-label/my\\x20disk\\x2fx"
        );
        assert_eq!(
            device_from_spec("UUID=ab-12").unwrap(),
            "/dev/disk/by-uuid/ab-12"
        );
        assert_eq!(
            device_from_spec("/dev/disk/by-path/pci-0000:00:04.0").unwrap(),
            "/dev/disk/by-path/pci-0000:00:04.0"
        );
        for bad in [
            "sdb",
            "/dev/../etc/x",
            "/dev//x",
            "FOO=x",
            "LABEL=",
            "LABEL=..",
            "UUID=.",
            "/dev/a b",
        ] {
            assert!(device_from_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        for ok in ["50%", "100%", "1g", "512M", "1024", "4k"] {
            assert!(is_tmpfs_size(ok), "{ok}");
        }
        for bad in ["", "0", "0%", "101%", "1t", "x", "-1", "1.5g", "g"] {
            assert!(!is_tmpfs_size(bad), "{bad}");
        }
    }

    #[test]
    fn components_and_printing() {
        assert!(check_component("a.b_c+d@e-f").is_ok());
        assert!(check_component("..").is_err());
        assert!(check_component("a,b").unwrap_err().contains("','"));
        assert!(check_component("a\u{7}").unwrap_err().contains("U+0007"));
        assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(printable(&"x".repeat(500)).chars().count(), 161);
    }
}
