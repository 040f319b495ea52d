//! Unpacking source archives (`.tar.gz` / `.tgz`, plain `.tar`, `.zip`) without trusting them.
//!
//! Every entry name must be a relative path inside the destination (no `..`, no absolute path);
//! a symlink's target must stay inside too (no absolute target, no `..` climbing out); nothing is
//! ever written through a symlink; hard links, devices and FIFOs are refused. Any such entry
//! fails the whole unpack. The unpacked size and the number of entries are limited (zip bombs).
//! The format is recognised by its first bytes, not by the URL.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What an unpack (or a fetched tree) may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of all files.
    pub max_bytes: u64,
    /// Files, folders and symlinks together.
    pub max_entries: u64,
}

/// Archive formats troupe unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    TarGz,
    Tar,
    Zip,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::TarGz => "tar.gz",
            Format::Tar => "tar",
            Format::Zip => "zip",
        }
    }
}

/// Recognises the format from the file's first bytes.
pub fn detect(path: &Path) -> Result<Format, String> {
    let mut head = [0u8; 512];
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(|e| e.to_string())? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Format::TarGz)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(Format::Zip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(Format::Tar)
    } else {
        Err("The downloaded file is not a .tar.gz, .tgz, .tar or .zip archive".into())
    }
}

/// Unpacks `archive` into the folder `dest` (created). `cancel` stops it between entries (the
/// partly written folder is then removed).
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: Limits,
    cancel: &AtomicBool,
) -> Result<Format, String> {
    let format = detect(archive)?;
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    let mut writer = Writer {
        root: dest.to_path_buf(),
        limits,
        bytes: 0,
        entries: 0,
        cancel,
    };
    let mut file = File::open(archive).map_err(|e| e.to_string())?;
    let result = match format {
        Format::TarGz => unpack_tar(flate2::read::GzDecoder::new(file), &mut writer),
        Format::Tar => unpack_tar(file, &mut writer),
        Format::Zip => {
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            unpack_zip(file, &mut writer)
        }
    };
    if result.is_err() || cancel.load(Ordering::SeqCst) {
        let _ = std::fs::remove_dir_all(dest);
    }
    result.map(|()| format)
}

fn unpack_tar(reader: impl Read, writer: &mut Writer<'_>) -> Result<(), String> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("The archive cannot be read: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("The archive cannot be read: {e}"))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| format!("The archive cannot be read: {e}"))?
            .into_owned();
        match kind {
            EntryType::Directory => writer.dir(&name)?,
            EntryType::Regular | EntryType::Continuous => {
                let mode = entry.header().mode().unwrap_or(0o644);
                writer.file(&name, &mut entry, mode)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("The archive cannot be read: {e}"))?
                    .ok_or_else(|| {
                        format!("Symlink {} in the archive has no target", name.display())
                    })?
                    .into_owned();
                writer.symlink(&name, &target)?;
            }
            EntryType::Link => {
                return Err(format!(
                    "The archive holds a hard link ({}); hard links are not supported",
                    name.display()
                ))
            }
            other => {
                return Err(format!(
                    "The archive holds an entry of an unsupported type {other:?} ({})",
                    name.display()
                ))
            }
        }
    }
    Ok(())
}

fn unpack_zip(file: File, writer: &mut Writer<'_>) -> Result<(), String> {
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("The zip archive cannot be read: {e}"))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("The zip archive cannot be read: {e}"))?;
        // Some Windows tools write `\` between folders.
        let name = PathBuf::from(entry.name().replace('\\', "/"));
        if entry.is_dir() {
            writer.dir(&name)?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            (&mut entry)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| format!("The zip archive cannot be read: {e}"))?;
            writer.symlink(&name, Path::new(&target))?;
        } else {
            let mode = entry.unix_mode().unwrap_or(0o644);
            writer.file(&name, &mut entry, mode)?;
        }
    }
    Ok(())
}

/// `path` as a clean relative path (only normal components), or an error naming it.
pub fn safe_relative(path: &Path) -> Result<PathBuf, String> {
    let unsafe_path = || {
        format!(
            "Unsafe path \"{}\": entries must be relative paths inside the project",
            path.display()
        )
    };
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                if part.as_encoded_bytes().contains(&b'\\') {
                    return Err(unsafe_path());
                }
                clean.push(part)
            }
            Component::CurDir => {}
            _ => return Err(unsafe_path()),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(unsafe_path());
    }
    Ok(clean)
}

