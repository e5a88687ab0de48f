//! One stream from `zfs send` to where it goes (a `zfs receive` here or over ssh, or a file),
//! through zlive, which counts the bytes and shows the progress.

use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zlive::backup_plan::progress_line;

/// Where the stream goes.
pub enum Sink {
    /// A receiving command (its stdin gets the stream).
    Receiver(Command),
    /// A file, written as `NAME.part` and renamed when the stream is whole.
    File(PathBuf),
}

/// The open end of a sink.
struct Opened {
    out: Box<dyn Write>,
    receiver: Option<Child>,
    /// The `.part` file and the name it gets when whole.
    part: Option<(PathBuf, PathBuf)>,
}

fn open(sink: Sink) -> Result<Opened> {
    Ok(match sink {
        Sink::Receiver(mut cmd) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("Failed to start {:?}", cmd.get_program()))?;
            let stdin = child.stdin.take().expect("piped");
            Opened {
                out: Box::new(stdin),
                receiver: Some(child),
                part: None,
            }
        }
        Sink::File(path) => {
            let part = PathBuf::from(format!("{}.part", path.display()));
            let file = std::fs::File::create(&part)
                .with_context(|| format!("Failed to create {}", part.display()))?;
            Opened {
                out: Box::new(std::io::BufWriter::new(file)),
                receiver: None,
                part: Some((part, path)),
            }
        }
    })
}

/// Run `sender` (its stdout is the stream) into `sink`; the bytes that went through.
pub fn transfer(mut sender: Command, sink: Sink, estimate: Option<u64>) -> Result<u64> {
    let mut send = sender
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("Failed to start zfs send")?;
    let mut stream = send.stdout.take().expect("piped");
    let mut opened = open(sink)?;
    let started = Instant::now();
    let (sent, copied) = copy(&mut stream, &mut opened.out, estimate, started);
    let flushed = opened.out.flush();
    drop(opened.out);
    // A sender still writing (the receiver stopped early) gets EPIPE rather than blocking.
    drop(stream);
    let send_status = send.wait()?;
    let send_said = read_all(send.stderr.take());
    if let Some(r) = opened.receiver.as_mut() {
        let status = r.wait()?;
        if !status.success() {
            let said = read_all(r.stderr.take());
            bail!(
                "the receiving side failed: {}",
                said.trim().replace('\n', " ")
            );
        }
    }
    copied?;
    flushed.context("Failed to write the stream")?;
    if !send_status.success() {
        bail!("zfs send failed: {}", send_said.trim().replace('\n', " "));
    }
    if let Some((part, path)) = opened.part {
        std::fs::File::open(&part)?.sync_all()?;
        std::fs::rename(&part, &path).with_context(|| {
            format!("Failed to rename {} to {}", part.display(), path.display())
        })?;
    }
    eprintln!("{}", progress_line(sent, Some(sent), started.elapsed()));
    Ok(sent)
}

/// Copy the stream, showing the progress every second on a terminal (every 2 s otherwise);
/// the bytes copied, and how the copy ended.
fn copy(
    stream: &mut impl Read,
    out: &mut dyn Write,
    estimate: Option<u64>,
    started: Instant,
) -> (u64, Result<()>) {
    let mut shown = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let every = match tty {
        true => Duration::from_secs(1),
        false => Duration::from_secs(2),
    };
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    let ended = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e).context("Failed to read the stream from zfs send"),
        };
        if let Err(e) = out.write_all(&buf[..n]) {
            break Err(e).context("Failed to write the stream");
        }
        sent += n as u64;
        if shown.elapsed() >= every {
            shown = Instant::now();
            let line = progress_line(sent, estimate, started.elapsed());
            match tty {
                true => eprint!("\r{line}   "),
                false => eprintln!("{line}"),
            }
        }
    };
    if tty {
        eprintln!();
    }
    (sent, ended)
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_string(&mut text);
    }
    text
}
