//! The one place that talks to PID 1.
//!
//! In the initrd there is no bus daemon: PID 1 listens on its private socket
//! (`/run/systemd/private`, peer-to-peer D-Bus, root only). zbus builds the method calls and
//! zvariant decodes every reply, header included, but the connection itself is this module's:
//! PID 1 stamps every message there with `Sender=org.freedesktop.systemd1`, a well-known name
//! where the D-Bus specification wants a unique one, and zbus 5 refuses such a header (its
//! `Header` reads the sender as a `UniqueName`, so no zbus connection, peer-to-peer or not,
//! can receive a single reply there). So the header is decoded here as the plain `a(yv)` the
//! specification defines, by zvariant, which takes any string. After switch-root, or for
//! non-root users, zbus's own system-bus connection is used. Errors carry their D-Bus error
//! name ([`BusError`]), which callers match on, never the message text.

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
                    .map_err(|e| match e {
                        zbus::Error::MethodError(name, message, _) => anyhow!(BusError {
                            name: name.to_string(),
                            message: message.unwrap_or_default(),
                        }),
                        e => anyhow!(e),
                    })
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
    /// Queue a unit's start (replacing a queued job), without waiting for it.
    pub fn queue_start(&mut self, unit: &str) -> Result<()> {
        let _: OwnedObjectPath = self
            .manager("StartUnit", &(unit, "replace"))
            .with_context(|| format!("Failed to queue the start of {unit}"))?;
        Ok(())
    }

    /// Queue a unit's stop, without waiting for it.
    pub fn queue_stop(&mut self, unit: &str) -> Result<()> {
        let _: OwnedObjectPath = self
            .manager("StopUnit", &(unit, "replace"))
            .with_context(|| format!("Failed to queue the stop of {unit}"))?;
        Ok(())
    }

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
                    Err(e) if is_bus_error(&e, NO_SUCH_JOB) => {}
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

/// PID 1's error name for a job that is not (any longer) there.
const NO_SUCH_JOB: &str = "org.freedesktop.systemd1.NoSuchJob";

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

