//! `zlive secure-boot [--enroll]`: whether this machine's Secure Boot lets the zfs module load,
//! and the one step that makes it: enrolling the image's module signing key (the recipe signs
//! the ZFS modules with it and puts its certificate at [`IMAGE_CERTIFICATE`]) as a Machine Owner
//! Key. shim keeps the enrolled keys in its `MokList` and hands them to the kernel as
//! `MokListRT`, which the kernel trusts for modules; `mokutil --import` asks shim's MokManager
//! to add one at the next boot, where the user confirms it with a one-time password.

use crate::zfs::import::Signatures;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image's module signing certificate (DER), as the live-build recipe installs it.
pub const IMAGE_CERTIFICATE: &str = "/usr/share/zlive/secure-boot.der";

/// shim's GUID for its variables.
const SHIM: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";

/// The enrolled keys as shim passed them on: the kernel's copy from shim's configuration table,
/// or the runtime variable (four bytes of attributes first).
fn enrolled_lists() -> Vec<Vec<u8>> {
    let mut lists = Vec::new();
    if let Ok(table) = std::fs::read("/sys/firmware/efi/mok-variables/MokListRT") {
        lists.push(table);
    }
    if let Ok(var) = std::fs::read(format!("/sys/firmware/efi/efivars/MokListRT-{SHIM}")) {
        lists.push(var.get(4..).unwrap_or_default().to_vec());
    }
    lists
}

/// Whether an EFI signature list (shim's MokList) holds this certificate: its DER bytes are
/// an entry's data, whole.
fn holds(list: &[u8], der: &[u8]) -> bool {
    !der.is_empty() && list.windows(der.len()).any(|w| w == der)
}

/// The subject's common name of a DER certificate (its last CN: a certificate names its issuer
/// before its subject), which is what a module signature names as its signer.
pub fn common_name(der: &[u8]) -> Option<String> {
    const CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(CN.len()).rposition(|w| w == CN)? + CN.len();
    let (&tag, rest) = der.get(at..)?.split_first()?;
    // UTF8String, PrintableString, IA5String, T61String
    if ![0x0c, 0x13, 0x16, 0x14].contains(&tag) {
        return None;
    }
    let (len, rest) = match rest.split_first()? {
        (&n, rest) if n < 0x80 => (usize::from(n), rest),
        (&0x81, rest) => (usize::from(*rest.first()?), &rest[1..]),
        _ => return None,
    };
    String::from_utf8(rest.get(..len)?.to_vec()).ok()
}

/// The machine's state as far as the zfs module is concerned.
#[derive(Debug, Default)]
pub struct State {
    /// Booted through UEFI.
    pub uefi: bool,
    pub secure_boot: Option<bool>,
    /// The image's certificate, with its subject's name.
    pub certificate: Option<(PathBuf, String)>,
    pub enrolled: bool,
    /// A `mokutil --import` waits for MokManager at the next boot.
    pub pending: bool,
    /// The zfs module's signer (`modinfo -F signer`); empty when it is unsigned, `None` when
    /// there is no module.
    pub signer: Option<String>,
    pub loaded: bool,
}

impl State {
    fn of_this_machine(certificate: &Path) -> State {
        let der = std::fs::read(certificate).ok();
        let signer = crate::exec::lines(Command::new("modinfo").args(["-F", "signer", "zfs"]))
            .ok()
            .map(|l| l.join(" ").trim().to_owned());
        State {
            uefi: Path::new("/sys/firmware/efi").exists(),
            secure_boot: Signatures::of_this_machine().secure_boot,
            certificate: der.as_ref().map(|d| {
                let name = common_name(d).unwrap_or_else(|| "(no common name)".to_owned());
                (certificate.to_owned(), name)
            }),
            enrolled: der
                .as_ref()
                .is_some_and(|d| enrolled_lists().iter().any(|l| holds(l, d))),
            pending: Path::new(&format!("/sys/firmware/efi/efivars/MokNew-{SHIM}")).exists(),
            signer,
            loaded: Path::new("/sys/module/zfs").exists(),
        }
    }

    /// Whether the zfs module's signer is the image's key.
    fn signed_by_image(&self) -> bool {
        matches!((&self.certificate, &self.signer),
            (Some((_, name)), Some(signer)) if !signer.is_empty() && signer == name)
    }

    /// Whether the zfs module can load on this machine as it is.
    pub fn zfs_loads(&self) -> bool {
        self.loaded || self.secure_boot != Some(true) || (self.enrolled && self.signed_by_image())
    }

