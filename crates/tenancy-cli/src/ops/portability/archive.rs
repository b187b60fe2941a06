//! The tenant archive: one tar file holding every table of a tenant as
//! NDJSON (`tables/0001.ndjson`, …) and, as its last entry, `manifest.json`
//! (tenant record, config overrides, migration version, per-table columns,
//! row counts and SHA-256 checksums).
//!
//! Tables are streamed straight into the archive: each entry's header is
//! written as a placeholder and filled in once the table's size is known,
//! so a table is never held in memory or written twice. The archive is
//! written as `FILE.partial` and renamed when complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tenancy::TenantInfo;
use tenancy_sql::portable::{Digest, Table, digest_of};

use super::PortabilityError;

/// The `format` of archives this version writes and reads.
pub const FORMAT: &str = "tenancy-archive/1";
/// The manifest's entry name.
pub const MANIFEST: &str = "manifest.json";

/// What an archive holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When it was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Where it was written from.
    pub source: Source,
    /// The tenant record.
    pub tenant: TenantInfo,
    /// The tenant's config overrides.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The tenant's domains.
    #[serde(default)]
    pub domains: Vec<tenancy::TenantDomain>,
    /// The tenant's migration version.
    pub migration_version: i64,
    /// Every table, in the order an import inserts them.
    pub tables: Vec<ArchivedTable>,
}

/// Where an archive came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// `postgres` or `sqlite`.
    pub database: String,
    /// The isolation strategy.
    pub strategy: String,
    /// The `tenancy` version that wrote it.
    pub tenancy_version: String,
}

/// One table in an archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedTable {
    /// The table as the source described it.
    #[serde(flatten)]
    pub table: Table,
    /// Its entry in the archive.
    pub file: String,
    /// Rows and checksum of the entry.
    #[serde(flatten)]
    pub digest: Digest,
}

/// Writes an archive.
pub struct ArchiveWriter {
    file: BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
    done: bool,
}

impl ArchiveWriter {
    /// Starts `path` (as `path.partial`).
    pub fn create(path: &Path) -> Result<Self, PortabilityError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| {
            PortabilityError::failed(format!(
                "cannot create {}: {e} (check that the directory exists and is writable)",
                partial.display()
            ))
        })?;
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, file),
            partial,
            path: path.to_owned(),
            done: false,
        })
    }

    /// Appends an entry: a placeholder header, the bytes `body` writes,
    /// padding, then the real header.
    pub fn begin_entry(&mut self) -> Result<u64, PortabilityError> {
        let start = self.file.stream_position().map_err(write_error)?;
        self.file.write_all(&[0u8; 512]).map_err(write_error)?;
        Ok(start)
    }

    /// The writer of the current entry's bytes.
    pub fn body(&mut self) -> &mut BufWriter<File> {
        &mut self.file
    }

    /// Ends the entry begun at `start`, naming it `name`.
    pub fn end_entry(&mut self, start: u64, name: &str) -> Result<(), PortabilityError> {
        let end = self.file.stream_position().map_err(write_error)?;
        let size = end - start - 512;
        let pad = (512 - size % 512) % 512;
        self.file
            .write_all(&vec![0u8; pad as usize])
            .map_err(write_error)?;
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(|e| {
            PortabilityError::failed(format!("cannot name archive entry {name}: {e}"))
        })?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default());
        header.set_cksum();
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(write_error)?;
        self.file
            .write_all(header.as_bytes())
            .map_err(write_error)?;
        self.file.seek(SeekFrom::End(0)).map_err(write_error)?;
        Ok(())
    }

    /// Writes the manifest as the last entry, closes and renames the file.
    pub fn finish(mut self, manifest: &Manifest) -> Result<PathBuf, PortabilityError> {
        let start = self.begin_entry()?;
        serde_json::to_writer_pretty(&mut self.file, manifest)
            .map_err(|e| PortabilityError::failed(format!("cannot write the manifest: {e}")))?;
        self.end_entry(start, MANIFEST)?;
        self.file.write_all(&[0u8; 1024]).map_err(write_error)?;
        self.file.flush().map_err(write_error)?;
        self.file.get_ref().sync_all().map_err(write_error)?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            PortabilityError::failed(format!(
                "cannot move {} to {}: {e}",
                self.partial.display(),
                self.path.display()
            ))
        })?;
        self.done = true;
        Ok(self.path.clone())
    }
}

