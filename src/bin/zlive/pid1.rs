//! The one place that talks to PID 1.
//!
//! In the initrd there is no bus daemon: PID 1 listens on its private socket
//! (`/run/systemd/private`, peer-to-peer D-Bus, root only). zbus builds the method calls and
//! zvariant decodes the replies, but the transport on that socket is our own: PID 1 stamps
//! every message there with `Sender=org.freedesktop.systemd1`, a well-known name where the
//! D-Bus specification has a unique name, and zbus 5's connection executor panics on it
//! ("Invalid field reconstruction"). After switch-root, or for non-root users, zbus's own
//! system-bus connection is used.

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use zbus::zvariant::serialized::{Context as Ctx, Data};
use zbus::zvariant::{DynamicType, Endian, OwnedObjectPath, OwnedValue, Type};

const PRIVATE_SOCKET: &str = "/run/systemd/private";
const DESTINATION: &str = "org.freedesktop.systemd1";
pub const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
pub const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// PID 1 answers Reload() only when every generator has run again.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Any other call is answered at once; a stuck one must not hang `zlive status`.
const QUICK_TIMEOUT: Duration = Duration::from_secs(20);

/// PID 1's private socket.
#[derive(Debug)]
pub struct PrivateSocket {
    /// `None` once a call failed half-way (a timeout): the stream may be in the middle of a
    /// message and is never read again.
    stream: Option<BufReader<UnixStream>>,
    /// The deadline of a call other than Reload.
    quick: Duration,
}

#[derive(Debug)]
pub enum Pid1 {
    Private(PrivateSocket),
    Bus(zbus::blocking::Connection),
}

impl Pid1 {
    /// The private socket when we may use it (root), the system bus otherwise.
    pub fn connect() -> Result<Pid1> {
        if nix::unistd::geteuid().is_root() && std::path::Path::new(PRIVATE_SOCKET).exists() {
            match connect_private() {
                Ok(p) => return Ok(p),
                Err(e) => tracing::debug!("private socket: {e:#}"),
            }
        }
        let conn = zbus::blocking::connection::Builder::system()
            .and_then(|b| b.method_timeout(TIMEOUT).build())
            .context(
                "Failed to reach systemd: neither its private socket nor the system bus answered",
            )?;
        Ok(Pid1::Bus(conn))
    }