/// An error reply of PID 1: its D-Bus error name and message.
#[derive(Debug)]
pub struct BusError {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for BusError {}

/// Whether an error is PID 1's error reply `name`.
pub fn is_bus_error(e: &anyhow::Error, name: &str) -> bool {
    e.downcast_ref::<BusError>().is_some_and(|b| b.name == name)
}

/// A message as read from the socket: the header fields that matter here, and the body.
#[derive(Debug)]
struct Received {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    endian: Endian,
    body: Vec<u8>,
}

/// The D-Bus header: endianness, type, flags, version, body length, serial, and the header
/// fields as `a(yv)`. zvariant decodes it; the sender field is a string like any other.
type Header = (u8, u8, u8, u8, u32, u32, Vec<(u8, OwnedValue)>);
/// Header field codes (D-Bus specification, "Message Format").
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
/// Message types.
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

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
    // One deadline for the whole call, however many other messages arrive meanwhile.
    let deadline = std::time::Instant::now() + timeout;
    stream
        .get_mut()
        .write_all(message.data())
        .map_err(|e| anyhow!(Broken).context(format!("Failed to send {member}: {e}")))?;
    let reply = loop {
        let received = read_message(stream, deadline).map_err(|e| {
            e.context(Broken).context(format!(
                "no answer to {interface}.{member} within {} s",
                timeout.as_secs()
            ))
        })?;
        // Signals and replies to other calls are not ours.
        if received.reply_serial == Some(serial) {
            break received;
        }
    };
    let data = Data::new(reply.body, Ctx::new_dbus(reply.endian, 0));
    match reply.kind {
        METHOD_RETURN => Ok(data.deserialize::<R>()?.0),
        ERROR => Err(BusError {
            name: reply.error_name.unwrap_or_else(|| "error".into()),
            message: data
                .deserialize::<String>()
                .map(|(s, _)| s)
                .unwrap_or_default(),
        }
        .into()),
        k => bail!("unexpected message type {k} in reply to {member}"),
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

/// Read one whole message. Its first 16 bytes say how long the rest is: the body's length at
/// 4, the header fields' array length at 12 (then padding to 8, then the body).
fn read_message(
    stream: &mut BufReader<UnixStream>,
    deadline: std::time::Instant,
) -> Result<Received> {
    let mut whole = vec![0u8; 16];
    read_exact_by(stream, &mut whole, deadline)?;
    let endian = match whole[0] {
        b'l' => Endian::Little,
        b'B' => Endian::Big,
        b => bail!("bad endianness byte {b:#x} from PID 1"),
    };
    let ctx = Ctx::new_dbus(endian, 0);
    let ((_, _, _, _, body_len, _, fields_len), _): ((u8, u8, u8, u8, u32, u32, u32), _) =
        Data::new(&whole[..], ctx).deserialize()?;
    let (body_len, fields_len) = (body_len as usize, fields_len as usize);
    if body_len > 64 << 20 || fields_len > 64 << 20 {
        bail!("oversized message from PID 1");
    }
    let body_at = align8(16 + fields_len);
    whole.resize(body_at + body_len, 0);
    read_exact_by(stream, &mut whole[16..], deadline)?;
    let ((_, kind, _, _, _, _, fields), _): (Header, _) =
        Data::new(&whole[..body_at], ctx).deserialize()?;
    let mut received = Received {
        kind,
        reply_serial: None,
        error_name: None,
        endian,
        body: whole.split_off(body_at),
    };
    for (code, value) in fields {
        match code {
            FIELD_REPLY_SERIAL => received.reply_serial = u32::try_from(value).ok(),
            FIELD_ERROR_NAME => received.error_name = String::try_from(value).ok(),
            _ => {}
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as PID 1 sends it on its private socket, sender field included: a
    /// method_return (serial 9) to `reply_serial`, signature "o", body "/a".
    fn reply_bytes(reply_serial: u32) -> Vec<u8> {
        message_bytes(METHOD_RETURN, reply_serial, None)
    }

    /// A message of `kind` replying to `reply_serial`, with a well-known sender, an error
    /// name if given, and the body "/a" (signature "o"; "s" for an error).
    fn message_bytes(kind: u8, reply_serial: u32, error: Option<&str>) -> Vec<u8> {
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
        if let Some(name) = error {
            // ERROR_NAME (4) s
            fields.extend([4, 1, b's', 0]);
            fields.extend((name.len() as u32).to_le_bytes());
            fields.extend(name.as_bytes());
            fields.push(0);
            pad(&mut fields, 8);
        }
        // SIGNATURE (8) g "o" or "s"
        let signature = if error.is_some() { b's' } else { b'o' };
        fields.extend([8, 1, b'g', 0, 1, signature, 0]);
        let fields_len = fields.len();
        let mut body = Vec::new();
        body.extend(2u32.to_le_bytes());
        body.extend(b"/a\0");
        let mut msg = vec![b'l', kind, 1, 1];
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
        let received = read_message(&mut reader, deadline).unwrap();
        assert_eq!(received.kind, METHOD_RETURN);
        assert_eq!(received.reply_serial, Some(7));
        let path: OwnedObjectPath = Data::new(received.body, Ctx::new_dbus(received.endian, 0))
            .deserialize()
            .unwrap()
            .0;
        assert_eq!(path.as_str(), "/a");
    }

    /// An error reply is told by its error name, not by its text.
    #[test]
    fn error_replies_carry_their_name() {
        let (client, server) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut server = server;
            let mut request = [0u8; 16];
            server.read_exact(&mut request).unwrap();
            let serial = u32::from_le_bytes(request[8..12].try_into().unwrap());
            server
                .write_all(&message_bytes(ERROR, serial, Some(NO_SUCH_JOB)))
                .unwrap();
            // Keep the socket open until the client has read the reply.
            std::thread::sleep(Duration::from_millis(500));
        });
        let mut pid1 = Pid1::Private(PrivateSocket {
            stream: Some(BufReader::new(client)),
            quick: Duration::from_secs(5),
        });
        let err = pid1.manager::<_, ()>("CancelJob", &(3u32,)).unwrap_err();
        assert!(is_bus_error(&err, NO_SUCH_JOB), "{err:#}");
        assert!(!is_bus_error(&err, "org.freedesktop.DBus.Error.Failed"));
        peer.join().unwrap();
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