impl Drop for ArchiveWriter {
    /// An archive that was not finished removes its partial file.
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn write_error(e: std::io::Error) -> PortabilityError {
    PortabilityError::failed(format!("cannot write the archive: {e}"))
}

fn open(path: &Path) -> Result<tar::Archive<BufReader<File>>, PortabilityError> {
    let file = File::open(path)
        .map_err(|e| PortabilityError::failed(format!("cannot open {}: {e}", path.display())))?;
    Ok(tar::Archive::new(BufReader::with_capacity(1 << 20, file)))
}

fn not_an_archive(path: &Path, e: impl std::fmt::Display) -> PortabilityError {
    PortabilityError::archive(format!(
        "{} is not a tenant archive ({e}): pass a file written by `tenancy tenants export`",
        path.display()
    ))
}

/// The largest manifest an import reads: 16 MiB. A manifest holds the
/// tenant record, its config, its domains and one line per table; a real
/// one is a few KiB, and a tenant with thousands of tables and domains
/// stays far below this.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The entries of the archive at `path`, raw: nothing the tar format can
/// expand on reading (GNU sparse maps, long names, PAX headers) is
/// expanded, so an entry reads as exactly the bytes the file holds.
fn raw_entries<'a>(
    archive: &'a mut tar::Archive<BufReader<File>>,
    path: &Path,
) -> Result<tar::Entries<'a, BufReader<File>>, PortabilityError> {
    Ok(archive
        .entries()
        .map_err(|e| not_an_archive(path, e))?
        .raw(true))
}

/// What an entry is, when it is anything but a plain file.
fn entry_kind(kind: tar::EntryType) -> Option<&'static str> {
    use tar::EntryType as T;
    Some(match kind {
        T::Regular => return None,
        T::GNUSparse => "a sparse file",
        T::Symlink => "a symlink",
        T::Link => "a hard link",
        T::Directory => "a directory",
        T::Char | T::Block => "a device",
        T::Fifo => "a fifo",
        T::GNULongName | T::GNULongLink => "a GNU long name",
        T::XHeader | T::XGlobalHeader => "a PAX header",
        _ => "not a regular file",
    })
}

/// The name of an entry, checked: `manifest.json` or `tables/<digits>.ndjson`
/// (what `tenancy tenants export` writes), a plain file, nothing else.
fn checked_name<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &Path,
) -> Result<String, PortabilityError> {
    let bytes = entry.path_bytes();
    let name = String::from_utf8_lossy(&bytes).into_owned();
    let shown = name
        .chars()
        .take(120)
        .collect::<String>()
        .escape_debug()
        .to_string();
    let header = entry.header();
    if let Some(kind) = entry_kind(header.entry_type()) {
        return Err(PortabilityError::archive(format!(
            "{} holds `{shown}`, which is {kind}: an archive holds only regular files; \
             refusing it, nothing was imported",
            path.display()
        )));
    }
    if !is_expected_name(&name) {
        return Err(PortabilityError::archive(format!(
            "{} holds an entry named `{shown}`: an archive's entry names are `{MANIFEST}` and \
             `tables/NNNN.ndjson` (never absolute, never `..`); refusing it, nothing was imported",
            path.display()
        )));
    }
    Ok(name)
}

/// `manifest.json` or `tables/<digits>.ndjson`.
fn is_expected_name(name: &str) -> bool {
    name == MANIFEST
        || name
            .strip_prefix("tables/")
            .and_then(|rest| rest.strip_suffix(".ndjson"))
            .is_some_and(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the manifest entry: at most [`MAX_MANIFEST_BYTES`], never more
/// than that in memory whatever its header claims.
fn read_manifest(entry: impl Read, path: &Path) -> Result<Manifest, PortabilityError> {
    let too_big = || {
        PortabilityError::archive(format!(
            "{}: {MANIFEST} is larger than {} MiB, the most a manifest may take: \
             refusing it, nothing was imported",
            path.display(),
            MAX_MANIFEST_BYTES >> 20
        ))
    };
    let mut text = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| not_an_archive(path, e))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_big());
    }
    serde_json::from_slice(&text).map_err(|e| not_an_archive(path, format!("{MANIFEST}: {e}")))
}