    /// The report, a line per fact, and what to do when the module cannot load.
    pub fn text(&self) -> String {
        let firmware = match (self.uefi, self.secure_boot) {
            (false, _) => "BIOS (no UEFI): Secure Boot does not apply".to_owned(),
            (true, Some(true)) => "on (the firmware's SecureBoot variable is set)".to_owned(),
            (true, Some(false)) => "off".to_owned(),
            (true, None) => "unknown (no SecureBoot variable)".to_owned(),
        };
        let key = match &self.certificate {
            None => "none in this image (it was not built by zlive's live-build recipe)".to_owned(),
            Some((path, name)) => {
                let state = match (self.enrolled, self.pending) {
                    (true, _) => "enrolled",
                    (false, true) => "not enrolled yet: confirm it in MokManager at the next boot",
                    (false, false) => "not enrolled",
                };
                format!("\"{name}\" ({}): {state}", path.display())
            }
        };
        let module = match &self.signer {
            None => "not found (no zfs module for this kernel)".to_owned(),
            Some(s) if s.is_empty() => "not signed".to_owned(),
            Some(s) if self.signed_by_image() => format!("signed by \"{s}\" (the image's key)"),
            Some(s) => format!("signed by \"{s}\""),
        };
        let loaded = match self.loaded {
            true => "loaded",
            false => "not loaded",
        };
        let mut text = format!(
            "Secure Boot   {firmware}\nimage key     {key}\nzfs module    {module}, {loaded}\n"
        );
        if !self.zfs_loads() {
            text.push_str(match (&self.certificate, self.pending) {
                (Some(_), false) => "\nThe kernel refuses this zfs module while Secure Boot is on: persistence on ZFS is off.\nEnrol the image's key with 'zlive secure-boot --enroll' (then reboot and confirm it), or\nswitch Secure Boot off in the firmware.\n",
                (Some(_), true) => "\nThe kernel refuses this zfs module until the key is enrolled: reboot and confirm it in\nMokManager (Enroll MOK, Continue, Yes, the password given to mokutil).\n",
                (None, _) => "\nThe kernel refuses this zfs module while Secure Boot is on: persistence on ZFS is off.\nEnrol the key that signed it with 'mokutil --import CERTIFICATE', or switch Secure Boot\noff in the firmware.\n",
            });
        }
        text
    }
}

/// Why enrolling the certificate would not let this zfs module load: it is unsigned, or
/// signed by another key.
fn useless_enrolment(state: &State) -> Option<String> {
    let (_, name) = state.certificate.as_ref()?;
    match state.signer.as_deref()? {
        "" => Some("the zfs module here is not signed: no enrolled key makes the kernel load it under Secure Boot (sign it: README, Secure Boot)".to_owned()),
        signer if signer != name => Some(format!(
            "the zfs module here is signed by \"{signer}\", not by \"{name}\": enrolling this key would not let it load (give that key's certificate with --certificate)"
        )),
        _ => None,
    }
}

/// `zlive secure-boot`: the report; `Ok(false)` when the zfs module cannot load here.
pub fn show(certificate: Option<&Path>) -> Result<bool> {
    let state = State::of_this_machine(certificate.unwrap_or(Path::new(IMAGE_CERTIFICATE)));
    print!("{}", state.text());
    Ok(state.zfs_loads())
}

