//! What flows through an archive: rows counted and hashed
//! ([`DigestWriter`], [`digest_of`]) and lines bounded ([`LineLimit`]).

use std::io::Write;

use sha2::{Digest as _, Sha256};

/// What was read or written for one table: the row count and the SHA-256
/// of the NDJSON bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest {
    /// Rows.
    pub rows: u64,
    /// Lower-case hex SHA-256 of the rows as written, lines included.
    pub sha256: String,
}

/// A writer that counts lines and hashes what goes through it.
pub struct DigestWriter<W> {
    inner: W,
    hash: Sha256,
    rows: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            rows: 0,
        }
    }

    /// The digest so far and the inner writer.
    pub fn finish(self) -> (Digest, W) {
        (
            Digest {
                rows: self.rows,
                sha256: hex(&self.hash.finalize()),
            },
            self.inner,
        )
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.rows += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The longest row (one NDJSON line, its newline included) an import
/// reads: 64 MiB.
///
/// The SQLite import holds one row in memory (and its decoded values), so
/// this bounds what an archive can make an import allocate, whatever it
/// claims. It is far above a row of ordinary columns, and leaves room for
/// a binary value of some 48 MiB (base64 takes 4 bytes for 3); bigger
/// files belong in object storage, not in a row.
pub const MAX_ROW_BYTES: u64 = 64 << 20;

/// A reader or writer that fails (`InvalidData`) as soon as one line is
/// longer than a bound: a caller reading lines never holds more than that,
/// and an export never writes a row no import would read.
pub struct LineLimit<T> {
    inner: T,
    max: u64,
    /// Bytes since the last newline.
    run: u64,
}

impl<T> LineLimit<T> {
    /// Lines through `inner` of at most `max` bytes, newline included.
    pub fn new(inner: T, max: u64) -> Self {
        Self { inner, max, run: 0 }
    }

    /// Counts `bytes`, which went through.
    fn count(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for b in bytes {
            self.run += 1;
            if self.run > self.max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "a row is longer than {}, the most one row (one NDJSON line) may take",
                        human_bytes(self.max)
                    ),
                ));
            }
            if *b == b'\n' {
                self.run = 0;
            }
        }
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(&buf[..n])?;
        Ok(n)
    }
}

impl<W: Write> Write for LineLimit<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `64 MiB`, `512 KiB`, `100 bytes`.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// The digest of NDJSON rows read from `reader` (to check an archive
/// before anything is written). A row longer than [`MAX_ROW_BYTES`] is an
/// `InvalidData` error: no import would read it.
pub fn digest_of(reader: impl std::io::Read) -> std::io::Result<Digest> {
    let mut writer = DigestWriter::new(std::io::sink());
    std::io::copy(&mut LineLimit::new(reader, MAX_ROW_BYTES), &mut writer)?;
    Ok(writer.finish().0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