/// Reads the manifest of `path`, then checks every table entry against it
/// (row count and SHA-256), before anything is written anywhere.
///
/// Only what `tenancy tenants export` writes is accepted: regular entries
/// named `manifest.json` (once, at most [`MAX_MANIFEST_BYTES`]) and
/// `tables/NNNN.ndjson` (each once, rows of at most
/// [`tenancy_sql::portable::MAX_ROW_BYTES`]). Entries are read as stored and
/// streamed, so memory stays flat whatever sizes the archive claims.
pub fn read_and_verify(path: &Path) -> Result<Manifest, PortabilityError> {
    // One pass: every table entry hashed, the manifest (the last entry) read.
    let mut manifest: Option<Manifest> = None;
    let mut archive = open(path)?;
    let mut digests: Vec<(String, Result<Digest, std::io::Error>)> = Vec::new();
    for entry in raw_entries(&mut archive, path)? {
        let mut entry = entry.map_err(|e| not_an_archive(path, e))?;
        let name = checked_name(&entry, path)?;
        if name == MANIFEST && manifest.is_some() || digests.iter().any(|(n, _)| *n == name) {
            return Err(PortabilityError::archive(format!(
                "{} holds `{name}` twice: refusing an archive that was changed, nothing was imported",
                path.display()
            )));
        }
        if name == MANIFEST {
            manifest = Some(read_manifest(&mut entry, path)?);
        } else {
            // A row over the bound is reported with its table's name, once
            // the manifest (the last entry) says which table it is.
            let digest = digest_of(&mut entry);
            if let Err(e) = &digest
                && e.kind() != std::io::ErrorKind::InvalidData
            {
                return Err(not_an_archive(path, e));
            }
            digests.push((name, digest));
        }
    }
    let manifest = manifest.ok_or_else(|| not_an_archive(path, "no manifest.json"))?;
    if manifest.format != FORMAT {
        return Err(PortabilityError::archive(format!(
            "{} has format `{}`; this tenancy reads `{FORMAT}`",
            path.display(),
            manifest.format
        )));
    }
    for (i, table) in manifest.tables.iter().enumerate() {
        if manifest.tables[..i].iter().any(|t| t.file == table.file) {
            return Err(PortabilityError::archive(format!(
                "{}: its manifest lists `{}` twice: refusing an archive that was changed, nothing was imported",
                path.display(),
                table.file
            )));
        }
        let Some((_, found)) = digests.iter().find(|(name, _)| *name == table.file) else {
            return Err(PortabilityError::archive(format!(
                "{} is damaged: table `{}` ({}) is missing from it",
                path.display(),
                table.table.name,
                table.file
            )));
        };
        let found = found.as_ref().map_err(|e| {
            PortabilityError::archive(format!(
                "{}: table `{}` ({}) cannot be imported: {e}; nothing was imported",
                path.display(),
                table.table.name,
                table.file
            ))
        })?;
        if *found != table.digest {
            return Err(PortabilityError::archive(format!(
                "{} does not match its manifest: table `{}` has {} rows with SHA-256 {}, the manifest says {} rows with SHA-256 {}; \
                 the archive was changed or damaged, nothing was imported",
                path.display(),
                table.table.name,
                found.rows,
                found.sha256,
                table.digest.rows,
                table.digest.sha256
            )));
        }
    }
    if let Some((name, _)) = digests
        .iter()
        .find(|(name, _)| !manifest.tables.iter().any(|t| &t.file == name))
    {
        return Err(PortabilityError::archive(format!(
            "{} holds `{name}`, which its manifest does not list: refusing an archive that was changed",
            path.display()
        )));
    }
    Ok(manifest)
}

/// Calls `each` with every table entry's reader, in archive order.
pub async fn for_each_table<F>(path: &Path, mut each: F) -> Result<(), PortabilityError>
where
    F: AsyncFnMut(&str, &mut dyn std::io::BufRead) -> Result<(), PortabilityError>,
{
    let mut archive = open(path)?;
    for entry in raw_entries(&mut archive, path)? {
        let entry = entry.map_err(|e| not_an_archive(path, e))?;
        let name = checked_name(&entry, path)?;
        if name == MANIFEST {
            continue;
        }
        let mut reader = BufReader::with_capacity(1 << 20, entry);
        each(&name, &mut reader).await?;
    }
    Ok(())
}