    /// Call a method and decode its reply.
    pub fn call<B, R>(&mut self, path: &str, interface: &str, member: &str, body: &B) -> Result<R>
    where
        B: Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        match self {
            Pid1::Bus(conn) => {
                let reply = conn
                    .call_method(Some(DESTINATION), path, Some(interface), member, body)
                    .with_context(|| format!("{interface}.{member} failed"))?;
                Ok(reply.body().deserialize()?)
            }
            Pid1::Private(socket) => {
                let mut stream = socket.stream.take().context(
                    "the connection to PID 1 failed during an earlier call and is not reused",
                )?;
                let timeout = if member == "Reload" {
                    TIMEOUT
                } else {
                    socket.quick
                };
                let reply = call_private(&mut stream, path, interface, member, body, timeout);
                // An error reply is a whole message: the stream is still in step.
                if !matches!(&reply, Err(e) if e.is::<Broken>()) {
                    socket.stream = Some(stream);
                }
                reply
            }
        }
    }

    pub fn manager<B, R>(&mut self, member: &str, body: &B) -> Result<R>
    where
        B: Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        self.call(MANAGER_PATH, MANAGER, member, body)
    }

    /// The object path of a loaded unit.
    pub fn unit_path(&mut self, unit: &str) -> Result<OwnedObjectPath> {
        self.manager("GetUnit", &(unit,))
    }

    /// One property of an object.
    pub fn property(&mut self, path: &str, interface: &str, name: &str) -> Result<OwnedValue> {
        let value: OwnedValue = self.call(
            path,
            "org.freedesktop.DBus.Properties",
            "Get",
            &(interface, name),
        )?;
        Ok(value)
    }

    /// A string property of a unit, or empty when the unit is not loaded.
    pub fn unit_string(&mut self, unit: &str, interface: &str, name: &str) -> String {
        self.unit_path(unit)
            .ok()
            .and_then(|p| self.property(p.as_str(), interface, name).ok())
            .and_then(|v| String::try_from(v).ok())
            .unwrap_or_default()
    }

    /// Ask PID 1 to reload (the generator runs again), once no mount is being mounted: a
    /// reload while a mount runs (the image's squashfs, say) leaves that mount stopped again
    /// afterwards, and the boot hangs before switch-root (seen with systemd 254).
    pub fn reload(&mut self) -> Result<()> {
        self.wait_for_mounts()?;
        self.manager("Reload", &())
            .context("systemd refused to reload")
    }

    /// Wait (bounded) until no mount unit is being mounted or unmounted.
    pub fn wait_for_mounts(&mut self) -> Result<()> {
        let deadline = std::time::Instant::now() + MOUNTS_SETTLE;
        loop {
            let jobs: Vec<Job> = self.manager("ListJobs", &())?;
            let mounting = jobs
                .iter()
                .any(|j| j.1.ends_with(".mount") && j.3 == "running");
            if !mounting || std::time::Instant::now() >= deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start a unit and wait, polling, until its job is done; returns its `ActiveState` then
    /// (`active`, `failed`, or `inactive` when a condition kept it from running). There is
    /// no deadline here: a unit that waits for a person (a passphrase) may take any time.
    pub fn start_and_wait(&mut self, unit: &str) -> Result<String> {
        self.job_and_wait("StartUnit", unit)
    }

    /// As [`Pid1::start_and_wait`], but a unit that has run already runs again.
    pub fn restart_and_wait(&mut self, unit: &str) -> Result<String> {
        self.job_and_wait("RestartUnit", unit)
    }

    fn job_and_wait(&mut self, method: &str, unit: &str) -> Result<String> {
        let job: OwnedObjectPath = self
            .manager(method, &(unit, "replace"))
            .with_context(|| format!("Failed to start {unit}"))?;
        // The job object exists while the job does.
        while self
            .property(job.as_str(), "org.freedesktop.systemd1.Job", "State")
            .is_ok()
        {
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(self.unit_string(unit, "org.freedesktop.systemd1.Unit", "ActiveState"))
    }

    /// Cancel the queued start jobs of these units, in this order; returns the units whose
    /// job was cancelled. Cancelling a job fails the jobs that require it, so callers cancel
    /// dependents before what they depend on.
    pub fn cancel_start_jobs(&mut self, units: &[&str]) -> Result<Vec<String>> {
        let jobs: Vec<Job> = self.manager("ListJobs", &())?;
        let mut cancelled = Vec::new();
        for unit in units {
            for (id, _, _, _, _, _) in jobs.iter().filter(|j| j.1 == *unit && j.2 == "start") {
                match self.manager::<_, ()>("CancelJob", &(*id,)) {
                    Ok(()) => cancelled.push((*unit).to_owned()),
                    // Gone already: cancelling one job may end the jobs it pulled in.
                    Err(e) if format!("{e:#}").contains("NoSuchJob") => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("Failed to cancel the start job of {unit}"))
                    }
                }
            }
        }
        Ok(cancelled)
    }
}

/// A job as `ListJobs` gives it: id, unit, type, state, job and unit paths.
type Job = (
    u32,
    String,
    String,
    String,
    OwnedObjectPath,
    OwnedObjectPath,
);

/// How long a reload waits for running mounts to finish.
const MOUNTS_SETTLE: Duration = Duration::from_secs(30);

fn connect_private() -> Result<Pid1> {
    let stream = UnixStream::connect(PRIVATE_SOCKET)
        .with_context(|| format!("Failed to connect to {PRIVATE_SOCKET}"))?;
    Ok(Pid1::Private(PrivateSocket {
        stream: Some(handshake(stream)?),
        quick: QUICK_TIMEOUT,
    }))
}