/// `zlive secure-boot --enroll`: asks shim to enrol the image's key at the next boot
/// (`mokutil --import`, which asks for the one-time password MokManager will want).
pub fn enroll(certificate: Option<&Path>, hash_file: Option<&Path>) -> Result<bool> {
    let path = certificate.unwrap_or(Path::new(IMAGE_CERTIFICATE));
    let state = State::of_this_machine(path);
    if !state.uefi {
        bail!("this machine booted without UEFI: Secure Boot does not apply, there is nothing to enrol");
    }
    let Some((_, name)) = &state.certificate else {
        bail!(
            "no certificate at {}: this image was not built with a module signing key (give one with --certificate)",
            path.display()
        );
    };
    if let Some(why) = useless_enrolment(&state) {
        bail!("{why}");
    }
    if state.enrolled {
        println!("\"{name}\" is enrolled already: nothing to do.");
        return Ok(true);
    }
    if state.pending {
        println!("A key waits for MokManager already (mokutil --list-new shows it); reboot and confirm it there, or 'mokutil --revoke-import' to cancel.");
        return Ok(true);
    }
    let mut mokutil = Command::new("mokutil");
    mokutil.arg("--import").arg(path);
    if let Some(hash) = hash_file {
        mokutil.arg("--hash-file").arg(hash);
    }
    let status = mokutil
        .status()
        .context("Failed to run mokutil (apt install mokutil)")?;
    if !status.success() {
        bail!("mokutil --import {} failed ({status})", path.display());
    }
    if state.secure_boot != Some(true) {
        println!("Secure Boot is off on this machine now; the key will be trusted once it is on.");
    }
    println!(
        "\"{name}\" is requested. Reboot: before the boot menu, shim's MokManager shows a blue screen\n\
         (\"Perform MOK management\"). Choose \"Enroll MOK\", \"Continue\", \"Yes\", type the password\n\
         you just gave, then \"Reboot\". From then on this machine loads the image's zfs module\n\
         with Secure Boot on. If the screen passes unanswered (10 s), run this again."
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name part of a certificate: the issuer's CN, then the subject's.
    fn names(issuer: &str, subject: &str) -> Vec<u8> {
        let mut der = vec![0x30, 0x82, 0x01, 0x00];
        for (tag, name) in [(0x0c, issuer), (0x13, subject)] {
            der.extend([0x06, 0x03, 0x55, 0x04, 0x03, tag]);
            der.push(name.len() as u8);
            der.extend(name.as_bytes());
        }
        der.extend([0x30, 0x00]);
        der
    }

    #[test]
    fn a_certificate_names_its_subject() {
        assert_eq!(
            common_name(&names("issuer", "zlive live image module signing key")).as_deref(),
            Some("zlive live image module signing key")
        );
        let long = "x".repeat(200);
        let mut der = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x81, 200];
        der.extend(long.as_bytes());
        assert_eq!(common_name(&der).as_deref(), Some(long.as_str()));
        // Cut short, another string type, no name at all.
        assert_eq!(common_name(&der[..100]), None);
        assert_eq!(
            common_name(&[0x06, 0x03, 0x55, 0x04, 0x03, 0x02, 1, 5]),
            None
        );
        assert_eq!(common_name(&[0x30, 0x00]), None);
    }

    #[test]
    fn an_enrolled_list_holds_the_whole_certificate() {
        let der = names("a", "b");
        let mut list = vec![0u8; 28];
        list.extend(&der);
        assert!(holds(&list, &der));
        assert!(!holds(&list[..list.len() - 1], &der));
        assert!(!holds(&list, &[]));
    }

    fn state(secure_boot: bool, enrolled: bool, pending: bool, signer: &str) -> State {
        State {
            uefi: true,
            secure_boot: Some(secure_boot),
            certificate: Some((PathBuf::from(IMAGE_CERTIFICATE), "zlive key".to_owned())),
            enrolled,
            pending,
            signer: Some(signer.to_owned()),
            loaded: false,
        }
    }

    #[test]
    fn whether_zfs_loads_and_what_to_do() {
        let refused = state(true, false, false, "zlive key");
        assert!(!refused.zfs_loads());
        let text = refused.text();
        assert!(text.contains("Secure Boot   on (the firmware's SecureBoot variable is set)\n"));
        assert!(text.contains(
            "image key     \"zlive key\" (/usr/share/zlive/secure-boot.der): not enrolled\n"
        ));
        assert!(
            text.contains("zfs module    signed by \"zlive key\" (the image's key), not loaded\n")
        );
        assert!(text.contains("'zlive secure-boot --enroll'"));
        assert!(text.contains("switch Secure Boot off"));

        let waiting = state(true, false, true, "zlive key");
        assert!(waiting
            .text()
            .contains("not enrolled yet: confirm it in MokManager"));
        assert!(waiting
            .text()
            .contains("reboot and confirm it in\nMokManager"));

        let enrolled = state(true, true, false, "zlive key");
        assert!(enrolled.zfs_loads());
        assert!(!enrolled.text().contains("refuses"));
        // Enrolled, but the module was signed by another key (DKMS's own).
        assert!(!state(true, true, false, "DKMS module signing key").zfs_loads());
        assert!(!state(true, true, false, "").zfs_loads());
        assert!(state(true, false, false, "")
            .text()
            .contains("not signed, not loaded"));
        // Secure Boot off: any module loads.
        assert!(state(false, false, false, "").zfs_loads());
        let bios = State {
            signer: Some(String::new()),
            ..State::default()
        };
        assert!(bios.text().starts_with("Secure Boot   BIOS (no UEFI)"));
        assert!(bios.text().contains("image key     none in this image"));
    }

    #[test]
    fn an_enrolment_that_would_not_help_is_refused() {
        assert_eq!(
            useless_enrolment(&state(true, false, false, "zlive key")),
            None
        );
        let other = useless_enrolment(&state(true, false, false, "DKMS module signing key"));
        assert!(other
            .unwrap()
            .contains("signed by \"DKMS module signing key\", not by \"zlive key\""));
        let unsigned = useless_enrolment(&state(true, false, false, "")).unwrap();
        assert!(unsigned.contains("not signed"), "{unsigned}");
        // No module for this kernel: nothing to judge by.
        let none = State {
            signer: None,
            ..state(true, false, false, "")
        };
        assert_eq!(useless_enrolment(&none), None);
    }
}
