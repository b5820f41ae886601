//! What is at a database location before Sweep touches it. A file that is not
//! SQLite, a truncated one, another application's database, or one written by a
//! newer Sweep is refused at once with a message that names the file and what
//! was found; nothing is written to it (the checks read the file and, for the
//! schema, open it read-only without setting any pragma).

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::error::{Error, Result};

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The refusal, in one shape: the location, then what was found and what to do.
fn refuse(location: &str, what: String) -> Error {
    Error::Store(format!("{location}: {what}"))
}

/// The first bytes of a file as readable text (control bytes escaped), for a
/// message about what the file is instead.
fn preview(bytes: &[u8]) -> String {
    let head: String = bytes
        .iter()
        .take(32)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("\"{head}\"")
}

/// Checks the file's header: a SQLite file (or an empty or missing one, which
/// SQLite starts fresh), not cut short. Reads at most 100 bytes.
pub fn check_sqlite_file(path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    if meta.is_dir() {
        return Err(refuse(
            &shown,
            "is a folder, not a results database (pass a file path to --db)".into(),
        ));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut head = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut head))
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    if head.len() < 16 || &head[..16] != SQLITE_MAGIC {
        return Err(refuse(
            &shown,
            format!(
                "not a SQLite database ({} bytes starting with {}); Sweep leaves it untouched — pass another --db",
                meta.len(),
                preview(&head)
            ),
        ));
    }
    if head.len() < 100 {
        return Err(refuse(
            &shown,
            format!(
                "a SQLite file cut short: {} bytes, less than its 100-byte header; restore it from a backup or pass another --db",
                meta.len()
            ),
        ));
    }
    let be16 = |o: usize| u16::from_be_bytes([head[o], head[o + 1]]) as u64;
    let be32 = |o: usize| u32::from_be_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let page_size = match be16(16) {
        1 => 65_536,
        n => n,
    };
    let pages = be32(28) as u64;
    // The page count in the header is valid only when written by a SQLite that
    // keeps it (version-valid-for equals the change counter). While a WAL file
    // is beside the database a checkpoint may be extending the file: the count
    // is then not checked here.
    let counted = be32(92) == be32(24);
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let wal_busy = std::fs::metadata(&wal)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if counted && !wal_busy && page_size >= 512 && meta.len() < pages * page_size {
        return Err(refuse(
            &shown,
            format!(
                "a truncated SQLite database: its header counts {pages} pages of {page_size} bytes ({} bytes), the file has {}; restore it from a backup or pass another --db",
                pages * page_size,
                meta.len()
            ),
        ));
    }
    Ok(())
}

/// What a schema check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Schema {
    /// No tables yet: a new database.
    Empty,
    /// A Sweep database at this migration version.
    Sweep(i64),
}