/// Checks that a symlink at `link` (relative to the root) pointing at `target` stays inside the
/// root: `target` must be relative and must not climb above the root.
pub fn check_link_target(link: &Path, target: &Path) -> Result<(), String> {
    let outside = || {
        format!(
            "Symlink \"{}\" points outside the project (\"{}\")",
            link.display(),
            target.display()
        )
    };
    if target.as_os_str().is_empty() || target.is_absolute() {
        return Err(outside());
    }
    // Depth of the folder holding the link, then walk the target from there.
    let mut depth = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(outside());
                }
            }
            _ => return Err(outside()),
        }
    }
    Ok(())
}

/// Writes entries below `root`, never through a symlink.
struct Writer<'a> {
    root: PathBuf,
    limits: Limits,
    bytes: u64,
    entries: u64,
    cancel: &'a AtomicBool,
}

impl Writer<'_> {
    /// Checks the name, counts the entry, creates its parent folders; returns the full path.
    fn prepare(&mut self, name: &Path) -> Result<(PathBuf, PathBuf), String> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        let rel = safe_relative(name)?;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(format!(
                "The archive holds more than {} entries",
                self.limits.max_entries
            ));
        }
        let mut at = self.root.clone();
        let parts: Vec<_> = rel.components().collect();
        for part in &parts[..parts.len() - 1] {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "Unsafe path \"{}\": it goes through a symlink or a file",
                        name.display()
                    ))
                }
                Err(_) => std::fs::create_dir(&at).map_err(|e| e.to_string())?,
            }
        }
        let full = self.root.join(&rel);
        Ok((rel, full))
    }

    /// Removes a non-folder entry at `full` (a later entry replaces an earlier one).
    fn clear(full: &Path) -> Result<(), String> {
        match std::fs::symlink_metadata(full) {
            Ok(meta) if meta.is_dir() => Err(format!(
                "The archive holds both a folder and a file at \"{}\"",
                full.display()
            )),
            Ok(_) => std::fs::remove_file(full).map_err(|e| e.to_string()),
            Err(_) => Ok(()),
        }
    }

    fn dir(&mut self, name: &Path) -> Result<(), String> {
        // `./` (archives made with `tar -C dir .`) is the root itself.
        if name.components().all(|c| matches!(c, Component::CurDir)) {
            return Ok(());
        }
        let (rel, full) = self.prepare(name)?;
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "Unsafe path \"{}\": it is already a file or a symlink",
                rel.display()
            )),
            Err(_) => std::fs::create_dir(&full).map_err(|e| e.to_string()),
        }
    }

    fn file(&mut self, name: &Path, content: &mut dyn Read, mode: u32) -> Result<(), String> {
        let (_, full) = self.prepare(name)?;
        Self::clear(&full)?;
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)
            .map_err(|e| format!("{}: {e}", name.display()))?;
        let room = self.limits.max_bytes.saturating_sub(self.bytes);
        let copied = std::io::copy(&mut content.take(room + 1), &mut out)
            .map_err(|e| format!("The archive cannot be read ({}): {e}", name.display()))?;
        if copied > room {
            return Err(format!(
                "The unpacked sources are larger than the limit of {} bytes",
                self.limits.max_bytes
            ));
        }
        self.bytes += copied;
        // The mode given at creation is filtered by the umask; set it as meant.
        let _ = std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode));
        Ok(())
    }

    fn symlink(&mut self, name: &Path, target: &Path) -> Result<(), String> {
        let (rel, full) = self.prepare(name)?;
        check_link_target(&rel, target)?;
        Self::clear(&full)?;
        std::os::unix::fs::symlink(target, &full).map_err(|e| e.to_string())
    }
}

