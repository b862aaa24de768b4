//! Lines from stdin when it is not a terminal (scripts, pipes, tests), for `ferry shell` and
//! `ferry chat`: read on a thread of their own (stdin blocks), each line bounded, handed over
//! through a small channel.

use std::io::{BufRead, Read as _};

use tokio::sync::mpsc;

/// Longest input line accepted; a longer one is skipped with a message.
pub const MAX_INPUT_LINE: usize = 64 * 1024;

/// Reads one line of at most `max` bytes (without its line ending). `Ok(None)` at the end of
/// input; `Err` for a line that is too long (skipped) or cannot be read.
fn read_bounded(r: &mut impl BufRead, max: usize) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = r
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut buf)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > max {
        // Skip the rest of the line.
        loop {
            let mut sink = Vec::new();
            let m = r
                .by_ref()
                .take(64 * 1024)
                .read_until(b'\n', &mut sink)
                .map_err(|e| format!("reading stdin: {e}"))?;
            if m == 0 || sink.last() == Some(&b'\n') {
                break;
            }
        }
        return Err(format!("input line longer than {max} bytes skipped"));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Starts reading stdin: `Ok(line)` per line, `Err(problem)` for a skipped one; the channel
/// closes at the end of input.
pub fn stdin_lines() -> mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("ferry-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            loop {
                let item = match read_bounded(&mut lock, MAX_INPUT_LINE) {
                    Ok(None) => return,
                    Ok(Some(line)) => Ok(line),
                    Err(e) if e.starts_with("reading stdin") => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                    Err(e) => Err(e),
                };
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        });
    if spawned.is_err() {
        // No thread, no input: the channel is closed at once (end of input).
        let (_, closed) = mpsc::channel(1);
        return closed;
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded() {
        let text = format!("ls\r\n{}\nput x\nlast", "y".repeat(100));
        let mut r = std::io::Cursor::new(text.into_bytes());
        assert_eq!(read_bounded(&mut r, 50), Ok(Some("ls".into())));
        assert!(read_bounded(&mut r, 50)
            .unwrap_err()
            .contains("longer than 50"));
        assert_eq!(read_bounded(&mut r, 50), Ok(Some("put x".into())));
        assert_eq!(read_bounded(&mut r, 50), Ok(Some("last".into())));
        assert_eq!(read_bounded(&mut r, 50), Ok(None));
    }
}