/// Opens the database read-only (no pragma set, nothing written) and checks
/// that it is empty or a Sweep database this binary knows: not another
/// application's tables, not a schema migrated by a newer Sweep.
/// `first_checksum` is migration 1's checksum (tells Sweep's `_sqlx_migrations`
/// from another sqlx application's), `known` the newest version this binary has.
pub async fn check_schema(
    url: &str,
    shown: &str,
    postgres: bool,
    first_checksum: &[u8],
    known: i64,
    quick_check: bool,
) -> Result<Schema> {
    let opts = AnyConnectOptions::from_str(url).map_err(|e| refuse(shown, e.to_string()))?;
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| match crate::fault::of_sql(&e) {
            Some(kind) => Error::Fault(format!(
                "results database {shown} ({kind}): cannot open it: {e}"
            )),
            None => refuse(
                shown,
                format!("cannot be opened as a database (a damaged or unreadable file?): {e}"),
            ),
        })?;
    let unreadable = |e: sqlx::Error| {
        match crate::fault::of_sql(&e) {
        Some(kind) => Error::Fault(format!(
            "results database {shown} ({kind}): reading its schema: {e}"
        )),
        None => refuse(
            shown,
            format!("its schema cannot be read (a damaged database?): {e}; restore it from a backup or pass another --db"),
        ),
    }
    };
    let tables: Vec<(String,)> = sqlx::query_as(if postgres {
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    })
    .fetch_all(&mut conn)
    .await
    .map_err(unreadable)?;
    let tables: Vec<String> = tables.into_iter().map(|t| t.0).collect();
    if tables.is_empty() {
        let _ = conn.close().await;
        return Ok(Schema::Empty);
    }
    let listed = |t: &[String]| {
        let mut s = t.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        if t.len() > 8 {
            s.push_str(&format!(", … ({} tables)", t.len()));
        }
        s
    };
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        let _ = conn.close().await;
        return Err(refuse(
            shown,
            format!(
                "another application's database (tables: {}), not one Sweep wrote; Sweep leaves it untouched — pass another --db",
                listed(&tables)
            ),
        ));
    }
    let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT version, checksum, CAST(success AS INTEGER) FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(unreadable)?;
    // sqlx creates its table before the first migration's transaction: a
    // first run that stopped there (a full disk) left only the empty table.
    if rows.is_empty() && tables.len() == 1 {
        let _ = conn.close().await;
        return Ok(Schema::Empty);
    }
    let Some((_, first, _)) = rows.iter().find(|r| r.0 == 1) else {
        let _ = conn.close().await;
        return Err(refuse(
            shown,
            format!(
                "another application's database (it has sqlx migrations but not Sweep's; tables: {}); pass another --db",
                listed(&tables)
            ),
        ));
    };
    if first.as_slice() != first_checksum {
        let _ = conn.close().await;
        return Err(refuse(
            shown,
            format!(
                "another application's database (its migration 1 is not Sweep's; tables: {}); pass another --db",
                listed(&tables)
            ),
        ));
    }
    let newest = rows.iter().map(|r| r.0).max().unwrap_or(0);
    if newest > known {
        let _ = conn.close().await;
        return Err(refuse(
            shown,
            format!(
                "written by a newer Sweep (schema version {newest}; this Sweep knows up to {known}); it is left untouched — upgrade Sweep to use it, or pass another --db"
            ),
        ));
    }
    if let Some((v, _, _)) = rows.iter().find(|r| r.2 == 0) {
        let _ = conn.close().await;
        return Err(refuse(
            shown,
            format!("its schema migration {v} did not finish (a crash while upgrading?); restore it from a backup or pass another --db"),
        ));
    }
    // Before a writer adds to it: SQLite's own page-level check (reads every
    // page once; a damaged page would otherwise surface mid-sweep).
    if quick_check && !postgres {
        let (verdict,): (String,) = sqlx::query_as("PRAGMA quick_check(1)")
            .fetch_one(&mut conn)
            .await
            .map_err(unreadable)?;
        if verdict != "ok" {
            let _ = conn.close().await;
            return Err(refuse(
                shown,
                format!("a damaged SQLite database (quick_check: {verdict}); nothing was written — restore it from a backup or pass another --db"),
            ));
        }
    }
    let _ = conn.close().await;
    Ok(Schema::Sweep(newest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_check_names_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new.db");
        check_sqlite_file(&missing).unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        check_sqlite_file(&empty).unwrap();
        let text = dir.path().join("notes.db");
        std::fs::write(&text, "hello\nworld\n").unwrap();
        let e = check_sqlite_file(&text).unwrap_err().to_string();
        assert!(
            e.contains("notes.db") && e.contains("not a SQLite database"),
            "{e}"
        );
        assert!(e.contains("hello\\nworld"), "{e}");
        let e = check_sqlite_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        let short = dir.path().join("short.db");
        std::fs::write(&short, b"SQLite format 3\0abc").unwrap();
        let e = check_sqlite_file(&short).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
        // A header that counts 10 pages of 4096 bytes in a file of 2 pages.
        let mut h = vec![0u8; 8192];
        h[..16].copy_from_slice(SQLITE_MAGIC);
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        h[24..28].copy_from_slice(&7u32.to_be_bytes());
        h[28..32].copy_from_slice(&10u32.to_be_bytes());
        h[92..96].copy_from_slice(&7u32.to_be_bytes());
        let cut = dir.path().join("cut.db");
        std::fs::write(&cut, &h).unwrap();
        let e = check_sqlite_file(&cut).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("40960"), "{e}");
        // The same header from a SQLite that does not keep the count: not judged.
        h[92..96].copy_from_slice(&6u32.to_be_bytes());
        std::fs::write(&cut, &h).unwrap();
        check_sqlite_file(&cut).unwrap();
    }
}