/// Walks a fetched tree (a git checkout, an unpacked archive): counts files and bytes against
/// `limits` and checks that every symlink stays inside `root`, both as written and as the
/// system resolves it (a chain of links can climb out where each link alone does not).
pub fn check_tree(root: &Path, limits: Limits) -> Result<(), String> {
    let canonical_root = root.canonicalize().map_err(|e| e.to_string())?;
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let listing = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in listing {
            let entry = entry.map_err(|e| e.to_string())?;
            let child = rel.join(entry.file_name());
            let meta = std::fs::symlink_metadata(entry.path()).map_err(|e| e.to_string())?;
            entries += 1;
            if entries > limits.max_entries {
                return Err(format!(
                    "The sources hold more than {} files",
                    limits.max_entries
                ));
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).map_err(|e| e.to_string())?;
                check_link_target(&child, &target)?;
                if let Ok(resolved) = entry.path().canonicalize() {
                    if !resolved.starts_with(&canonical_root) {
                        return Err(format!(
                            "Symlink \"{}\" points outside the project (\"{}\")",
                            child.display(),
                            target.display()
                        ));
                    }
                }
            } else if meta.is_dir() {
                stack.push(child);
            } else {
                bytes += meta.len();
                if bytes > limits.max_bytes {
                    return Err(format!(
                        "The sources are larger than the limit of {} bytes",
                        limits.max_bytes
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The folder holding the project inside an unpacked archive: the single top-level folder when
/// there is exactly one (as in GitHub's archives; a `__MACOSX` folder beside it is dropped),
/// else `dir` itself.
pub fn project_root(dir: &Path) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir.join("__MACOSX"));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        names.push(entry.map_err(|e| e.to_string())?.path());
        if names.len() > 1 {
            return Ok(dir.to_path_buf());
        }
    }
    match names.pop() {
        None => Err("The archive is empty".into()),
        Some(only)
            if std::fs::symlink_metadata(&only)
                .map(|m| m.is_dir())
                .unwrap_or(false) =>
        {
            Ok(only)
        }
        Some(_) => Ok(dir.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    /// A tar header with a raw name (the builder refuses `..`, which is the point here).
    fn raw_entry(
        builder: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        {
            let bytes = header.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<Format, String>) {
        let temp = tempfile::tempdir().unwrap();
        let archive = temp.path().join("a");
        std::fs::write(&archive, bytes).unwrap();
        let dest = temp.path().join("box/out");
        let result = unpack(&archive, &dest, LIMITS, &AtomicBool::new(false));
        (temp, result)
    }

    #[test]
    fn plain_tar_gz_unpacks_with_modes() {
        let bytes = tar_gz(|b| {
            raw_entry(b, tar::EntryType::Directory, "p/", None, b"");
            raw_entry(b, tar::EntryType::Regular, "p/main.sh", None, b"echo hi\n");
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(3);
            header.set_mode(0o755);
            header.set_path("p/run").unwrap();
            header.set_cksum();
            b.append(&header, &b"x\n\n"[..]).unwrap();
            raw_entry(b, tar::EntryType::Symlink, "p/link", Some("main.sh"), b"");
        });
        let (temp, result) = unpack_bytes(&bytes);
        assert_eq!(result.unwrap(), Format::TarGz);
        let out = temp.path().join("box/out");
        assert_eq!(
            std::fs::read_to_string(out.join("p/main.sh")).unwrap(),
            "echo hi\n"
        );
        let mode = std::fs::metadata(out.join("p/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_to_string(out.join("p/link")).unwrap(),
            "echo hi\n"
        );
        assert_eq!(project_root(&out).unwrap(), out.join("p"));
    }

    #[test]
    fn dot_slash_archives_and_backslash_zips() {
        let bytes = tar_gz(|b| {
            raw_entry(b, tar::EntryType::Directory, "./", None, b"");
            raw_entry(b, tar::EntryType::Directory, "./src/", None, b"");
            raw_entry(
                b,
                tar::EntryType::Regular,
                "./src/main.py",
                None,
                b"print(1)\n",
            );
            raw_entry(b, tar::EntryType::Regular, "./main.py", None, b"print(2)\n");
        });
        let (temp, result) = unpack_bytes(&bytes);
        assert_eq!(result.unwrap(), Format::TarGz);
        let out = temp.path().join("box/out");
        assert_eq!(project_root(&out).unwrap(), out);
        assert!(out.join("src/main.py").is_file() && out.join("main.py").is_file());

        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("proj\\src\\main.py", options).unwrap();
        zip.write_all(b"x").unwrap();
        zip.start_file("..\\escaped", options).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let (temp, result) = unpack_bytes(&bytes);
        assert!(result.unwrap_err().contains("Unsafe path"));
        assert!(!temp.path().join("box/escaped").exists());
    }

    #[test]
    fn hostile_tar_entries_fail_and_write_nothing_outside() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dotdot",
                tar_gz(|b| raw_entry(b, tar::EntryType::Regular, "../escaped", None, b"x")),
            ),
            (
                "nested dotdot",
                tar_gz(|b| raw_entry(b, tar::EntryType::Regular, "a/../../escaped", None, b"x")),
            ),
            (
                "absolute",
                tar_gz(|b| raw_entry(b, tar::EntryType::Regular, "/tmp/escaped-abs", None, b"x")),
            ),
            (
                "absolute symlink",
                tar_gz(|b| raw_entry(b, tar::EntryType::Symlink, "l", Some("/etc"), b"")),
            ),
            (
                "climbing symlink",
                tar_gz(|b| raw_entry(b, tar::EntryType::Symlink, "a/l", Some("../../x"), b"")),
            ),
            (
                "write through symlink",
                tar_gz(|b| {
                    raw_entry(b, tar::EntryType::Symlink, "l", Some("."), b"");
                    raw_entry(b, tar::EntryType::Regular, "l/x", None, b"x");
                }),
            ),
            (
                "hard link",
                tar_gz(|b| raw_entry(b, tar::EntryType::Link, "h", Some("../escaped"), b"")),
            ),
        ];
        for (what, bytes) in cases {
            let (temp, result) = unpack_bytes(&bytes);
            assert!(result.is_err(), "{what}: {result:?}");
            assert!(!temp.path().join("escaped").exists(), "{what}");
            assert!(!temp.path().join("box/escaped").exists(), "{what}");
            assert!(!temp.path().join("box/out").exists(), "{what}: output kept");
        }
        assert!(!Path::new("/tmp/escaped-abs").exists());
    }

    #[test]
    fn zip_unpacks_and_refuses_traversal() {
        let mut good = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        good.add_directory("repo-main/", options).unwrap();
        good.start_file("repo-main/main.py", options).unwrap();
        good.write_all(b"print(1)\n").unwrap();
        let bytes = good.finish().unwrap().into_inner();
        let (temp, result) = unpack_bytes(&bytes);
        assert_eq!(result.unwrap(), Format::Zip);
        let out = temp.path().join("box/out");
        let root = project_root(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("main.py")).unwrap(),
            "print(1)\n"
        );

        let mut bad = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        bad.start_file("../escaped", options).unwrap();
        bad.write_all(b"x").unwrap();
        let bytes = bad.finish().unwrap().into_inner();
        let (temp, result) = unpack_bytes(&bytes);
        assert!(result.unwrap_err().contains("Unsafe path"));
        assert!(!temp.path().join("box/escaped").exists());

        let mut link = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        link.add_symlink("l", "/etc/passwd", options).unwrap();
        let bytes = link.finish().unwrap().into_inner();
        let (_temp, result) = unpack_bytes(&bytes);
        assert!(result.unwrap_err().contains("points outside"));
    }

    #[test]
    fn size_and_format_limits() {
        let big = vec![b'a'; (LIMITS.max_bytes + 10) as usize];
        let bytes = tar_gz(|b| raw_entry(b, tar::EntryType::Regular, "big", None, &big));
        let (_temp, result) = unpack_bytes(&bytes);
        assert!(result.unwrap_err().contains("larger than"));
        let (_temp, result) = unpack_bytes(b"<html>not an archive</html>");
        assert!(result.unwrap_err().contains("not a .tar.gz"));
    }

    #[test]
    fn chained_links_cannot_climb_out() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("..", root.join("a/s")).unwrap();
        std::os::unix::fs::symlink("s/../..", root.join("a/l")).unwrap();
        assert!(check_link_target(Path::new("a/l"), Path::new("s/../..")).is_ok());
        assert!(check_tree(&root, LIMITS)
            .unwrap_err()
            .contains("points outside"));
        std::fs::remove_file(root.join("a/l")).unwrap();
        assert!(check_tree(&root, LIMITS).is_ok());
    }

    #[test]
    fn link_targets() {
        assert!(check_link_target(Path::new("a/l"), Path::new("../b")).is_ok());
        assert!(check_link_target(Path::new("a/l"), Path::new("./x/../y")).is_ok());
        assert!(check_link_target(Path::new("l"), Path::new("..")).is_err());
        assert!(check_link_target(Path::new("a/b/l"), Path::new("../../../x")).is_err());
        assert!(check_link_target(Path::new("l"), Path::new("/x")).is_err());
    }
}