/// D-Bus authentication on a fresh connection to PID 1.
fn handshake(stream: UnixStream) -> Result<BufReader<UnixStream>> {
    stream.set_read_timeout(Some(QUICK_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let uid: String = nix::unistd::geteuid()
        .as_raw()
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    // SASL EXTERNAL with our uid, and BEGIN in the same write, before the OK: what sd-bus
    // clients such as systemctl do. Sent after the OK, BEGIN and the first call can reach PID 1
    // in one read, and PID 1 then left that call unanswered until the next one arrived (seen
    // as a status stalled for the whole read timeout in about one boot in ten).
    reader
        .get_mut()
        .write_all(format!("\0AUTH EXTERNAL {uid}\r\nBEGIN\r\n").as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("OK ") {
        bail!("{PRIVATE_SOCKET} refused authentication: {}", line.trim());
    }
    Ok(reader)
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// The header fields of a reply that matter here.
#[derive(Debug, Default)]
struct ReplyHeader {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
}

fn call_private<B, R>(
    stream: &mut BufReader<UnixStream>,
    path: &str,
    interface: &str,
    member: &str,
    body: &B,
    timeout: Duration,
) -> Result<R>
where
    B: Serialize + DynamicType,
    R: DeserializeOwned + Type,
{
    let message = zbus::Message::method_call(path, member)?
        .destination(DESTINATION)?
        .interface(interface)?
        .build(body)?;
    let serial = message.primary_header().serial_num().get();
    let started = std::time::Instant::now();
    // One deadline for the whole call, however many other messages arrive meanwhile.
    let deadline = started + timeout;
    let debug = std::env::var_os("ZLIVE_DEBUG_DBUS").is_some();
    stream
        .get_mut()
        .write_all(message.data())
        .map_err(|e| anyhow!(Broken).context(format!("Failed to send {member}: {e}")))?;
    let mut skipped = 0;
    loop {
        let (header, endian, body) = read_message(stream, deadline).map_err(|e| {
            e.context(Broken).context(format!(
                "no answer to {interface}.{member} within {} s",
                timeout.as_secs()
            ))
        })?;
        // Signals and replies to other calls are not ours.
        if header.reply_serial != Some(serial) {
            skipped += 1;
            continue;
        }
        if debug {
            eprintln!(
                "dbus: {interface}.{member} {path}: {} ms, {skipped} other messages skipped",
                started.elapsed().as_millis()
            );
        }
        let data = Data::new(body, Ctx::new_dbus(endian, 0));
        match header.kind {
            2 => return Ok(data.deserialize::<R>()?.0),
            3 => {
                let text: String = data
                    .deserialize::<String>()
                    .map(|(s, _)| s)
                    .unwrap_or_default();
                bail!(
                    "{}: {text}",
                    header.error_name.unwrap_or_else(|| "error".into())
                );
            }
            k => bail!("unexpected message type {k} in reply to {member}"),
        }
    }
}

/// Marks an error after which the stream is out of step (a timeout, a short read).
#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection to PID 1 is broken")
    }
}

/// `read_exact`, but never past `deadline`.
fn read_exact_by(
    stream: &mut BufReader<UnixStream>,
    buf: &mut [u8],
    deadline: std::time::Instant,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!("timed out");
        }
        stream.get_ref().set_read_timeout(Some(left))?;
        match stream.read(&mut buf[done..]) {
            Ok(0) => bail!("PID 1 closed the connection"),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read one whole message: the fixed 16 bytes, the header fields, padding, the body.
fn read_message(
    stream: &mut BufReader<UnixStream>,
    deadline: std::time::Instant,
) -> Result<(ReplyHeader, Endian, Vec<u8>)> {
    let mut fixed = [0u8; 16];
    read_exact_by(stream, &mut fixed, deadline)?;
    let endian = match fixed[0] {
        b'l' => Endian::Little,
        b'B' => Endian::Big,
        b => bail!("bad endianness byte {b:#x} from PID 1"),
    };
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        }
    };
    let body_len = u32_at(&fixed, 4) as usize;
    let fields_len = u32_at(&fixed, 12) as usize;
    if body_len > 64 << 20 || fields_len > 64 << 20 {
        bail!("oversized message from PID 1");
    }
    let mut rest = vec![0u8; align8(16 + fields_len) - 16 + body_len];
    read_exact_by(stream, &mut rest, deadline)?;
    let mut whole = fixed.to_vec();
    whole.extend_from_slice(&rest);
    let mut header = ReplyHeader {
        kind: fixed[1],
        ..Default::default()
    };
    parse_fields(&whole[..16 + fields_len], endian, &mut header)?;
    let body = whole[align8(16 + fields_len)..].to_vec();
    Ok((header, endian, body))
}

/// Walk the header field array `a(yv)` starting at offset 16, picking out the reply serial
/// and the error name; the sender field, whatever it holds, is skipped.
fn parse_fields(buf: &[u8], endian: Endian, header: &mut ReplyHeader) -> Result<()> {
    let u32_at = |at: usize| -> Result<u32> {
        let b = buf.get(at..at + 4).ok_or_else(|| anyhow!("short header"))?;
        let bytes = [b[0], b[1], b[2], b[3]];
        Ok(match endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    };
    let mut at = 16;
    while at < buf.len() {
        at = align8(at);
        if at >= buf.len() {
            break;
        }
        let code = buf[at];
        let sig_len = *buf.get(at + 1).ok_or_else(|| anyhow!("short header"))? as usize;
        let sig = buf
            .get(at + 2..at + 2 + sig_len)
            .ok_or_else(|| anyhow!("short header"))?;
        at += 2 + sig_len + 1;
        match sig {
            b"u" => {
                at = (at + 3) & !3;
                let v = u32_at(at)?;
                at += 4;
                if code == 5 {
                    header.reply_serial = Some(v);
                }
            }
            b"s" | b"o" => {
                at = (at + 3) & !3;
                let len = u32_at(at)? as usize;
                let text = buf
                    .get(at + 4..at + 4 + len)
                    .ok_or_else(|| anyhow!("short header"))?;
                if code == 4 {
                    header.error_name = Some(String::from_utf8_lossy(text).into_owned());
                }
                at += 4 + len + 1;
            }
            b"g" => {
                let len = *buf.get(at).ok_or_else(|| anyhow!("short header"))? as usize;
                at += 1 + len + 1;
            }
            other => bail!(
                "unexpected header field type {:?}",
                String::from_utf8_lossy(other)
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as PID 1 sends it on its private socket, sender field included: a
    /// method_return (serial 9) to `reply_serial`, signature "o", body "/a".
    fn reply_bytes(reply_serial: u32) -> Vec<u8> {
        let mut fields: Vec<u8> = Vec::new();
        let pad = |v: &mut Vec<u8>, n: usize| {
            while (v.len() + 16) % n != 0 {
                v.push(0);
            }
        };
        // REPLY_SERIAL (5) u
        fields.extend([5, 1, b'u', 0]);
        fields.extend(reply_serial.to_le_bytes());
        pad(&mut fields, 8);
        // SENDER (7) s
        let sender = b"org.freedesktop.systemd1";
        fields.extend([7, 1, b's', 0]);
        fields.extend((sender.len() as u32).to_le_bytes());
        fields.extend(sender);
        fields.push(0);
        pad(&mut fields, 8);
        // SIGNATURE (8) g "o"
        fields.extend([8, 1, b'g', 0, 1, b'o', 0]);
        let fields_len = fields.len();
        let mut body = Vec::new();
        body.extend(2u32.to_le_bytes());
        body.extend(b"/a\0");
        let mut msg = vec![b'l', 2, 1, 1];
        msg.extend((body.len() as u32).to_le_bytes());
        msg.extend(9u32.to_le_bytes());
        msg.extend((fields_len as u32).to_le_bytes());
        msg.extend(&fields);
        while msg.len() % 8 != 0 {
            msg.push(0);
        }
        msg.extend(&body);
        msg
    }

    #[test]
    fn parses_a_reply_with_a_well_known_sender() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut w = a;
        w.write_all(&reply_bytes(7)).unwrap();
        let mut reader = BufReader::new(b);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (header, endian, body) = read_message(&mut reader, deadline).unwrap();
        assert_eq!(header.kind, 2);
        assert_eq!(header.reply_serial, Some(7));
        let path: OwnedObjectPath = Data::new(body, Ctx::new_dbus(endian, 0))
            .deserialize()
            .unwrap()
            .0;
        assert_eq!(path.as_str(), "/a");
    }

    /// A peer that keeps sending messages that are not the reply cannot hold a call past its
    /// deadline, and the connection is not used again.
    #[test]
    fn one_deadline_per_call_and_no_reuse_after_it() {
        let (client, server) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut server = server;
            for _ in 0..20 {
                if server.write_all(&reply_bytes(u32::MAX)).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let mut pid1 = Pid1::Private(PrivateSocket {
            stream: Some(BufReader::new(client)),
            quick: Duration::from_secs(1),
        });
        let started = std::time::Instant::now();
        let err = pid1.unit_path("x.service").unwrap_err();
        assert!(err.is::<Broken>(), "{err:#}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        let again = pid1.unit_path("x.service").unwrap_err();
        assert!(format!("{again:#}").contains("not reused"), "{again:#}");
        drop(pid1);
        peer.join().unwrap();
    }

    /// BEGIN must reach PID 1 before its OK (see `handshake`): this peer answers only then.
    #[test]
    fn begin_is_sent_before_the_ok() {
        let (client, server) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(server);
            let mut seen = Vec::new();
            while !seen.ends_with(b"BEGIN\r\n") {
                let mut line = Vec::new();
                reader
                    .read_until(b'\n', &mut line)
                    .expect("BEGIN did not come before the OK");
                assert!(!line.is_empty(), "the client closed the connection");
                seen.extend(line);
            }
            reader
                .get_mut()
                .write_all(b"OK 0123456789abcdef\r\n")
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        handshake(client).unwrap();
        let sent = peer.join().unwrap();
        assert!(sent.starts_with("\0AUTH EXTERNAL "), "{sent:?}");
    }
}
